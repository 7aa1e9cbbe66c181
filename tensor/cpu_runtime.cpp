#include "tensor/cpu_runtime.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <thread>

#include "tensor/ops.h"

namespace mlr {

void set_cpu_threads(int n) {
  if (n <= 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    n = env ? std::atoi(env) : 0;
    if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int cpu_threads() { return omp_get_max_threads(); }

bool blas_uses_openmp() { return openblas_get_parallel() == 2; }

std::string blas_description() {
  const int parallel = openblas_get_parallel();
  std::string config = openblas_get_config();
  while (!config.empty() && config.back() == ' ') config.pop_back();
  return config + (parallel == 2   ? " (OpenMP build: one thread pool)"
                   : parallel == 1 ? " (pthreads build: its threads compete with OpenMP's; link libopenblas0-openmp)"
                                   : " (sequential build)");
}

double measure_cpu_matmul_flops(DType dtype, int64_t n, int repetitions) {
  Generator gen(1);
  const Tensor a = randn({n, n}, gen, dtype), b = randn({n, n}, gen, dtype);
  (void)matmul(a, b);  // thread pool start, page faults
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repetitions; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    (void)matmul(a, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / best;
}

double model_flops_utilization(double tokens_per_second, double flops_per_token, double peak_flops) {
  if (peak_flops <= 0) return -1;
  return tokens_per_second * flops_per_token / peak_flops;
}

}  // namespace mlr
