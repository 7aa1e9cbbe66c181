// Checks shared by the harness cross-check tests (reference_test.cpp, sentencepiece_harness_test.cpp):
// one task's requests as recorded by scripts/eval/reference_loglikelihoods.py against our samples.
#pragma once

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "data/text.h"
#include "eval/evaluator.h"

namespace mlr::eval::testing {

struct RequestComparison {
  int64_t compared = 0;
  double worst = 0.0;  // largest |log-likelihood difference|
};

// Every request of `expected` ({"requests": [{doc, choice, context_fnv1a64, continuation, ll,
// is_greedy}]}): the same context (hash) and continuation, the log-likelihood within tolerance,
// the same is_greedy.
inline RequestComparison check_requests(const nlohmann::json& expected, const std::vector<SampleRecord>& samples,
                                        double tolerance = 1e-4) {
  RequestComparison c;
  for (const nlohmann::json& req : expected["requests"]) {
    const auto doc = req["doc"].get<size_t>(), choice = req["choice"].get<size_t>();
    REQUIRE(doc < samples.size());
    REQUIRE(choice < samples[doc].requests.size());
    CAPTURE(doc);
    CAPTURE(choice);
    const auto& request = samples[doc].requests[choice];
    CHECK(fmt::format("{:016x}", data::fnv1a64(request.context)) == req["context_fnv1a64"].get<std::string>());
    CHECK(request.continuation == req["continuation"].get<std::string>());
    const double difference = std::abs(samples[doc].results[choice].logprob - req["ll"].get<double>());
    CHECK(difference < tolerance);
    CHECK(samples[doc].results[choice].is_greedy == req["is_greedy"].get<bool>());
    c.worst = std::max(c.worst, difference);
    ++c.compared;
  }
  return c;
}

// Greedy generate_until on each recorded {context, until, max_gen_toks, output}: the same text,
// after `normalise` is applied to both sides.
template <typename Normalise>
void check_generations(const nlohmann::json& generations, LanguageModelScorer& scorer, Normalise&& normalise) {
  for (const nlohmann::json& g : generations) {
    const std::string context = g["context"];
    CAPTURE(context);
    const auto out = scorer.generate_until(
        {{context, g["until"].get<std::vector<std::string>>(), g["max_gen_toks"].get<int64_t>()}});
    REQUIRE(out.size() == 1);
    CHECK(normalise(out[0]) == normalise(g["output"].get<std::string>()));
  }
}

}  // namespace mlr::eval::testing
