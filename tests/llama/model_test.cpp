// LlamaForCausalLM against transformers on tiny random models (tests/fixtures/llama/models/, made by
// scripts/fixtures/make_llama_fixtures.py): logits, loss and every parameter gradient in f32 on
// the CPU, for batches with right and left padding, ignored labels and explicit position_ids. Then
// our own invariants: save/load round trips (single file and sharded), packed documents equal
// separate rows, activation checkpointing gives the same gradients, and malformed inputs throw.
#include <doctest/doctest.h>

#include "tests/llama/tiny_config.h"
#include "tests/test_support.h"
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "llama/model.h"
#include "llama/safetensors.h"
#include "tensor/ops.h"

namespace fs = std::filesystem;
using namespace mlr;

namespace {

const fs::path kModels = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "llama" / "models";
const char* kFixtures[] = {"llama2_mha", "llama3_gqa", "qwen2_tied"};

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// max |a - b| / max |b|: the error relative to the reference's scale.
double rel_error(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double scale = amax(abs(b.to(DType::f64))).item<double>();
  return max_abs_diff(a.to(DType::f64), b.to(DType::f64)) / (scale > 0 ? scale : 1.0);
}

// Logits at the positions where mask == 1 (padded positions are unspecified), as [n, V].
Tensor real_positions(const Tensor& logits, const Tensor& mask) {
  std::vector<int64_t> m = mask.to_vector<int64_t>();
  std::vector<int64_t> rows;
  for (size_t i = 0; i < m.size(); ++i)
    if (m[i]) rows.push_back(static_cast<int64_t>(i));
  Tensor flat = logits.reshape({-1, logits.size(-1)});
  return index_select(flat, 0, from_vector(rows, {static_cast<int64_t>(rows.size())}));
}

bool all_finite(const Tensor& t) { return amin(isfinite(t).to(DType::i32)).item<int32_t>() == 1; }


}  // namespace

TEST_CASE("model: logits, loss and every gradient match transformers") {
  for (const std::string name : kFixtures) {
    CAPTURE(name);
    const fs::path dir = kModels / name;
    auto model = LlamaForCausalLM::from_pretrained(dir.string());
    SafetensorsFile ref = SafetensorsFile::open((dir / "reference.safetensors").string());

    // Training batch: right padding, left padding, ignored prompt labels; default positions.
    LlamaBatch batch;
    batch.input_ids = ref.get("train.input_ids");
    batch.attention_mask = ref.get("train.attention_mask");
    batch.labels = ref.get("train.labels");
    CausalLMOutput out = model->forward(batch);
    const Tensor ref_logits = ref.get("train.logits");
    REQUIRE(out.logits.shape() == ref_logits.shape());
    const double logits_err = rel_error(real_positions(out.logits.data(), batch.attention_mask),
                                        real_positions(ref_logits, batch.attention_mask));
    const double loss_err = rel_error(out.loss.data(), ref.get("train.loss"));
    MESSAGE(name << ": train logits rel error " << logits_err << ", loss rel error " << loss_err);
    CHECK(logits_err < 1e-5);
    CHECK(loss_err < 1e-5);

    out.loss.backward();
    // Every parameter transformers has, and no other, with its gradient.
    std::vector<std::string> ref_grads;
    for (const std::string& n : ref.names())
      if (n.rfind("train.grad.", 0) == 0) ref_grads.push_back(n.substr(11));
    auto params = model->named_parameters();
    CHECK(params.size() == ref_grads.size());
    double worst = 0;
    std::string worst_name;
    for (const auto& [pname, p] : params) {
      CAPTURE(pname);
      REQUIRE(ref.contains("train.grad." + pname));
      REQUIRE(p.grad().defined());
      const double err = rel_error(p.grad(), ref.get("train.grad." + pname));
      CHECK(err < 1e-5);
      if (err > worst) worst = err, worst_name = pname;
    }
    MESSAGE(name << ": worst gradient rel error " << worst << " (" << worst_name << ")");

    // Left-padded rows with explicit position_ids (as generate passes them).
    LlamaBatch pos;
    pos.input_ids = ref.get("positions.input_ids");
    pos.attention_mask = ref.get("positions.attention_mask");
    pos.position_ids = ref.get("positions.position_ids");
    pos.labels = ref.get("positions.labels");
    NoGradGuard no_grad;
    CausalLMOutput pout = model->forward(pos);
    const double pos_err = rel_error(real_positions(pout.logits.data(), pos.attention_mask),
                                     real_positions(ref.get("positions.logits"), pos.attention_mask));
    CHECK(pos_err < 1e-5);
    CHECK(rel_error(pout.loss.data(), ref.get("positions.loss")) < 1e-5);
  }
}

