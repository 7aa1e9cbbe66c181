#include "eval/metrics.h"

#include <cmath>
#include <map>

#include "eval/python_random.h"
#include "tensor/error.h"

namespace mlr::eval {

double mean(const std::vector<double>& xs) {
  MLR_CHECK(!xs.empty(), "eval: mean of an empty list");
  double sum = 0.0;
  for (double x : xs) sum += x;
  return sum / static_cast<double>(xs.size());
}

double sample_stddev(const std::vector<double>& xs) {
  MLR_CHECK(xs.size() >= 2, "eval: sample standard deviation needs at least 2 values, got {}", xs.size());
  const double mu = mean(xs);
  double sum = 0.0;
  for (double x : xs) sum += (x - mu) * (x - mu);
  return std::sqrt(sum / static_cast<double>(xs.size() - 1));
}

std::optional<double> mean_stderr(const std::vector<double>& xs) {
  if (xs.size() <= 1) return std::nullopt;
  return sample_stddev(xs) / std::sqrt(static_cast<double>(xs.size()));
}

double binary_f1(const std::vector<GoldPred>& items, int positive) {
  int64_t tp = 0, fp = 0, fn = 0;
  for (const auto& it : items) {
    const bool g = it.gold == positive, p = it.pred == positive;
    tp += g && p;
    fp += !g && p;
    fn += g && !p;
  }
  const int64_t denominator = 2 * tp + fp + fn;
  return denominator == 0 ? 0.0 : 2.0 * static_cast<double>(tp) / static_cast<double>(denominator);
}

double cb_multi_f1(const std::vector<GoldPred>& items) {
  // np.mean of three floats: (f0 + f1 + f2) / 3 summed left to right.
  double sum = 0.0;
  for (int c = 0; c < 3; ++c) sum += binary_f1(items, c);
  return sum / 3.0;
}

double matthews_corrcoef(const std::vector<GoldPred>& items) {
  std::map<int, int64_t> true_count, pred_count;
  int64_t correct = 0;
  for (const auto& it : items) {
    ++true_count[it.gold];
    ++pred_count[it.pred];
    correct += it.gold == it.pred;
  }
  const auto n = static_cast<double>(items.size());
  double t_dot_p = 0.0, p_dot_p = 0.0, t_dot_t = 0.0;
  for (const auto& [label, t] : true_count) {
    t_dot_t += static_cast<double>(t) * static_cast<double>(t);
    auto it = pred_count.find(label);
    if (it != pred_count.end()) t_dot_p += static_cast<double>(t) * static_cast<double>(it->second);
  }
  for (const auto& [label, p] : pred_count) p_dot_p += static_cast<double>(p) * static_cast<double>(p);
  const double cov_ytyp = static_cast<double>(correct) * n - t_dot_p;
  const double cov_ypyp = n * n - p_dot_p;
  const double cov_ytyt = n * n - t_dot_t;
  if (cov_ypyp * cov_ytyt == 0.0) return 0.0;
  return cov_ytyp / std::sqrt(cov_ytyt * cov_ypyp);
}

double bootstrap_stderr(const std::function<double(const std::vector<int64_t>&)>& f, int64_t n, int64_t iters) {
  MLR_CHECK(iters >= 1 && n >= 1, "eval: bootstrap needs items ({}) and iterations ({})", n, iters);
  const int64_t chunk = iters < 1000 ? iters : 1000;
  std::vector<double> replicates;
  replicates.reserve(static_cast<size_t>(iters / chunk * chunk));
  for (int64_t i = 0; i < iters / chunk; ++i) {
    PythonRandom rnd(static_cast<uint64_t>(i));
    for (int64_t r = 0; r < chunk; ++r) replicates.push_back(f(rnd.choices(n, n)));
  }
  return sample_stddev(replicates);
}

std::optional<double> pooled_sample_stderr(const std::vector<std::optional<double>>& stderrs,
                                           const std::vector<int64_t>& sizes) {
  MLR_CHECK(stderrs.size() == sizes.size() && !sizes.empty(), "eval: pooled stderr over {} stderrs and {} sizes",
            stderrs.size(), sizes.size());
  double numerator = 0.0;
  int64_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (!stderrs[i]) return std::nullopt;
    const auto n = static_cast<double>(sizes[i]);
    const double se = *stderrs[i];
    numerator += (n - 1.0) * (se * se) * n;  // Python: (size - 1) * stderr**2 * size
    total += sizes[i];
  }
  const double k = static_cast<double>(sizes.size());
  if (static_cast<double>(total) - k <= 0.0) return std::nullopt;
  return std::sqrt(numerator / (static_cast<double>(total) - k) / static_cast<double>(total));
}

double aggregate_subtask_metrics(const std::vector<double>& values, const std::vector<int64_t>& sizes,
                                 bool weight_by_size) {
  MLR_CHECK(values.size() == sizes.size() && !values.empty(), "eval: group of {} values and {} sizes",
            values.size(), sizes.size());
  if (!weight_by_size) return mean(values);
  double weighted = 0.0;
  int64_t total = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    weighted += values[i] * static_cast<double>(sizes[i]);
    total += sizes[i];
  }
  return weighted / static_cast<double>(total);
}

}  // namespace mlr::eval
