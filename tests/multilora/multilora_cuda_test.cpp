// The adapters on CUDA against the CPU (issue 5's GPU check):
//   - MultiLoRA's stacked product on CUDA (one low-rank product, scales folded in) against the
//     per-module CPU reference sum_i s_i (alpha / r_i) B_i A_i x, forward and backward (A, B, the
//     scales and x), both scale modes, f32 and a bf16 base weight;
//   - LoRA and SMoRA forward and backward, CUDA vs CPU; SMoRA's top-k selection and load counts;
//   - a tiny LLaMA with MultiLoRA on q,k,v,o: loss and every adapter gradient, CUDA vs CPU.
// Parameters are drawn on the CPU and copied to the CUDA adapter, so both sides hold the same
// values whatever the device's random streams do. New CUDA allocations are poisoned with NaN.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "llama/model.h"
#include "multilora/inject.h"
#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "multilora/smora.h"
#include "tensor/kernels/cuda/runtime.h"
#include "tests/multilora/test_helpers.h"

using namespace mlr;
using mlr::test::random_tensor;

namespace {

constexpr double kF32Tolerance = 1e-5;  // relative to the reference's largest magnitude

struct PoisonGuard {
  PoisonGuard() { cuda::set_poison_allocations(true); }
  ~PoisonGuard() { cuda::set_poison_allocations(false); }
};

// max |a - b| / max |b|, in f64 on the CPU.
double rel_error(const Tensor& got, const Tensor& want) {
  const Tensor a = got.cpu().to(DType::f64), b = want.cpu().to(DType::f64);
  REQUIRE_MESSAGE(a.shape() == b.shape(), shape_str(a.shape()) << " vs " << shape_str(b.shape()));
  const double scale = amax(abs(b)).item<double>();
  return max_abs_diff(a, b) / (scale > 0 ? scale : 1.0);
}

void expect_close(const std::string& what, const Tensor& got, const Tensor& want, double tolerance) {
  REQUIRE_MESSAGE(got.defined(), what << ": undefined");
  CHECK_MESSAGE(got.device().is_cuda(), what << " is on " << got.device().str());
  const double err = rel_error(got, want);
  CHECK_MESSAGE(err < tolerance, what << ": rel error " << err << " (tolerance " << tolerance << ")");
}

// Gives every tensor of `to` (a CUDA adapter) the values of the same-named tensor of `from`.
void copy_adapter_values(const AdaptedLinear& from, const AdaptedLinear& to) {
  const auto src = from.named_tensors(), dst = to.named_tensors();
  REQUIRE(src.size() == dst.size());
  for (size_t i = 0; i < src.size(); ++i) {
    REQUIRE(src[i].first == dst[i].first);
    Tensor target = dst[i].second.data();
    target.copy_(src[i].second.data());
  }
}

// The per-module reference on the CPU: sum_i s_i (alpha / r_i) B_i A_i x, one product per module.
Variable per_module_reference(const Variable& x, const MultiLoraLinear& m) {
  Variable total;
  int64_t offset = 0;
  for (size_t i = 0; i < m.ranks().size(); ++i) {
    const int64_t ri = m.ranks()[i];
    Variable Ai = narrow(m.lora_A(), 0, offset, ri), Bi = narrow(m.lora_B(), 1, offset, ri);
    Variable term = mul(linear(linear(x, Ai), Bi), m.config().alpha / static_cast<double>(ri));
    term = mul(term, select(m.scales(), 0, static_cast<int64_t>(i)));  // scalar or [out]
    total = total.defined() ? add(total, term) : term;
    offset += ri;
  }
  return total;
}

}  // namespace

