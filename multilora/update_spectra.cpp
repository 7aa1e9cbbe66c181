// The spectra of training runs' weight updates (see update_spectra.h).
#include "multilora/update_spectra.h"

#include <algorithm>

#include <fmt/format.h>

#include "llama/model.h"
#include "llama/safetensors.h"
#include "multilora/inject.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace mlr {

namespace {

template <typename F>
double mean_over(const std::vector<UpdateMatrix>& matrices, F&& value) {
  if (matrices.empty()) return 0.0;
  double sum = 0.0;
  for (const UpdateMatrix& m : matrices) sum += value(m.stats);
  return sum / static_cast<double>(matrices.size());
}

// Mean over a run's matrices of a per-index series (shorter series padded with their last value).
std::vector<double> mean_series(const UpdateSpectra& run, bool cumulative, size_t max_len) {
  std::vector<double> mean(max_len, 0.0);
  for (const UpdateMatrix& m : run.matrices) {
    const auto& s = cumulative ? m.stats.cumulative_energy : m.stats.normalized;
    for (size_t i = 0; i < max_len; ++i) mean[i] += s.empty() ? 0.0 : (i < s.size() ? s[i] : (cumulative ? s.back() : 0.0));
  }
  for (double& v : mean) v /= static_cast<double>(std::max<size_t>(run.matrices.size(), 1));
  return mean;
}

}  // namespace

double UpdateSpectra::mean_effective_rank() const {
  return mean_over(matrices, [](const SpectrumStats& s) { return s.effective_rank; });
}
double UpdateSpectra::mean_entropy() const {
  return mean_over(matrices, [](const SpectrumStats& s) { return s.entropy; });
}
double UpdateSpectra::mean_top_k_energy(int64_t k) const {
  return mean_over(matrices, [k](const SpectrumStats& s) { return s.top_k_energy(k); });
}

UpdateSpectra adapter_update_spectra(const std::string& model_dir, const std::string& adapter_dir, const std::string& label) {
  auto model = LlamaForCausalLM::from_pretrained(model_dir, DType::f32);
  const auto adapters = inject_adapter_from_file(*model, adapter_dir);
  UpdateSpectra run{label, {}};
  for (const NamedAdapter& a : adapters) {
    Tensor d = a.adapter->delta_weight();
    run.matrices.push_back({a.module_path, d, spectrum_stats(d)});
  }
  return run;
}

UpdateSpectra full_update_spectra(const std::string& model_dir, const std::string& finetuned_dir, const std::string& label) {
  const auto base = load_checkpoint_tensors(model_dir, DType::f64);
  const auto tuned = load_checkpoint_tensors(finetuned_dir, DType::f64);
  UpdateSpectra run{label, {}};
  for (const auto& [name, w0] : base) {
    if (w0.dim() != 2 || name.find(".layers.") == std::string::npos || name.find("_proj.weight") == std::string::npos)
      continue;
    auto it = tuned.find(name);
    MLR_CHECK(it != tuned.end(), "analyze: {} is in {} but not in {}", name, model_dir, finetuned_dir);
    MLR_CHECK(it->second.shape() == w0.shape(), "analyze: {} has shape {} in {} but {} in {}", name,
              shape_str(w0.shape()), model_dir, shape_str(it->second.shape()), finetuned_dir);
    Tensor d = sub(it->second, w0);
    run.matrices.push_back({name.substr(0, name.size() - std::string(".weight").size()), d, spectrum_stats(d)});
  }
  MLR_CHECK(!run.matrices.empty(), "analyze: no decoder projection weights found in {}", model_dir);
  return run;
}

std::string update_spectra_svg(const std::vector<UpdateSpectra>& runs, size_t k) {
  k = std::max<size_t>(k, 1);
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
    for (const UpdateSpectra& r : runs) {
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

}  // namespace mlr
