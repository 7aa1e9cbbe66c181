#include "base/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/error.h"

namespace fs = std::filesystem;

namespace mlr {

namespace {

fs::path directory_of(const fs::path& path) {
  return path.has_parent_path() ? path.parent_path() : fs::path(".");
}

}  // namespace

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  std::string name = ".";  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on a + chain
  name += path_.filename().string();
  name += ".tmpXXXXXX";
  std::string tmp = (directory_of(path_) / name).string();
  fd_ = ::mkstemp(tmp.data());
  MLR_CHECK(fd_ >= 0, "cannot create a temporary file next to {}: {}", path_.string(), std::strerror(errno));
  tmp_ = tmp;
  ::fchmod(fd_, 0644);  // mkstemp creates 0600; these are ordinary readable files
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::fail(const char* what, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  committed_ = true;  // nothing left for the destructor to remove
  throw Error(fmt::format("{} {} failed: {}", what, path_.string(), std::strerror(err)));
}

void AtomicFile::write(const void* data, size_t bytes) {
  MLR_CHECK(fd_ >= 0, "writing {}: the file is already committed or failed", path_.string());
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = ::write(fd_, p, std::min<size_t>(bytes, size_t{1} << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("writing", w < 0 ? errno : EIO);
    p += w;
    bytes -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  MLR_CHECK(fd_ >= 0, "committing {}: the file is already committed or failed", path_.string());
  if (::fsync(fd_) != 0) fail("fsync of", errno);
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail("closing", errno);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("renaming the temporary file over", errno);
  committed_ = true;
  fsync_path(directory_of(path_));  // makes the rename itself durable
}

void atomic_write_file(const fs::path& path, std::string_view bytes) {
  AtomicFile file(path);
  file.write(bytes);
  file.commit();
}

void atomic_write_file(const fs::path& path, const std::function<void(AtomicFile&)>& fill) {
  AtomicFile file(path);
  fill(file);
  file.commit();
}

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MLR_CHECK(fd >= 0, "fsync: cannot open {}: {}", path.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  MLR_CHECK(rc == 0 || err == EINVAL, "fsync of {} failed: {}", path.string(), std::strerror(err));
}

}  // namespace mlr
