// A whole file mapped into memory for reading, unmapped when the object goes away.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string_view>

namespace mlr {

class MappedFile {
 public:
  enum class Pages {
    read_only,      // PROT_READ: a write through the mapping is a bug and faults
    copy_on_write,  // PROT_READ | PROT_WRITE, MAP_PRIVATE: writes go to private pages, never to the file
  };
  // Maps the regular file `path`; an empty file maps to data() == nullptr, size() == 0. Errors
  // start with `context` (e.g. "safetensors") and name the path and the errno text.
  MappedFile(const std::filesystem::path& path, std::string_view context, Pages pages = Pages::read_only);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return static_cast<const char*>(base_); }
  // The mapped bytes, writable only for Pages::copy_on_write.
  void* mutable_data() const { return base_; }
  size_t size() const { return size_; }

 private:
  void* base_ = nullptr;
  size_t size_ = 0;
};

}  // namespace mlr
