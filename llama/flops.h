// FLOPs of training a LLaMA-family model, counted from its shapes: the figure MFU divides by and the
// GEMM bound of the benchmarks (bench/, scripts/bench/cpu_vs_pytorch.py counts the same way).
//
// Per trained token, with W the weights of every GEMM (q, k, v, o, gate, up, down of each layer, and
// lm_head; the embedding is a lookup, no GEMM):
//   frozen base (adapters):  4 W   forward (2 W) and input gradients (2 W)
//   full fine-tuning:        6 W   and weight gradients (2 W)
//   adapter weights A:      +6 A   (they train: forward, input and weight gradients)
//   attention:              +3 x causal forward = 3 x layers x 2 x 2 x (seq_len / 2) x heads x head_dim
//                            (QK^T and PV over on average seq_len / 2 keys; backward twice forward)
#pragma once

#include <cstdint>

#include "llama/config.h"

namespace mlr {

// Weights of the model's GEMMs (see above).
int64_t gemm_weight_count(const LlamaConfig& config);

// adapter_parameters: trainable adapter weights used per token (0 for full fine-tuning).
double training_flops_per_token(const LlamaConfig& config, int64_t seq_len, bool full_fine_tuning,
                                int64_t adapter_parameters);

}  // namespace mlr
