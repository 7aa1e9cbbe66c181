// mlr-analyze: the singular-value analysis that motivates MultiLoRA. For every adapted matrix of
// each run, the SVD of its update dW (the merged adapter's B A, or the scaled sum of MultiLoRA's
// modules; W_finetuned - W0 for a full fine-tuning run) and its spectrum statistics (stated in
// multilora/spectrum.h): singular values, normalised spectrum, cumulative energy, spectral entropy,
// effective rank exp(H), top-k energy share. With two or more runs, the subspace similarity
// phi(i, j) = ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j) of the first two, averaged over their common
// matrices. --json writes everything, --svg draws the mean normalised spectra and cumulative energy
// of the runs side by side (LoRA vs MultiLoRA vs full fine-tuning, as the paper's figures).
//
//   mlr-analyze --model BASE --adapter runs/lora/final --adapter runs/multilora/final \
//               --finetuned runs/full/final --svg spectra.svg --json spectra.json
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "llama/model.h"
#include "llama/safetensors.h"
#include "multilora/inject.h"
#include "multilora/spectrum.h"
#include "base/atomic_file.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace {

struct Matrix {
  std::string module;
  mlr::Tensor delta;  // f32/f64 [out, in]
  mlr::SpectrumStats stats;
};

struct Run {
  std::string label;
  std::vector<Matrix> matrices;
};

Run adapter_run(const std::string& model_dir, const std::string& adapter_dir, const std::string& label) {
  auto model = mlr::LlamaForCausalLM::from_pretrained(model_dir, mlr::DType::f32);
  const auto adapters = mlr::inject_adapter_from_file(*model, adapter_dir);
  Run run{label, {}};
  for (const mlr::NamedAdapter& a : adapters) {
    mlr::Tensor d = a.adapter->delta_weight();
    run.matrices.push_back({a.module_path, d, mlr::spectrum_stats(d)});
  }
  return run;
}

// W_finetuned - W0 for every linear projection of the decoder layers.
Run full_run(const std::string& model_dir, const std::string& finetuned_dir, const std::string& label) {
  const auto base = mlr::load_checkpoint_tensors(model_dir, mlr::DType::f64);
  const auto tuned = mlr::load_checkpoint_tensors(finetuned_dir, mlr::DType::f64);
  Run run{label, {}};
  for (const auto& [name, w0] : base) {
    if (w0.dim() != 2 || name.find(".layers.") == std::string::npos || name.find("_proj.weight") == std::string::npos)
      continue;
    auto it = tuned.find(name);
    MLR_CHECK(it != tuned.end(), "mlr-analyze: {} is in {} but not in {}", name, model_dir, finetuned_dir);
    MLR_CHECK(it->second.shape() == w0.shape(), "mlr-analyze: {} has shape {} in {} but {} in {}", name,
              mlr::shape_str(w0.shape()), model_dir, mlr::shape_str(it->second.shape()), finetuned_dir);
    mlr::Tensor d = mlr::sub(it->second, w0);
    run.matrices.push_back({name.substr(0, name.size() - std::string(".weight").size()), d, mlr::spectrum_stats(d)});
  }
  MLR_CHECK(!run.matrices.empty(), "mlr-analyze: no decoder projection weights found in {}", model_dir);
  return run;
}

// Mean over a run's matrices of a per-index series (shorter series padded with their last value).
std::vector<double> mean_series(const Run& run, bool cumulative, size_t max_len) {
  std::vector<double> mean(max_len, 0.0);
  for (const Matrix& m : run.matrices) {
    const auto& s = cumulative ? m.stats.cumulative_energy : m.stats.normalized;
    for (size_t i = 0; i < max_len; ++i) mean[i] += s.empty() ? 0.0 : (i < s.size() ? s[i] : (cumulative ? s.back() : 0.0));
  }
  for (double& v : mean) v /= std::max<size_t>(run.matrices.size(), 1);
  return mean;
}

