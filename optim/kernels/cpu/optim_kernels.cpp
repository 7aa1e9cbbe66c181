#include <cmath>
#include <initializer_list>
#include <type_traits>

#include "optim/kernels/optim_kernels.h"
#include "tensor/error.h"

namespace mlr::optim_kernels {
namespace {

// A stored element as compute type T (bf16/f16 go through float, exactly).
template <typename T, typename G>
T load_as(G x) {
  if constexpr (std::is_same_v<G, bf16> || std::is_same_v<G, f16>) {
    return static_cast<T>(static_cast<float>(x));
  } else {
    return static_cast<T>(x);
  }
}

template <typename T, typename G>
void adamw_loop(T* p, T* m, T* v, const G* g, int64_t n, const AdamWScalars& s) {
  // Scalars as torch forms them: Python doubles, rounded to T where they meet the tensors.
  const T decay = static_cast<T>(1.0 - s.lr * s.weight_decay);
  const double w1 = 1.0 - s.beta1;
  const T m_weight = static_cast<T>(w1);
  const bool lerp_small = std::abs(w1) < 0.5;  // torch's lerp switches formula at weight 0.5
  const T beta2 = static_cast<T>(s.beta2);
  const T v_weight = static_cast<T>(1.0 - s.beta2);
  const double bias_correction1 = 1.0 - std::pow(s.beta1, static_cast<double>(s.step));
  const double bias_correction2 = 1.0 - std::pow(s.beta2, static_cast<double>(s.step));
  const T neg_step_size = static_cast<T>(-(s.lr / bias_correction1));
  const T bias_correction2_sqrt = static_cast<T>(std::pow(bias_correction2, 0.5));
  const T eps = static_cast<T>(s.eps);
  const bool apply_decay = s.weight_decay != 0.0;

  for (int64_t i = 0; i < n; ++i) {
    const T grad = load_as<T>(g[i]);
    T param = p[i];
    if (apply_decay) param = param * decay;
    const T diff = grad - m[i];
    m[i] = lerp_small ? std::fma(m_weight, diff, m[i]) : std::fma(m_weight - T(1), diff, grad);
    v[i] = std::fma(v_weight * grad, grad, v[i] * beta2);
    const T denom = std::sqrt(v[i]) / bias_correction2_sqrt + eps;
    p[i] = param + neg_step_size * m[i] / denom;
  }
}

}  // namespace

void adamw_update_cpu(Tensor& master, Tensor& exp_avg, Tensor& exp_avg_sq, const Tensor& grad,
                      const AdamWScalars& scalars) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&master, &exp_avg, &exp_avg_sq, &grad}) {
    MLR_CHECK(t->device().is_cpu() && t->is_contiguous(),
              "adamw_update_cpu: every tensor must be contiguous on the CPU (got shape {} on {})",
              shape_str(t->shape()), t->device().str());
  }
  MLR_CHECK(master.dtype() == DType::f32 || master.dtype() == DType::f64,
            "adamw_update_cpu: master weights must be f32 or f64, got {}", dtype_name(master.dtype()));
  MLR_CHECK(exp_avg.dtype() == master.dtype() && exp_avg_sq.dtype() == master.dtype(),
            "adamw_update_cpu: moments of dtype {} and {} for master weights of dtype {}",
            dtype_name(exp_avg.dtype()), dtype_name(exp_avg_sq.dtype()), dtype_name(master.dtype()));
  const int64_t n = master.numel();
  MLR_CHECK(exp_avg.numel() == n && exp_avg_sq.numel() == n && grad.numel() == n,
            "adamw_update_cpu: sizes differ: master {}, exp_avg {}, exp_avg_sq {}, grad {}", shape_str(master.shape()),
            shape_str(exp_avg.shape()), shape_str(exp_avg_sq.shape()), shape_str(grad.shape()));
  auto run = [&](auto master_tag) {
    using T = decltype(master_tag);
    visit_floating(grad.dtype(), "adamw_update_cpu", [&](auto grad_tag) {
      using G = decltype(grad_tag);
      adamw_loop<T, G>(master.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(), grad.data<G>(), n, scalars);
    });
  };
  if (master.dtype() == DType::f32) {
    run(float{});
  } else {
    run(double{});
  }
}

double sum_of_squares_cpu(const Tensor& t) {
  MLR_CHECK(t.device().is_cpu(), "sum_of_squares_cpu: tensor on {}", t.device().str());
  const Tensor c = t.contiguous();
  return visit_floating(c.dtype(), "sum_of_squares_cpu", [&](auto tag) {
    using G = decltype(tag);
    const G* x = c.data<G>();
    double acc = 0;
    for (int64_t i = 0, n = c.numel(); i < n; ++i) {
      const double d = load_as<double>(x[i]);
      acc += d * d;
    }
    return acc;
  });
}

bool all_finite_cpu(const Tensor& t) {
  MLR_CHECK(t.device().is_cpu(), "all_finite_cpu: tensor on {}", t.device().str());
  const Tensor c = t.contiguous();
  return visit_floating(c.dtype(), "all_finite_cpu", [&](auto tag) {
    using G = decltype(tag);
    const G* x = c.data<G>();
    for (int64_t i = 0, n = c.numel(); i < n; ++i) {
      if (!std::isfinite(load_as<compute_t<G>>(x[i]))) return false;
    }
    return true;
  });
}

bool scale_and_check_finite_cpu(Tensor& t, double factor) {
  MLR_CHECK(t.device().is_cpu() && t.is_contiguous(),
            "scale_and_check_finite_cpu: tensor must be contiguous on the CPU (got shape {} on {})",
            shape_str(t.shape()), t.device().str());
  return visit_floating(t.dtype(), "scale_and_check_finite_cpu", [&](auto tag) {
    using G = decltype(tag);
    using C = compute_t<G>;
    const C f = static_cast<C>(factor);
    G* x = t.data<G>();
    bool finite = true;
    for (int64_t i = 0, n = t.numel(); i < n; ++i) {
      const C value = load_as<C>(x[i]);
      finite = finite && std::isfinite(value);
      x[i] = static_cast<G>(value * f);
    }
    return finite;
  });
}

}  // namespace mlr::optim_kernels
