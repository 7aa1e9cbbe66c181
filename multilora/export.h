// Export of a model with merged adapters as a plain Hugging Face checkpoint.
#pragma once

#include <cstdint>
#include <string>

#include "llama/model.h"

namespace mlr {

// Writes config.json and the weights of `model` with every adapter merged into its base weight,
// under Hugging Face's names and without adapter tensors, as LlamaForCausalLM::save_pretrained
// lays them out (transformers loads the directory as a plain LlamaForCausalLM). Adapters that were
// not merged are merged for the write and unmerged afterwards, so the model is left as it was
// (base weights to the rounding of their dtype: see AdaptedLinear::unmerge).
// SMoRA adapters cannot be merged: the error says so.
void save_merged_pretrained(LlamaForCausalLM& model, const std::string& dir,
                            uint64_t max_shard_bytes = 5'000'000'000ull);

}  // namespace mlr
