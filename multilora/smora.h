// SMoRA (Zhao et al. 2025, arXiv 2501.15103): a rank-r LoRA whose r ranks are experts.
//   scores  s = sigmoid(W_g x)  (softmax over the r ranks as an option)      W_g [r, in]
//   select  K = top-k ranks of s + b  (b: the load-balancing bias; it affects selection only)
//   gates   g_j = gate_scale * s_j / sum_{l in K} s_l  for j in K, else 0   (sum of gates = gate_scale)
//   update  B diag(g) A dropout(x)                                            A [r, in], B [out, r]
// gate_scale defaults to alpha: k selected gates summing to alpha give each rank alpha / k on
// average, the per-rank weight of a rank-k LoRA with scaling alpha / k.
// Load balancing without an auxiliary loss: while training, forward counts how many tokens pick
// each rank; update_load_balance() (call it after each optimizer step) does
//   b_i += u * sign(mean_j count_j - count_i)          (u = 1e-5 by default)
// and starts a new count. load_stats() reports the counts.
//
// Memory of this path: it computes all r ranks for every token and masks the gates, so the
// forward keeps A x and the gates as [tokens, r] tensors (plus W_g x and the scores, [tokens, r]
// each) and does r/k times the FLOPs of the selected ranks. With r << in, out that is small
// next to the [tokens, in] input the adapter saves anyway; a gather-based kernel computing only
// the k selected ranks is the GPU path's job.
// Selection (topk_mask) runs on the scores' device and is not differentiable; the gradient flows
// through the selected gates' values. The per-rank counts accumulate on the device and reach the
// host only when read (update_load_balance, load_stats): no synchronisation per layer.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "multilora/adapter.h"
#include "multilora/registry.h"
#include "tensor/nn_ops.h"

namespace mlr {

// The router's score function (sigmoid or softmax over the ranks): the one the routed update op takes.
using SmoraScore = RouterScore;

struct SmoraConfig : AdapterConfig {
  int64_t r = 8;
  int64_t top_k = 2;
  double alpha = 8.0;
  std::optional<double> gate_scale;  // default alpha
  SmoraScore score = SmoraScore::sigmoid;
  double bias_update_rate = 1e-5;    // u
  double dropout = 0.0;
  std::optional<DType> dtype;
  uint64_t dropout_seed = 0;

  const AdapterType& type() const override;
  std::unique_ptr<AdaptedLinear> make_adapter(Variable weight, Variable bias, Generator& init,
                                              uint64_t dropout_seed) const override;
  nlohmann::json yaml_fields() const override;
};

// The registration: YAML adapter.type "smora" (keys r, alpha, dropout, top_k, router,
// balance_rate), peft_type SMORA.
const AdapterType& smora_adapter_type();
SmoraConfig smora_config_from_json(const nlohmann::json& config);

// Router scores [..., r]: sigmoid(W_g x), or softmax over the ranks.
Variable smora_scores(const Variable& x, const Variable& router, SmoraScore score);
// The update alone for a given selection (bool [..., r], k true per token):
//   g = gate_scale * (s o m) / sum(s o m),  update = B (g o (A x))
Variable smora_update(const Variable& x, const Variable& A, const Variable& B, const Variable& scores,
                      const Tensor& selected, double gate_scale);

struct SmoraLoadStats {
  std::vector<int64_t> step_counts;   // tokens per rank since the last update_load_balance()
  std::vector<int64_t> total_counts;  // tokens per rank over all finished steps
  std::vector<double> bias;           // the selection bias b
  // Over total_counts: each rank's share of selections, and max / mean load (1 = balanced).
  std::vector<double> load_fraction;
  double max_over_mean = 0.0;
  double coefficient_of_variation = 0.0;  // std / mean of total_counts
};

class SmoraLinear : public AdaptedLinear {
 public:
  // A and W_g Kaiming-uniform (a = sqrt 5) from `gen`, B zeros, bias zeros.
  SmoraLinear(Variable weight, Variable bias, const SmoraConfig& config, Generator& gen);

  const AdapterType& type() const override { return smora_adapter_type(); }
  Generator& dropout_generator() override { return dropout_gen_; }
  Variable forward(const Variable& x) override;
  // The forward with a given selection mask [..., r] (bool, k true per token) instead of top-k
  // (selection being piecewise constant, what gradcheck differentiates); counts no loads.
  Variable forward_with_selection(const Variable& x, const Tensor& selected);
  // The top-k selection (by score + bias) forward makes from router scores [..., r]: bool [..., r].
  Tensor select_ranks(const Tensor& scores) const;
  // Router scores sigmoid(W_g x) (or softmax) [..., r], x in the adapter dtype.
  Variable scores(const Variable& x) const;

 private:
  // The scores as a plain tensor (no graph): forward's gradient reaches the router inside the
  // routed update (autograd's routed_lowrank).
  Tensor score_tensor(const Variable& xs) const;

 public:

  // lora_A.weight [r, in], lora_B.weight [out, r], smora_router.weight [r, in], smora_bias [r].
  std::vector<std::pair<std::string, Variable>> named_tensors() const override;
  nlohmann::json config_json() const override;
  // Throws: the update depends on the input through the router.
  Tensor delta_weight() const override;
  std::optional<std::string> merge_unsupported_reason() const override;

  // Trainer hooks: the load-balancing update after each step; the cumulative counts in checkpoints
  // (trainer_state.json's "smora_total_counts"); max/mean load and its coefficient of variation.
  void after_optimizer_step() override { update_load_balance(); }
  std::string training_state_key() const override { return "smora_total_counts"; }
  nlohmann::json training_state() const override { return total_counts_; }
  void restore_training_state(const nlohmann::json& state) override;
  std::vector<Metric> step_metrics() const override;
  std::vector<int64_t>* step_counts_to_sum() override {
    flush_counts();
    return &step_counts_;
  }

  void update_load_balance();
  SmoraLoadStats load_stats() const;
  // The cumulative per-rank counts, for a training checkpoint (the selection bias itself is an
  // adapter tensor and is saved with the adapter file).
  const std::vector<int64_t>& total_counts() const { return total_counts_; }
  void set_total_counts(const std::vector<int64_t>& counts);

  const SmoraConfig& config() const { return config_; }
  double gate_scale() const { return config_.gate_scale.value_or(config_.alpha); }
  const Variable& lora_A() const { return lora_A_; }
  const Variable& lora_B() const { return lora_B_; }
  const Variable& router() const { return router_; }
  const Tensor& selection_bias() const { return bias_sel_.data(); }
  // Uses `handle` (a module buffer holding the same values) as the selection bias from now on.
  bool rebind_state(const std::string& name, const Variable& handle) override;
  bool is_state(const std::string& name) const override { return name == "smora_bias"; }

 private:

  SmoraConfig config_;
  Variable lora_A_;
  Variable lora_B_;
  Variable router_;
  Variable bias_sel_;  // [r], f32, a constant: not trained by gradient
  // Adds the device-side counts of the forwards since the last flush to step_counts_.
  void flush_counts() const;

  mutable std::vector<int64_t> step_counts_;
  mutable Tensor pending_counts_;  // i64 [r] on the adapter's device, or undefined
  std::vector<int64_t> total_counts_;
  Generator dropout_gen_;
};

}  // namespace mlr
