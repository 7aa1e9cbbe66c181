// What every fuzz target shares: a scratch directory in memory for parsers that read files, and
// the rule that decides what counts as a failure.
//
// A parser may reject any input, but only with mlr::Error (whose message names the file, the
// position and what was expected). Any other exception escapes the target, and libFuzzer reports
// it as a crash, as it does an out-of-bounds access, undefined behaviour, a leak or a hang.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "tensor/error.h"

namespace mlr::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A directory private to this process, on /dev/shm when there is one (no disk writes for millions
// of inputs), removed at exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::error_code ec;
    std::filesystem::path root = std::filesystem::is_directory("/dev/shm", ec) ? "/dev/shm"
                                                                               : std::filesystem::temp_directory_path();
    std::string pattern = (root / "mlr-fuzz-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Writes `bytes` to <dir>/<name> (replacing it) and returns the path.
  std::filesystem::path write(const std::string& name, std::string_view bytes) const {
    std::filesystem::path file = path_ / name;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) std::abort();  // the scratch directory itself failed: not a finding about the parser
    return file;
  }

  void remove(const std::string& name) const {
    std::error_code ec;
    std::filesystem::remove(path_ / name, ec);
  }

 private:
  std::filesystem::path path_;
};

// The process's scratch directory (created on first use).
inline const ScratchDir& scratch() {
  static const ScratchDir dir;
  return dir;
}

// Runs one parse: mlr::Error is the parser's correct answer to a malformed input; anything else
// propagates and fails the run.
template <typename F>
void expect_clean_rejection(F&& parse) {
  try {
    parse();
  } catch (const mlr::Error&) {
  }
}

}  // namespace mlr::fuzz
