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

#include "multilora/spectrum.h"
#include "multilora/update_spectra.h"
#include "base/atomic_file.h"
#include "tensor/error.h"
#include "tensor/ops.h"


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
    std::vector<mlr::UpdateSpectra> runs;
    auto label_of = [&](size_t i, const std::string& dir) { return i < labels.size() ? labels[i] : dir; };
    for (const std::string& d : adapter_dirs) runs.push_back(mlr::adapter_update_spectra(model_dir, d, label_of(runs.size(), d)));
    for (const std::string& d : finetuned_dirs) runs.push_back(mlr::full_update_spectra(model_dir, d, label_of(runs.size(), d)));

    nlohmann::json out = {{"runs", nlohmann::json::array()}};
    for (const mlr::UpdateSpectra& run : runs) {
      std::cout << fmt::format("== {}\n{:<44} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8}\n", run.label, "matrix", "rank",
                               "eff.rank", "entropy", "top1", "top4", "top8");
      double eff = 0, ent = 0, top1 = 0;
      nlohmann::json mats = nlohmann::json::array();
      for (const mlr::UpdateMatrix& m : run.matrices) {
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
      std::map<std::string, const mlr::UpdateMatrix*> second;
      for (const mlr::UpdateMatrix& m : runs[1].matrices) second[m.module] = &m;
      const std::vector<int64_t> ks = {1, 2, 4, 8};
      std::vector<std::vector<double>> phi(ks.size(), std::vector<double>(ks.size(), 0.0));
      int64_t common = 0;
      for (const mlr::UpdateMatrix& m : runs[0].matrices) {
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
      mlr::atomic_write_file(svg_path, mlr::update_spectra_svg(runs, static_cast<size_t>(std::max<int64_t>(plot_k, 1))));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
