// RMSNorm over the last dimension (size d), per row x:
//   r = rsqrt(mean(x^2) + eps),  y = x * r * w
// Backward, given dy:
//   dx = r * (dy*w - x * r^2 * mean(dy*w*x))
//   dw = sum over rows of dy * x * r        (skipped when the weight is frozen: dweight == nullptr)
// Same arithmetic as the CPU reference (tensor/kernels/cpu/rmsnorm.cpp): f32 accumulation (f64 for
// f64), r saved per row, outputs rounded once.
//
// Forward and dx: one group of threads per row (a warp for rows up to 2048, the block beyond), each
// thread striding over the row. dw: every block sums a fixed range of rows into an f32 partial row
// [blocks, d]; a second kernel sums the partials in block order, so the result is deterministic.
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/kernel_checks.h"
#include "tensor/kernels/cuda/reduce_utils.cuh"

namespace mlr::cuda {

namespace {

template <typename T>
__global__ void rmsnorm_forward_kernel(const T* x, const T* w, T* y, acc_t<T>* rstd, int64_t rows, int64_t d,
                                       acc_t<T> eps, int group) {
  using A = acc_t<T>;
  MLR_SHARED(A, scratch, [32]);
  const int lane = threadIdx.x % group;
  for (int64_t r = row_first(group); r < rows; r += row_step(group)) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    A sumsq = 0;
    for (int64_t j = lane; j < d; j += group) {
      const A v = load_as<A>(xr[j]);
      sumsq += v * v;
    }
    sumsq = group_reduce(sumsq, [](A a, A b) { return a + b; }, group, scratch);
    const A rs = A(1) / sqrt(sumsq / static_cast<A>(d) + eps);
    if (lane == 0) rstd[r] = rs;
    for (int64_t j = lane; j < d; j += group) yr[j] = convert<T>(load_as<A>(xr[j]) * rs * load_as<A>(w[j]));
  }
}

template <typename T>
__global__ void rmsnorm_dx_kernel(const T* dy, const T* x, const T* w, const acc_t<T>* rstd, T* dx, int64_t rows,
                                  int64_t d, int group) {
  using A = acc_t<T>;
  MLR_SHARED(A, scratch, [32]);
  const int lane = threadIdx.x % group;
  for (int64_t r = row_first(group); r < rows; r += row_step(group)) {
    const T* dyr = dy + r * d;
    const T* xr = x + r * d;
    T* dxr = dx + r * d;
    const A rs = rstd[r];
    A dot = 0;  // sum over the row of dy*w*x
    for (int64_t j = lane; j < d; j += group) dot += load_as<A>(dyr[j]) * load_as<A>(w[j]) * load_as<A>(xr[j]);
    dot = group_reduce(dot, [](A a, A b) { return a + b; }, group, scratch);
    const A c = rs * rs * dot / static_cast<A>(d);
    for (int64_t j = lane; j < d; j += group)
      dxr[j] = convert<T>(rs * (load_as<A>(dyr[j]) * load_as<A>(w[j]) - load_as<A>(xr[j]) * c));
  }
}

// Partial dw of rows [b * rows_per_block, (b + 1) * rows_per_block) for the columns of this thread.
template <typename T>
__global__ void rmsnorm_dw_partial_kernel(const T* dy, const T* x, const acc_t<T>* rstd, acc_t<T>* partial,
                                          int64_t rows, int64_t d, int64_t rows_per_block) {
  using A = acc_t<T>;
  const int64_t r0 = blockIdx.y * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < d; j += int64_t(gridDim.x) * blockDim.x) {
    A acc = 0;
    for (int64_t r = r0; r < r1; ++r) acc += load_as<A>(dy[r * d + j]) * load_as<A>(x[r * d + j]) * rstd[r];
    partial[blockIdx.y * d + j] = acc;
  }
}

template <typename T>
__global__ void rmsnorm_dw_sum_kernel(const acc_t<T>* partial, T* dw, int64_t parts, int64_t d) {
  using A = acc_t<T>;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < d; j += int64_t(gridDim.x) * blockDim.x) {
    A acc = 0;
    for (int64_t p = 0; p < parts; ++p) acc += partial[p * d + j];
    dw[j] = convert<T>(acc);
  }
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, const Tensor& y, const Tensor& rstd) {
  check_kernel_contiguous("rmsnorm_forward", "cuda", {&x, &weight, &y, &rstd});
  cudaStream_t stream = device_stream(x);
  const int64_t d = x.size(-1), rows = d == 0 ? 0 : x.numel() / d;
  if (rows == 0) return;
  const RowLaunch launch = row_launch(rows, d, true);
  dispatch_floating(x.dtype(), "rmsnorm_forward", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    MLR_LAUNCH((launch.blocks, launch.threads, 0, stream), rmsnorm_forward_kernel<T>)(
        static_cast<const T*>(x.data_ptr()), static_cast<const T*>(weight.data_ptr()), static_cast<T*>(y.data_ptr()),
        static_cast<A*>(rstd.data_ptr()), rows, d, static_cast<A>(eps), launch.group);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dx,
                      const Tensor* dweight) {
  check_kernel_contiguous("rmsnorm_backward", "cuda", {&dy, &x, &weight, &rstd, &dx});
  if (dweight) check_kernel_contiguous("rmsnorm_backward", "cuda", {dweight});
  cudaStream_t stream = device_stream(x);
  const int64_t d = x.size(-1), rows = d == 0 ? 0 : x.numel() / d;
  if (rows == 0) return;
  const RowLaunch launch = row_launch(rows, d, true);
  dispatch_floating(x.dtype(), "rmsnorm_backward", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* pdy = static_cast<const T*>(dy.data_ptr());
    const T* px = static_cast<const T*>(x.data_ptr());
    const A* pr = static_cast<const A*>(rstd.data_ptr());
    MLR_LAUNCH((launch.blocks, launch.threads, 0, stream), rmsnorm_dx_kernel<T>)(
        pdy, px, static_cast<const T*>(weight.data_ptr()), pr, static_cast<T*>(dx.data_ptr()), rows, d, launch.group);
    MLR_CUDA_CHECK_LAUNCH();
    if (!dweight) return;
    // Enough row blocks to fill the GPU, each summing at least 16 rows.
    constexpr int kThreads = 256;
    const int64_t col_blocks = (d + kThreads - 1) / kThreads;
    int64_t parts = std::max<int64_t>(1, std::min<int64_t>((rows + 15) / 16, 4 * sm_count(x.device().index) / col_blocks + 1));
    const int64_t rows_per_block = (rows + parts - 1) / parts;
    parts = (rows + rows_per_block - 1) / rows_per_block;
    Tensor partial = empty({parts, d}, {dtype_of<A>::value, x.device()});
    MLR_LAUNCH((dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(parts)), kThreads, 0, stream), rmsnorm_dw_partial_kernel<T>)(
        pdy, px, pr, static_cast<A*>(partial.data_ptr()), rows, d, rows_per_block);
    MLR_CUDA_CHECK_LAUNCH();
    MLR_LAUNCH((blocks_for(d, kThreads), kThreads, 0, stream), rmsnorm_dw_sum_kernel<T>)(
        static_cast<const A*>(partial.data_ptr()), static_cast<T*>(dweight->data_ptr()), parts, d);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mlr::cuda
