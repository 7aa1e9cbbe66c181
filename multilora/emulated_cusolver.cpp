// The part of cuSOLVER the analysis SVD calls (spectrum_cusolver.cu), for the emulated CUDA build
// (tensor/kernels/cuda/emulator.h): "device" memory is host memory there, so dgesvd is LAPACK's,
// with cuSOLVER's column-major arguments passed through. The wrapper's own logic (which of A and
// A^T to factor, how U and Vt come back row-major) is then tested without a GPU. Compiled to
// nothing in other builds, which link the real libcusolver.
#ifdef MLR_CUDA_EMULATION

#include <cusolverDn.h>

#include <algorithm>
#include <vector>

extern "C" void dgesvd_(const char* jobu, const char* jobvt, const int* m, const int* n, double* a, const int* lda,
                        double* s, double* u, const int* ldu, double* vt, const int* ldvt, double* work,
                        const int* lwork, int* info);

extern "C" {

cusolverStatus_t CUSOLVERAPI cusolverDnCreate(cusolverDnHandle_t* handle) {
  static int emulated_handle;
  *handle = reinterpret_cast<cusolverDnHandle_t>(&emulated_handle);
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnDestroy(cusolverDnHandle_t) { return CUSOLVER_STATUS_SUCCESS; }
cusolverStatus_t CUSOLVERAPI cusolverDnSetStream(cusolverDnHandle_t, cudaStream_t) { return CUSOLVER_STATUS_SUCCESS; }
cusolverStatus_t CUSOLVERAPI cusolverDnDgesvd_bufferSize(cusolverDnHandle_t, int m, int n, int* lwork) {
  *lwork = 5 * std::max(m, n);  // unused below: LAPACK's own query sizes the workspace
  return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t CUSOLVERAPI cusolverDnDgesvd(cusolverDnHandle_t, signed char jobu, signed char jobvt, int m, int n,
                                              double* A, int lda, double* S, double* U, int ldu, double* VT,
                                              int ldvt, double*, int, double*, int* info) {
  // cuSOLVER's gesvd needs m >= n, as the caller guarantees; LAPACK's does not mind.
  if (m < n) return CUSOLVER_STATUS_INVALID_VALUE;
  const char ju = static_cast<char>(jobu), jv = static_cast<char>(jobvt);
  int query_lwork = -1, status = 0;
  double size = 0;
  dgesvd_(&ju, &jv, &m, &n, A, &lda, S, U, &ldu, VT, &ldvt, &size, &query_lwork, &status);
  if (status != 0) {
    *info = status;
    return CUSOLVER_STATUS_SUCCESS;
  }
  int lwork = static_cast<int>(size);
  std::vector<double> work(static_cast<size_t>(std::max(lwork, 1)));
  dgesvd_(&ju, &jv, &m, &n, A, &lda, S, U, &ldu, VT, &ldvt, work.data(), &lwork, &status);
  *info = status;
  return CUSOLVER_STATUS_SUCCESS;
}

}  // extern "C"

#endif  // MLR_CUDA_EMULATION
