#include "multilora/multilora.h"

#include <cmath>

#include "autograd/functions.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace mlr {

std::vector<int64_t> multilora_ranks(const MultiLoraConfig& config) {
  if (!config.ranks.empty()) {
    for (size_t i = 0; i < config.ranks.size(); ++i)
      MLR_CHECK(config.ranks[i] > 0, "multilora: rank of module {} is {}, must be positive", i, config.ranks[i]);
    return config.ranks;
  }
  MLR_CHECK(config.n_modules > 0, "multilora: n_modules must be positive, got {}", config.n_modules);
  MLR_CHECK(config.r >= config.n_modules, "multilora: total rank {} cannot be split over {} modules (each needs >= 1)",
            config.r, config.n_modules);
  std::vector<int64_t> ranks(static_cast<size_t>(config.n_modules), config.r / config.n_modules);
  for (int64_t i = 0; i < config.r % config.n_modules; ++i) ranks[static_cast<size_t>(i)] += 1;
  return ranks;
}

MultiLoraLinear::MultiLoraLinear(Variable weight, Variable bias, const MultiLoraConfig& config, Generator& gen)
    : AdaptedLinear(std::move(weight), std::move(bias)),
      config_(config),
      ranks_(multilora_ranks(config)),
      dropout_gen_(config.dropout_seed) {
  MLR_CHECK(config.dropout >= 0.0 && config.dropout < 1.0, "multilora: dropout {} is outside [0, 1)",
            config.dropout);
  if (config.dtype) adapter_dtype_ = *config.dtype;
  config_.n_modules = static_cast<int64_t>(ranks_.size());
  config_.r = 0;
  for (int64_t ri : ranks_) config_.r += ri;
  config_.ranks = ranks_;
  TensorOptions opts(adapter_dtype_, weight_.device());
  const int64_t n = config_.n_modules, R = config_.r;

  std::vector<Tensor> a_blocks, b_blocks;
  std::vector<double> ratio;
  std::vector<int64_t> module;
  for (int64_t i = 0; i < n; ++i) {
    int64_t ri = ranks_[static_cast<size_t>(i)];
    Tensor a = empty({ri, in_features()}, opts);
    Tensor b = empty({out_features(), ri}, opts);
    if (config.init == MultiLoraInit::kaiming_uniform) {
      kaiming_uniform_(a, std::sqrt(5.0), gen);
      kaiming_uniform_(b, std::sqrt(5.0), gen);
    } else {
      double std = config.gaussian_std > 0 ? config.gaussian_std : 1.0 / static_cast<double>(ri);
      normal_(a, 0.0, std, gen);
      normal_(b, 0.0, std, gen);
    }
    if (config.zero_init_b) b.zero_();
    a_blocks.push_back(a);
    b_blocks.push_back(b);
    for (int64_t j = 0; j < ri; ++j) {
      ratio.push_back(config.alpha / static_cast<double>(ri));
      module.push_back(i);
    }
  }
  lora_A_ = Variable::leaf(cat(a_blocks, 0), true, "lora_A.weight");
  lora_B_ = Variable::leaf(cat(b_blocks, 1), true, "lora_B.weight");
  Shape scale_shape = config.scale_mode == MultiLoraScale::per_module ? Shape{n} : Shape{n, out_features()};
  scales_ = Variable::leaf(full(scale_shape, config.scale_init, opts), config.learnable_scale, "multilora_scale");
  rank_ratio_ = from_vector(ratio, {R}, opts);
  rank_module_ = from_vector(module, {R}, TensorOptions(DType::i64, weight_.device()));
}

Variable multilora_update(const Variable& x, const Variable& A, const Variable& B, const Variable& scales,
                          const Tensor& rank_ratio, const Tensor& rank_module, MultiLoraScale mode) {
  const int64_t R = A.size(0);
  MLR_CHECK(A.dim() == 2 && B.dim() == 2 && B.size(1) == R && rank_ratio.numel() == R && rank_module.numel() == R,
            "multilora: stacked A {} and B {} need [R, in] and [out, R] with R = {} ratios and modules",
            shape_str(A.shape()), shape_str(B.shape()), rank_ratio.numel());
  // The folded scale c: [R] per module, [out, R] per channel. The constants follow A (a module
  // moved to another device or dtype keeps working).
  Tensor ratio = rank_ratio.to(A.device(), A.dtype()), module = rank_module.to(A.device());
  Variable per_rank = index_select(scales, 0, module);  // [R] or [R, out]
  if (mode == MultiLoraScale::per_module) {
    MLR_CHECK(scales.dim() == 1, "multilora: per-module scales must be [n], got {}", shape_str(scales.shape()));
    Variable c = mul(per_rank, Variable(ratio));
    return linear(linear(x, mul(A, unsqueeze(c, 1))), B);  // B (diag(c) A) x
  }
  MLR_CHECK(scales.dim() == 2 && scales.size(1) == B.size(0), "multilora: per-channel scales must be [n, {}], got {}",
            B.size(0), shape_str(scales.shape()));
  Variable c = mul(transpose(per_rank, 0, 1), Variable(ratio));  // [out, R] * [R]
  return linear(linear(x, A), mul(B, c));  // (B o C) (A x)
}

