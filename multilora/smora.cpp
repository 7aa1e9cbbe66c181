#include "multilora/smora.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/checkpoint.h"
#include "autograd/functions.h"
#include "autograd/grad_mode.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace mlr {

SmoraLinear::SmoraLinear(Variable weight, Variable bias, const SmoraConfig& config, Generator& gen)
    : AdaptedLinear(std::move(weight), std::move(bias)), config_(config), dropout_gen_(config.dropout_seed) {
  MLR_CHECK(config.r > 0, "smora: rank must be positive, got {}", config.r);
  MLR_CHECK(config.top_k > 0 && config.top_k <= config.r, "smora: top_k {} must be in [1, r = {}]", config.top_k,
            config.r);
  MLR_CHECK(config.dropout >= 0.0 && config.dropout < 1.0, "smora: dropout {} is outside [0, 1)", config.dropout);
  if (config.dtype) adapter_dtype_ = *config.dtype;
  TensorOptions opts(adapter_dtype_, weight_.device());
  Tensor a = empty({config.r, in_features()}, opts);
  kaiming_uniform_(a, std::sqrt(5.0), gen);
  Tensor wg = empty({config.r, in_features()}, opts);
  kaiming_uniform_(wg, std::sqrt(5.0), gen);
  lora_A_ = Variable::leaf(a, true, "lora_A.weight");
  lora_B_ = Variable::leaf(zeros({out_features(), config.r}, opts), true, "lora_B.weight");
  router_ = Variable::leaf(wg, true, "smora_router.weight");
  bias_sel_ = Variable(zeros({config.r}, TensorOptions(DType::f32, weight_.device())));
  step_counts_.assign(static_cast<size_t>(config.r), 0);
  total_counts_.assign(static_cast<size_t>(config.r), 0);
}

Variable smora_scores(const Variable& x, const Variable& router, SmoraScore score) {
  Variable logits = linear(x, router);
  return score == SmoraScore::sigmoid ? sigmoid(logits) : softmax(logits, -1);
}

Variable smora_update(const Variable& x, const Variable& A, const Variable& B, const Variable& s,
                      const Tensor& selected, double gate_scale) {
  MLR_CHECK(selected.dtype() == DType::boolean && selected.shape() == s.shape(),
            "smora: selection mask must be bool {}, got {} {}", shape_str(s.shape()), dtype_name(selected.dtype()),
            shape_str(selected.shape()));
  // g = gate_scale * (s o m) / sum(s o m): the k selected scores renormalised to sum gate_scale.
  Variable kept = mul(s, Variable(cast(selected, s.dtype())));
  Variable gates = mul(div(kept, sum(kept, {-1}, true)), gate_scale);
  return linear(mul(linear(x, A), gates), B);
}

Variable SmoraLinear::scores(const Variable& x) const { return smora_scores(x, router_, config_.score); }

Tensor SmoraLinear::select_ranks(const Tensor& scores_tensor) const {
  // Top-k of score + bias per token (scores_tensor [..., r]); ties go to the lower rank index. On
  // the scores' device: no host round trip per layer on a GPU.
  MLR_CHECK(scores_tensor.dim() >= 1 && scores_tensor.size(-1) == config_.r,
            "smora: scores of shape {} do not end in r = {}", shape_str(scores_tensor.shape()), config_.r);
  return topk_mask(scores_tensor, config_.top_k, bias_sel_.data());
}

void SmoraLinear::flush_counts() const {
  if (!pending_counts_.defined()) return;
  const std::vector<int64_t> c = pending_counts_.to_vector<int64_t>();
  for (size_t i = 0; i < c.size(); ++i) step_counts_[i] += c[i];
  pending_counts_ = Tensor();
}

Variable SmoraLinear::forward(const Variable& x) {
  Variable base = base_forward(x);
  if (merged_) return base;  // unreachable: merge() refuses SMoRA
  Variable xs = to_dtype(x, lora_A_.dtype());
  Variable s = scores(xs);
  Tensor selected = select_ranks(s.data());
  if (training_ && !in_checkpoint_recompute()) {
    // Per-rank token counts for load balancing (column sums of the mask, i64), in train mode
    // whatever the grad mode, once per forward (not again when a checkpoint reruns this layer).
    // They stay on the device until read (flush_counts).
    Tensor per_rank = sum(selected.reshape({-1, config_.r}), {0});
    pending_counts_ = pending_counts_.defined() ? add(pending_counts_, per_rank) : per_rank;
  }
  Variable xa = training_ ? adapter_dropout(xs, config_.dropout, dropout_gen_) : xs;
  return add_update(base, smora_update(xa, lora_A_, lora_B_, s, selected, gate_scale()));
}

