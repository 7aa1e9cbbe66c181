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
          {"lora_alpha", config_.alpha},
          {"lora_dropout", config_.dropout},
          {"use_rslora", false},
          {"scale_mode", config_.scale_mode == MultiLoraScale::per_module ? "per_module" : "per_channel"},
          {"learnable_scale", config_.learnable_scale},
          {"scale_init", config_.scale_init},
          {"init", config_.init == MultiLoraInit::kaiming_uniform ? "kaiming_uniform" : "gaussian"}};
}

Tensor MultiLoraLinear::delta_weight() const {
  DType acc = weight_.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor a = cast(lora_A_.data(), acc), b = cast(lora_B_.data(), acc);
  Tensor per_rank = cast(index_select(scales_.data(), 0, rank_module_.to(a.device())), acc);
  Tensor ratio = rank_ratio_.to(a.device(), acc);
  if (config_.scale_mode == MultiLoraScale::per_module) return matmul(b, mul(a, mul(per_rank, ratio).unsqueeze(1)));
  return matmul(mul(b, mul(per_rank.t(), ratio)), a);
}

}  // namespace mlr
