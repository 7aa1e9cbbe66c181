// The CPU's one threading runtime. Our kernels' parallel loops are OpenMP, and OpenBLAS is linked in
// its OpenMP build (cmake/dependencies.cmake), so BLAS runs on the same OpenMP thread pool: no second
// set of threads spinning for the same cores, and a GEMM called inside a parallel loop runs on its
// calling thread instead of starting threads of its own.
#pragma once

#include <string>

#include "tensor/dtype.h"

namespace mlr {

// Sets the threads of both our loops and BLAS. n <= 0: OMP_NUM_THREADS when set, else every core.
void set_cpu_threads(int n);
int cpu_threads();

// What BLAS is linked and how it threads: "OpenBLAS 0.3.21 ... (OpenMP build)".
std::string blas_description();
// False when the linked OpenBLAS runs its own pthreads next to OpenMP's (oversubscription).
bool blas_uses_openmp();

// The f32 (or bf16) matrix-product rate of this process on the CPU in FLOP/s: the best of
// `repetitions` n x n x n products through mlr::matmul, at the current thread count, after one
// untimed product. About 2 n^3 x (repetitions + 1) FLOPs: 20 ms at n = 1024 and 200 GFLOP/s.
double measure_cpu_matmul_flops(DType dtype, int64_t n = 1024, int repetitions = 3);

// Model FLOPs utilisation: achieved FLOP/s (tokens/s x FLOPs per token) over the peak rate; -1 when
// the peak is unknown (<= 0).
double model_flops_utilization(double tokens_per_second, double flops_per_token, double peak_flops);

}  // namespace mlr
