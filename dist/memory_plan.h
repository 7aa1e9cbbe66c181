// Bytes per rank of a training run, for `mlr-train --plan` (no GPU, no weights needed): what each
// rank holds replicated (every rank a full replica: data parallel, train.zero_stage 0), and with
// the optimizer state sharded (ZeRO-1: dist/zero.h, train.zero_stage 1), the frozen base sharded
// over the ranks (dist/sharded_base.h, train.shard_frozen_base) and the gradients sharded
// (ZeRO-2: train.zero_stage 2).
//
// The model of the bytes, per rank, for W ranks and T = rows x seq_len tokens per micro-batch:
//   weights      every model parameter in the compute dtype (sharded: / W, plus two decoder layers
//                gathered at a time: the one in use and the prefetched next one)
//   adapters     the adapter parameters in their dtype (full fine-tuning: none; the weights are
//                the trainable parameters)
//   gradients    one per trainable parameter, in its dtype (ZeRO-2: / W once reduced; while
//                backward runs a rank still holds the others' gradients of the buckets not yet
//                started, and the buffers of those in flight)
//   optimizer    AdamW's two f32 moments, plus an f32 master copy when the trainable dtype is
//                narrower (ZeRO-1: / W)
//   activations  what backward keeps, per token and decoder layer (6h + 2h_kv + 3I) values of the
//                compute dtype (the inputs of the q/k/v, o, gate/up and down products, q, k, v and
//                the attention output, SwiGLU's two inputs and its output, the two norms' inputs);
//                with activation checkpointing, one h-vector per layer plus one layer's full set
//                (the recomputed block); plus the logits in the compute dtype and their f32
//                log-softmax and gradient (T x vocab x (s + 8))
//   comm buffers one flattened gradient bucket (train.grad_bucket_mib, 25 MiB by default); reduced
//                during backward, more than one can be in flight when the network is slower
//                than backward
// Not counted: the CUDA context and cuBLASLt workspaces (about 0.5-1 GiB), NCCL's own buffers,
// and the allocator's fragmentation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlr::dist {

struct PlanInputs {
  int64_t world_size = 1;
  // The model: parameter count and the shape of one decoder layer.
  int64_t parameters = 0, layer_parameters = 0, layers = 0;
  int64_t hidden = 0, kv_hidden = 0, intermediate = 0, vocab = 0;
  int64_t compute_bytes = 4;  // bytes per value of the compute dtype (f32 4, bf16/fp16 2)
  bool full_finetuning = false;
  int64_t adapter_parameters = 0;  // trainable parameters of the adapters (0 for full fine-tuning)
  int64_t adapter_bytes = 4;       // bytes per adapter value
  int64_t tokens_per_micro_batch = 0;
  bool activation_checkpointing = false;
  int64_t bucket_bytes = int64_t{25} << 20;
};

struct PlanRow {
  std::string what;
  double replicated = 0;  // bytes per rank as this build trains
  double sharded = 0;     // with the optimizer state, frozen base and gradients sharded
};

// weights, adapters, gradients, optimizer, activations, comm buffers, total (last).
std::vector<PlanRow> plan_memory(const PlanInputs& in);

}  // namespace mlr::dist
