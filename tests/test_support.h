// Helpers shared by the doctest suites.
//
// Tests that cannot run. A test case that needs what a checkout may lack (the ../shared data or
// models, a fixture made by a Python script) carries the decorator `* mlr_test::needs_external`
// (or `* mlr_test::opt_in`, below) and starts with MLR_SKIP_UNLESS(available, "what is missing"). Such
// cases form the doctest suite "external", which ctest runs as its own entry <module>_external
// (cmake/mlr_module.cmake). When a case skips, the binary exits with kSkipExitCode after the
// run, so ctest reports the entry "skipped" (SKIP_RETURN_CODE), never "passed"; a failure still
// fails. In the entry of the ordinary cases a skip is not allowed: the exit code fails it.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include <doctest/doctest.h>

#include "tensor/error.h"

namespace mlr_test {

// The exit code ctest's SKIP_RETURN_CODE maps to "skipped" (automake's convention).
inline constexpr int kSkipExitCode = 77;
// Decorator of the test cases that may find their inputs missing (see above).
inline const doctest::test_suite needs_external("external");
// Decorator of the checks a developer runs by hand after making their input (an environment
// variable names it): ctest entry <module>_opt_in, skipped unless the input is there.
inline const doctest::test_suite opt_in("opt_in");

// Test cases that skipped in this run; the shared main turns a non-zero count into kSkipExitCode.
inline std::atomic<int>& skipped_cases() {
  static std::atomic<int> count{0};
  return count;
}

}  // namespace mlr_test

// Ends the current test case as skipped, with `reason` in the output, unless `available`.
#define MLR_SKIP_UNLESS(available, reason)                   \
  do {                                                       \
    if (!(available)) {                                      \
      MESSAGE("skipped: ", reason);                          \
      ++::mlr_test::skipped_cases();                         \
      return;                                                \
    }                                                        \
  } while (0)

// CHECK that `expr` throws mlr::Error whose message contains `needle`.
#define CHECK_ERROR_CONTAINS(expr, needle)                                        \
  do {                                                                            \
    bool thrown_ = false;                                                         \
    try {                                                                         \
      (void)(expr);                                                               \
    } catch (const mlr::Error& e_) {                                              \
      thrown_ = true;                                                             \
      INFO("message: ", e_.what());                                               \
      CHECK(std::string(e_.what()).find(needle) != std::string::npos);            \
    }                                                                             \
    CHECK_MESSAGE(thrown_, "expected mlr::Error containing: ", needle);           \
  } while (0)

// A fresh directory under the system temp dir (unique per process and instance), removed with
// everything in it at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("mlr_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // Writes `contents` to path / name (creating subdirectories) and returns that path.
  std::filesystem::path write(const std::string& name, const std::string& contents) const {
    const std::filesystem::path p = path / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << contents;
    return p;
  }
};
