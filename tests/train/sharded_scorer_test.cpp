// train/sharded_scorer.h over 3 forked ranks (tests/dist/run_ranks.h): 7 requests split 3/3/1,
// each rank's inner scorer asked only for its own share, and every rank returning every result
// (log-likelihoods and generations) in request order; the after_own_share hook runs once per call,
// after the rank's own share was scored.
#include <doctest/doctest.h>

#include "tests/dist/run_ranks.h"
#include "train/sharded_scorer.h"

using namespace mlr;

namespace {

// Scores a request by its text, so the expected result of every request is known on every rank.
class CountingScorer : public eval::LanguageModelScorer {
 public:
  std::vector<std::string> seen;
  std::vector<eval::LoglikelihoodResult> loglikelihood(const std::vector<eval::LoglikelihoodRequest>& requests) override {
    std::vector<eval::LoglikelihoodResult> out;
    for (const auto& r : requests) {
      seen.push_back(r.context);
      out.push_back({-0.5 * static_cast<double>(r.continuation.size()), r.continuation.size() % 2 == 0});
    }
    return out;
  }
  std::vector<std::string> generate_until(const std::vector<eval::GenerationRequest>& requests) override {
    std::vector<std::string> out;
    for (const auto& r : requests) {
      seen.push_back(r.context);
      out.push_back(r.context.size() % 3 == 0 ? std::string() : r.context + " -> \xc3\xa9t\xc3\xa9");
    }
    return out;
  }
  std::string name() const override { return "counting"; }
};

}  // namespace

TEST_CASE("sharded scorer: each rank scores a contiguous share, every rank gets every result") {
  test::check_all_ok(test::run_ranks(3, [](dist::ProcessGroup& g, std::ostream& msg) {
    std::vector<eval::LoglikelihoodRequest> ll;
    std::vector<eval::GenerationRequest> gen;
    for (int i = 0; i < 7; ++i) {
      ll.push_back({"q" + std::to_string(i), std::string(static_cast<size_t>(i + 1), 'x')});
      gen.push_back({std::string(static_cast<size_t>(i + 1), 'c'), {"\n"}, 16});
    }
    CountingScorer inner, reference;
    std::vector<size_t> scored_at_hook;  // how many requests the inner scorer had seen at each call
    ShardedScorer sharded(inner, g.cpu(), [&] { scored_at_hook.push_back(inner.seen.size()); });
    const auto got = sharded.loglikelihood(ll);
    const auto want = reference.loglikelihood(ll);
    const auto got_text = sharded.generate_until(gen);
    const auto want_text = reference.generate_until(gen);
    for (size_t i = 0; i < ll.size(); ++i) {
      if (got[i].logprob != want[i].logprob || got[i].is_greedy != want[i].is_greedy || got_text[i] != want_text[i]) {
        msg << "request " << i << " differs";
        return 1;
      }
    }
    const std::vector<size_t> share = {3, 3, 1};
    const size_t mine = share[static_cast<size_t>(g.rank())];
    if (scored_at_hook != std::vector<size_t>{mine, 2 * mine}) {
      msg << "rank " << g.rank() << ": the hook ran " << scored_at_hook.size() << " times";
      return 1;
    }
    if (inner.seen.size() != 2 * share[static_cast<size_t>(g.rank())]) {
      msg << "rank " << g.rank() << " scored " << inner.seen.size() << " requests";
      return 1;
    }
    if (g.rank() == 1 && inner.seen.front() != "q3") {
      msg << "rank 1 started at " << inner.seen.front();
      return 1;
    }
    return 0;
  }));
}
