// The mixture sampler: rates per mode (by hand), realised proportions over 100k draws within 1%
// (relative) of the rates, every example once per epoch, seeded subsets, determinism and resume.
#include <cmath>
#include <map>
#include <set>

#include "data/mixture.h"
#include "tests/data/data_test_util.h"

using namespace mlr::data;
using namespace mlr::data::test;

namespace {

std::vector<MixtureSource> three(double w0 = 1, double w1 = 1, double w2 = 1) {
  return {{"big", 1000, w0}, {"mid", 100, w1}, {"small", 10, w2}};
}

std::vector<int64_t> realised(MixtureSampler& s, int64_t draws) {
  std::vector<int64_t> counts(s.sources().size(), 0);
  for (int64_t i = 0; i < draws; ++i) ++counts[static_cast<size_t>(s.next().dataset)];
  return counts;
}

}  // namespace

TEST_CASE("mixture: rates of each mode") {
  MixtureSampler proportional(three(), {.mode = MixMode::proportional});
  CHECK(proportional.rates()[0] == doctest::Approx(1000.0 / 1110));
  CHECK(proportional.rates()[2] == doctest::Approx(10.0 / 1110));
  CHECK(proportional.draws_per_pass() == 1110);

  MixtureSampler weights(three(3, 1, 0), {.mode = MixMode::weights});
  CHECK(weights.rates() == std::vector<double>{0.75, 0.25, 0.0});

  // T5: r ∝ min(n, K)^(1/T). T = 2, K = 200: sqrt(200), sqrt(100), sqrt(10).
  MixtureSampler t5(three(), {.mode = MixMode::temperature, .temperature = 2, .rate_limit = 200});
  const double total = std::sqrt(200.0) + 10 + std::sqrt(10.0);
  CHECK(t5.rates()[0] == doctest::Approx(std::sqrt(200.0) / total));
  CHECK(t5.rates()[1] == doctest::Approx(10 / total));
  CHECK(t5.rates()[2] == doctest::Approx(std::sqrt(10.0) / total));
  // T = 1 without a limit is proportional.
  MixtureSampler t1(three(), {.mode = MixMode::temperature, .temperature = 1});
  CHECK(t1.rates()[1] == doctest::Approx(proportional.rates()[1]));

  // Epochs and caps change the effective sizes: 1000 capped to 200, small seen 5 times.
  auto sources = three();
  sources[0].max_examples = 200;
  sources[2].epochs = 5;
  MixtureSampler capped(sources, {.mode = MixMode::proportional});
  CHECK(capped.used_size(0) == 200);
  CHECK(capped.rates()[0] == doctest::Approx(200.0 / 350));
  CHECK(capped.rates()[2] == doctest::Approx(50.0 / 350));
  CHECK(capped.draws_per_pass() == 350);
}

TEST_CASE("mixture: realised proportions over 100k draws are within 1% of the rates") {
  const std::vector<std::pair<std::vector<MixtureSource>, MixtureOptions>> cases = {
      {three(), {.mode = MixMode::proportional, .seed = 1}},
      {three(0.5, 0.3, 0.2), {.mode = MixMode::weights, .seed = 2}},
      {three(), {.mode = MixMode::temperature, .temperature = 3, .rate_limit = 500, .seed = 3}},
  };
  for (const auto& [sources, options] : cases) {
    CAPTURE(mix_mode_name(options.mode));
    MixtureSampler s(sources, options);
    const int64_t draws = 100000;
    const auto counts = realised(s, draws);
    for (size_t d = 0; d < counts.size(); ++d) {
      const double want = s.rates()[d], got = static_cast<double>(counts[d]) / draws;
      CAPTURE(d);
      CHECK(std::abs(got - want) <= 0.01 * want);
      // Megatron's rule keeps every prefix within one example of its share.
      CHECK(std::abs(static_cast<double>(counts[d]) - want * draws) <= 1.0);
    }
  }
}

