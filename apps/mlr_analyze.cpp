// mlr-analyze: the singular-value analysis that motivates MultiLoRA. For every adapted module of an
// adapter directory, the spectrum of its update dW (B A for LoRA, the scaled sum of the modules for
// MultiLoRA): effective rank exp(H) of the normalised spectrum, spectral entropy H, and the share of
// energy in the top 1 / 4 / 8 singular directions. A flatter spectrum (higher effective rank,
// lower top-k share) means the update spreads over more directions. --json writes every singular
// value for plotting.
//
//   mlr-analyze --model /models/Llama-2-7b-hf --adapter runs/multilora-7b/final [--json spectra.json]
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "llama/model.h"
#include "multilora/inject.h"
#include "multilora/spectrum.h"
#include "tensor/error.h"

int main(int argc, char** argv) {
  CLI::App app{"mlr-analyze: singular-value spectra of adapter updates"};
  std::string model_dir, adapter_dir, json_path;
  app.add_option("--model", model_dir, "base checkpoint directory")->required();
  app.add_option("--adapter", adapter_dir, "adapter directory")->required();
  app.add_option("--json", json_path, "write every module's singular values and statistics here");
  CLI11_PARSE(app, argc, argv);
  try {
    auto model = mlr::LlamaForCausalLM::from_pretrained(model_dir, mlr::DType::f32);
    const auto adapters = mlr::inject_adapter_from_file(*model, adapter_dir);
    nlohmann::json out = nlohmann::json::array();
    std::cout << fmt::format("{:<44} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8}\n", "module", "rank", "eff.rank", "entropy",
                             "top1", "top4", "top8");
    double sum_eff = 0;
    for (const mlr::NamedAdapter& a : adapters) {
      const mlr::SpectrumStats s = mlr::spectrum_stats(a.adapter->delta_weight());
      int64_t rank = 0;
      for (double v : s.singular_values)
        if (v > 1e-6 * (s.singular_values.empty() ? 0 : s.singular_values.front())) ++rank;
      sum_eff += s.effective_rank;
      std::cout << fmt::format("{:<44} {:>6} {:>9.2f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f}\n", a.module_path, rank,
                               s.effective_rank, s.entropy, s.top_k_energy(1), s.top_k_energy(4), s.top_k_energy(8));
      out.push_back({{"module", a.module_path}, {"numerical_rank", rank}, {"effective_rank", s.effective_rank},
                     {"entropy", s.entropy}, {"top1_energy", s.top_k_energy(1)}, {"top4_energy", s.top_k_energy(4)},
                     {"top8_energy", s.top_k_energy(8)}, {"singular_values", s.singular_values}});
    }
    if (!adapters.empty())
      std::cout << fmt::format("mean effective rank over {} modules: {:.2f}\n", adapters.size(),
                               sum_eff / static_cast<double>(adapters.size()));
    if (!json_path.empty()) std::ofstream(json_path) << out.dump(1) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
