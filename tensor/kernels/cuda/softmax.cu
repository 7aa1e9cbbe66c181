// Softmax and log-softmax along one dimension (any dimension: rows may be strided), with their
// backward passes. Per row x (m = max_i x_i, subtracted so exp never overflows):
//   softmax:      y_i = exp(x_i - m) / sum_j exp(x_j - m)
//   log_softmax:  y_i = (x_i - m) - log(sum_j exp(x_j - m))
// Backward, given g = dL/dy:
//   softmax:      dx_i = y_i (g_i - sum_j g_j y_j)
//   log_softmax:  dx_i = g_i - exp(y_i) sum_j g_j
// Computed in f32 (f64 for f64), rounded once on store. A row of all -inf gives NaN, a NaN anywhere
// in a row makes the row NaN (as the CPU kernel).
//
// One group of threads per row (reduce_utils.cuh: a warp, the block for long rows, or one thread
// when the rows are strided along dim so that neighbouring threads read neighbouring rows). The
// forward reads the row twice: once for the online (max, sum of exponentials), once to write.
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/cuda/reduce_utils.cuh"

namespace mlr::cuda {

namespace {

template <typename T>
__global__ void softmax_kernel(T* out, const T* a, Strided<2> rows_idx, int64_t rows, int64_t n, int64_t so,
                               int64_t sa, bool log, int group) {
  using A = acc_t<T>;
  MLR_SHARED(MaxSum<A>, scratch, [32]);
  const int lane = threadIdx.x % group;
  for (int64_t r = row_first(group); r < rows; r += row_step(group)) {
    int64_t off[2];
    rows_idx.offsets(r, off);
    const T* x = a + off[1];
    T* y = out + off[0];
    MaxSum<A> acc = maxsum_empty<A>();
    for (int64_t k = lane; k < n; k += group) acc = maxsum_add(acc, load_as<A>(x[k * sa]));
    acc = group_reduce(acc, [](MaxSum<A> p, MaxSum<A> q) { return maxsum_merge(p, q); }, group, scratch);
    if (log) {
      // (x - m) - log s, not x - (m + log s): exact for the values near the maximum that matter.
      const A log_s = m_log_(acc.s);
      for (int64_t k = lane; k < n; k += group) y[k * so] = convert<T>((load_as<A>(x[k * sa]) - acc.m) - log_s);
    } else {
      const A inv = A(1) / acc.s;
      for (int64_t k = lane; k < n; k += group) y[k * so] = convert<T>(m_exp_(load_as<A>(x[k * sa]) - acc.m) * inv);
    }
  }
}

template <typename T>
__global__ void softmax_backward_kernel(T* dx, const T* g, const T* y, Strided<3> rows_idx, int64_t rows, int64_t n,
                                        int64_t sd, int64_t sg, int64_t sy, bool log, int group) {
  using A = acc_t<T>;
  MLR_SHARED(A, scratch, [32]);
  const int lane = threadIdx.x % group;
  for (int64_t r = row_first(group); r < rows; r += row_step(group)) {
    int64_t off[3];
    rows_idx.offsets(r, off);
    T* d = dx + off[0];
    const T* gr = g + off[1];
    const T* yr = y + off[2];
    A acc = A(0);  // log: sum_j g_j;  softmax: sum_j g_j y_j
    for (int64_t k = lane; k < n; k += group) {
      const A gv = load_as<A>(gr[k * sg]);
      acc += log ? gv : gv * load_as<A>(yr[k * sy]);
    }
    acc = group_reduce(acc, [](A p, A q) { return p + q; }, group, scratch);
    for (int64_t k = lane; k < n; k += group) {
      const A gv = load_as<A>(gr[k * sg]), yv = load_as<A>(yr[k * sy]);
      d[k * sd] = convert<T>(log ? gv - m_exp_(yv) * acc : yv * (gv - acc));
    }
  }
}

void check_args(const char* op, const Tensor& out, std::initializer_list<const Tensor*> ins, int64_t dim) {
  MLR_CHECK(dim >= 0 && dim < out.dim(), "{}: dimension {} out of range for shape {}", op, dim,
            shape_str(out.shape()));
  for (const Tensor* t : ins) {
    MLR_CHECK(t->shape() == out.shape(), "{}: input shape {} and output shape {} differ", op, shape_str(t->shape()),
              shape_str(out.shape()));
    MLR_CHECK(t->dtype() == out.dtype(), "{}: input dtype {} and output dtype {} differ", op, t->dtype(), out.dtype());
    MLR_CHECK(t->device() == out.device(), "{}: input on {} but output on {}", op, t->device().str(),
              out.device().str());
  }
}

Shape rows_shape(const Tensor& t, int64_t dim) {
  Shape s = t.shape();
  s[dim] = 1;
  return s;
}

void softmax_forward(const char* name, bool log, const Tensor& out, const Tensor& a, int64_t dim) {
  check_args(name, out, {&a}, dim);
  if (out.numel() == 0) return;
  cudaStream_t stream = device_stream(out);
  const int64_t n = a.size(dim), rows = out.numel() / n;
  const Strided<2> idx = make_strided<2>(rows_shape(out, dim), {&out.strides(), &a.strides()}, name);
  const RowLaunch l = row_launch(rows, n, a.stride(dim) == 1);
  visit_floating(a.dtype(), name, [&](auto tag) {
    using T = device_t<decltype(tag)>;
    MLR_LAUNCH((l.blocks, l.threads, 0, stream), softmax_kernel<T>)(static_cast<T*>(out.data_ptr()),
                                                         static_cast<const T*>(a.data_ptr()), idx, rows, n,
                                                         out.stride(dim), a.stride(dim), log, l.group);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

void softmax_backward_impl(const char* name, bool log, const Tensor& dx, const Tensor& g, const Tensor& y,
                           int64_t dim) {
  check_args(name, dx, {&g, &y}, dim);
  if (dx.numel() == 0) return;
  cudaStream_t stream = device_stream(dx);
  const int64_t n = dx.size(dim), rows = dx.numel() / n;
  const Strided<3> idx =
      make_strided<3>(rows_shape(dx, dim), {&dx.strides(), &g.strides(), &y.strides()}, name);
  const RowLaunch l = row_launch(rows, n, g.stride(dim) == 1);
  visit_floating(dx.dtype(), name, [&](auto tag) {
    using T = device_t<decltype(tag)>;
    MLR_LAUNCH((l.blocks, l.threads, 0, stream), softmax_backward_kernel<T>)(
        static_cast<T*>(dx.data_ptr()), static_cast<const T*>(g.data_ptr()), static_cast<const T*>(y.data_ptr()), idx,
        rows, n, dx.stride(dim), g.stride(dim), y.stride(dim), log, l.group);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void softmax(const Tensor& out, const Tensor& a, int64_t dim) { softmax_forward("softmax", false, out, a, dim); }
void log_softmax(const Tensor& out, const Tensor& a, int64_t dim) {
  softmax_forward("log_softmax", true, out, a, dim);
}
void softmax_backward(const Tensor& dx, const Tensor& g, const Tensor& y, int64_t dim) {
  softmax_backward_impl("softmax_backward", false, dx, g, y, dim);
}
void log_softmax_backward(const Tensor& dx, const Tensor& g, const Tensor& y, int64_t dim) {
  softmax_backward_impl("log_softmax_backward", true, dx, g, y, dim);
}

}  // namespace mlr::cuda
