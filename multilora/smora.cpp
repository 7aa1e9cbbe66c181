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
  // g = gate_scale * (s o m) / sum(s o m): the k selected scores renormalised to sum gate_scale;
  // y = (g o (x A^T)) B^T, over the selected ranks only where the device kernel can (the CPU).
  const int64_t r = A.shape()[0], in = A.shape()[1], out = B.shape()[0];
  Shape out_shape = x.shape();
  out_shape.back() = out;
  const int64_t tokens = x.numel() / std::max<int64_t>(in, 1);
  Variable y = gated_lowrank(reshape(x, {tokens, in}), A, B, reshape(s, {tokens, r}), selected.reshape({tokens, r}),
                             gate_scale);
  return reshape(y, out_shape);
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

namespace {

// The update with the router inside one op (autograd's routed_lowrank): the scores are computed
// here without a graph (the selection needs them first) and their gradient flows to the router
// and x inside the op, over the selected entries only on the CPU. x [..., in], scores and the
// selection [..., r].
Variable routed_update(const Variable& xs, const Variable& xa, const Variable& A, const Variable& B,
                       const Variable& router, const Tensor& scores, const Tensor& selected, double gate_scale,
                       SmoraScore score) {
  const int64_t r = A.shape()[0], in = A.shape()[1], out = B.shape()[0];
  Shape out_shape = xs.shape();
  out_shape.back() = out;
  const int64_t tokens = xs.numel() / std::max<int64_t>(in, 1);
  const Variable xs2 = reshape(xs, {tokens, in});
  const Variable xa2 = xa.is_same(xs) ? xs2 : reshape(xa, {tokens, in});
  Variable y = routed_lowrank(xa2, xs2, A, B, router, scores.reshape({tokens, r}), selected.reshape({tokens, r}),
                              gate_scale, score);
  return reshape(y, out_shape);
}

}  // namespace

Tensor SmoraLinear::score_tensor(const Variable& xs) const {
  NoGradGuard no_grad;
  return scores(xs).data();
}

Variable SmoraLinear::forward(const Variable& x) {
  Variable base = base_forward(x);
  if (merged_) return base;  // unreachable: merge() refuses SMoRA
  Variable xs = to_dtype(x, lora_A_.dtype());
  Tensor s = score_tensor(xs);
  Tensor selected = select_ranks(s);
  if (training_ && !in_checkpoint_recompute()) {
    // Per-rank token counts for load balancing (column sums of the mask, i64), in train mode
    // whatever the grad mode, once per forward (not again when a checkpoint reruns this layer).
    // They stay on the device until read (flush_counts).
    Tensor per_rank = sum(selected.reshape({-1, config_.r}), {0});
    pending_counts_ = pending_counts_.defined() ? add(pending_counts_, per_rank) : per_rank;
  }
  Variable xa = training_ ? adapter_dropout(xs, config_.dropout, dropout_gen_) : xs;
  return add_update(base, routed_update(xs, xa, lora_A_, lora_B_, router_, s, selected, gate_scale(), config_.score));
}

Variable SmoraLinear::forward_with_selection(const Variable& x, const Tensor& selected) {
  Variable base = base_forward(x);
  Variable xs = to_dtype(x, lora_A_.dtype());
  Tensor s = score_tensor(xs);
  Variable xa = training_ ? adapter_dropout(xs, config_.dropout, dropout_gen_) : xs;
  return add_update(base, routed_update(xs, xa, lora_A_, lora_B_, router_, s, selected, gate_scale(), config_.score));
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
          {"lora_alpha", json_number(config_.alpha)},
          {"gate_scale", json_number(gate_scale())},
          {"score_function", config_.score == SmoraScore::sigmoid ? "sigmoid" : "softmax"},
          {"bias_update_rate", config_.bias_update_rate},
          {"lora_dropout", config_.dropout},
          {"use_rslora", false}};
}

std::optional<std::string> SmoraLinear::merge_unsupported_reason() const {
  return "smora: cannot merge or take a dense update: SMoRA's update B diag(g(x)) A depends on the input "
         "through the router's per-token top-k gates, so no single weight matrix reproduces it";
}

Tensor SmoraLinear::delta_weight() const { throw Error(*merge_unsupported_reason()); }

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

void SmoraLinear::restore_training_state(const nlohmann::json& state) {
  MLR_CHECK(state.is_array(), "SMoRA: the saved load counts are {}, expected an array", state.dump());
  std::vector<int64_t> counts;
  for (const nlohmann::json& c : state) {
    MLR_CHECK(c.is_number_integer(), "SMoRA: the saved load count {} is not an integer", c.dump());
    counts.push_back(c.get<int64_t>());
  }
  set_total_counts(counts);
}

