// DoRA, weight-decomposed low-rank adaptation (Liu et al. 2024, arXiv 2402.09353), as PEFT's
// LoraConfig(use_dora=True) computes it for a Linear:
//   V = W0 + s B A          A, B, s exactly as LoRA's (lora.h: s = alpha / r, or alpha / sqrt(r))
//   n = ||V||_row           [out], the L2 norm of each output row of V, treated as a constant:
//                           no gradient flows through it (the paper's section 4.3, and PEFT)
//   m                       [out] the trainable magnitude, initialised to n (= ||W0||_row, B being 0),
//                           so the layer starts as W0 x + bias
//   y = W0 x + bias + (m/n - 1) o W0 x' + (m/n) o s B A x'
// where x' is the adapter input: x itself, or in train mode with dropout the dropped-out x (PEFT
// then recomputes W0 x' for the first added term; the plain W0 x + bias keeps the undropped input).
// Without dropout this is bias + (m/n) o V x. The gradient reaches m, A and B (and x).
// Merge: W0 <- (m/n) o V, with n from the unmerged weight; unmerge divides back by the m/n kept
// from the merge, as PEFT does.
// Files: PEFT's LORA layout with "use_dora": true and one more tensor per module,
// <module>.lora_magnitude_vector [out].
// On a base whose weights have no values when the adapters are made (train.shard_frozen_base:
// each rank holds 1/world of them, dist/sharded_base.h), the adapter is made awaiting its base
// weight: m holds NaN and every read of it is an error until init_from_base_weight() computes
// ||W0||_row (its layer gathered) or a file gives m (load_adapter). The forward's n needs W0 too,
// which the model gathers around every run of a layer, recomputation included.
#pragma once

#include "multilora/lora.h"

namespace mlr {

struct DoraConfig : LoraConfig {
  const AdapterType& type() const override;
  std::unique_ptr<AdaptedLinear> make_adapter(Variable weight, Variable bias, Generator& init,
                                              uint64_t dropout_seed) const override;
  std::unique_ptr<AdaptedLinear> make_adapter_awaiting_base_weight(Variable weight, Variable bias, Generator& init,
                                                                   uint64_t dropout_seed) const override;
};

// The registration: YAML adapter.type "dora" (LoRA's keys), adapter_config.json with peft_type
// LORA and "use_dora": true.
const AdapterType& dora_adapter_type();

// n = ||W0 + s B A||_row [out], in f32 (f64 for an f64 base); a constant.
Tensor dora_weight_norm(const Tensor& w0, const Tensor& A, const Tensor& B, double scaling);
// The DoRA output minus W0 x + bias: (m/n - 1) o base_term + (m/n) o s B A x', with base_term =
// W0 x' (without bias) and x' the adapter input, both in the adapter dtype; norm = n.
Variable dora_update(const Variable& base_term, const Variable& x, const Variable& A, const Variable& B,
                     const Variable& magnitude, const Tensor& norm, double scaling);

class DoraLinear : public LoraLinear {
 public:
  // A, B as LoRA's (A Kaiming-uniform from `gen`, B zeros); m = ||W0||_row, or with
  // `awaiting_base_weight` not yet (W0 is not read; see above).
  DoraLinear(Variable weight, Variable bias, const LoraConfig& config, Generator& gen,
             bool awaiting_base_weight = false);

  const AdapterType& type() const override { return dora_adapter_type(); }
  Variable forward(const Variable& x) override;
  // lora_A.weight [r, in], lora_B.weight [out, r], lora_magnitude_vector [out].
  std::vector<std::pair<std::string, Variable>> named_tensors() const override;
  nlohmann::json config_json() const override;  // LoRA's with "use_dora": true
  // (m/n) o V - W0: the dense change of the weight (from the unmerged W0 also when merged).
  Tensor delta_weight() const override;

  // m; throws while it awaits the base weight.
  const Variable& magnitude() const;
  // n for the current adapter values and W0 (which must be unmerged and hold its values).
  Tensor weight_norm() const;

 protected:
  void compute_from_base_weight() override;  // m = n (= ||W0||_row while B is 0)
  Tensor merged_weight(const Tensor& w0) override;
  Tensor unmerged_weight(const Tensor& merged) override;

 private:
  // W0 from the merged weight and the factor m/n kept at merge.
  Tensor unmerged_from(const Tensor& merged) const;

  Variable magnitude_;  // [out]
  Tensor merge_factor_;  // m/n at merge time [out] (f32, f64 for an f64 base); undefined unmerged
};

}  // namespace mlr
