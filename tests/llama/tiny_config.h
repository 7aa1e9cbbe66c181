// The tiny LLaMA configuration the model and generation tests build random models from: grouped-query
// attention (4 query heads over 2 key/value heads), 2 layers, a 50-token vocabulary.
#pragma once

#include "llama/config.h"

inline mlr::LlamaConfig tiny_config(bool tied = false) {
  mlr::LlamaConfig c;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.vocab_size = 50;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  return c;
}
