#include "dist/memory_plan.h"

#include <algorithm>

#include "base/error.h"

namespace mlr::dist {

std::vector<PlanRow> plan_memory(const PlanInputs& in) {
  MLR_CHECK(in.world_size >= 1 && in.parameters > 0 && in.layers > 0 && in.tokens_per_micro_batch > 0,
            "memory plan: world size {}, {} parameters, {} layers, {} tokens per micro-batch", in.world_size,
            in.parameters, in.layers, in.tokens_per_micro_batch);
  const double w = static_cast<double>(in.world_size);
  const double s = static_cast<double>(in.compute_bytes);
  const double params = static_cast<double>(in.parameters);
  const double trainable = in.full_finetuning ? params : static_cast<double>(in.adapter_parameters);
  const double train_bytes = in.full_finetuning ? s : static_cast<double>(in.adapter_bytes);
  std::vector<PlanRow> rows;

  PlanRow weights{"weights", params * s, 0};
  // Sharded: 1/W of every parameter, plus two gathered decoder layers (in use and prefetched);
  // full fine-tuning trains them, so they stay whole (ZeRO-3 is not planned).
  weights.sharded = in.full_finetuning || in.world_size == 1
                        ? weights.replicated
                        : params * s / w + 2.0 * static_cast<double>(in.layer_parameters) * s;
  rows.push_back(weights);

  const double adapters = in.full_finetuning ? 0.0 : trainable * train_bytes;
  rows.push_back({"adapters", adapters, adapters});

  const double grads = trainable * train_bytes;
  rows.push_back({"gradients", grads, grads / w});  // ZeRO-2

  const double optimizer = trainable * (8.0 + (train_bytes < 4 ? 4.0 : 0.0));
  rows.push_back({"optimizer (AdamW)", optimizer, optimizer / w});  // ZeRO-1

  const double t = static_cast<double>(in.tokens_per_micro_batch);
  const double per_layer = static_cast<double>(6 * in.hidden + 2 * in.kv_hidden + 3 * in.intermediate) * s;
  const double layers = static_cast<double>(in.layers);
  const double kept = in.activation_checkpointing ? layers * static_cast<double>(in.hidden) * s + per_layer
                                                  : layers * per_layer;
  const double logits = static_cast<double>(in.vocab) * (s + 8.0);
  const double activations = t * (kept + logits);
  rows.push_back({"activations", activations, activations});

  const double comm = in.world_size > 1 ? std::min(static_cast<double>(in.bucket_bytes), grads) : 0.0;
  rows.push_back({"comm buffers", comm, comm});

  PlanRow total{"total", 0, 0};
  for (const PlanRow& r : rows) {
    total.replicated += r.replicated;
    total.sharded += r.sharded;
  }
  rows.push_back(total);
  return rows;
}

}  // namespace mlr::dist