Variable SmoraLinear::forward_with_selection(const Variable& x, const Tensor& selected) {
  Variable base = base_forward(x);
  Variable xs = to_dtype(x, lora_A_.dtype());
  Variable s = scores(xs);
  Variable xa = training_ ? adapter_dropout(xs, config_.dropout, dropout_gen_) : xs;
  return add_update(base, smora_update(xa, lora_A_, lora_B_, s, selected, gate_scale()));
}

std::vector<std::pair<std::string, Variable>> SmoraLinear::named_tensors() const {
  return {{"lora_A.weight", lora_A_},
          {"lora_B.weight", lora_B_},
          {"smora_router.weight", router_},
          {"smora_bias", bias_sel_}};
}

nlohmann::json SmoraLinear::config_json() const {
  return {{"peft_type", "SMORA"},
          {"r", config_.r},
          {"top_k", config_.top_k},
          {"lora_alpha", config_.alpha},
          {"gate_scale", gate_scale()},
          {"score_function", config_.score == SmoraScore::sigmoid ? "sigmoid" : "softmax"},
          {"bias_update_rate", config_.bias_update_rate},
          {"lora_dropout", config_.dropout},
          {"use_rslora", false}};
}

Tensor SmoraLinear::delta_weight() const {
  throw Error(
      "smora: cannot merge or take a dense update: SMoRA's update B diag(g(x)) A depends on the input "
      "through the router's per-token top-k gates, so no single weight matrix reproduces it");
}

bool SmoraLinear::rebind_state(const std::string& name, const Variable& handle) {
  if (name != "smora_bias") return false;
  MLR_CHECK(handle.shape() == bias_sel_.shape(), "smora: selection bias handle has shape {}, expected {}",
            shape_str(handle.shape()), shape_str(bias_sel_.shape()));
  bias_sel_ = handle;
  return true;
}

void SmoraLinear::update_load_balance() {
  // b_i += u * sign(mean count - count_i): under-used ranks become likelier to be selected.
  flush_counts();
  const double mean = std::accumulate(step_counts_.begin(), step_counts_.end(), 0.0) / static_cast<double>(config_.r);
  Tensor bias = bias_sel_.data();
  std::vector<double> b = bias.to_vector<double>();
  for (size_t i = 0; i < b.size(); ++i) {
    double d = mean - static_cast<double>(step_counts_[i]);
    double sign = d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0);
    b[i] += config_.bias_update_rate * sign;
    total_counts_[i] += step_counts_[i];
    step_counts_[i] = 0;
  }
  bias.copy_(from_vector(b, {config_.r}));
}

SmoraLoadStats SmoraLinear::load_stats() const {
  flush_counts();
  SmoraLoadStats st;
  st.step_counts = step_counts_;
  st.total_counts = total_counts_;
  st.bias = bias_sel_.data().to_vector<double>();
  const double total = std::accumulate(total_counts_.begin(), total_counts_.end(), 0.0);
  const double mean = total / static_cast<double>(config_.r);
  double var = 0.0, mx = 0.0;
  for (int64_t c : total_counts_) {
    double v = static_cast<double>(c);
    st.load_fraction.push_back(total > 0 ? v / total : 0.0);
    var += (v - mean) * (v - mean);
    mx = std::max(mx, v);
  }
  var /= static_cast<double>(config_.r);
  st.max_over_mean = mean > 0 ? mx / mean : 0.0;
  st.coefficient_of_variation = mean > 0 ? std::sqrt(var) / mean : 0.0;
  return st;
}

void SmoraLinear::set_total_counts(const std::vector<int64_t>& counts) {
  MLR_CHECK(counts.size() == total_counts_.size(), "SMoRA: {} load counts given for {} ranks", counts.size(),
            total_counts_.size());
  for (int64_t c : counts) MLR_CHECK(c >= 0, "SMoRA: negative load count {}", c);
  total_counts_ = counts;
}

}  // namespace mlr
