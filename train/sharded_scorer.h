// Evaluation split over the ranks of a data-parallel job: every rank runs the same evaluation
// (eval::evaluate over the same tasks), and this scorer hands each rank a contiguous 1/world of
// every batch of requests (contiguous, so the choices of one question stay together), scores it
// with the rank's own scorer, and exchanges the results, so every rank returns all of them and
// computes the same metrics. Log-likelihoods are summed over the ranks (each request's value on
// its rank, zeros elsewhere: exact); generations are exchanged as bytes.
//
// `after_own_share` runs on every rank after it has scored its share of a call's requests and
// before the results are exchanged: the ranks' shares take different numbers of model forwards,
// and when those forwards hold collectives of their own (a sharded frozen base, in lockstep:
// dist/sharded_base.h) a rank done early joins the others' remaining forwards there.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "eval/scorer.h"

namespace mlr {

class ShardedScorer : public eval::LanguageModelScorer {
 public:
  ShardedScorer(eval::LanguageModelScorer& inner, dist::Communicator& comm,
                std::function<void()> after_own_share = nullptr)
      : inner_(inner), comm_(comm), after_own_share_(std::move(after_own_share)) {}
  std::vector<eval::LoglikelihoodResult> loglikelihood(const std::vector<eval::LoglikelihoodRequest>& requests) override;
  std::vector<std::string> generate_until(const std::vector<eval::GenerationRequest>& requests) override;
  std::string name() const override { return inner_.name(); }

 private:
  // [begin, end) of rank's requests among n.
  std::pair<size_t, size_t> range_of(int rank, size_t n) const;
  eval::LanguageModelScorer& inner_;
  dist::Communicator& comm_;
  std::function<void()> after_own_share_;
};

}  // namespace mlr
