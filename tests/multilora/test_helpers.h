// Shared helpers of the multilora tests.
#pragma once

#include <doctest/doctest.h>

#include <string>

#include "autograd/functions.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace mlr::test {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::f64, double std = 1.0) {
  Generator gen(seed);
  return mul(randn(shape, gen, dtype), std);
}

}  // namespace mlr::test
