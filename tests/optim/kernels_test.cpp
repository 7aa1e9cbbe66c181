// The tensor-op versions of the optimizer kernels (used off the CPU until a fused CUDA kernel
// exists) against the CPU reference loops, on CPU tensors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "optim/kernels/optim_kernels.h"
#include "tensor/ops.h"

using namespace mlr;
using namespace mlr::optim_kernels;

TEST_CASE("adamw_update_ops agrees with adamw_update_cpu") {
  for (DType master_dtype : {DType::f32, DType::f64}) {
    for (DType grad_dtype : {master_dtype, DType::bf16}) {
      for (double beta1 : {0.9, 0.3}) {  // both of lerp's formulas
        INFO("master ", dtype_name(master_dtype), ", grad ", dtype_name(grad_dtype), ", beta1 ", beta1);
        Generator gen(21);
        Tensor p_cpu = randn({37, 5}, gen, master_dtype);
        const Tensor p_init = p_cpu.clone();
        Tensor p_ops = p_cpu.clone();
        Tensor m_cpu = zeros({37, 5}, master_dtype), v_cpu = zeros({37, 5}, master_dtype);
        Tensor m_ops = m_cpu.clone(), v_ops = v_cpu.clone();
        for (int64_t step = 1; step <= 6; ++step) {
          const Tensor g = (randn({37, 5}, gen) * (step % 2 ? 0.01 : 5.0)).to(grad_dtype);
          const AdamWScalars s{1e-2, beta1, 0.995, 1e-8, step % 3 ? 0.1 : 0.0, step};
          adamw_update_cpu(p_cpu, m_cpu, v_cpu, g, s);
          adamw_update_ops(p_ops, m_ops, v_ops, g, s);
        }
        // Rounding differs (fma vs separate ops) by an ulp or so per step.
        const double tol = master_dtype == DType::f32 ? 1e-6 : 1e-14;
        CHECK(allclose(p_ops, p_cpu, tol, tol));
        CHECK(allclose(m_ops, m_cpu, tol, tol));
        CHECK(allclose(v_ops, v_cpu, tol, tol));
        CHECK(max_abs_diff(p_cpu, p_init) > 1e-3);  // the parameters did move
        CHECK(p_ops.dtype() == master_dtype);
      }
    }
  }
}

TEST_CASE("gradient reductions: ops versions agree with the CPU loops") {
  Generator gen(8);
  for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    INFO("dtype ", dtype_name(dtype));
    const Tensor t = randn({13, 7}, gen).to(dtype);
    CHECK(sum_of_squares_ops(t) == doctest::Approx(sum_of_squares_cpu(t)).epsilon(1e-12));
    CHECK(sum_of_squares_cpu(t.t()) == doctest::Approx(sum_of_squares_cpu(t)).epsilon(1e-12));  // any strides
    CHECK(all_finite_cpu(t));
    CHECK(all_finite_ops(t));
    Tensor a = t.clone(), b = t.clone();
    CHECK(scale_and_check_finite_cpu(a, 0.125));
    CHECK(scale_and_check_finite_ops(b, 0.125));
    CHECK(max_abs_diff(a, b) == 0.0);  // a power of two: exact either way
    CHECK(max_abs_diff(a, mul(t, 0.125)) == 0.0);

    for (double bad : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
      Tensor c = t.clone();
      c.narrow(0, 4, 1).narrow(1, 2, 1).fill_(bad);
      CHECK_FALSE(all_finite_cpu(c));
      CHECK_FALSE(all_finite_ops(c));
      Tensor d = c.clone();
      CHECK_FALSE(scale_and_check_finite_cpu(c, 0.5));
      CHECK_FALSE(scale_and_check_finite_ops(d, 0.5));
      CHECK_FALSE(std::isfinite(sum_of_squares_cpu(c)));
    }
  }
}
