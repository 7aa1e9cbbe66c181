#include "base/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/error.h"

namespace mlr {

MappedFile::MappedFile(const std::filesystem::path& path, std::string_view context, Pages pages) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MLR_CHECK(fd >= 0, "{}: cannot open {}: {}", context, path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(fmt::format("{}: cannot stat {}: {}", context, path.string(), std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("{}: {} is not a regular file", context, path.string()));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    const int prot = pages == Pages::copy_on_write ? PROT_READ | PROT_WRITE : PROT_READ;
    void* p = ::mmap(nullptr, size_, prot, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);  // the mapping keeps its own reference to the file
    MLR_CHECK(p != MAP_FAILED, "{}: cannot map {} ({} bytes): {}", context, path.string(), size_, std::strerror(err));
    base_ = p;
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

}  // namespace mlr
