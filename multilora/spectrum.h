// Singular-value analysis of weight updates (what motivates MultiLoRA: LoRA's update dW = B A is
// dominated by a few singular values, MultiLoRA's spectrum is flatter).
//
// For singular values s_1 >= ... >= s_n >= 0 of dW:
//   normalised spectrum  p_i = s_i / sum_j s_j
//   spectral entropy     H = -sum_i p_i ln p_i          (nats; 0 when one value carries all)
//   effective rank       exp(H)                         (Roy & Vetterli 2007; n for a flat spectrum)
//   energy              e_i = s_i^2 / sum_j s_j^2,  cumulative energy E_k = sum_{i<=k} e_i
//   top-k energy share   E_k
// Subspace similarity of two runs (Hu et al. 2021, LoRA paper section 7):
//   phi(i, j) = ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j)   in [0, 1]
// The SVD is LAPACK's dgesdd (divide and conquer) from the OpenBLAS we link, in float64.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace mlr {

struct Svd {
  Tensor U;   // [m, k] f64, k = min(m, n)
  Tensor S;   // [k] f64, descending
  Tensor Vt;  // [k, n] f64
};

// Thin SVD of a 2-D floating-point matrix (any float dtype; computed in f64 on the CPU).
Svd svd(const Tensor& matrix);
// Singular values only (descending, f64), cheaper than svd().
Tensor singular_values(const Tensor& matrix);

struct SpectrumStats {
  std::vector<double> singular_values;    // descending
  std::vector<double> normalized;         // p_i
  std::vector<double> cumulative_energy;  // E_k for k = 1..n
  double entropy = 0.0;
  double effective_rank = 0.0;
  // E_k for k >= 1 (k past the end gives 1; an all-zero spectrum gives 0).
  double top_k_energy(int64_t k) const;
};

// Stats of a spectrum (any order, values >= 0; it is sorted descending).
SpectrumStats spectrum_stats(std::vector<double> singular_values);
SpectrumStats spectrum_stats(const Tensor& matrix);  // of the matrix's singular values

// phi(i, j) from the left singular vectors of two runs (U1 [m, k1], U2 [m, k2]).
double subspace_similarity(const Tensor& U1, const Tensor& U2, int64_t i, int64_t j);

}  // namespace mlr