TEST_CASE("mixture: each epoch sees every example once, in a fresh seeded order") {
  MixtureSampler s({{"a", 7}, {"b", 5}}, {.mode = MixMode::weights, .seed = 11});
  std::map<int32_t, std::vector<int64_t>> seen;
  for (int i = 0; i < 24; ++i) {
    const Draw d = s.next();
    seen[d.dataset].push_back(d.example);
  }
  REQUIRE(seen[1].size() == 12);
  const std::set<int64_t> epoch0(seen[1].begin(), seen[1].begin() + 5), epoch1(seen[1].begin() + 5, seen[1].begin() + 10);
  CHECK(epoch0 == std::set<int64_t>{0, 1, 2, 3, 4});
  CHECK(epoch1 == epoch0);
  CHECK(std::vector<int64_t>(seen[1].begin(), seen[1].begin() + 5) != std::vector<int64_t>(seen[1].begin() + 5, seen[1].begin() + 10));

  // Without shuffling: source order.
  MixtureSampler ordered({{"a", 3}}, {.shuffle = false});
  std::vector<int64_t> order;
  for (int i = 0; i < 6; ++i) order.push_back(ordered.next().example);
  CHECK(order == std::vector<int64_t>{0, 1, 2, 0, 1, 2});

  // A capped dataset draws from one seeded subset of max_examples, every epoch.
  MixtureSampler capped({{"a", 100, 1, 1, 10}}, {.seed = 5});
  std::set<int64_t> first, second;
  for (int i = 0; i < 10; ++i) first.insert(capped.next().example);
  for (int i = 0; i < 10; ++i) second.insert(capped.next().example);
  CHECK(first.size() == 10);
  CHECK(first == second);
  CHECK(*first.rbegin() < 100);
}

TEST_CASE("mixture: deterministic from the seed; restoring a state continues exactly") {
  const MixtureOptions options{.mode = MixMode::proportional, .seed = 42};
  MixtureSampler a(three(), options), b(three(), options);
  std::vector<std::pair<int32_t, int64_t>> run_a, run_b;
  for (int i = 0; i < 3000; ++i) {
    const Draw x = a.next(), y = b.next();
    run_a.emplace_back(x.dataset, x.example);
    run_b.emplace_back(y.dataset, y.example);
  }
  CHECK(run_a == run_b);

  MixtureSampler other_seed(three(), {.mode = MixMode::proportional, .seed = 43});
  std::vector<std::pair<int32_t, int64_t>> run_c;
  for (int i = 0; i < 3000; ++i) {
    const Draw x = other_seed.next();
    run_c.emplace_back(x.dataset, x.example);
  }
  CHECK(run_c != run_a);

  MixtureSampler first(three(), options);
  for (int i = 0; i < 1234; ++i) first.next();
  const MixtureState saved = first.state();
  MixtureSampler resumed(three(), options);
  resumed.restore(saved);
  for (int i = 1234; i < 3000; ++i) {
    const Draw x = resumed.next();
    CHECK(std::make_pair(x.dataset, x.example) == run_a[static_cast<size_t>(i)]);
  }
  CHECK(error_of([&] { resumed.restore({5, {1, 2}}); }).find("the saved state has 2 datasets, this mixture 3") !=
        std::string::npos);
}

TEST_CASE("mixture: invalid mixtures are errors") {
  CHECK(error_of([] { MixtureSampler(three(0, 0, 0), {.mode = MixMode::weights}); })
            .find("every dataset has weight 0") != std::string::npos);
  CHECK(error_of([] { MixtureSampler(three(1, -1, 0), {.mode = MixMode::weights}); })
            .find("dataset 'mid' has weight -1") != std::string::npos);
  CHECK(error_of([] { MixtureSampler({{"e", 0}}, {}); }).find("dataset 'e' is empty") != std::string::npos);
  CHECK(error_of([] { MixtureSampler(three(), {.mode = MixMode::temperature, .temperature = 0}); })
            .find("temperature is 0") != std::string::npos);
  CHECK(error_of([] { parse_mix_mode("uniform"); }).find("'uniform' is not a mixing mode") != std::string::npos);
}
