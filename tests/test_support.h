// Helpers shared by the doctest suites.
#pragma once

#include <string>

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