TEST_CASE("model: bf16 weights and activations stay close to transformers' f32 results") {
  // bf16 keeps 8 significant bits; the stated tolerances: logits within 3% of their scale, loss
  // within 1%, and the same argmax at >= 95% of real positions (these tiny random models have
  // near-ties); gradients exist, are finite and are bf16.
  for (const std::string name : kFixtures) {
    CAPTURE(name);
    const fs::path dir = kModels / name;
    auto model = LlamaForCausalLM::from_pretrained(dir.string(), DType::bf16);
    SafetensorsFile ref = SafetensorsFile::open((dir / "reference.safetensors").string());
    LlamaBatch batch;
    batch.input_ids = ref.get("train.input_ids");
    batch.attention_mask = ref.get("train.attention_mask");
    batch.labels = ref.get("train.labels");
    CausalLMOutput out = model->forward(batch);
    CHECK(out.logits.dtype() == DType::bf16);
    Tensor ours = real_positions(out.logits.data(), batch.attention_mask).to(DType::f32);
    Tensor theirs = real_positions(ref.get("train.logits"), batch.attention_mask);
    const double logits_err = rel_error(ours, theirs);
    const double loss_err = rel_error(out.loss.data().to(DType::f32), ref.get("train.loss"));
    std::vector<int64_t> a = argmax(ours, -1).to_vector<int64_t>(), b = argmax(theirs, -1).to_vector<int64_t>();
    int64_t same = 0;
    for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
    const double agreement = static_cast<double>(same) / static_cast<double>(a.size());
    MESSAGE(name << " bf16: logits rel error " << logits_err << ", loss rel error " << loss_err << ", argmax agreement "
                 << agreement);
    CHECK(logits_err < 3e-2);
    CHECK(loss_err < 1e-2);
    CHECK(agreement >= 0.95);
    out.loss.backward();
    for (const auto& [pname, p] : model->named_parameters()) {
      CAPTURE(pname);
      REQUIRE(p.grad().defined());
      CHECK(p.grad().dtype() == DType::bf16);
      CHECK(all_finite(p.grad()));
    }
  }
}

TEST_CASE("model: the fixtures' configs give the architecture they describe") {
  auto gqa = LlamaForCausalLM::from_pretrained((kModels / "llama3_gqa").string());
  CHECK(gqa->config().rope_scaling.type == RopeScaling::Type::llama3);
  CHECK(gqa->module_at("model.layers.1.self_attn.k_proj")->state_dict().at("weight").shape() == Shape{32, 64});
  CHECK(gqa->find_module("lm_head") != nullptr);
  auto qwen = LlamaForCausalLM::from_pretrained((kModels / "qwen2_tied").string());
  CHECK(qwen->find_module("lm_head") == nullptr);
  auto sd = qwen->state_dict();
  CHECK(sd.count("model.layers.0.self_attn.q_proj.bias") == 1);
  CHECK(sd.count("model.layers.0.self_attn.o_proj.bias") == 0);
  CHECK(sd.count("lm_head.weight") == 0);
}