// Two panels: mean normalised spectrum p_i and mean cumulative energy E_k over the first `k` indices.
std::string svg_plot(const std::vector<Run>& runs, size_t k) {
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  const double W = 420, H = 300, left = 55, top = 30, pw = 330, ph = 220;
  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n",
      2 * W, H + 40);
  for (int panel = 0; panel < 2; ++panel) {
    const bool cumulative = panel == 1;
    const double x0 = panel * W + left;
    double ymax = cumulative ? 1.0 : 0.0;
    std::vector<std::vector<double>> series;
    for (const Run& r : runs) {
      series.push_back(mean_series(r, cumulative, k));
      for (double v : series.back()) ymax = std::max(ymax, v);
    }
    if (ymax <= 0) ymax = 1;
    out += fmt::format("<text x=\"{}\" y=\"18\">{}</text>\n", x0,
                       cumulative ? "cumulative energy E_k (mean over matrices)" : "normalised singular values p_i (mean)");
    out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", x0, top, pw, ph);
    for (int t = 0; t <= 4; ++t) {
      const double y = top + ph - ph * t / 4.0;
      out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.2f}</text>\n", x0 - 4, y + 4, ymax * t / 4.0);
    }
    out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">index i (1..{})</text>\n", x0 + pw / 2, top + ph + 18, k);
    for (size_t r = 0; r < series.size(); ++r) {
      std::string pts;
      for (size_t i = 0; i < k; ++i) {
        const double x = x0 + (k == 1 ? pw / 2 : pw * static_cast<double>(i) / static_cast<double>(k - 1));
        const double y = top + ph - ph * series[r][i] / ymax;
        pts += fmt::format("{:.1f},{:.1f} ", x, y);
      }
      out += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", colors[r % 6], pts);
      if (panel == 0)
        out += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n", x0 + pw - 120, top + 16 + 16 * r, colors[r % 6],
                           runs[r].label);
    }
  }
  return out + "</svg>\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlr-analyze: singular-value spectra of adapter and fine-tuning updates"};
  std::string model_dir, json_path, svg_path;
  std::vector<std::string> adapter_dirs, finetuned_dirs, labels;
  int64_t plot_k = 16;
  app.add_option("--model", model_dir, "base checkpoint directory")->required();
  app.add_option("--adapter", adapter_dirs, "adapter directory (repeat for several runs)");
  app.add_option("--finetuned", finetuned_dirs, "fully fine-tuned checkpoint directory (dW = W - W0)");
  app.add_option("--label", labels, "names of the runs, in order: adapters first, then fine-tuned");
  app.add_option("--json", json_path, "write every matrix's singular values and statistics here");
  app.add_option("--svg", svg_path, "plot the mean spectra of the runs here");
  app.add_option("--plot-k", plot_k, "singular values shown in the plot");
  CLI11_PARSE(app, argc, argv);
  try {
    MLR_CHECK(!adapter_dirs.empty() || !finetuned_dirs.empty(), "mlr-analyze: give --adapter and/or --finetuned");
    std::vector<Run> runs;
    auto label_of = [&](size_t i, const std::string& dir) { return i < labels.size() ? labels[i] : dir; };
    for (const std::string& d : adapter_dirs) runs.push_back(adapter_run(model_dir, d, label_of(runs.size(), d)));
    for (const std::string& d : finetuned_dirs) runs.push_back(full_run(model_dir, d, label_of(runs.size(), d)));

    nlohmann::json out = {{"runs", nlohmann::json::array()}};
    for (const Run& run : runs) {
      std::cout << fmt::format("== {}\n{:<44} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8}\n", run.label, "matrix", "rank",
                               "eff.rank", "entropy", "top1", "top4", "top8");
      double eff = 0, ent = 0, top1 = 0;
      nlohmann::json mats = nlohmann::json::array();
      for (const Matrix& m : run.matrices) {
        const auto& s = m.stats;
        int64_t rank = 0;
        for (double v : s.singular_values) rank += v > 1e-6 * (s.singular_values.empty() ? 0 : s.singular_values.front());
        eff += s.effective_rank;
        ent += s.entropy;
        top1 += s.top_k_energy(1);
        std::cout << fmt::format("{:<44} {:>6} {:>9.2f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f}\n", m.module, rank,
                                 s.effective_rank, s.entropy, s.top_k_energy(1), s.top_k_energy(4), s.top_k_energy(8));
        mats.push_back({{"matrix", m.module}, {"numerical_rank", rank}, {"effective_rank", s.effective_rank},
                        {"entropy", s.entropy}, {"top1_energy", s.top_k_energy(1)}, {"top4_energy", s.top_k_energy(4)},
                        {"top8_energy", s.top_k_energy(8)}, {"singular_values", s.singular_values},
                        {"normalized", s.normalized}, {"cumulative_energy", s.cumulative_energy}});
      }
      const double n = static_cast<double>(std::max<size_t>(run.matrices.size(), 1));
      std::cout << fmt::format("mean over {} matrices: effective rank {:.3f}, entropy {:.4f}, top-1 energy {:.4f}\n",
                               run.matrices.size(), eff / n, ent / n, top1 / n);
      out["runs"].push_back({{"label", run.label}, {"mean_effective_rank", eff / n}, {"mean_entropy", ent / n},
                             {"mean_top1_energy", top1 / n}, {"matrices", mats}});
    }
    if (runs.size() >= 2) {
      // phi(i, j) between the first two runs, averaged over the matrices they share.
      std::map<std::string, const Matrix*> second;
      for (const Matrix& m : runs[1].matrices) second[m.module] = &m;
      const std::vector<int64_t> ks = {1, 2, 4, 8};
      std::vector<std::vector<double>> phi(ks.size(), std::vector<double>(ks.size(), 0.0));
      int64_t common = 0;
      for (const Matrix& m : runs[0].matrices) {
        auto it = second.find(m.module);
        if (it == second.end()) continue;
        const mlr::Tensor U1 = mlr::svd(m.delta).U, U2 = mlr::svd(it->second->delta).U;
        for (size_t a = 0; a < ks.size(); ++a)
          for (size_t b = 0; b < ks.size(); ++b)
            phi[a][b] += mlr::subspace_similarity(U1, U2, std::min<int64_t>(ks[a], U1.size(1)),
                                                  std::min<int64_t>(ks[b], U2.size(1)));
        ++common;
      }
      if (common > 0) {
        std::cout << fmt::format("subspace similarity phi(i, j) of {} (rows i) and {} (columns j), mean over {} matrices\n",
                                 runs[0].label, runs[1].label, common);
        std::cout << "      j=1      j=2      j=4      j=8\n";
        nlohmann::json pj = nlohmann::json::array();
        for (size_t a = 0; a < ks.size(); ++a) {
          std::cout << fmt::format("i={:<2}", ks[a]);
          for (size_t b = 0; b < ks.size(); ++b) {
            phi[a][b] /= static_cast<double>(common);
            std::cout << fmt::format(" {:8.4f}", phi[a][b]);
          }
          std::cout << "\n";
          pj.push_back(phi[a]);
        }
        out["subspace_similarity"] = {{"runs", {runs[0].label, runs[1].label}}, {"k", ks}, {"phi", pj}};
      }
    }
    if (!json_path.empty()) mlr::atomic_write_file(json_path, out.dump(1) + "\n");
    if (!svg_path.empty())
      mlr::atomic_write_file(svg_path, svg_plot(runs, static_cast<size_t>(std::max<int64_t>(plot_k, 1))));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
