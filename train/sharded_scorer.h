// Evaluation split over the ranks of a data-parallel job: every rank runs the same evaluation
// (eval::evaluate over the same tasks), and this scorer hands each rank a contiguous 1/world of
// every batch of requests (contiguous, so the choices of one question stay together), scores it
// with the rank's own scorer, and exchanges the results, so every rank returns all of them and
// computes the same metrics. Log-likelihoods are summed over the ranks (each request's value on
// its rank, zeros elsewhere: exact); generations are exchanged as bytes.
#pragma once

#include <string>
#include <vector>

#include "dist/communicator.h"
#include "eval/scorer.h"

namespace mlr {

class ShardedScorer : public eval::LanguageModelScorer {
 public:
  ShardedScorer(eval::LanguageModelScorer& inner, dist::Communicator& comm) : inner_(inner), comm_(comm) {}
  std::vector<eval::LoglikelihoodResult> loglikelihood(const std::vector<eval::LoglikelihoodRequest>& requests) override;
  std::vector<std::string> generate_until(const std::vector<eval::GenerationRequest>& requests) override;
  std::string name() const override { return inner_.name(); }

 private:
  // [begin, end) of rank's requests among n.
  std::pair<size_t, size_t> range_of(int rank, size_t n) const;
  eval::LanguageModelScorer& inner_;
  dist::Communicator& comm_;
};

}  // namespace mlr