Variable MultiLoraLinear::forward(const Variable& x) {
  Variable base = base_forward(x);
  if (merged_) return base;
  Variable xa = to_dtype(x, lora_A_.dtype());
  if (training_) xa = adapter_dropout(xa, config_.dropout, dropout_gen_);
  return add_update(base, multilora_update(xa, lora_A_, lora_B_, scales_, rank_ratio_, rank_module_,
                                           config_.scale_mode));
}

std::vector<std::pair<std::string, Variable>> MultiLoraLinear::named_tensors() const {
  return {{"lora_A.weight", lora_A_}, {"lora_B.weight", lora_B_}, {"multilora_scale", scales_}};
}

nlohmann::json MultiLoraLinear::config_json() const {
  return {{"peft_type", "MULTILORA"},
          {"r", config_.r},
          {"n_modules", config_.n_modules},
          {"ranks", ranks_},
          {"lora_alpha", json_number(config_.alpha)},
          {"lora_dropout", config_.dropout},
          {"use_rslora", false},
          {"scale_mode", multilora_scale_name(config_.scale_mode)},
          {"learnable_scale", config_.learnable_scale},
          {"scale_init", config_.scale_init},
          {"init", multilora_init_name(config_.init)}};
}

Tensor MultiLoraLinear::delta_weight() const {
  DType acc = weight_.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor a = cast(lora_A_.data(), acc), b = cast(lora_B_.data(), acc);
  Tensor per_rank = cast(index_select(scales_.data(), 0, rank_module_.to(a.device())), acc);
  Tensor ratio = rank_ratio_.to(a.device(), acc);
  if (config_.scale_mode == MultiLoraScale::per_module) return matmul(b, mul(a, mul(per_rank, ratio).unsqueeze(1)));
  return matmul(mul(b, mul(per_rank.t(), ratio)), a);
}

const char* multilora_scale_name(MultiLoraScale mode) {
  return mode == MultiLoraScale::per_module ? "per_module" : "per_channel";
}

const char* multilora_init_name(MultiLoraInit init) {
  return init == MultiLoraInit::kaiming_uniform ? "kaiming_uniform" : "gaussian";
}

const AdapterType& MultiLoraConfig::type() const { return multilora_adapter_type(); }

std::unique_ptr<AdaptedLinear> MultiLoraConfig::make_adapter(Variable weight, Variable bias, Generator& init,
                                                             uint64_t seed) const {
  MultiLoraConfig c = *this;
  c.dropout_seed = seed;
  return std::make_unique<MultiLoraLinear>(std::move(weight), std::move(bias), c, init);
}

nlohmann::json MultiLoraConfig::yaml_fields() const {
  return {{"r", r},
          {"alpha", alpha},
          {"dropout", dropout},
          {"n_modules", n_modules},
          {"ranks", ranks},
          {"scale_mode", multilora_scale_name(scale_mode)},
          {"fixed_scale", !learnable_scale},
          {"scale_init", scale_init},
          {"init", multilora_init_name(init)}};
}

