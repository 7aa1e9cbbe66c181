// The mixture sampler: which dataset, and which of its examples, comes next.
//
// Rates. Each dataset d has n_d examples, of which it uses m_d = min(n_d, max_examples) (a subset
// fixed by the seed; all when max_examples is 0), seen `epochs` times per pass: s_d = m_d * epochs.
//   weights        r_d ∝ weight_d
//   proportional   r_d ∝ s_d
//   temperature    r_d ∝ min(s_d, K)^(1/T)     (T5 / FLAN "examples-proportional mixing" with
//                                               a rate limit K; K = 0: no limit; T = 1, K = 0 is
//                                               proportional)
// Order. Draw s goes to the dataset d with the largest deficit r_d * (s + 1) - drawn_d (ties to
// the lower index), Megatron-LM's blending rule: after any number of draws every dataset is within
// one example of its share, so realised proportions match the rates exactly up to rounding, and
// the choice needs no random numbers. Within a dataset, the k-th draw is example
// perm_{d,e}[k mod m_d] with e = k div m_d: a fresh seeded permutation per epoch (or source order
// when shuffle is off). Everything is a function of (seed, state), so a sampler restored from a
// state continues exactly where the saved one stopped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mlr::data {

enum class MixMode { weights, proportional, temperature };
MixMode parse_mix_mode(std::string_view text);  // "weights" | "proportional" | "temperature"
std::string_view mix_mode_name(MixMode mode);

struct MixtureSource {
  std::string name;
  int64_t size = 0;          // examples in the dataset
  double weight = 1.0;       // MixMode::weights only
  double epochs = 1.0;       // passes over the (capped) dataset per mixture pass, e.g. 0.5 or 3
  int64_t max_examples = 0;  // use at most this many examples (a seeded subset); 0: all
};

struct MixtureOptions {
  MixMode mode = MixMode::proportional;
  double temperature = 1.0;  // MixMode::temperature: T
  double rate_limit = 0;     // MixMode::temperature: K, in examples; 0 = none
  uint64_t seed = 0;
  bool shuffle = true;
};

// The sampler's position: draws made so far, in total and per dataset.
struct MixtureState {
  int64_t step = 0;
  std::vector<int64_t> drawn;
  bool operator==(const MixtureState&) const = default;
};

struct Draw {
  int32_t dataset = 0;
  int64_t example = 0;  // index into the dataset
};

class MixtureSampler {
 public:
  // Throws mlr::Error for an empty dataset, a negative weight or epochs, T <= 0, or all rates 0.
  MixtureSampler(std::vector<MixtureSource> sources, const MixtureOptions& options);

  const std::vector<MixtureSource>& sources() const { return sources_; }
  const std::vector<double>& rates() const { return rates_; }  // normalised, sum 1
  int64_t used_size(int32_t d) const { return used_[static_cast<size_t>(d)]; }  // m_d
  // Draws in one pass of the mixture: sum of s_d (proportional) or enough draws that the
  // dataset with the largest s_d / r_d is seen `epochs` times.
  int64_t draws_per_pass() const { return per_pass_; }

  Draw next();
  const MixtureState& state() const { return state_; }
  // Throws when the state does not fit this mixture (another number of datasets).
  void restore(const MixtureState& state);

 private:
  int64_t example_at(int32_t d, int64_t k);

  std::vector<MixtureSource> sources_;
  MixtureOptions options_;
  std::vector<double> rates_;
  std::vector<int64_t> used_;
  int64_t per_pass_ = 0;
  MixtureState state_;
  // Per dataset: the subset (first m_d of a seeded permutation), and the current epoch's order.
  std::vector<std::vector<int64_t>> subset_;
  std::vector<int64_t> perm_epoch_;
  std::vector<std::vector<int64_t>> perm_;
};

// A 64-bit hash of (a, b, c) for seeding (splitmix64 steps); exposed for the packer and tests.
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

}  // namespace mlr::data
