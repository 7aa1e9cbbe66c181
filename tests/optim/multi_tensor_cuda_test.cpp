// The multi-tensor CUDA kernels with more tensors than one launch carries (the parameter lists
// travel in the kernels' parameter space, kItemsPerLaunch at a time): the AdamW update of 45
// parameters equals the CPU reference bit for bit, and the global gradient norm over 150 tensors
// of mixed dtypes (some larger than a chunk) equals the CPU's double-precision sum to rounding, and
// the loss scaler's single finiteness check over 40 gradients finds one inf and unscales as the CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "optim/adamw.h"
#include "optim/grad_utils.h"
#include "optim/loss_scaler.h"
#include "tensor/ops.h"

using namespace mlr;

TEST_CASE("fused CUDA AdamW over more parameters than one launch holds equals the CPU") {
  Generator gen(8);
  std::vector<Variable> cpu_params, gpu_params;
  for (int i = 0; i < 45; ++i) {
    const Shape shape = {static_cast<int64_t>(1 + (i * 37) % 50), i == 40 ? 70001 : 3};
    const DType dtype = i % 3 == 0 ? DType::bf16 : DType::f32;
    const Tensor init = randn(shape, gen, {DType::f32}).to(dtype);
    cpu_params.push_back(Variable::leaf(init.clone()));
    gpu_params.push_back(Variable::leaf(init.cuda()));
  }
  AdamWOptions options;
  options.lr = 1e-2;
  options.weight_decay = 0.05;
  AdamW cpu_opt(cpu_params, options), gpu_opt(gpu_params, options);
  for (int step = 0; step < 2; ++step) {
    for (size_t i = 0; i < cpu_params.size(); ++i) {
      const Tensor g = randn(cpu_params[i].shape(), gen, {DType::f32}).to(cpu_params[i].dtype());
      cpu_params[i].set_grad(g.clone());
      gpu_params[i].set_grad(g.cuda());
    }
    cpu_opt.step();
    gpu_opt.step();
  }
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    CAPTURE(i);
    CHECK(cpu_params[i].data().to_vector<float>() == gpu_params[i].data().cpu().to_vector<float>());
  }
}

TEST_CASE("global gradient norm on CUDA: one multi-tensor reduction equal to the CPU's") {
  Generator gen(9);
  std::vector<Variable> cpu_params, gpu_params;
  for (int i = 0; i < 150; ++i) {
    const int64_t n = i == 7 ? 200000 : 1 + (i * 53) % 300;
    const DType dtype = i % 3 == 0 ? DType::bf16 : i % 3 == 1 ? DType::f16 : DType::f32;
    const Tensor g = randn({n}, gen, {DType::f32}).to(dtype);
    cpu_params.push_back(Variable::leaf(zeros({n}, dtype), true));
    gpu_params.push_back(Variable::leaf(zeros({n}, dtype).cuda(), true));
    cpu_params.back().set_grad(g.clone());
    gpu_params.back().set_grad(g.cuda());
  }
  const double want = global_grad_norm(cpu_params), got = global_grad_norm(gpu_params);
  CHECK(want > 0);
  CHECK(std::abs(got - want) <= 1e-12 * want);
  CHECK(global_grad_norm(gpu_params) == got);  // a fixed order of summation
  CHECK(global_grad_norm(std::vector<Variable>{}) == 0.0);
}

TEST_CASE("loss scaler on CUDA: one finiteness check for every gradient, the CPU's unscaled values") {
  for (bool poison : {false, true}) {
    CAPTURE(poison);
    Generator gen(10);
    std::vector<Variable> cpu_params, gpu_params;
    for (int i = 0; i < 40; ++i) {
      const int64_t n = 1 + (i * 17) % 90;
      const DType dtype = i % 2 == 0 ? DType::f16 : DType::f32;
      Tensor g = mul(randn({n}, gen, {DType::f32}), 1000.0).to(dtype);
      if (poison && i == 33) g.narrow(0, n - 1, 1).fill_(std::numeric_limits<double>::infinity());
      cpu_params.push_back(Variable::leaf(zeros({n}, DType::f32), true));
      gpu_params.push_back(Variable::leaf(zeros({n}, DType::f32).cuda(), true));
      cpu_params.back().set_grad(g.clone());
      gpu_params.back().set_grad(g.cuda());
    }
    AdamW cpu_opt(cpu_params, AdamWOptions{}), gpu_opt(gpu_params, AdamWOptions{});
    DynamicLossScaler cpu_scaler, gpu_scaler;
    cpu_scaler.unscale_(cpu_opt);
    gpu_scaler.unscale_(gpu_opt);
    CHECK(cpu_scaler.found_inf() == poison);
    CHECK(gpu_scaler.found_inf() == poison);
    for (size_t i = 0; i < cpu_params.size(); ++i) {
      CAPTURE(i);
      CHECK(gpu_params[i].grad().dtype() == DType::f32);
      CHECK(cpu_params[i].grad().to_vector<float>() == gpu_params[i].grad().cpu().to_vector<float>());
    }
  }
}
