#include "multilora/spectrum.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "tensor/error.h"
#include "tensor/ops.h"

// LAPACK from OpenBLAS (32-bit integers, column-major). No LAPACKE header on this system, so the
// Fortran symbol is declared here.
extern "C" void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u,
                        const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork, int* iwork,
                        int* info);

namespace mlr {
namespace {

// Runs dgesdd on `matrix` (row-major [m, n]); jobz 'S' (thin U and Vt) or 'N' (values only).
Svd run_gesdd(const Tensor& matrix, char jobz) {
  MLR_CHECK(matrix.defined() && matrix.dim() == 2 && matrix.is_floating_point(),
            "svd: expected a floating-point 2-D matrix, got {}",
            matrix.defined() ? shape_str(matrix.shape()) + " " + dtype_name(matrix.dtype()) : "undefined");
  const int64_t m64 = matrix.size(0), n64 = matrix.size(1);
  MLR_CHECK(m64 > 0 && n64 > 0 && m64 < (1LL << 31) && n64 < (1LL << 31) && m64 * n64 < (1LL << 31),
            "svd: matrix {} is empty or too large for 32-bit LAPACK", shape_str(matrix.shape()));
  const int m = static_cast<int>(m64), n = static_cast<int>(n64), k = std::min(m, n);
  std::vector<double> rowmajor = matrix.to_vector<double>();
  for (double v : rowmajor) MLR_CHECK(std::isfinite(v), "svd: matrix {} has a non-finite entry", shape_str(matrix.shape()));
  std::vector<double> a(static_cast<size_t>(m) * n);  // column-major copy
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) a[static_cast<size_t>(i) + static_cast<size_t>(j) * m] = rowmajor[static_cast<size_t>(i) * n + j];
  std::vector<double> s(static_cast<size_t>(k));
  const bool vectors = jobz == 'S';
  std::vector<double> u(vectors ? static_cast<size_t>(m) * k : 1), vt(vectors ? static_cast<size_t>(k) * n : 1);
  const int ldu = vectors ? m : 1, ldvt = vectors ? k : 1;
  std::vector<int> iwork(static_cast<size_t>(8) * k);
  int info = 0, lwork = -1;
  double query = 0.0;
  dgesdd_(&jobz, &m, &n, a.data(), &m, s.data(), u.data(), &ldu, vt.data(), &ldvt, &query, &lwork, iwork.data(), &info);
  MLR_CHECK(info == 0, "svd: dgesdd workspace query failed (info {}) for {}", info, shape_str(matrix.shape()));
  lwork = static_cast<int>(query) + 1;
  std::vector<double> work(static_cast<size_t>(lwork));
  dgesdd_(&jobz, &m, &n, a.data(), &m, s.data(), u.data(), &ldu, vt.data(), &ldvt, work.data(), &lwork, iwork.data(),
          &info);
  MLR_CHECK(info == 0, "svd: dgesdd failed for {} (info {}: {})", shape_str(matrix.shape()), info,
            info > 0 ? "did not converge" : "bad argument");
  Svd out;
  out.S = from_vector(s, {k});
  if (vectors) {
    std::vector<double> ur(static_cast<size_t>(m) * k), vr(static_cast<size_t>(k) * n);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < k; ++j) ur[static_cast<size_t>(i) * k + j] = u[static_cast<size_t>(i) + static_cast<size_t>(j) * m];
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < n; ++j) vr[static_cast<size_t>(i) * n + j] = vt[static_cast<size_t>(i) + static_cast<size_t>(j) * k];
    out.U = from_vector(ur, {m, k});
    out.Vt = from_vector(vr, {k, n});
  }
  return out;
}

}  // namespace

#if defined(MLR_CUDA) && defined(MLR_CUDA_KERNELS)
// multilora/spectrum_cusolver.cu: the same factorisation by cuSOLVER for matrices on a GPU.
Svd svd_cusolver(const Tensor& matrix, bool vectors);
#endif

Svd svd(const Tensor& matrix) {
#if defined(MLR_CUDA) && defined(MLR_CUDA_KERNELS)
  if (matrix.defined() && matrix.device().is_cuda()) return svd_cusolver(matrix, true);
#endif
  return run_gesdd(matrix.defined() ? matrix.cpu() : matrix, 'S');
}
Tensor singular_values(const Tensor& matrix) {
#if defined(MLR_CUDA) && defined(MLR_CUDA_KERNELS)
  if (matrix.defined() && matrix.device().is_cuda()) return svd_cusolver(matrix, false).S;
#endif
  return run_gesdd(matrix.defined() ? matrix.cpu() : matrix, 'N').S;
}

double SpectrumStats::top_k_energy(int64_t k) const {
  MLR_CHECK(k >= 1, "spectrum: top-k energy needs k >= 1, got {}", k);
  if (cumulative_energy.empty()) return 0.0;
  return cumulative_energy[static_cast<size_t>(std::min<int64_t>(k, static_cast<int64_t>(cumulative_energy.size())) - 1)];
}

SpectrumStats spectrum_stats(std::vector<double> sv) {
  for (double v : sv) MLR_CHECK(std::isfinite(v) && v >= 0.0, "spectrum: singular value {} is negative or not finite", v);
  std::sort(sv.begin(), sv.end(), std::greater<>());
  SpectrumStats st;
  st.singular_values = sv;
  double total = 0.0, total_sq = 0.0;
  for (double v : sv) {
    total += v;
    total_sq += v * v;
  }
  double cum = 0.0;
  for (double v : sv) {
    double p = total > 0 ? v / total : 0.0;
    st.normalized.push_back(p);
    if (p > 0) st.entropy -= p * std::log(p);
    cum += total_sq > 0 ? v * v / total_sq : 0.0;
    st.cumulative_energy.push_back(cum);
  }
  st.effective_rank = total > 0 ? std::exp(st.entropy) : 0.0;
  return st;
}

SpectrumStats spectrum_stats(const Tensor& matrix) { return spectrum_stats(singular_values(matrix).to_vector<double>()); }

double subspace_similarity(const Tensor& U1, const Tensor& U2, int64_t i, int64_t j) {
  MLR_CHECK(U1.dim() == 2 && U2.dim() == 2 && U1.size(0) == U2.size(0),
            "subspace similarity: U1 {} and U2 {} must be [m, k] with the same m", shape_str(U1.shape()),
            shape_str(U2.shape()));
  MLR_CHECK(i >= 1 && i <= U1.size(1) && j >= 1 && j <= U2.size(1),
            "subspace similarity: (i, j) = ({}, {}) outside [1, {}] x [1, {}]", i, j, U1.size(1), U2.size(1));
  Tensor a = cast(U1.narrow(1, 0, i), DType::f64), b = cast(U2.narrow(1, 0, j), DType::f64);
  Tensor prod = matmul(a.t(), b);
  double fro2 = sum(square(prod)).item<double>();
  return fro2 / static_cast<double>(std::min(i, j));
}

}  // namespace mlr
