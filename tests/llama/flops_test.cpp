// Training FLOPs per token counted from a LLaMA's shapes (llama/flops.h): the figure MFU and the
// benchmarks' GEMM bound divide by, checked on the 125M shape by hand.
#include <doctest/doctest.h>

#include "llama/flops.h"

using namespace mlr;

namespace {
// hidden 768, 12 layers, 12 query / 4 key-value heads (head_dim 64), intermediate 2048, vocab 32000.
LlamaConfig llama_125m() {
  LlamaConfig c;
  c.hidden_size = 768;
  c.num_hidden_layers = 12;
  c.num_attention_heads = 12;
  c.num_key_value_heads = 4;
  c.intermediate_size = 2048;
  c.vocab_size = 32000;
  return c;
}
}  // namespace

TEST_CASE("training FLOPs per token: GEMM weights, adapters and causal attention from the shapes") {
  const LlamaConfig c = llama_125m();
  // per layer: q 768x768, k and v 768x256, o 768x768, gate/up/down 3 x 768x2048 = 6,291,456;
  // 12 layers + lm_head 768 x 32000 (the embedding is a lookup: not counted).
  CHECK(gemm_weight_count(c) == 12 * 6291456 + 768 * 32000);
  // attention: 3 x 12 layers x 2 GEMMs x 2 FLOPs x 128 keys on average x 768 = 14,155,776
  const double attention = 14155776.0;
  CHECK(training_flops_per_token(c, 256, false, 0) == doctest::Approx(4.0 * 100073472 + attention));
  CHECK(training_flops_per_token(c, 256, true, 0) == doctest::Approx(6.0 * 100073472 + attention));
  // LoRA r16 on q, k, v, o: 16 x (768+768 + 768+256 + 768+256 + 768+768) x 12 = 983,040 weights
  CHECK(training_flops_per_token(c, 256, false, 983040) == doctest::Approx(420347904.0));
  // attention grows with the sequence, the rest does not
  CHECK(training_flops_per_token(c, 512, false, 0) - training_flops_per_token(c, 256, false, 0) ==
        doctest::Approx(attention));
}

TEST_CASE("training FLOPs per token: an explicit head_dim and multi-head attention") {
  LlamaConfig c = llama_125m();
  c.num_key_value_heads = 12;  // MHA: k and v as wide as q
  c.head_dim = 128;            // q width 1536, not the hidden size
  const int64_t per_layer = 768 * (1536 + 2 * 1536) + 1536 * 768 + 3 * 768 * 2048;
  CHECK(gemm_weight_count(c) == 12 * per_layer + 768 * 32000);
}
