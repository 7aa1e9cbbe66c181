// Python's random.Random and the harness's metrics. Expected values come from CPython 3.11
// (random) and lm_eval 0.4.13's lm_eval/api/metrics.py with sklearn 1.9 (f1, mcc, bootstrap with
// DISABLE_MULTIPROC), or are worked out by hand where stated.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "eval/metrics.h"
#include "eval/python_random.h"
#include "tensor/error.h"

using namespace mlr::eval;

TEST_CASE("PythonRandom reproduces CPython's random.Random") {
  PythonRandom r(1234);
  CHECK(r.random() == 0.9664535356921388);
  CHECK(r.random() == 0.4407325991753527);
  CHECK(r.random() == 0.007491470058587191);
  PythonRandom z(0);
  CHECK(z.getrandbits(32) == 3626764237u);
  CHECK(z.getrandbits(32) == 1654615998u);
  CHECK(z.getrandbits(32) == 3255389356u);
  CHECK(z.getrandbits(40) == 463385069186ull);
  CHECK(z.getrandbits(64) == 4776171008201404212ull);
  PythonRandom big((1ull << 40) + 7);  // a seed of two 32-bit key words
  CHECK(big.getrandbits(32) == 2635837658u);
  // random.Random(1234): sample(range(10), 4) (list path), sample(range(1000), 6) (set path),
  // sample(range(30), 7), choices(range(56), k=8), in that order on one generator.
  PythonRandom s(1234);
  CHECK(s.sample(10, 4) == std::vector<int64_t>{7, 1, 0, 9});
  CHECK(s.sample(1000, 6) == std::vector<int64_t>{932, 965, 961, 826, 596, 35});
  CHECK(s.sample(30, 7) == std::vector<int64_t>{21, 22, 2, 3, 24, 11, 7});
  CHECK(s.choices(56, 8) == std::vector<int64_t>{0, 55, 0, 36, 27, 25, 5, 39});
  PythonRandom c(5);
  CHECK(c.choices(3, 10) == std::vector<int64_t>{1, 2, 2, 2, 2, 2, 0, 1, 2, 1});
  CHECK_THROWS_AS(s.sample(3, 4), mlr::Error);
}

TEST_CASE("mean and mean_stderr") {
  // xs has 7 ones in 10: mean 0.7, sample variance (7*0.09 + 3*0.49)/9 = 2.1/9, stderr sqrt(2.1/9/10).
  const std::vector<double> xs{1, 0, 1, 1, 0, 1, 1, 1, 0, 1};
  CHECK(mean(xs) == doctest::Approx(0.7));
  REQUIRE(mean_stderr(xs).has_value());
  CHECK(*mean_stderr(xs) == doctest::Approx(std::sqrt(2.1 / 9.0 / 10.0)).epsilon(1e-15));
  CHECK(*mean_stderr(xs) == doctest::Approx(0.15275252316519466).epsilon(1e-15));  // lm_eval mean_stderr
  CHECK(!mean_stderr({1.0}).has_value());  // "N/A"
}

TEST_CASE("f1, cb macro F1 and mcc") {
  std::vector<GoldPred> items;
  const int golds[] = {1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1};
  const int preds[] = {1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0, 1};
  for (int i = 0; i < 12; ++i) items.push_back({golds[i], preds[i]});
  // TP 5, FP 1, FN 2: F1 = 10 / 13.
  CHECK(binary_f1(items) == doctest::Approx(10.0 / 13.0).epsilon(1e-15));
  CHECK(matthews_corrcoef(items) == doctest::Approx(0.50709255283711).epsilon(1e-13));
  // CB: (gold, pred) pairs; per class F1 = 2/3 (class 0), 4/7 (class 1), 2/3 (class 2).
  const std::vector<GoldPred> cb{{0, 0}, {1, 1}, {2, 1}, {0, 1}, {1, 1}, {0, 0}, {2, 2}, {1, 0}};
  CHECK(cb_multi_f1(cb) == doctest::Approx((2.0 / 3.0 + 4.0 / 7.0 + 2.0 / 3.0) / 3.0).epsilon(1e-15));
  CHECK(cb_multi_f1(cb) == doctest::Approx(0.6349206349206349).epsilon(1e-15));
  CHECK(matthews_corrcoef(cb) == doctest::Approx(0.42553224817349505).epsilon(1e-13));
  // No positive gold and no positive prediction: sklearn returns 0 (zero_division).
  CHECK(binary_f1({{0, 0}, {0, 0}}) == 0.0);
  CHECK(matthews_corrcoef({{1, 1}, {1, 1}}) == 0.0);
}

TEST_CASE("bootstrap_stderr replays the harness's Random(i).choices resamples") {
  std::vector<GoldPred> items;
  const int golds[] = {1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1};
  const int preds[] = {1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0, 1};
  for (int i = 0; i < 12; ++i) items.push_back({golds[i], preds[i]});
  auto resampled = [&](double (*metric)(const std::vector<GoldPred>&)) {
    return [&items, metric](const std::vector<int64_t>& index) {
      std::vector<GoldPred> xs;
      for (int64_t i : index) xs.push_back(items[static_cast<size_t>(i)]);
      return metric(xs);
    };
  };
  auto f1 = [](const std::vector<GoldPred>& xs) { return binary_f1(xs); };
  auto mcc = [](const std::vector<GoldPred>& xs) { return matthews_corrcoef(xs); };
  // lm_eval bootstrap_stderr(f1_score, items, iters=2000) and (matthews_corrcoef, items, iters=1500):
  // 1500 iterations run one chunk of 1000.
  CHECK(bootstrap_stderr(resampled(+f1), 12, 2000) == doctest::Approx(0.14466036646006486).epsilon(1e-12));
  CHECK(bootstrap_stderr(resampled(+mcc), 12, 1500) == doctest::Approx(0.26396249648017606).epsilon(1e-12));
}

TEST_CASE("group aggregation: size-weighted mean and pooled stderr") {
  // lm_eval pooled_sample_stderr([0.1, 0.2, 0.05], [10, 20, 30]).
  const auto pooled = pooled_sample_stderr({0.1, 0.2, 0.05}, {10, 20, 30});
  REQUIRE(pooled.has_value());
  CHECK(*pooled == doctest::Approx(0.0730997076017544).epsilon(1e-14));
  CHECK(!pooled_sample_stderr({0.1, std::nullopt}, {10, 20}).has_value());
  // (0.5*10 + 0.8*30) / 40 = 0.725; unweighted (0.5 + 0.8) / 2.
  CHECK(aggregate_subtask_metrics({0.5, 0.8}, {10, 30}, true) == doctest::Approx(0.725));
  CHECK(aggregate_subtask_metrics({0.5, 0.8}, {10, 30}, false) == doctest::Approx(0.65));
  // With equal child means the pooled variance sum((n_i-1) s_i^2) / (N - k) differs from the
  // concatenation's sum((n_i-1) s_i^2) / (N - 1) only in the denominator.
  const std::vector<double> a{1, 0, 1, 0}, b{1, 1, 0, 0, 1, 0};
  std::vector<double> all(a);
  all.insert(all.end(), b.begin(), b.end());
  CHECK(*pooled_sample_stderr({mean_stderr(a), mean_stderr(b)}, {4, 6}) ==
        doctest::Approx(*mean_stderr(all) * std::sqrt(9.0 / 8.0)).epsilon(1e-14));
}
