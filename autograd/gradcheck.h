// gradcheck: compares autograd's gradients with central finite differences, in float64.
//
//   GradcheckResult r = gradcheck(fn, {Variable::leaf(x), Variable::leaf(w), Variable(ids)});
//   CHECK_MESSAGE(r.ok, r.message);
//
// fn maps the inputs to one or more outputs. The checked scalar is L = sum_j sum(out_j * u_j)
// with u_j fixed random weights (so every output element matters with a different weight).
// Every input that requires grad is checked and must be an f64 CPU tensor without overlapping
// elements (a non-contiguous view is fine; an expanded one is not); other inputs are constants.
// Element e of input i passes when |analytical - numerical| <= atol + rtol * |numerical|, where
// numerical = (L(x + eps e) - L(x - eps e)) / (2 eps). The inputs' values are restored after.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace mlr {

struct GradcheckResult {
  bool ok = true;
  std::string message;  // on failure: which input and element, both values, how many elements failed
  explicit operator bool() const { return ok; }
};

using GradcheckFn = std::function<std::vector<Variable>(const std::vector<Variable>&)>;

GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Variable>& inputs, double eps = 1e-6,
                          double atol = 1e-5, double rtol = 1e-3, uint64_t seed = 0);

}  // namespace mlr