TEST_CASE("multilora on CUDA: the stacked product equals the per-module CPU reference, forward and backward") {
  PoisonGuard poison;
  for (DType base_dtype : {DType::f32, DType::bf16}) {
    for (MultiLoraScale mode : {MultiLoraScale::per_module, MultiLoraScale::per_channel}) {
      CAPTURE(dtype_name(base_dtype));
      CAPTURE(static_cast<int>(mode));
      const int64_t in = 96, out = 80;
      MultiLoraConfig c;
      c.ranks = {3, 1, 2, 2};
      c.alpha = 6;
      c.scale_mode = mode;
      const Tensor w = random_tensor({out, in}, 3, DType::f32, 0.1).to(base_dtype);
      const Tensor b = random_tensor({out}, 4, DType::f32).to(base_dtype);
      Generator gen(9);
      MultiLoraLinear cpu(Variable(w.clone()), Variable(b.clone()), c, gen);
      Tensor scales = cpu.scales().data();
      scales.copy_(random_tensor(scales.shape(), 5, DType::f32));
      Generator gen_cuda(9);
      MultiLoraLinear gpu(Variable(w.cuda()), Variable(b.cuda()), c, gen_cuda);
      copy_adapter_values(cpu, gpu);
      REQUIRE(gpu.lora_A().device().is_cuda());

      const Tensor x = random_tensor({2, 37, in}, 6, DType::f32).to(base_dtype);
      const Tensor g = random_tensor({2, 37, out}, 7, DType::f32).to(base_dtype);
      Variable x_gpu = Variable::leaf(x.cuda());
      Variable y = gpu.forward(x_gpu);
      y.backward(g.cuda());

      // The reference in f32 from the same (rounded) base values; x enters the adapter in f32.
      Variable x_ref = Variable::leaf(x.to(DType::f32));
      Variable ref = add(linear(x_ref, Variable(w.to(DType::f32)), Variable(b.to(DType::f32))),
                         per_module_reference(x_ref, cpu));
      ref.backward(g.to(DType::f32));
      // bf16: the base product and the output are rounded to 8 bits; gradients of the adapter
      // come from bf16 activations cast to f32.
      const double tol = base_dtype == DType::f32 ? kF32Tolerance : 2e-2;
      CHECK(y.dtype() == base_dtype);
      expect_close("output", y.data(), ref.data(), tol);
      expect_close("grad A", gpu.lora_A().grad(), cpu.lora_A().grad(), tol);
      expect_close("grad B", gpu.lora_B().grad(), cpu.lora_B().grad(), tol);
      expect_close("grad scales", gpu.scales().grad(), cpu.scales().grad(), tol);
      expect_close("grad x", x_gpu.grad(), x_ref.grad(), tol);
      // The merged dense update, on the device.
      expect_close("delta_weight", gpu.delta_weight(), cpu.delta_weight(), kF32Tolerance);
    }
  }
}

TEST_CASE("lora on CUDA: forward and backward equal the CPU") {
  PoisonGuard poison;
  for (bool rslora : {false, true}) {
    CAPTURE(rslora);
    LoraConfig c;
    c.r = 8;
    c.alpha = 16;
    c.use_rslora = rslora;
    const Tensor w = random_tensor({72, 64}, 11, DType::f32, 0.1), b = random_tensor({72}, 12, DType::f32);
    Generator g1(13), g2(13);
    LoraLinear cpu(Variable(w.clone()), Variable(b.clone()), c, g1);
    Tensor lb = cpu.lora_B().data();
    lb.copy_(random_tensor(lb.shape(), 14, DType::f32));  // B = 0 at init would hide A's gradient
    LoraLinear gpu(Variable(w.cuda()), Variable(b.cuda()), c, g2);
    copy_adapter_values(cpu, gpu);

    const Tensor x = random_tensor({3, 29, 64}, 15, DType::f32), g = random_tensor({3, 29, 72}, 16, DType::f32);
    Variable xc = Variable::leaf(x.clone()), xg = Variable::leaf(x.cuda());
    Variable yc = cpu.forward(xc), yg = gpu.forward(xg);
    yc.backward(g);
    yg.backward(g.cuda());
    expect_close("output", yg.data(), yc.data(), kF32Tolerance);
    expect_close("grad A", gpu.lora_A().grad(), cpu.lora_A().grad(), kF32Tolerance);
    expect_close("grad B", gpu.lora_B().grad(), cpu.lora_B().grad(), kF32Tolerance);
    expect_close("grad x", xg.grad(), xc.grad(), kF32Tolerance);
    expect_close("delta_weight", gpu.delta_weight(), cpu.delta_weight(), kF32Tolerance);
  }
}

