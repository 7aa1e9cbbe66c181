// Softmax cross-entropy over the vocabulary, logits [N, V], targets t [N] (i32 or i64):
//   lse_i = log sum_j exp(logits_ij),  loss_i = lse_i - logits[i, t_i]   (0 when t_i == ignore_index)
// Backward, given per-row upstream gradients g_i and the saved lse:
//   dlogits_ij = g_i * (exp(logits_ij - lse_i) - [j == t_i])             (0 rows when ignored)
// The probabilities are never stored: the forward keeps one online (max, sum of exponentials) pair
// per thread while it streams the row once, and saves only lse; the backward recomputes
// exp(logits - lse) on the fly while it writes dlogits. Both read each logit once, so they run at
// memory speed for LLaMA vocabularies (32000-128256 per row).
// Math in f32 (f64 for f64), as the CPU reference (tensor/kernels/cpu/cross_entropy.cpp).
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/kernel_checks.h"
#include "tensor/kernels/cuda/reduce_utils.cuh"

namespace mlr::cuda {

namespace {

template <typename T, typename I>
__global__ void cross_entropy_forward_kernel(const T* logits, const I* targets, int64_t ignore_index,
                                             acc_t<T>* losses, acc_t<T>* lse, int64_t rows, int64_t vocab,
                                             int group) {
  using A = acc_t<T>;
  MLR_SHARED(MaxSum<A>, scratch, [32]);
  const int lane = threadIdx.x % group;
  for (int64_t r = row_first(group); r < rows; r += row_step(group)) {
    const T* x = logits + r * vocab;
    MaxSum<A> acc = maxsum_empty<A>();
    for (int64_t j = lane; j < vocab; j += group) acc = maxsum_add(acc, load_as<A>(x[j]));
    acc = group_reduce(acc, [](MaxSum<A> p, MaxSum<A> q) { return maxsum_merge(p, q); }, group, scratch);
    if (lane == 0) {
      const A l = maxsum_lse(acc);
      const int64_t t = static_cast<int64_t>(targets[r]);
      lse[r] = l;
      losses[r] = t == ignore_index ? A(0) : l - load_as<A>(x[t]);
    }
  }
}

template <typename T, typename I>
__global__ void cross_entropy_backward_kernel(T* dlogits, const acc_t<T>* dlosses, const T* logits, const I* targets,
                                              const acc_t<T>* lse, int64_t ignore_index, int64_t rows, int64_t vocab) {
  using A = acc_t<T>;
  // blockIdx.y walks rows (grid-stride), blockIdx.x * blockDim.x + threadIdx.x the vocabulary.
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    const bool ignored = t == ignore_index;
    const A g = dlosses[r], l = lse[r];
    const T* x = logits + r * vocab;
    T* d = dlogits + r * vocab;
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < vocab; j += int64_t(gridDim.x) * blockDim.x) {
      if (ignored) {
        d[j] = convert<T>(A(0));
      } else {
        const A p = m_exp_(load_as<A>(x[j]) - l);
        d[j] = convert<T>(g * (p - (j == t ? A(1) : A(0))));
      }
    }
  }
}

template <typename F>
void dispatch_index(const Tensor& targets, const char* op, F&& f) {
  if (targets.dtype() == DType::i32) f(static_cast<const int32_t*>(targets.data_ptr()));
  else if (targets.dtype() == DType::i64) f(static_cast<const int64_t*>(targets.data_ptr()));
  else MLR_CHECK(false, "{} (cuda kernel): targets have dtype {}, expected i32 or i64", op, targets.dtype());
}

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& losses,
                           const Tensor& lse) {
  const char* op = "cross_entropy_forward";
  check_kernel_contiguous(op, "cuda", {&logits, &targets, &losses, &lse});
  cudaStream_t stream = device_stream(logits);
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  if (rows == 0) return;
  const RowLaunch launch = row_launch(rows, vocab, true);
  dispatch_floating(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    dispatch_index(targets, op, [&](auto* t) {
      using I = std::remove_const_t<std::remove_pointer_t<decltype(t)>>;
      MLR_LAUNCH((launch.blocks, launch.threads, 0, stream), cross_entropy_forward_kernel<T, I>)(
          static_cast<const T*>(logits.data_ptr()), t, ignore_index, static_cast<A*>(losses.data_ptr()),
          static_cast<A*>(lse.data_ptr()), rows, vocab, launch.group);
      MLR_CUDA_CHECK_LAUNCH();
    });
  });
}

void cross_entropy_backward(const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& targets, const Tensor& lse, int64_t ignore_index) {
  const char* op = "cross_entropy_backward";
  check_kernel_contiguous(op, "cuda", {&dlogits, &dlosses, &logits, &targets, &lse});
  cudaStream_t stream = device_stream(logits);
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  if (rows == 0 || vocab == 0) return;
  constexpr int kThreads = 256;
  const int64_t col_blocks = std::min<int64_t>((vocab + kThreads - 1) / kThreads, 64);
  const unsigned int row_blocks = static_cast<unsigned int>(std::min<int64_t>(rows, 65535));
  dispatch_floating(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    dispatch_index(targets, op, [&](auto* t) {
      using I = std::remove_const_t<std::remove_pointer_t<decltype(t)>>;
      MLR_LAUNCH((dim3(static_cast<unsigned int>(col_blocks), row_blocks), kThreads, 0, stream),
                 cross_entropy_backward_kernel<T, I>)(
          static_cast<T*>(dlogits.data_ptr()), static_cast<const A*>(dlosses.data_ptr()),
          static_cast<const T*>(logits.data_ptr()), t, static_cast<const A*>(lse.data_ptr()), ignore_index, rows,
          vocab);
      MLR_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace mlr::cuda
