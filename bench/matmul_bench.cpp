// CPU matmul throughput: mlr::matmul (OpenBLAS sgemm; bf16 through f32 blocks) next to a naive
// triple loop, in GFLOP/s = 2 m n k / seconds, best of several repetitions.
//
//   matmul_bench [size=1024] [naive_size=512] [repetitions=5]
//
// The naive loop runs on a smaller cube (it is ~100x slower); the table says which size each row used.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <string>

#include "tensor/ops.h"

using namespace mlr;

namespace {

template <typename F>
double best_seconds(int repetitions, F&& f) {
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repetitions; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    best = std::min(best, dt.count());
  }
  return best;
}

// out[i, j] = sum_p a[i, p] b[p, j], the textbook loop order, f32 accumulation, one thread.
template <typename T>
void naive_matmul(const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float s = 0;
      for (int64_t p = 0; p < n; ++p) s += static_cast<float>(a[i * n + p]) * static_cast<float>(b[p * n + j]);
      out[i * n + j] = static_cast<T>(s);
    }
}

struct Row {
  std::string what;
  DType dtype;
  int64_t n;
  double seconds;
};

Row run_mlr(DType dtype, int64_t n, int repetitions) {
  Generator gen(1);
  Tensor a = randn({n, n}, gen, dtype), b = randn({n, n}, gen, dtype);
  (void)matmul(a, b);  // warm-up: BLAS thread pool, page faults
  return {"mlr::matmul (OpenBLAS)", dtype, n, best_seconds(repetitions, [&] { (void)matmul(a, b); })};
}

Row run_naive(DType dtype, int64_t n, int repetitions) {
  Generator gen(2);
  Tensor a = randn({n, n}, gen, dtype), b = randn({n, n}, gen, dtype), out = empty({n, n}, dtype);
  double s = best_seconds(repetitions, [&] {
    if (dtype == DType::f32) {
      naive_matmul(a.data<float>(), b.data<float>(), out.data<float>(), n);
    } else {
      naive_matmul(a.data<bf16>(), b.data<bf16>(), out.data<bf16>(), n);
    }
  });
  return {"naive triple loop (1 thread)", dtype, n, s};
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 1024;
  const int64_t naive_n = argc > 2 ? std::atoll(argv[2]) : 512;
  const int repetitions = argc > 3 ? std::atoi(argv[3]) : 5;
  if (n <= 0 || naive_n <= 0 || repetitions <= 0) {
    fmt::print(stderr, "usage: matmul_bench [size>0] [naive_size>0] [repetitions>0]\n");
    return 2;
  }

  std::vector<Row> rows;
  for (DType t : {DType::f32, DType::bf16}) rows.push_back(run_mlr(t, n, repetitions));
  for (DType t : {DType::f32, DType::bf16}) rows.push_back(run_naive(t, naive_n, std::min(repetitions, 3)));

  fmt::print("CPU matmul, square m = n = k, best of {} runs ({} for the naive loop); {} OpenMP threads\n",
             repetitions, std::min(repetitions, 3), omp_get_max_threads());
  fmt::print("{:<30} {:>5} {:>8} {:>11} {:>9} {:>9}\n", "implementation", "dtype", "size", "time (ms)", "GFLOP/s",
             "vs naive");
  for (const Row& r : rows) {
    const double gflops = 2.0 * double(r.n) * double(r.n) * double(r.n) / r.seconds * 1e-9;
    double naive_gflops = 0;
    for (const Row& o : rows)
      if (o.what.rfind("naive", 0) == 0 && o.dtype == r.dtype)
        naive_gflops = 2.0 * double(o.n) * double(o.n) * double(o.n) / o.seconds * 1e-9;
    fmt::print("{:<30} {:>5} {:>8} {:>11.2f} {:>9.2f} {:>8.1f}x\n", r.what, dtype_name(r.dtype),
               fmt::format("{}^3", r.n), r.seconds * 1e3, gflops, gflops / naive_gflops);
  }
  return 0;
}
