// Metrics and standard errors as lm-evaluation-harness computes them (lm_eval/api/metrics.py,
// super_glue/cb/aggregate.py, evaluator_utils.py). Sums run left to right in double, as Python's
// sum() does, so values agree with the harness to the last bit or nearly so.
//
//   mean(xs)              = sum(xs) / n
//   mean_stderr(xs)       = sqrt(sum((x - mean)^2) / (n - 1)) / sqrt(n)       ("N/A" for n <= 1)
//   f1 (registry "f1")    = sklearn f1_score(golds, preds), binary, positive label 1,
//                           2TP / (2TP + FP + FN), 0 when the denominator is 0
//   cb_multi_f1           = mean over c in {0,1,2} of binary F1 of (gold == c, pred == c)
//   mcc                   = sklearn matthews_corrcoef (multiclass form over the confusion matrix)
//   bootstrap_stderr      = sample std dev of f over replicates; replicate chunk i (1000 each) is
//                           drawn with Python's Random(i).choices(xs, k=len(xs))
//   pooled_sample_stderr  = sqrt( sum((n_i - 1) n_i se_i^2) / (sum n_i - k) / sum n_i )
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace mlr::eval {

struct GoldPred {
  int gold = 0;
  int pred = 0;
};

double mean(const std::vector<double>& xs);
double sample_stddev(const std::vector<double>& xs);  // n - 1 denominator
std::optional<double> mean_stderr(const std::vector<double>& xs);

double binary_f1(const std::vector<GoldPred>& items, int positive = 1);  // gold/pred compared with `positive`
double cb_multi_f1(const std::vector<GoldPred>& items);
double matthews_corrcoef(const std::vector<GoldPred>& items);

// f is evaluated on resamples given as index lists into the n items.
double bootstrap_stderr(const std::function<double(const std::vector<int64_t>&)>& f, int64_t n, int64_t iters);

// Group standard error over children (n_i, se_i); nullopt when any child has none.
std::optional<double> pooled_sample_stderr(const std::vector<std::optional<double>>& stderrs,
                                           const std::vector<int64_t>& sizes);
// Weighted (by size) or plain mean of the children's values.
double aggregate_subtask_metrics(const std::vector<double>& values, const std::vector<int64_t>& sizes,
                                 bool weight_by_size);

}  // namespace mlr::eval
