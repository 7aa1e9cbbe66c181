// Central finite differences for kernel-level gradient checks in f64.
//
// For a function f of some f64 input tensors and a fixed upstream gradient u (the shape of f's
// output), the scalar L(x) = <u, f(x)> has dL/dx = the backward kernel applied to u. For every
// element e of every checked input:
//   numeric_e = (L(x + h e) - L(x - h e)) / (2h),  |numeric_e - analytic_e| <= atol + rtol |analytic_e|
// Small tensors only: this costs two evaluations of f per element.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace mlr::test {

struct FdOptions {
  double h = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-6;
};

using FdFunction = std::function<Tensor(const std::vector<Tensor>& inputs)>;

// A fresh N(0, scale^2) f64 tensor.
inline Tensor random_f64(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Generator gen(seed);
  Tensor t = randn(shape, gen, DType::f64);
  if (scale != 1.0) {
    double* p = t.data<double>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] *= scale;
  }
  return t;
}

// <u, f(x)>
inline double fd_objective(const FdFunction& f, const std::vector<Tensor>& inputs, const std::vector<double>& u) {
  const std::vector<double> y = f(inputs).to_vector<double>();
  REQUIRE(y.size() == u.size());
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += u[i] * y[i];
  return s;
}

// analytic: (index of the input in `inputs`, its gradient) for each input to check.
inline void fd_check(const std::string& name, const std::vector<Tensor>& inputs, const FdFunction& f,
                     const Tensor& upstream, const std::vector<std::pair<size_t, Tensor>>& analytic,
                     FdOptions opt = {}) {
  std::vector<Tensor> x;
  for (const Tensor& t : inputs) x.push_back(t.dtype() == DType::f64 ? t.clone() : t);  // perturbable copies
  const std::vector<double> u = upstream.to_vector<double>();
  for (const auto& [which, grad] : analytic) {
    REQUIRE(which < x.size());
    REQUIRE(x[which].dtype() == DType::f64);
    REQUIRE(grad.shape() == x[which].shape());
    const std::vector<double> g = grad.to_vector<double>();
    double* p = x[which].data<double>();
    double worst = 0;
    int64_t worst_at = -1, failures = 0;
    for (int64_t e = 0; e < x[which].numel(); ++e) {
      const double saved = p[e];
      p[e] = saved + opt.h;
      const double plus = fd_objective(f, x, u);
      p[e] = saved - opt.h;
      const double minus = fd_objective(f, x, u);
      p[e] = saved;
      const double numeric = (plus - minus) / (2 * opt.h);
      const double err = std::fabs(numeric - g[e]);
      if (err > opt.atol + opt.rtol * std::fabs(g[e])) {
        ++failures;
        if (failures <= 3)
          FAIL_CHECK(name, ": input ", which, " element ", e, ": finite difference ", numeric, " vs backward ", g[e]);
      }
      if (err > worst) {
        worst = err;
        worst_at = e;
      }
    }
    INFO(name, ": input ", which, " worst error ", worst, " at element ", worst_at);
    CHECK(failures == 0);
  }
}

}  // namespace mlr::test
