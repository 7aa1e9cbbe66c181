// MultiLoRA (Wang et al. 2023, arXiv 2311.11501): n parallel low-rank modules with learnable scales,
//   y = W0 x (+ bias) + sum_i s_i * (alpha / r_i) * B_i A_i dropout(x)
//   A_i [r_i, in], B_i [out, r_i]  Kaiming-uniform (a = sqrt 5) by default, Gaussian as an option,
//                                  so B is not zero: the update starts at zero through s_i = 0
//   s_i  a scalar per module (default) or one per output channel [out]; learnable or fixed
//   r_i  r / n by default (the total rank equals the LoRA rank it is compared with)
//
// It runs as ONE stacked low-rank product, never n small GEMMs. With R = sum r_i,
//   A = [A_1; ...; A_n]  [R, in]     B = [B_1 ... B_n]  [out, R]
//   c[j] = s_{m(j)} * alpha / r_{m(j)}   for rank row j of module m(j)
//   per-module scales:  y = W0 x + B (diag(c) A) x            (c folded into A's rows: R x in work)
//   per-channel scales: y = W0 x + (B o C) (A x),  C[o, j] = s_{m(j)}[o] * alpha / r_{m(j)}
// which is the sum above written blockwise. The scales' gradient flows through the fold
// (index_select of s by module, times the constant alpha / r_i).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "multilora/adapter.h"
#include "multilora/registry.h"

namespace mlr {

enum class MultiLoraScale { per_module, per_channel };
enum class MultiLoraInit { kaiming_uniform, gaussian };

// In YAML and in adapter_config.json alike: scale_mode per_module | per_channel, init
// kaiming_uniform | gaussian.
struct MultiLoraConfig : AdapterConfig {
  int64_t r = 8;          // total rank R (split as evenly as possible, larger ranks first)
  int64_t n_modules = 2;
  std::vector<int64_t> ranks;  // explicit r_i (overrides r and n_modules when non-empty)
  double alpha = 8.0;
  double dropout = 0.0;
  MultiLoraScale scale_mode = MultiLoraScale::per_module;
  bool learnable_scale = true;
  double scale_init = 0.0;
  MultiLoraInit init = MultiLoraInit::kaiming_uniform;
  double gaussian_std = 0.0;  // Gaussian init's std; 0 means 1 / r_i
  bool zero_init_b = false;   // B = 0 as in LoRA (for the n = 1 equivalence with LoRA)
  std::optional<DType> dtype;
  uint64_t dropout_seed = 0;

  const AdapterType& type() const override;
  std::unique_ptr<AdaptedLinear> make_adapter(Variable weight, Variable bias, Generator& init,
                                              uint64_t dropout_seed) const override;
  nlohmann::json yaml_fields() const override;
};

// The registration: YAML adapter.type "multilora", peft_type MULTILORA.
const AdapterType& multilora_adapter_type();
MultiLoraConfig multilora_config_from_json(const nlohmann::json& config);
const char* multilora_scale_name(MultiLoraScale mode);  // "per_module", "per_channel"
const char* multilora_init_name(MultiLoraInit init);    // "kaiming_uniform", "gaussian"

// The module ranks a config asks for: `ranks` if given, else r split over n_modules as evenly as
// possible, larger ranks first (r = 10, n = 4: 3, 3, 2, 2); r must be at least n_modules. The run
// configuration checks its adapter section with this same function.
std::vector<int64_t> multilora_ranks(const MultiLoraConfig& config);

// The stacked update alone; x [..., in], A [R, in], B [out, R], scales [n] (per module) or
// [n, out] (per channel), rank_ratio [R] = alpha / r_{m(j)}, rank_module [R] (i64) = m(j).
Variable multilora_update(const Variable& x, const Variable& A, const Variable& B, const Variable& scales,
                          const Tensor& rank_ratio, const Tensor& rank_module, MultiLoraScale mode);

class MultiLoraLinear : public AdaptedLinear {
 public:
  // A_i, B_i drawn from `gen` module by module (A_1, B_1, A_2, B_2, ...); scales = scale_init.
  MultiLoraLinear(Variable weight, Variable bias, const MultiLoraConfig& config, Generator& gen);

  const AdapterType& type() const override { return multilora_adapter_type(); }
  Generator& dropout_generator() override { return dropout_gen_; }
  Variable forward(const Variable& x) override;
  // lora_A.weight [R, in], lora_B.weight [out, R], multilora_scale [n] or [n, out].
  std::vector<std::pair<std::string, Variable>> named_tensors() const override;
  nlohmann::json config_json() const override;
  Tensor delta_weight() const override;  // B diag(c) A, or (B o C) A

  const MultiLoraConfig& config() const { return config_; }
  const std::vector<int64_t>& ranks() const { return ranks_; }
  int64_t total_rank() const { return lora_A_.size(0); }
  const Variable& lora_A() const { return lora_A_; }  // stacked
  const Variable& lora_B() const { return lora_B_; }  // stacked
  const Variable& scales() const { return scales_; }
  // The constant per-rank factor alpha / r_{m(j)} [R] and module index m(j) [R] (i64).
  const Tensor& rank_ratio() const { return rank_ratio_; }
  const Tensor& rank_module() const { return rank_module_; }

 private:
  MultiLoraConfig config_;
  std::vector<int64_t> ranks_;
  Variable lora_A_;
  Variable lora_B_;
  Variable scales_;
  Tensor rank_ratio_;
  Tensor rank_module_;
  Generator dropout_gen_;
};

}  // namespace mlr