TEST_CASE("smora on CUDA: selection, load counts, forward and backward equal the CPU") {
  PoisonGuard poison;
  for (SmoraScore score : {SmoraScore::sigmoid, SmoraScore::softmax}) {
    CAPTURE(static_cast<int>(score));
    SmoraConfig c;
    c.r = 8;
    c.top_k = 3;
    c.alpha = 4;
    c.score = score;
    const Tensor w = random_tensor({40, 48}, 21, DType::f32, 0.1);
    Generator g1(22), g2(22);
    SmoraLinear cpu(Variable(w.clone()), Variable(), c, g1);
    Tensor lb = cpu.lora_B().data();
    lb.copy_(random_tensor(lb.shape(), 23, DType::f32));
    SmoraLinear gpu(Variable(w.cuda()), Variable(), c, g2);
    copy_adapter_values(cpu, gpu);

    const Tensor x = random_tensor({2, 33, 48}, 24, DType::f32), g = random_tensor({2, 33, 40}, 25, DType::f32);
    // The same selection on both sides (ties between f32 scores that differ by rounding would make
    // the comparison meaningless); the scores themselves must agree closely.
    const Tensor scores_cpu = cpu.scores(Variable(x)).data();
    expect_close("scores", gpu.scores(Variable(x.cuda())).data(), scores_cpu, kF32Tolerance);
    const Tensor selection = cpu.select_ranks(scores_cpu);
    const Tensor selection_gpu = gpu.select_ranks(gpu.scores(Variable(x.cuda())).data());
    CHECK(max_abs_diff(selection_gpu.cpu().to(DType::i32), selection.to(DType::i32)) == 0);

    Variable xc = Variable::leaf(x.clone()), xg = Variable::leaf(x.cuda());
    Variable yc = cpu.forward(xc), yg = gpu.forward(xg);  // train mode: counts loads
    yc.backward(g);
    yg.backward(g.cuda());
    expect_close("output", yg.data(), yc.data(), kF32Tolerance);
    expect_close("grad A", gpu.lora_A().grad(), cpu.lora_A().grad(), kF32Tolerance);
    expect_close("grad B", gpu.lora_B().grad(), cpu.lora_B().grad(), kF32Tolerance);
    expect_close("grad router", gpu.router().grad(), cpu.router().grad(), kF32Tolerance);
    expect_close("grad x", xg.grad(), xc.grad(), kF32Tolerance);
    CHECK(gpu.load_stats().step_counts == cpu.load_stats().step_counts);
    cpu.update_load_balance();
    gpu.update_load_balance();
    CHECK(gpu.load_stats().bias == cpu.load_stats().bias);
    CHECK(gpu.load_stats().total_counts == cpu.load_stats().total_counts);

    // With a given selection (what gradcheck differentiates), CUDA vs CPU.
    for (AdaptedLinear* a : {static_cast<AdaptedLinear*>(&cpu), static_cast<AdaptedLinear*>(&gpu)})
      for (Variable p : a->parameters()) p.zero_grad(true);
    Variable fc = cpu.forward_with_selection(Variable(x), selection);
    Variable fg = gpu.forward_with_selection(Variable(x.cuda()), selection.cuda());
    fc.backward(g);
    fg.backward(g.cuda());
    expect_close("forward_with_selection", fg.data(), fc.data(), kF32Tolerance);
    expect_close("forward_with_selection grad router", gpu.router().grad(), cpu.router().grad(), kF32Tolerance);
  }
}

TEST_CASE("multilora on CUDA in a LLaMA model: loss and every adapter gradient equal the CPU") {
  PoisonGuard poison;
  LlamaConfig config;
  config.hidden_size = 64;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 16;
  config.intermediate_size = 96;
  config.vocab_size = 101;
  Generator g1(31), g2(31);
  LlamaForCausalLM cpu_model(config, &g1), cuda_model(config, &g2);
  std::map<std::string, Tensor> weights;
  for (const auto& [name, t] : cpu_model.state_dict()) weights[name] = t.clone();
  cuda_model.load_state_dict(weights);
  cuda_model.to(Device::cuda(0));  // before injecting (inject.h)
  MultiLoraConfig multilora;
  multilora.r = 8;
  multilora.n_modules = 4;
  multilora.alpha = 16;
  multilora.dtype = DType::f32;
  InjectionSpec spec;
  spec.adapter = std::make_shared<MultiLoraConfig>(multilora);
  spec.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj"};
  const auto cpu_adapters = inject_adapters(cpu_model, spec);
  const auto cuda_adapters = inject_adapters(cuda_model, spec);
  REQUIRE(cpu_adapters.size() == 8);
  REQUIRE(cuda_adapters.size() == cpu_adapters.size());
  for (size_t i = 0; i < cpu_adapters.size(); ++i) {
    auto* m = dynamic_cast<MultiLoraLinear*>(cpu_adapters[i].adapter);
    REQUIRE(m != nullptr);
    Tensor s = m->scales().data();
    s.copy_(random_tensor(s.shape(), 40 + i, DType::f32, 0.5));  // nonzero: every path carries gradient
    copy_adapter_values(*cpu_adapters[i].adapter, *cuda_adapters[i].adapter);
  }

  LlamaBatch batch;
  std::vector<int64_t> ids(2 * 24);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 37 + 11) % 101);
  batch.input_ids = from_vector(ids, {2, 24});
  batch.labels = batch.input_ids;
  CausalLMOutput want = cpu_model.forward(batch), got = cuda_model.forward(batch);
  expect_close("logits", got.logits.data(), want.logits.data(), 1e-4);
  expect_close("loss", got.loss.data(), want.loss.data(), 1e-4);
  want.loss.backward();
  got.loss.backward();
  const auto cpu_params = cpu_model.named_parameters(true), cuda_params = cuda_model.named_parameters(true);
  REQUIRE(cpu_params.size() == 3 * 8);
  REQUIRE(cuda_params.size() == cpu_params.size());
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    CAPTURE(cpu_params[i].first);
    REQUIRE(cuda_params[i].first == cpu_params[i].first);
    expect_close("grad", cuda_params[i].second.grad(), cpu_params[i].second.grad(), 1e-4);
  }
}
