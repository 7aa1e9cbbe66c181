// Helpers shared by the doctest suites.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include <doctest/doctest.h>

#include "tensor/error.h"

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