TEST_CASE("model: save_pretrained and from_pretrained round trip, single file and sharded") {
  for (bool tied : {false, true}) {
    Generator gen(7);
    LlamaConfig config = tiny_config(tied);
    config.rope_scaling.type = RopeScaling::Type::linear;
    config.rope_scaling.factor = 2.0;
    config.eos_token_ids = {2, 3};
    LlamaForCausalLM model(config, &gen);
    LlamaBatch batch;
    batch.input_ids = from_vector<int64_t>({4, 9, 13, 21, 7, 33}, {1, 6});
    Tensor expected = model.forward(batch).logits.data();

    TempDir one, sharded;
    model.save_pretrained(one.path.string());
    CHECK(fs::exists(one.path / "model.safetensors"));
    auto loaded = LlamaForCausalLM::from_pretrained(one.path.string());
    CHECK(loaded->config().rope_scaling.type == RopeScaling::Type::linear);
    CHECK(loaded->config().eos_token_ids == std::vector<int64_t>{2, 3});
    CHECK(loaded->config().tie_word_embeddings == tied);
    CHECK(max_abs_diff(loaded->forward(batch).logits.data(), expected) == 0);

    model.save_pretrained(sharded.path.string(), /*max_shard_bytes=*/8000);
    CHECK(fs::exists(sharded.path / "model.safetensors.index.json"));
    CHECK(!fs::exists(sharded.path / "model.safetensors"));
    auto loaded_sharded = LlamaForCausalLM::from_pretrained(sharded.path.string(), DType::f64);
    CHECK(loaded_sharded->model->embed_tokens->weight().dtype() == DType::f64);
    CHECK(max_abs_diff(loaded_sharded->forward(batch).logits.data().to(DType::f32), expected) < 1e-5);
  }
}

TEST_CASE("model: from_pretrained names every missing, unexpected and mis-shaped tensor") {
  Generator gen(8);
  LlamaForCausalLM model(tiny_config(), &gen);
  TempDir dir;
  model.save_pretrained(dir.path.string());
  auto tensors = model.ordered_state_dict();
  std::vector<std::pair<std::string, Tensor>> broken;
  for (auto& [n, t] : tensors) {
    if (n == "model.norm.weight" || n == "lm_head.weight") continue;
    broken.emplace_back(n, n == "model.layers.1.mlp.up_proj.weight" ? zeros({48, 31}) : t);
  }
  broken.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", zeros({4}));  // old checkpoints: ignored
  broken.emplace_back("model.layers.9.mlp.up_proj.weight", zeros({2}));
  save_safetensors((dir.path / "model.safetensors").string(), broken);
  std::string msg = error_of([&] { LlamaForCausalLM::from_pretrained(dir.path.string()); });
  CAPTURE(msg);
  CHECK(msg.find(dir.path.string()) != std::string::npos);
  CHECK(msg.find("2 missing: model.norm.weight, lm_head.weight") != std::string::npos);
  CHECK(msg.find("1 unexpected: model.layers.9.mlp.up_proj.weight") != std::string::npos);
  CHECK(msg.find("model.layers.1.mlp.up_proj.weight (checkpoint [48, 31], model [48, 32])") != std::string::npos);
}

TEST_CASE("model: packed documents equal separate rows, positions restarting per document") {
  Generator gen(9);
  LlamaForCausalLM model(tiny_config(), &gen);
  std::vector<int64_t> doc_a = {5, 8, 13, 2, 40}, doc_b = {7, 7, 30};
  std::vector<int64_t> packed_ids = doc_a;
  packed_ids.insert(packed_ids.end(), doc_b.begin(), doc_b.end());

  LlamaBatch packed;
  packed.input_ids = from_vector(packed_ids, {1, 8});
  packed.cu_seqlens = from_vector<int32_t>({0, 5, 8}, {3});
  packed.labels = packed.input_ids;
  CausalLMOutput p = model.forward(packed);

  LlamaBatch a, b;
  a.input_ids = from_vector(doc_a, {1, 5});
  b.input_ids = from_vector(doc_b, {1, 3});
  Tensor la = model.forward(a).logits.data(), lb = model.forward(b).logits.data();
  Tensor separate = cat(std::vector<Tensor>{la, lb}, 1);
  CHECK(max_abs_diff(p.logits.data(), separate) < 1e-5);

  // A padded batch (right padding on row 1) gives each row's logits as if alone.
  LlamaBatch padded;
  std::vector<int64_t> ids = doc_a;
  ids.insert(ids.end(), doc_b.begin(), doc_b.end());
  ids.insert(ids.end(), {0, 0});
  padded.input_ids = from_vector(ids, {2, 5});
  padded.attention_mask = from_vector<int64_t>({1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 5});
  Tensor pl = model.forward(padded).logits.data();
  CHECK(max_abs_diff(pl.select(0, 0), la.select(0, 0)) < 1e-5);
  CHECK(max_abs_diff(pl.select(0, 1).narrow(0, 0, 3), lb.select(0, 0)) < 1e-5);
}