std::vector<AdaptedLinear::Metric> SmoraLinear::step_metrics() const {
  const SmoraLoadStats s = load_stats();
  return {{"smora_max_over_mean_load", s.max_over_mean, "smora/max_over_mean_load"},
          {"smora_load_cv", s.coefficient_of_variation, ""}};
}

const AdapterType& SmoraConfig::type() const { return smora_adapter_type(); }

std::unique_ptr<AdaptedLinear> SmoraConfig::make_adapter(Variable weight, Variable bias, Generator& init,
                                                         uint64_t seed) const {
  SmoraConfig c = *this;
  c.dropout_seed = seed;
  return std::make_unique<SmoraLinear>(std::move(weight), std::move(bias), c, init);
}

nlohmann::json SmoraConfig::yaml_fields() const {
  return {{"r", r},
          {"alpha", alpha},
          {"dropout", dropout},
          {"top_k", top_k},
          {"router", score == SmoraScore::sigmoid ? "sigmoid" : "softmax"},
          {"balance_rate", bias_update_rate}};
}

SmoraConfig smora_config_from_json(const nlohmann::json& config) {
  MLR_CHECK(json_peft_type_is(config, "SMORA"), "adapter_config.json: peft_type is {}, expected SMORA",
            config.value("peft_type", nlohmann::json()).dump());
  SmoraConfig c;
  c.r = json_field<int64_t>(config, "r", "a positive integer");
  c.top_k = json_field<int64_t>(config, "top_k", "a positive integer");
  c.alpha = json_field<double>(config, "lora_alpha", "a number");
  if (config.contains("gate_scale")) c.gate_scale = json_field<double>(config, "gate_scale", "a number");
  std::string score = json_field_or<std::string>(config, "score_function", "sigmoid", "\"sigmoid\" or \"softmax\"");
  MLR_CHECK(score == "sigmoid" || score == "softmax",
            "adapter_config.json: score_function \"{}\" is not sigmoid or softmax", score);
  c.score = score == "softmax" ? SmoraScore::softmax : SmoraScore::sigmoid;
  c.bias_update_rate = json_field_or<double>(config, "bias_update_rate", 1e-5, "a number");
  c.dropout = json_field_or<double>(config, "lora_dropout", 0.0, "a number");
  MLR_CHECK(c.r > 0 && c.top_k >= 1 && c.top_k <= c.r, "adapter_config.json: top_k = {} must be in [1, r = {}]",
            c.top_k, c.r);
  return c;
}

namespace {

std::shared_ptr<const AdapterConfig> smora_config_from_yaml(const ConfigFields& section) {
  auto c = std::make_shared<SmoraConfig>();
  c->alpha = 16;  // the run configuration's defaults
  c->top_k = 4;
  std::string router = "sigmoid";
  section.integer("r", c->r);
  section.number("alpha", c->alpha);
  section.number("dropout", c->dropout);
  section.integer("top_k", c->top_k);
  section.str("router", router);
  section.number("balance_rate", c->bias_update_rate);
  section.one_of("router", router, {"sigmoid", "softmax"});
  c->score = router == "softmax" ? SmoraScore::softmax : SmoraScore::sigmoid;
  section.require(c->r > 0, "r", fmt::format("must be positive, got {}", c->r));
  section.require(c->alpha > 0, "alpha", fmt::format("must be positive, got {}", c->alpha));
  section.require(c->dropout >= 0 && c->dropout < 1, "dropout", fmt::format("must be in [0, 1), got {}", c->dropout));
  section.require(c->top_k >= 1 && c->top_k <= c->r, "top_k",
                  fmt::format("must be in [1, r = {}], got {}", c->r, c->top_k));
  return c;
}

}  // namespace

const AdapterType& smora_adapter_type() {
  static const AdapterType type{
      .name = "smora",
      .display_name = "SMoRA",
      .peft_type = "SMORA",
      .reads_file = nullptr,
      .from_json = [](const nlohmann::json& config) -> std::shared_ptr<const AdapterConfig> {
        return std::make_shared<SmoraConfig>(smora_config_from_json(config));
      },
      .yaml_keys = {"r", "alpha", "dropout", "top_k", "router", "balance_rate"},
      .from_yaml = smora_config_from_yaml,
      .structural_fields = {"peft_type", "r", "lora_alpha", "use_rslora", "top_k", "gate_scale", "score_function"},
  };
  return type;
}

}  // namespace mlr
