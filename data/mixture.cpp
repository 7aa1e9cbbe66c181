#include "data/mixture.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "tensor/error.h"

namespace mlr::data {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform integer in [0, n) by Lemire's multiply-shift (bias below 2^-40 for our n); defined here
// rather than through std::uniform_int_distribution, whose output differs between standard
// libraries, so that a seed means the same order everywhere.
uint64_t below(uint64_t& state, uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(splitmix64(state)) * n) >> 64);
}

// Fisher-Yates shuffle of 0..n-1.
std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), int64_t{0});
  uint64_t state = seed;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(below(state, static_cast<uint64_t>(i) + 1));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

}  // namespace

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t x = a;
  uint64_t h = splitmix64(x);
  x ^= b * 0xd1b54a32d192ed03ull;
  h ^= splitmix64(x);
  x ^= c * 0x8cb92ba72f3d8dd7ull;
  return h ^ splitmix64(x);
}

MixMode parse_mix_mode(std::string_view text) {
  if (text == "weights") return MixMode::weights;
  if (text == "proportional") return MixMode::proportional;
  if (text == "temperature") return MixMode::temperature;
  throw Error(fmt::format("data: mixture: '{}' is not a mixing mode (expected weights, proportional or temperature)", text));
}

std::string_view mix_mode_name(MixMode mode) {
  switch (mode) {
    case MixMode::weights: return "weights";
    case MixMode::proportional: return "proportional";
    case MixMode::temperature: return "temperature";
  }
  return "?";
}

MixtureSampler::MixtureSampler(std::vector<MixtureSource> sources, const MixtureOptions& options)
    : sources_(std::move(sources)), options_(options) {
  MLR_CHECK(!sources_.empty(), "data: mixture: no datasets");
  MLR_CHECK(options.mode != MixMode::temperature || options.temperature > 0,
            "data: mixture: temperature is {}, expected > 0", options.temperature);
  MLR_CHECK(options.rate_limit >= 0, "data: mixture: rate_limit is {}, expected >= 0", options.rate_limit);
  const size_t n = sources_.size();
  std::vector<double> raw(n);
  used_.resize(n);
  for (size_t d = 0; d < n; ++d) {
    const MixtureSource& s = sources_[d];
    MLR_CHECK(s.size > 0, "data: mixture: dataset '{}' is empty", s.name);
    MLR_CHECK(s.weight >= 0 && std::isfinite(s.weight), "data: mixture: dataset '{}' has weight {}, expected >= 0", s.name,
              s.weight);
    MLR_CHECK(s.epochs > 0 && std::isfinite(s.epochs), "data: mixture: dataset '{}' has epochs {}, expected > 0", s.name,
              s.epochs);
    MLR_CHECK(s.max_examples >= 0, "data: mixture: dataset '{}' has max_examples {}, expected >= 0", s.name, s.max_examples);
    used_[d] = s.max_examples > 0 ? std::min(s.size, s.max_examples) : s.size;
    const double effective = static_cast<double>(used_[d]) * s.epochs;
    switch (options.mode) {
      case MixMode::weights: raw[d] = s.weight; break;
      case MixMode::proportional: raw[d] = effective; break;
      case MixMode::temperature:
        raw[d] = std::pow(options.rate_limit > 0 ? std::min(effective, options.rate_limit) : effective, 1.0 / options.temperature);
        break;
    }
  }
  const double total = std::accumulate(raw.begin(), raw.end(), 0.0);
  MLR_CHECK(total > 0, "data: mixture: every dataset has weight 0; nothing to sample");
  rates_.resize(n);
  for (size_t d = 0; d < n; ++d) rates_[d] = raw[d] / total;
  // One pass: enough draws that every dataset with a rate is seen `epochs` times.
  double pass = 0;
  for (size_t d = 0; d < n; ++d) {
    if (rates_[d] > 0) pass = std::max(pass, static_cast<double>(used_[d]) * sources_[d].epochs / rates_[d]);
  }
  per_pass_ = static_cast<int64_t>(std::ceil(pass - 1e-6));

  subset_.resize(n);
  perm_.resize(n);
  perm_epoch_.assign(n, -1);
  for (size_t d = 0; d < n; ++d) {
    if (used_[d] < sources_[d].size) {
      std::vector<int64_t> p = permutation(sources_[d].size, mix_seed(options.seed, d, 0x5b5e7));
      p.resize(static_cast<size_t>(used_[d]));
      std::sort(p.begin(), p.end());  // the subset in source order; the epoch order shuffles it
      subset_[d] = std::move(p);
    }
  }
  state_.drawn.assign(n, 0);
}

int64_t MixtureSampler::example_at(int32_t d, int64_t k) {
  const auto ds = static_cast<size_t>(d);
  const int64_t m = used_[ds];
  const int64_t epoch = k / m, pos = k % m;
  int64_t local = pos;
  if (options_.shuffle) {
    if (perm_epoch_[ds] != epoch) {
      perm_[ds] = permutation(m, mix_seed(options_.seed, ds + 1, static_cast<uint64_t>(epoch)));
      perm_epoch_[ds] = epoch;
    }
    local = perm_[ds][static_cast<size_t>(pos)];
  }
  return subset_[ds].empty() ? local : subset_[ds][static_cast<size_t>(local)];
}

Draw MixtureSampler::next() {
  // Largest deficit r_d * (step + 1) - drawn_d.
  int32_t best = -1;
  double best_deficit = 0;
  const double target_step = static_cast<double>(state_.step + 1);
  for (size_t d = 0; d < rates_.size(); ++d) {
    if (rates_[d] <= 0) continue;
    const double deficit = rates_[d] * target_step - static_cast<double>(state_.drawn[d]);
    if (best < 0 || deficit > best_deficit) {
      best = static_cast<int32_t>(d);
      best_deficit = deficit;
    }
  }
  const int64_t k = state_.drawn[static_cast<size_t>(best)]++;
  ++state_.step;
  return {best, example_at(best, k)};
}

void MixtureSampler::restore(const MixtureState& state) {
  MLR_CHECK(state.drawn.size() == sources_.size(), "data: mixture: the saved state has {} datasets, this mixture {}",
            state.drawn.size(), sources_.size());
  // next() computes deficits in double: past 2^53 draws they would lose whole draws (and far past
  // it the counts would overflow), so no real state comes near that.
  constexpr int64_t kMaxDraws = int64_t{1} << 53;
  int64_t sum = 0;
  for (int64_t c : state.drawn) {
    MLR_CHECK(c >= 0, "data: mixture: the saved state has a negative count");
    MLR_CHECK(c <= kMaxDraws - sum, "data: mixture: the saved state's counts sum past 2^53 draws (corrupt state?)");
    sum += c;
  }
  MLR_CHECK(sum == state.step, "data: mixture: the saved state's counts sum to {}, not its step {}", sum, state.step);
  state_ = state;
}

}  // namespace mlr::data
