// The spectra of the weight updates of training runs, as mlr-analyze reports them and the demo
// (demo/) puts in its page: per adapted matrix the update dW (an adapter's delta_weight(), or
// W_finetuned - W0 for full fine-tuning) and its statistics (multilora/spectrum.h), and an SVG of
// the runs' mean normalised spectra and cumulative energy side by side.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "multilora/spectrum.h"

namespace mlr {

struct UpdateMatrix {
  std::string module;  // e.g. model.layers.0.self_attn.q_proj
  Tensor delta;        // [out, in]
  SpectrumStats stats;
};

struct UpdateSpectra {
  std::string label;
  std::vector<UpdateMatrix> matrices;
  // Means over the matrices (0 when there are none).
  double mean_effective_rank() const;
  double mean_entropy() const;
  double mean_top_k_energy(int64_t k) const;
};

// dW = the adapter's update for every module the adapter in `adapter_dir` wraps in the model of `model_dir`.
UpdateSpectra adapter_update_spectra(const std::string& model_dir, const std::string& adapter_dir, const std::string& label);
// dW = W_finetuned - W0 for every linear projection of the decoder layers.
UpdateSpectra full_update_spectra(const std::string& model_dir, const std::string& finetuned_dir, const std::string& label);

// Two panels: the mean normalised spectrum p_i and the mean cumulative energy E_k over the first
// `k` indices, one line per run (a standalone <svg> element, no external assets).
std::string update_spectra_svg(const std::vector<UpdateSpectra>& runs, size_t k);

}  // namespace mlr
