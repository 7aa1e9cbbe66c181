// The SVD of the analysis on the GPU: cuSOLVER's dgesvd in float64 for a matrix that lives on a CUDA
// device (large full fine-tuning deltas need not come back to the host). Results are returned on
// the CPU, in the layout of the LAPACK path (multilora/spectrum.cpp): U [m, k], S [k] descending,
// Vt [k, n], k = min(m, n).
//
// cuSOLVER's gesvd is column-major and needs rows >= columns. A row-major [m, n] matrix is the
// column-major [n, m] matrix A^T, so:
//   n >= m: factor A^T = U' S V'^T as it lies; then A = V' S U'^T: U = V' (from VT'), Vt = U'^T;
//   n <  m: transpose on the device (A^T row-major = A column-major) and factor A = U S V^T directly.
#include <cusolverDn.h>

#include <vector>

#include "multilora/spectrum.h"
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/ops.h"

#define MLR_CUSOLVER_CHECK(expr)                                                                             \
  do {                                                                                                       \
    cusolverStatus_t mlr_status_ = (expr);                                                                   \
    if (mlr_status_ != CUSOLVER_STATUS_SUCCESS)                                                              \
      throw ::mlr::Error(::fmt::format("cusolver: {} failed at {}:{} (status {})", #expr, __FILE__, __LINE__, \
                                       static_cast<int>(mlr_status_)));                                      \
  } while (0)

namespace mlr {

Svd svd_cusolver(const Tensor& matrix, bool vectors) {
  MLR_CHECK(matrix.device().is_cuda() && matrix.dim() == 2 && matrix.is_floating_point(),
            "svd (cuda): expected a floating 2-D matrix on a CUDA device, got {} on {}", shape_str(matrix.shape()),
            matrix.device().str());
  const int64_t m64 = matrix.size(0), n64 = matrix.size(1);
  MLR_CHECK(m64 > 0 && n64 > 0 && m64 < (1LL << 31) && n64 < (1LL << 31), "svd (cuda): matrix {} is empty or too large",
            shape_str(matrix.shape()));
  const int m = static_cast<int>(m64), n = static_cast<int>(n64), k = std::min(m, n);
  const bool direct = n >= m;  // factor A^T as stored (rows n >= columns m)
  // Column-major input with rows >= columns: rows x cols = (n x m) when direct, else (m x n).
  Tensor a = direct ? matrix.to(DType::f64).contiguous() : matrix.to(DType::f64).t().contiguous();
  const int rows = direct ? n : m, cols = direct ? m : n;
  cudaStream_t stream = cuda::device_stream(a);
  cusolverDnHandle_t handle = nullptr;
  MLR_CUSOLVER_CHECK(cusolverDnCreate(&handle));
  struct HandleGuard {
    cusolverDnHandle_t h;
    ~HandleGuard() { cusolverDnDestroy(h); }
  } guard{handle};
  MLR_CUSOLVER_CHECK(cusolverDnSetStream(handle, stream));
  int lwork = 0;
  MLR_CUSOLVER_CHECK(cusolverDnDgesvd_bufferSize(handle, rows, cols, &lwork));
  const TensorOptions f64{DType::f64, matrix.device()};
  Tensor s = empty({k}, f64), work = empty({std::max(lwork, 1)}, f64);
  Tensor u = vectors ? empty({k, rows}, f64) : empty({1}, f64);   // column-major rows x k
  Tensor vt = vectors ? empty({cols, k}, f64) : empty({1}, f64);  // column-major k x cols
  Tensor info = empty({1}, {DType::i32, matrix.device()});
  const signed char job = vectors ? 'S' : 'N';
  MLR_CUSOLVER_CHECK(cusolverDnDgesvd(handle, job, job, rows, cols, static_cast<double*>(a.data_ptr()), rows,
                                      static_cast<double*>(s.data_ptr()), static_cast<double*>(u.data_ptr()), rows,
                                      static_cast<double*>(vt.data_ptr()), k, static_cast<double*>(work.data_ptr()),
                                      lwork, nullptr, static_cast<int*>(info.data_ptr())));
  const int status = info.cpu().item<int32_t>();
  MLR_CHECK(status == 0, "svd (cuda): cusolverDnDgesvd failed for {} (info {}: {})", shape_str(matrix.shape()), status,
            status > 0 ? "did not converge" : "bad argument");
  Svd out;
  out.S = s.cpu();
  if (!vectors) return out;
  const std::vector<double> uc = u.cpu().to_vector<double>(), vc = vt.cpu().to_vector<double>();
  std::vector<double> U(static_cast<size_t>(m) * k), Vt(static_cast<size_t>(k) * n);
  // uc: column-major rows x k (element (r, c) at r + c*rows); vc: column-major k x cols ((r, c) at r + c*k).
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < k; ++j)
      U[static_cast<size_t>(i) * k + j] = direct ? vc[static_cast<size_t>(j) + static_cast<size_t>(i) * k]
                                                 : uc[static_cast<size_t>(i) + static_cast<size_t>(j) * rows];
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < n; ++j)
      Vt[static_cast<size_t>(i) * n + j] = direct ? uc[static_cast<size_t>(j) + static_cast<size_t>(i) * rows]
                                                  : vc[static_cast<size_t>(i) + static_cast<size_t>(j) * k];
  out.U = from_vector(U, {m, k});
  out.Vt = from_vector(Vt, {k, n});
  return out;
}

}  // namespace mlr
