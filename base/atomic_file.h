// Files that are replaced whole or not at all. A writer fills a temporary file in the target's
// directory; commit() fsyncs it, renames it over the target and fsyncs the directory, so after a
// crash a reader finds the old file or the complete new one, never a part. Every program that
// writes a checkpoint, a config, an adapter, a cache shard or a results file goes through here.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace mlr {

class AtomicFile {
 public:
  // Creates the temporary (".<name>.tmpXXXXXX" next to `path`, mode 0644). The directory must exist.
  explicit AtomicFile(std::filesystem::path path);
  // Removes the temporary unless commit() succeeded: an error or exception mid-write leaves the
  // old file untouched and no temporary behind.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // fsync, close, rename over the target, fsync of the directory.
  void commit();

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temporary_path() const { return tmp_; }

 private:
  // Closes and removes the temporary, then throws an error naming the target and the errno text.
  [[noreturn]] void fail(const char* what, int err);

  std::filesystem::path path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Replaces `path` with `bytes` atomically.
void atomic_write_file(const std::filesystem::path& path, std::string_view bytes);
// Replaces `path` with what `fill` writes; if `fill` throws, the old file stays and the exception
// propagates.
void atomic_write_file(const std::filesystem::path& path, const std::function<void(AtomicFile&)>& fill);

// fsync of a file or a directory by path; errors name the path. A file system that cannot sync
// directories (EINVAL) is not an error: there is nothing more to make durable on it.
void fsync_path(const std::filesystem::path& path);

}  // namespace mlr
