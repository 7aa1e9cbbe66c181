// The fused multi-tensor CUDA AdamW against the CPU reference loop: same parameters (f32 and bf16,
// several shapes including one larger than a chunk), same gradient sequence, several steps with
// and without weight decay. The CUDA kernel rounds exactly where the reference does (intrinsics
// with round-to-nearest, fma where the reference fuses), so the results must be bit-identical.
#include <doctest/doctest.h>

#include <vector>

#include "optim/adamw.h"
#include "tensor/kernels/cuda/runtime.h"
#include "tensor/ops.h"

using namespace mlr;

TEST_CASE("fused CUDA AdamW equals the CPU reference bit for bit") {
  cuda::set_poison_allocations(true);
  for (double wd : {0.0, 0.1}) {
    CAPTURE(wd);
    Generator gen(3);
    const std::vector<std::pair<Shape, DType>> specs = {
        {{7}, DType::f32}, {{33, 65}, DType::f32}, {{70001}, DType::f32}, {{16, 9}, DType::bf16}, {{3, 130000}, DType::bf16}};
    std::vector<Variable> cpu_params, gpu_params;
    for (const auto& [shape, dtype] : specs) {
      const Tensor init = randn(shape, gen, {DType::f32}).to(dtype);
      cpu_params.push_back(Variable::leaf(init.clone()));
      gpu_params.push_back(Variable::leaf(init.cuda()));
    }
    AdamWOptions options;
    options.lr = 1e-2;
    options.weight_decay = wd;
    AdamW cpu_opt(cpu_params, options), gpu_opt(gpu_params, options);
    for (int step = 0; step < 4; ++step) {
      for (size_t i = 0; i < specs.size(); ++i) {
        const Tensor g = randn(specs[i].first, gen, {DType::f32}).to(specs[i].second);
        cpu_params[i].set_grad(g.clone());
        gpu_params[i].set_grad(g.cuda());
      }
      cpu_opt.step();
      gpu_opt.step();
    }
    for (size_t i = 0; i < specs.size(); ++i) {
      CAPTURE(i);
      const std::vector<float> want = cpu_params[i].data().to(DType::f32).to_vector<float>();
      const std::vector<float> got = gpu_params[i].data().cpu().to(DType::f32).to_vector<float>();
      REQUIRE(want.size() == got.size());
      size_t differ = 0;
      for (size_t k = 0; k < want.size(); ++k) differ += want[k] != got[k];
      CHECK(differ == 0);
    }
    const TrainingState a = cpu_opt.state_dict(), b = gpu_opt.state_dict();
    for (const auto& [key, t] : a.tensors) {
      CAPTURE(key);
      const std::vector<float> want = t.to_vector<float>(), got = b.tensors.at(key).cpu().to_vector<float>();
      size_t differ = 0;
      for (size_t k = 0; k < want.size(); ++k) differ += want[k] != got[k];
      CHECK(differ == 0);
    }
  }
  cuda::set_poison_allocations(false);
}