TEST_CASE("model: activation checkpointing gives the same loss and gradients") {
  Generator gen(10);
  LlamaForCausalLM model(tiny_config(true), &gen);
  LlamaBatch batch;
  batch.input_ids = from_vector<int64_t>({3, 9, 27, 1, 4, 4, 18, 22, 6, 11, 0, 0}, {2, 6});
  batch.attention_mask = from_vector<int64_t>({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 6});
  batch.labels = from_vector<int64_t>({-100, 9, 27, 1, 4, 4, 18, 22, 6, 11, -100, -100}, {2, 6});

  CausalLMOutput plain = model.forward(batch);
  plain.loss.backward();
  std::map<std::string, Tensor> grads;
  for (auto& [n, p] : model.named_parameters()) grads[n] = p.grad().clone();
  model.zero_grad();

  model.set_gradient_checkpointing(true);
  CausalLMOutput ckpt = model.forward(batch);
  CHECK(ckpt.loss.item<float>() == plain.loss.item<float>());
  ckpt.loss.backward();
  for (auto& [n, p] : model.named_parameters()) {
    CAPTURE(n);
    REQUIRE(p.grad().defined());
    CHECK(max_abs_diff(p.grad(), grads.at(n)) <= 1e-6 * (1 + amax(abs(grads.at(n))).item<float>()));
  }
}

TEST_CASE("model: loss follows transformers' shift and ignore rules") {
  // logits [1, 3, 2]: targets are labels[1], labels[2]; labels[0] is never a target.
  Tensor logits = from_vector<float>({0, 0, 1, 3, 2, 2}, {1, 3, 2});
  Tensor labels = from_vector<int64_t>({1, 0, -100}, {1, 3});
  // Only position 0 predicts (label 0): loss = lse(0, 0) - 0 = log 2.
  CHECK(causal_lm_loss(logits, labels).item<float>() == doctest::Approx(std::log(2.0)).epsilon(1e-6));
  labels = from_vector<int64_t>({5, 0, 1}, {1, 3});
  const double l0 = std::log(2.0), l1 = std::log(std::exp(1.0) + std::exp(3.0)) - 3.0;
  CHECK(causal_lm_loss(logits, labels).item<float>() == doctest::Approx((l0 + l1) / 2).epsilon(1e-6));
}

TEST_CASE("model: malformed batches are rejected with the reason") {
  Generator gen(11);
  LlamaForCausalLM model(tiny_config(), &gen);
  LlamaBatch b;
  b.input_ids = from_vector<int64_t>({1, 2, 3, 4}, {1, 4});
  b.attention_mask = from_vector<int64_t>({1, 0, 1, 1}, {1, 4});
  CHECK(error_of([&] { model.forward(b); }).find("padding between real tokens (0 at positions 1..1)") !=
        std::string::npos);
  b.attention_mask = from_vector<int64_t>({1, 2, 1, 1}, {1, 4});
  CHECK(error_of([&] { model.forward(b); }).find("attention_mask[0, 1] is 2") != std::string::npos);
  b.attention_mask = Tensor();
  b.labels = from_vector<int64_t>({1, 2, 3}, {1, 3});
  CHECK(error_of([&] { model.forward(b); }).find("labels [1, 3] must be shaped like input_ids [1, 4]") !=
        std::string::npos);
  b.labels = Tensor();
  b.cu_seqlens = from_vector<int32_t>({0, 3}, {2});
  CHECK(error_of([&] { model.forward(b); }).find("must run from 0 to seq 4") != std::string::npos);
  b.cu_seqlens = Tensor();
  b.input_ids = from_vector<int64_t>({1, 2, 50}, {1, 3});
  CHECK(!error_of([&] { model.forward(b); }).empty());  // id out of the vocabulary
  b.input_ids = from_vector<float>({1, 2}, {1, 2});
  CHECK(error_of([&] { model.forward(b); }).find("input_ids must be [batch, seq] i32 or i64") != std::string::npos);
}
