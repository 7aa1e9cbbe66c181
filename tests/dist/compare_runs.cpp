// dist_compare_runs: compares two mlr-train output directories, for the data-parallel tests:
//   dist_compare_runs <run a> <run b> <loss tolerance> <weight tolerance> [first step]
// Every training step's loss in metrics.jsonl (from `first step`, default 1) must agree to
// |a - b| <= tol * max(1, |a|), and every tensor of final/ (adapter_model.safetensors or
// model.safetensors) to max |a - b| <= tol * max(1, max |a|), every held-out loss of the periodic
// evaluations to the loss tolerance, and every benchmark metric (accuracies: means of 0/1 per
// document) exactly. Prints the largest
// differences; exit status 1 when a bound is broken or the runs differ in steps, tensors or
// evaluations.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "llama/safetensors.h"

namespace fs = std::filesystem;

namespace {

// Each step's `key` ("loss", "heldout_loss") in metrics.jsonl.
std::map<int64_t, double> step_values(const fs::path& run, const char* key) {
  std::ifstream in(run / "metrics.jsonl");
  if (!in) throw std::runtime_error("cannot read " + (run / "metrics.jsonl").string());
  std::map<int64_t, double> losses;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains(key)) losses[j.at("step").get<int64_t>()] = j.at(key).get<double>();
  }
  return losses;
}

// The evaluation records of metrics.jsonl: step -> "task/metric" -> value.
std::map<int64_t, std::map<std::string, double>> eval_metrics(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  std::map<int64_t, std::map<std::string, double>> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("tasks")) continue;
    for (const auto& [task, metrics] : j.at("tasks").items())
      for (const auto& [metric, value] : metrics.items())
        if (value.is_number()) out[j.at("step").get<int64_t>()][task + "/" + metric] = value.get<double>();
  }
  return out;
}

fs::path weights_file(const fs::path& run) {
  for (const char* name : {"adapter_model.safetensors", "model.safetensors"})
    if (fs::exists(run / "final" / name)) return run / "final" / name;
  throw std::runtime_error("no final weights in " + (run / "final").string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::cerr << "usage: dist_compare_runs <run a> <run b> <loss tolerance> <weight tolerance> [first step]\n";
    return 2;
  }
  try {
    const fs::path a = argv[1], b = argv[2];
    const double loss_tol = std::stod(argv[3]), weight_tol = std::stod(argv[4]);
    const int64_t first = argc > 5 ? std::stoll(argv[5]) : 1;
    bool ok = true;
    auto la = step_values(a, "loss"), lb = step_values(b, "loss");
    double worst_loss = 0;
    int compared = 0;
    for (const auto& [step, loss] : la) {
      if (step < first) continue;
      auto it = lb.find(step);
      if (it == lb.end()) {
        std::cout << fmt::format("step {}: in {} only\n", step, a.string());
        ok = false;
        continue;
      }
      const double d = std::abs(loss - it->second);
      worst_loss = std::max(worst_loss, d / std::max(1.0, std::abs(loss)));
      if (d > loss_tol * std::max(1.0, std::abs(loss))) {
        std::cout << fmt::format("step {}: loss {:.9g} vs {:.9g}\n", step, loss, it->second);
        ok = false;
      }
      ++compared;
    }
    if (compared == 0) {
      std::cout << "no steps to compare\n";
      ok = false;
    }
    const auto ta = mlr::load_checkpoint_tensors(weights_file(a).string(), mlr::DType::f64);
    const auto tb = mlr::load_checkpoint_tensors(weights_file(b).string(), mlr::DType::f64);
    double worst_weight = 0;
    std::string worst_name;
    for (const auto& [name, t] : ta) {
      auto it = tb.find(name);
      if (it == tb.end() || it->second.shape() != t.shape()) {
        std::cout << fmt::format("tensor {}: missing or of another shape in {}\n", name, b.string());
        ok = false;
        continue;
      }
      const auto va = t.to_vector<double>(), vb = it->second.to_vector<double>();
      double scale = 1, diff = 0;
      for (size_t i = 0; i < va.size(); ++i) {
        scale = std::max(scale, std::abs(va[i]));
        diff = std::max(diff, std::abs(va[i] - vb[i]));
      }
      if (diff / scale > worst_weight) {
        worst_weight = diff / scale;
        worst_name = name;
      }
      if (diff > weight_tol * scale) ok = false;
    }
    if (ta.size() != tb.size()) ok = false;
    const auto ha = step_values(a, "heldout_loss"), hb = step_values(b, "heldout_loss");
    double worst_heldout = 0;
    if (ha.size() != hb.size()) {
      std::cout << fmt::format("{} held-out losses vs {}\n", ha.size(), hb.size());
      ok = false;
    }
    for (const auto& [step, loss] : ha) {
      auto it = hb.find(step);
      if (it == hb.end()) {
        std::cout << fmt::format("held-out loss of step {}: in {} only\n", step, a.string());
        ok = false;
        continue;
      }
      const double d = std::abs(loss - it->second) / std::max(1.0, std::abs(loss));
      worst_heldout = std::max(worst_heldout, d);
      if (d > loss_tol) {
        std::cout << fmt::format("held-out loss of step {}: {:.9g} vs {:.9g}\n", step, loss, it->second);
        ok = false;
      }
    }
    if (!ha.empty())
      std::cout << fmt::format("{} held-out losses: largest difference {:.3g} (bound {:.1g})\n", ha.size(),
                               worst_heldout, loss_tol);
    const auto ea = eval_metrics(a), eb = eval_metrics(b);
    size_t evaluated = 0;
    if (ea != eb) {
      std::cout << "the evaluations differ (steps, tasks or values of metrics.jsonl's \"tasks\" records)\n";
      ok = false;
    }
    for (const auto& [step, metrics] : ea) evaluated += metrics.size();
    if (evaluated > 0) std::cout << fmt::format("{} evaluation figures identical: {}\n", evaluated, ea == eb ? "yes" : "no");
    std::cout << fmt::format("{} steps: largest loss difference {:.3g} (bound {:.1g}); {} tensors: largest weight "
                             "difference {:.3g} ({}; bound {:.1g}): {}\n",
                             compared, worst_loss, loss_tol, ta.size(), worst_weight, worst_name, weight_tol,
                             ok ? "equal within the bounds" : "DIFFERENT");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "dist_compare_runs: " << e.what() << "\n";
    return 2;
  }
}
