// gradcheck (see gradcheck.h).
#include "autograd/gradcheck.h"

#include <cmath>

#include "tensor/ops.h"

namespace mlr {

namespace {

std::string index_str(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_str(idx);
}

// Storage offset (in elements, from data_ptr) of the flat row-major element `flat`.
int64_t element_offset(const Tensor& t, int64_t flat) {
  int64_t off = 0;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    off += (flat % t.size(d)) * t.stride(d);
    flat /= t.size(d);
  }
  return off;
}

bool has_overlap(const Tensor& t) {
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.size(d) > 1 && t.stride(d) == 0) return true;
  return false;
}

}  // namespace

GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Variable>& inputs, double eps, double atol,
                          double rtol, uint64_t seed) {
  std::vector<Variable> leaves;
  std::vector<size_t> checked;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Variable& v = inputs[i];
    if (!v.requires_grad()) {
      leaves.push_back(v.defined() ? v.detach() : Variable());
      continue;
    }
    MLR_CHECK(v.dtype() == DType::f64 && v.device().is_cpu(),
              "gradcheck: input {} is {} on {}; checked inputs must be f64 on the CPU", i, v.dtype(),
              v.device().str());
    MLR_CHECK(!has_overlap(v.data()), "gradcheck: input {} (shape {}, strides {}) has overlapping elements", i,
              shape_str(v.shape()), shape_str(v.data().strides()));
    leaves.push_back(Variable::leaf(v.data()));
    checked.push_back(i);
  }
  MLR_CHECK(!checked.empty(), "gradcheck: no input requires grad");

  // Analytical: backward with the random weights as seeds.
  std::vector<Variable> outs = fn(leaves);
  Generator gen(seed);
  std::vector<Tensor> weights;
  std::vector<Variable> roots;
  std::vector<Tensor> seeds;
  for (const Variable& out : outs) {
    Tensor u = out.defined() && out.data().is_floating_point() ? randn(out.shape(), gen, DType::f64) : Tensor();
    weights.push_back(u);
    if (u.defined() && out.requires_grad()) {
      roots.push_back(out);
      seeds.push_back(u);
    }
  }
  if (!roots.empty()) backward(roots, seeds);

  auto objective = [&]() {
    NoGradGuard no_grad;
    std::vector<Variable> o = fn(leaves);
    MLR_CHECK(o.size() == weights.size(), "gradcheck: fn returned {} outputs, then {}", weights.size(), o.size());
    double total = 0.0;
    for (size_t j = 0; j < o.size(); ++j)
      if (weights[j].defined()) total += sum(mul(cast(o[j].data(), DType::f64), weights[j])).item<double>();
    return total;
  };

  for (size_t i : checked) {
    const Tensor& x = leaves[i].data();
    Tensor analytical = leaves[i].grad().defined() ? leaves[i].grad() : zeros(x.shape(), DType::f64);
    if (analytical.shape() != x.shape())
      return {false, fmt::format("gradcheck: input {}: gradient has shape {}, input {}", i,
                                 shape_str(analytical.shape()), shape_str(x.shape()))};
    std::vector<double> a = analytical.to_vector<double>();
    double* p = x.data<double>();
    int64_t failures = 0;
    std::string first;
    double worst = 0.0;
    for (int64_t e = 0; e < x.numel(); ++e) {
      double& xe = p[element_offset(x, e)];
      const double orig = xe;
      xe = orig + eps;
      const double plus = objective();
      xe = orig - eps;
      const double minus = objective();
      xe = orig;
      const double numerical = (plus - minus) / (2 * eps);
      const double diff = std::abs(a[e] - numerical);
      if (!(diff <= atol + rtol * std::abs(numerical))) {  // NaN fails too
        if (failures++ == 0)
          first = fmt::format("input {} (shape {}) element {} (index {}): analytical {:.10g} vs numerical {:.10g}", i,
                              shape_str(x.shape()), e, index_str(e, x.shape()), a[e], numerical);
        worst = std::max(worst, diff);
      }
    }
    if (failures > 0)
      return {false, fmt::format("gradcheck: {}; {} of {} elements of input {} fail (max |diff| {:.3g}, atol {}, "
                                 "rtol {})",
                                 first, failures, x.numel(), i, worst, atol, rtol)};
  }
  return {};
}

}  // namespace mlr