MultiLoraConfig multilora_config_from_json(const nlohmann::json& config) {
  MLR_CHECK(json_peft_type_is(config, "MULTILORA"), "adapter_config.json: peft_type is {}, expected MULTILORA",
            config.value("peft_type", nlohmann::json()).dump());
  MultiLoraConfig c;
  c.ranks = json_field<std::vector<int64_t>>(config, "ranks", "an array of module ranks");
  c.n_modules = static_cast<int64_t>(c.ranks.size());
  c.r = json_field<int64_t>(config, "r", "a positive integer");
  int64_t total = 0;
  for (int64_t ri : c.ranks) {
    MLR_CHECK(ri > 0 && ri <= INT64_MAX - total, "adapter_config.json: ranks {} must be positive, with a sum that fits 64 bits",
              config.at("ranks").dump());
    total += ri;
  }
  MLR_CHECK(total == c.r, "adapter_config.json: ranks {} sum to {}, but r = {}", config.at("ranks").dump(), total, c.r);
  if (config.contains("n_modules"))
    MLR_CHECK(json_field<int64_t>(config, "n_modules", "an integer") == c.n_modules,
              "adapter_config.json: n_modules = {} but ranks lists {} modules", config.at("n_modules").dump(),
              c.n_modules);
  c.alpha = json_field<double>(config, "lora_alpha", "a number");
  c.dropout = json_field_or<double>(config, "lora_dropout", 0.0, "a number");
  std::string mode = json_field_or<std::string>(config, "scale_mode", "per_module", "\"per_module\" or \"per_channel\"");
  MLR_CHECK(mode == "per_module" || mode == "per_channel",
            "adapter_config.json: scale_mode \"{}\" is not per_module or per_channel", mode);
  c.scale_mode = mode == "per_module" ? MultiLoraScale::per_module : MultiLoraScale::per_channel;
  c.learnable_scale = json_field_or<bool>(config, "learnable_scale", true, "a boolean");
  c.scale_init = json_field_or<double>(config, "scale_init", 0.0, "a number");
  std::string init = json_field_or<std::string>(config, "init", "kaiming_uniform", "\"kaiming_uniform\" or \"gaussian\"");
  MLR_CHECK(init == "kaiming_uniform" || init == "gaussian",
            "adapter_config.json: init \"{}\" is not kaiming_uniform or gaussian", init);
  c.init = init == "gaussian" ? MultiLoraInit::gaussian : MultiLoraInit::kaiming_uniform;
  return c;
}

namespace {

std::shared_ptr<const AdapterConfig> multilora_config_from_yaml(const ConfigFields& section) {
  auto c = std::make_shared<MultiLoraConfig>();
  c->alpha = 16;  // the run configuration's defaults
  c->n_modules = 4;
  std::string renamed;
  section.str("scale", renamed);
  section.require(renamed.empty(), "scale", "was renamed scale_mode, with the values of adapter_config.json: "
                                            "per_module | per_channel");
  std::string mode = multilora_scale_name(c->scale_mode), init = multilora_init_name(c->init);
  bool fixed_scale = false;
  section.integer("r", c->r);
  section.number("alpha", c->alpha);
  section.number("dropout", c->dropout);
  section.integer("n_modules", c->n_modules);
  section.integers("ranks", c->ranks);
  section.str("scale_mode", mode);
  section.boolean("fixed_scale", fixed_scale);
  section.number("scale_init", c->scale_init);
  section.str("init", init);
  section.one_of("scale_mode", mode, {"per_module", "per_channel"});
  section.one_of("init", init, {"kaiming_uniform", "gaussian"});
  c->scale_mode = mode == "per_module" ? MultiLoraScale::per_module : MultiLoraScale::per_channel;
  c->init = init == "gaussian" ? MultiLoraInit::gaussian : MultiLoraInit::kaiming_uniform;
  c->learnable_scale = !fixed_scale;
  section.require(c->r > 0, "r", fmt::format("must be positive, got {}", c->r));
  section.require(c->alpha > 0, "alpha", fmt::format("must be positive, got {}", c->alpha));
  section.require(c->dropout >= 0 && c->dropout < 1, "dropout", fmt::format("must be in [0, 1), got {}", c->dropout));
  section.require(c->n_modules > 0, "n_modules", fmt::format("must be positive, got {}", c->n_modules));
  section.require(c->ranks.empty() || static_cast<int64_t>(c->ranks.size()) == c->n_modules, "ranks",
                  fmt::format("has {} entries for n_modules {}", c->ranks.size(), c->n_modules));
  try {
    multilora_ranks(*c);  // the library's own rule for splitting r
  } catch (const Error& e) {
    const std::string key = c->ranks.empty() ? "r" : "ranks";
    section.require(false, key, fmt::format("does not fit: {}", e.message()));
  }
  return c;
}

}  // namespace

const AdapterType& multilora_adapter_type() {
  static const AdapterType type{
      .name = "multilora",
      .display_name = "MultiLoRA",
      .peft_type = "MULTILORA",
      .reads_file = nullptr,
      .from_json = [](const nlohmann::json& config) -> std::shared_ptr<const AdapterConfig> {
        return std::make_shared<MultiLoraConfig>(multilora_config_from_json(config));
      },
      .yaml_keys = {"r", "alpha", "dropout", "n_modules", "ranks", "scale_mode", "scale", "fixed_scale",
                    "scale_init", "init"},
      .from_yaml = multilora_config_from_yaml,
      .structural_fields = {"peft_type", "r", "lora_alpha", "use_rslora", "n_modules", "ranks", "scale_mode"},
  };
  return type;
}

}  // namespace mlr
