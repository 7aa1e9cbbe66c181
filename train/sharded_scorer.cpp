#include "train/sharded_scorer.h"

#include <algorithm>

#include "dist/data_parallel.h"
#include "tensor/ops.h"

namespace mlr {

std::pair<size_t, size_t> ShardedScorer::range_of(int rank, size_t n) const {
  const size_t world = static_cast<size_t>(comm_.world_size());
  const size_t chunk = (n + world - 1) / world;
  const size_t begin = std::min(n, static_cast<size_t>(rank) * chunk);
  return {begin, std::min(n, begin + chunk)};
}

std::vector<eval::LoglikelihoodResult> ShardedScorer::loglikelihood(
    const std::vector<eval::LoglikelihoodRequest>& requests) {
  const auto [begin, end] = range_of(comm_.rank(), requests.size());
  const std::vector<eval::LoglikelihoodRequest> mine(requests.begin() + static_cast<std::ptrdiff_t>(begin),
                                                     requests.begin() + static_cast<std::ptrdiff_t>(end));
  const std::vector<eval::LoglikelihoodResult> scored = mine.empty() ? std::vector<eval::LoglikelihoodResult>{}
                                                                     : inner_.loglikelihood(mine);
  if (after_own_share_) after_own_share_();
  std::vector<double> logprobs(requests.size(), 0.0);
  std::vector<int64_t> greedy(requests.size(), 0);
  for (size_t i = begin; i < end; ++i) {
    logprobs[i] = scored[i - begin].logprob;
    greedy[i] = scored[i - begin].is_greedy ? 1 : 0;
  }
  dist::all_reduce_sum(comm_, logprobs);
  dist::all_reduce_sum(comm_, greedy);
  std::vector<eval::LoglikelihoodResult> all(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) all[i] = {logprobs[i], greedy[i] != 0};
  return all;
}

std::vector<std::string> ShardedScorer::generate_until(const std::vector<eval::GenerationRequest>& requests) {
  const size_t n = requests.size();
  const auto [begin, end] = range_of(comm_.rank(), n);
  const std::vector<eval::GenerationRequest> mine(requests.begin() + static_cast<std::ptrdiff_t>(begin),
                                                  requests.begin() + static_cast<std::ptrdiff_t>(end));
  const std::vector<std::string> generated = mine.empty() ? std::vector<std::string>{} : inner_.generate_until(mine);
  if (after_own_share_) after_own_share_();
  // Every response's length (from its rank), then each rank's bytes (one per i32, the
  // communicator's smallest dtype), padded to the longest rank's share, all-gathered.
  std::vector<int64_t> lengths(n, 0);
  for (size_t i = begin; i < end; ++i) lengths[i] = static_cast<int64_t>(generated[i - begin].size());
  dist::all_reduce_sum(comm_, lengths);
  const int world = comm_.world_size();
  int64_t longest = 1;
  for (int r = 0; r < world; ++r) {
    const auto [b, e] = range_of(r, n);
    int64_t bytes = 0;
    for (size_t i = b; i < e; ++i) bytes += lengths[i];
    longest = std::max(longest, bytes);
  }
  std::vector<int32_t> my_bytes(static_cast<size_t>(longest), 0);
  size_t at = 0;
  for (const std::string& text : generated)
    for (char c : text) my_bytes[at++] = static_cast<unsigned char>(c);
  Tensor gathered = empty({longest * world}, DType::i32);
  comm_.all_gather(from_vector(my_bytes, {longest}), gathered);
  const std::vector<int32_t> bytes = gathered.to_vector<int32_t>();
  std::vector<std::string> all(n);
  for (int r = 0; r < world; ++r) {
    const auto [b, e] = range_of(r, n);
    size_t offset = static_cast<size_t>(r) * static_cast<size_t>(longest);
    for (size_t i = b; i < e; ++i) {
      for (int64_t k = 0; k < lengths[i]; ++k) all[i].push_back(static_cast<char>(bytes[offset++]));
    }
  }
  return all;
}

}  // namespace mlr
