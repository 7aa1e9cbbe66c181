#include "llama/flops.h"

namespace mlr {

int64_t gemm_weight_count(const LlamaConfig& c) {
  const int64_t head_dim = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.num_attention_heads;
  const int64_t kv_heads = c.num_key_value_heads > 0 ? c.num_key_value_heads : c.num_attention_heads;
  const int64_t q = c.num_attention_heads * head_dim, kv = kv_heads * head_dim;
  const int64_t attention = c.hidden_size * (q + 2 * kv) + q * c.hidden_size;
  const int64_t mlp = 3 * c.hidden_size * c.intermediate_size;
  return c.num_hidden_layers * (attention + mlp) + c.hidden_size * c.vocab_size;
}

double training_flops_per_token(const LlamaConfig& c, int64_t seq_len, bool full_fine_tuning,
                                int64_t adapter_parameters) {
  const int64_t head_dim = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.num_attention_heads;
  const double attention_forward = static_cast<double>(c.num_hidden_layers) * 2.0 * 2.0 *
                                   (static_cast<double>(seq_len) / 2.0) *
                                   static_cast<double>(c.num_attention_heads * head_dim);
  return (full_fine_tuning ? 6.0 : 4.0) * static_cast<double>(gemm_weight_count(c)) +
         6.0 * static_cast<double>(adapter_parameters) + 3.0 * attention_forward;
}

}  // namespace mlr
