// Elementwise kernels: binary (tensor-tensor and tensor-scalar), unary, their derivatives, clamp,
// where. The math and the rounding rules are the CPU kernels' (tensor/kernels/cpu/elementwise.cpp):
// every value is loaded into its compute type C (f32 for bf16/f16/f32, f64 for f64, i64 for the
// integers and bool), computed once and rounded once on store; predicates store bool.
//
//   sigmoid(x) = 1 / (1 + e^-x)                      d = g * y (1 - y)            (y = sigmoid(x), saved)
//   tanh(x)                                          d = g * (1 - y^2)            (y = tanh(x), saved)
//   silu(x)    = x s,  s = sigmoid(x)                d = g * s (1 + x (1 - s))
//   gelu(x)    = x Phi(x),  Phi(x) = (1 + erf(x/sqrt2)) / 2,  phi(x) = e^(-x^2/2) / sqrt(2 pi)
//                                                    d = g * (Phi(x) + x phi(x))
//   gelu_tanh(x) = x (1 + t) / 2,  t = tanh(u),  u = k (x + c x^3),  k = sqrt(2/pi), c = 0.044715
//                                                    d = g * ((1 + t)/2 + x (1 - t^2) k (1 + 3c x^2) / 2)
// maximum/minimum propagate NaN; relu, sign and clamp keep NaN as NaN.
//
// One kernel per storage dtype (and output dtype: the same, or bool for predicates); the op is a
// runtime switch inside the kernel, which keeps the number of instantiations (and the compile time)
// small: the switch is uniform across the grid, so it costs a few instructions per element of a
// memory-bound loop. Two loops per kernel family: a strided one over the merged index space, and
// for contiguous, 16-byte-aligned f32/bf16/f16 operands one with 16-byte vector loads and stores.
#include <cmath>
#include <limits>

#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"

namespace mlr::cuda {

namespace {

constexpr int kThreads = 256;

// ---- math in the compute type ----
__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_sin(float x) { return sinf(x); }
__device__ __forceinline__ double m_sin(double x) { return sin(x); }
__device__ __forceinline__ float m_cos(float x) { return cosf(x); }
__device__ __forceinline__ double m_cos(double x) { return cos(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float m_erf(float x) { return erff(x); }
__device__ __forceinline__ double m_erf(double x) { return erf(x); }
__device__ __forceinline__ float m_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double m_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ bool m_isfinite(float x) { return isfinite(x); }
__device__ __forceinline__ bool m_isfinite(double x) { return isfinite(x); }

template <typename C> constexpr C kSqrt1_2 = C(0.70710678118654752440);      // 1/sqrt(2)
template <typename C> constexpr C kInvSqrt2Pi = C(0.39894228040143267794);   // 1/sqrt(2 pi)
template <typename C> constexpr C kSqrt2OverPi = C(0.79788456080286535588);  // sqrt(2/pi)
template <typename C> constexpr C kGeluC = C(0.044715);

template <typename C>
__device__ __forceinline__ C sigmoid_of(C x) {
  return C(1) / (C(1) + m_exp(-x));
}

// Integer power by squaring; a negative exponent truncates 1 / a^|e| toward zero (only +-1 survive).
__device__ __forceinline__ int64_t int_pow(int64_t base, int64_t e) {
  if (e < 0) {
    if (base == 1) return 1;
    if (base == -1) return (e % 2 == 0) ? 1 : -1;
    return 0;
  }
  int64_t r = 1;
  while (e > 0) {
    if (e & 1) r *= base;
    base *= base;
    e >>= 1;
  }
  return r;
}

template <typename C>
__device__ __forceinline__ C arith(BinaryOp op, C x, C y) {
  switch (op) {
    case BinaryOp::add: return x + y;
    case BinaryOp::sub: return x - y;
    case BinaryOp::mul: return x * y;
    case BinaryOp::div:
      if constexpr (std::is_floating_point_v<C>) return x / y;
      else return C(0);  // rejected on the host
    case BinaryOp::pow:
      if constexpr (std::is_floating_point_v<C>) return y == C(2) ? x * x : m_pow(x, y);
      else return int_pow(x, y);
    case BinaryOp::maximum: return (x > y || is_nan(x)) ? x : y;
    case BinaryOp::minimum: return (x < y || is_nan(x)) ? x : y;
    default: return C(0);
  }
}

template <typename C>
__device__ __forceinline__ bool predicate(BinaryOp op, C x, C y) {
  switch (op) {
    case BinaryOp::eq: return x == y;
    case BinaryOp::ne: return x != y;
    case BinaryOp::lt: return x < y;
    case BinaryOp::le: return x <= y;
    case BinaryOp::gt: return x > y;
    case BinaryOp::ge: return x >= y;
    case BinaryOp::logical_and: return x != C(0) && y != C(0);
    case BinaryOp::logical_or: return x != C(0) || y != C(0);
    default: return false;
  }
}

// out = op(x, y) in the output type O (T, or bool for predicates).
template <typename O, typename C>
__device__ __forceinline__ O binary_value(BinaryOp op, C x, C y) {
  if constexpr (std::is_same_v<O, bool>) {
    if (op >= BinaryOp::eq) return predicate(op, x, y);
  }
  return convert<O>(arith(op, x, y));
}

template <typename C>
__device__ __forceinline__ C unary_value(UnaryOp op, C x) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::abs: return x < C(0) ? -x : x;
    case UnaryOp::sign: return x > C(0) ? C(1) : x < C(0) ? C(-1) : x;  // keeps 0, -0 and NaN
    case UnaryOp::square: return x * x;
    case UnaryOp::relu: return x < C(0) ? C(0) : x;  // NaN stays NaN
    default: break;
  }
  if constexpr (std::is_floating_point_v<C>) {
    switch (op) {
      case UnaryOp::exp: return m_exp(x);
      case UnaryOp::log: return m_log(x);
      case UnaryOp::sqrt: return m_sqrt(x);
      case UnaryOp::rsqrt: return C(1) / m_sqrt(x);
      case UnaryOp::reciprocal: return C(1) / x;
      case UnaryOp::sin: return m_sin(x);
      case UnaryOp::cos: return m_cos(x);
      case UnaryOp::tanh: return m_tanh(x);
      case UnaryOp::sigmoid: return sigmoid_of(x);
      case UnaryOp::silu: return x * sigmoid_of(x);
      case UnaryOp::gelu: return C(0.5) * x * (C(1) + m_erf(x * kSqrt1_2<C>));
      case UnaryOp::gelu_tanh: return C(0.5) * x * (C(1) + m_tanh(kSqrt2OverPi<C> * (x + kGeluC<C> * x * x * x)));
      default: break;
    }
  }
  return x;
}

template <typename O, typename C>
__device__ __forceinline__ O unary_out(UnaryOp op, C x) {
  if constexpr (std::is_same_v<O, bool>) {
    switch (op) {
      case UnaryOp::logical_not: return x == C(0);
      case UnaryOp::isnan: return is_nan(x);
      case UnaryOp::isfinite:
        if constexpr (std::is_floating_point_v<C>) return m_isfinite(x);
        else return true;
      default: break;
    }
  }
  return convert<O>(unary_value(op, x));
}

template <typename C>
__device__ __forceinline__ C unary_grad(UnaryBackwardOp op, C g, C s) {
  switch (op) {
    case UnaryBackwardOp::sigmoid_from_output: return g * s * (C(1) - s);
    case UnaryBackwardOp::tanh_from_output: return g * (C(1) - s * s);
    case UnaryBackwardOp::silu: {
      const C sg = sigmoid_of(s);
      return g * sg * (C(1) + s * (C(1) - sg));
    }
    case UnaryBackwardOp::gelu: {
      const C cdf = C(0.5) * (C(1) + m_erf(s * kSqrt1_2<C>));
      const C pdf = kInvSqrt2Pi<C> * m_exp(C(-0.5) * s * s);
      return g * (cdf + s * pdf);
    }
    case UnaryBackwardOp::gelu_tanh: {
      const C x2 = s * s;
      const C t = m_tanh(kSqrt2OverPi<C> * (s + kGeluC<C> * x2 * s));
      const C du = kSqrt2OverPi<C> * (C(1) + C(3) * kGeluC<C> * x2);
      return g * (C(0.5) * (C(1) + t) + C(0.5) * s * (C(1) - t * t) * du);
    }
  }
  return C(0);
}

// A small aligned pack of N values, for vector loads and stores.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

#define MLR_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (n); i += int64_t{gridDim.x} * blockDim.x)

// ---- binary: b is a tensor, or (b_is_scalar) the scalar s ----
template <typename T, typename O>
__global__ void binary_kernel(BinaryOp op, O* out, const T* a, const T* b, acc_t<T> s, bool b_is_scalar,
                              Strided<3> idx, int64_t n) {
  using C = acc_t<T>;
  MLR_GRID_STRIDE(i, n) {
    int64_t off[3];
    idx.offsets(i, off);
    const C y = b_is_scalar ? s : load_as<C>(b[off[2]]);
    out[off[0]] = binary_value<O>(op, load_as<C>(a[off[1]]), y);
  }
}

template <typename T, typename O>
__global__ void binary_vec_kernel(BinaryOp op, O* out, const T* a, const T* b, acc_t<T> s, bool b_is_scalar,
                                  int64_t n) {
  using C = acc_t<T>;
  constexpr int V = 16 / sizeof(T);
  const int64_t nv = n / V;
  MLR_GRID_STRIDE(i, nv) {
    const Pack<T, V> x = reinterpret_cast<const Pack<T, V>*>(a)[i];
    Pack<T, V> y{};  // read only when b is a tensor
    if (!b_is_scalar) y = reinterpret_cast<const Pack<T, V>*>(b)[i];
    Pack<O, V> r;
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = binary_value<O>(op, load_as<C>(x.v[k]), b_is_scalar ? s : load_as<C>(y.v[k]));
    reinterpret_cast<Pack<O, V>*>(out)[i] = r;
  }
  MLR_GRID_STRIDE(j, n - nv * V) {
    const int64_t i = nv * V + j;
    out[i] = binary_value<O>(op, load_as<C>(a[i]), b_is_scalar ? s : load_as<C>(b[i]));
  }
}

// ---- unary ----
template <typename T, typename O>
__global__ void unary_kernel(UnaryOp op, O* out, const T* a, Strided<2> idx, int64_t n) {
  using C = acc_t<T>;
  MLR_GRID_STRIDE(i, n) {
    int64_t off[2];
    idx.offsets(i, off);
    out[off[0]] = unary_out<O>(op, load_as<C>(a[off[1]]));
  }
}

template <typename T, typename O>
__global__ void unary_vec_kernel(UnaryOp op, O* out, const T* a, int64_t n) {
  using C = acc_t<T>;
  constexpr int V = 16 / sizeof(T);
  const int64_t nv = n / V;
  MLR_GRID_STRIDE(i, nv) {
    const Pack<T, V> x = reinterpret_cast<const Pack<T, V>*>(a)[i];
    Pack<O, V> r;
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = unary_out<O>(op, load_as<C>(x.v[k]));
    reinterpret_cast<Pack<O, V>*>(out)[i] = r;
  }
  MLR_GRID_STRIDE(j, n - nv * V) {
    const int64_t i = nv * V + j;
    out[i] = unary_out<O>(op, load_as<C>(a[i]));
  }
}

// ---- unary backward: out = g * f'(saved) ----
template <typename T>
__global__ void unary_backward_kernel(UnaryBackwardOp op, T* out, const T* g, const T* saved,
                                      Strided<3> idx, int64_t n) {
  using C = acc_t<T>;
  MLR_GRID_STRIDE(i, n) {
    int64_t off[3];
    idx.offsets(i, off);
    out[off[0]] = convert<T>(unary_grad(op, load_as<C>(g[off[1]]), load_as<C>(saved[off[2]])));
  }
}

template <typename T>
__global__ void unary_backward_vec_kernel(UnaryBackwardOp op, T* out, const T* g, const T* saved, int64_t n) {
  using C = acc_t<T>;
  constexpr int V = 16 / sizeof(T);
  const int64_t nv = n / V;
  MLR_GRID_STRIDE(i, nv) {
    const Pack<T, V> x = reinterpret_cast<const Pack<T, V>*>(g)[i];
    const Pack<T, V> y = reinterpret_cast<const Pack<T, V>*>(saved)[i];
    Pack<T, V> r;
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = convert<T>(unary_grad(op, load_as<C>(x.v[k]), load_as<C>(y.v[k])));
    reinterpret_cast<Pack<T, V>*>(out)[i] = r;
  }
  MLR_GRID_STRIDE(j, n - nv * V) {
    const int64_t i = nv * V + j;
    out[i] = convert<T>(unary_grad(op, load_as<C>(g[i]), load_as<C>(saved[i])));
  }
}

// ---- clamp: lower bound first, then upper (min > max gives max everywhere); NaN stays NaN ----
template <typename T>
__global__ void clamp_kernel(T* out, const T* a, acc_t<T> lo, acc_t<T> hi, Strided<2> idx, int64_t n) {
  using C = acc_t<T>;
  MLR_GRID_STRIDE(i, n) {
    int64_t off[2];
    idx.offsets(i, off);
    C v = load_as<C>(a[off[1]]);
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    out[off[0]] = convert<T>(v);
  }
}

// ---- where: raw elements of the dtype's size ----
template <typename B>
__global__ void where_kernel(B* out, const bool* cond, const B* a, const B* b, Strided<4> idx,
                             int64_t n) {
  MLR_GRID_STRIDE(i, n) {
    int64_t off[4];
    idx.offsets(i, off);
    out[off[0]] = cond[off[1]] ? a[off[2]] : b[off[3]];
  }
}

// ---- host helpers ----
void check_same_shape(const char* op, const Tensor& out, const Tensor& a) {
  MLR_CHECK(out.shape() == a.shape(), "{}: output shape {} and input shape {} differ (expand inputs first)", op,
            shape_str(out.shape()), shape_str(a.shape()));
}

void check_dtype(const char* op, const Tensor& t, DType expected, const char* what) {
  MLR_CHECK(t.dtype() == expected, "{}: {} has dtype {}, expected {}", op, what, t.dtype(), expected);
}

void check_device(const char* op, const Tensor& out, const Tensor& t) {
  MLR_CHECK(t.device() == out.device(), "{}: operand on {} but output on {}", op, t.device().str(),
            out.device().str());
}

bool is_vector_dtype(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

// Contiguous, 16-byte aligned operands (the output of a predicate needs only its pack's alignment).
bool vector_ready(const Tensor& out, std::initializer_list<const Tensor*> ins) {
  if (!is_vector_dtype(ins.begin()[0]->dtype()) || !out.is_contiguous()) return false;
  const size_t pack = 16 / dtype_size(ins.begin()[0]->dtype()) * out.element_size();
  if (reinterpret_cast<uintptr_t>(out.data_ptr()) % pack != 0) return false;
  for (const Tensor* t : ins)
    if (!t->is_contiguous() || !aligned16(t->data_ptr())) return false;
  return true;
}

// Calls f(T{}) with the device storage type of a dtype.
template <typename F>
void visit_device(DType t, F&& f) {
  visit_dtype(t, [&](auto tag) { f(device_t<decltype(tag)>{}); });
}

template <typename F>
void visit_device_floating(DType t, const char* op, F&& f) {
  visit_floating(t, op, [&](auto tag) { f(device_t<decltype(tag)>{}); });
}

bool integral_valued(double v) { return std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.2e18; }

// The scalar operand in the compute type; comparisons first round it to the tensor's dtype, so a
// bf16 tensor holding 0.1 compares equal to 0.1 (as on the CPU).
template <typename T>
acc_t<T> scalar_operand(double b, bool predicate, DType dtype) {
  using C = acc_t<T>;
  if (!predicate || !is_floating(dtype)) return static_cast<C>(b);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return static_cast<C>(static_cast<float>(bf16(static_cast<float>(b))));
  else if constexpr (std::is_same_v<T, __half>) return static_cast<C>(static_cast<float>(f16(static_cast<float>(b))));
  else return static_cast<C>(b);
}

// out = a op (b or the scalar s)
void run_binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor* b, double s) {
  const int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t stream = device_stream(out);
  const bool pred = is_predicate(op);
  const bool vec = b ? vector_ready(out, {&a, b}) : vector_ready(out, {&a});
  const Strided<3> idx = vec ? Strided<3>{}
                             : make_strided<3>(out.shape(), {&out.strides(), &a.strides(), b ? &b->strides() : &a.strides()},
                                               "binary");
  visit_device(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const acc_t<T> sc = b ? acc_t<T>(0) : scalar_operand<T>(s, pred, a.dtype());
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = b ? static_cast<const T*>(b->data_ptr()) : pa;
    auto launch = [&](auto out_tag) {
      using O = decltype(out_tag);
      O* po = static_cast<O*>(out.data_ptr());
      if constexpr (std::is_same_v<T, float> || is_half_v<T>) {
        if (vec) {
          const int64_t units = n / (16 / sizeof(T)) + 1;
          MLR_LAUNCH((blocks_for(units, kThreads), kThreads, 0, stream), binary_vec_kernel<T, O>)(op, po, pa, pb, sc, !b, n);
          MLR_CUDA_CHECK_LAUNCH();
          return;
        }
      }
      MLR_LAUNCH((blocks_for(n, kThreads), kThreads, 0, stream), binary_kernel<T, O>)(op, po, pa, pb, sc, !b, idx, n);
      MLR_CUDA_CHECK_LAUNCH();
    };
    if (pred) launch(bool{});
    else launch(T{});
  });
}

}  // namespace

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  check_same_shape("binary", out, a);
  check_same_shape("binary", out, b);
  check_device("binary", out, a);
  check_device("binary", out, b);
  MLR_CHECK(a.dtype() == b.dtype(), "binary: operands have dtypes {} and {} (cast to one dtype first)", a.dtype(),
            b.dtype());
  check_dtype("binary", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  MLR_CHECK(!(op == BinaryOp::div && !is_floating(a.dtype())),
            "binary: div on dtype {} (integer division is not an op; promote to a floating dtype)", a.dtype());
  run_binary(op, out, a, &b, 0.0);
}

void binary_scalar(BinaryOp op, const Tensor& out, const Tensor& a, double b) {
  check_same_shape("binary_scalar", out, a);
  check_device("binary_scalar", out, a);
  check_dtype("binary_scalar", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  MLR_CHECK(!(op == BinaryOp::div && !is_floating(a.dtype())),
            "binary_scalar: div on dtype {} (integer division is not an op; promote to a floating dtype)", a.dtype());
  MLR_CHECK(is_floating(a.dtype()) || integral_valued(b),
            "binary_scalar: scalar {} is not an integer, but the operand has dtype {} (promote to f32 first)", b,
            a.dtype());
  run_binary(op, out, a, nullptr, b);
}

void unary(UnaryOp op, const Tensor& out, const Tensor& a) {
  check_same_shape("unary", out, a);
  check_device("unary", out, a);
  check_dtype("unary", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  const bool float_math = op != UnaryOp::neg && op != UnaryOp::abs && op != UnaryOp::sign && op != UnaryOp::square &&
                          op != UnaryOp::relu && !is_predicate(op);
  MLR_CHECK(!float_math || is_floating(a.dtype()),
            "unary: op {} on dtype {} (the front-end computes float math in f32)", static_cast<int>(op), a.dtype());
  const int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t stream = device_stream(out);
  const bool vec = vector_ready(out, {&a});
  visit_device(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = static_cast<const T*>(a.data_ptr());
    auto launch = [&](auto out_tag) {
      using O = decltype(out_tag);
      O* po = static_cast<O*>(out.data_ptr());
      if constexpr (std::is_same_v<T, float> || is_half_v<T>) {
        if (vec) {
          const int64_t units = n / (16 / sizeof(T)) + 1;
          MLR_LAUNCH((blocks_for(units, kThreads), kThreads, 0, stream), unary_vec_kernel<T, O>)(op, po, pa, n);
          MLR_CUDA_CHECK_LAUNCH();
          return;
        }
      }
      const Strided<2> idx = make_strided<2>(out.shape(), {&out.strides(), &a.strides()}, "unary");
      MLR_LAUNCH((blocks_for(n, kThreads), kThreads, 0, stream), unary_kernel<T, O>)(op, po, pa, idx, n);
      MLR_CUDA_CHECK_LAUNCH();
    };
    if (is_predicate(op)) launch(bool{});
    else launch(T{});
  });
}

void unary_backward(UnaryBackwardOp op, const Tensor& out, const Tensor& g, const Tensor& saved) {
  check_same_shape("unary_backward", out, g);
  check_same_shape("unary_backward", out, saved);
  check_device("unary_backward", out, g);
  check_device("unary_backward", out, saved);
  MLR_CHECK(g.dtype() == saved.dtype() && out.dtype() == g.dtype(),
            "unary_backward: dtypes differ (out {}, g {}, saved {})", out.dtype(), g.dtype(), saved.dtype());
  const int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t stream = device_stream(out);
  const bool vec = vector_ready(out, {&g, &saved});
  visit_device_floating(g.dtype(), "unary_backward", [&](auto tag) {
    using T = decltype(tag);
    T* po = static_cast<T*>(out.data_ptr());
    const T* pg = static_cast<const T*>(g.data_ptr());
    const T* ps = static_cast<const T*>(saved.data_ptr());
    if constexpr (std::is_same_v<T, float> || is_half_v<T>) {
      if (vec) {
        const int64_t units = n / (16 / sizeof(T)) + 1;
        MLR_LAUNCH((blocks_for(units, kThreads), kThreads, 0, stream), unary_backward_vec_kernel<T>)(op, po, pg, ps, n);
        MLR_CUDA_CHECK_LAUNCH();
        return;
      }
    }
    const Strided<3> idx =
        make_strided<3>(out.shape(), {&out.strides(), &g.strides(), &saved.strides()}, "unary_backward");
    MLR_LAUNCH((blocks_for(n, kThreads), kThreads, 0, stream), unary_backward_kernel<T>)(op, po, pg, ps, idx, n);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

void clamp(const Tensor& out, const Tensor& a, double min, double max) {
  check_same_shape("clamp", out, a);
  check_device("clamp", out, a);
  check_dtype("clamp", out, a.dtype(), "output");
  const int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t stream = device_stream(out);
  const Strided<2> idx = make_strided<2>(out.shape(), {&out.strides(), &a.strides()}, "clamp");
  visit_device(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using C = acc_t<T>;
    C lo, hi;
    if constexpr (std::is_floating_point_v<C>) {
      lo = static_cast<C>(min);
      hi = static_cast<C>(max);
    } else {
      // Integer bounds: round inward, saturate infinities and out-of-range values (as the CPU).
      constexpr double kLimit = 9.2e18;
      lo = min <= -kLimit ? std::numeric_limits<C>::lowest()
           : min >= kLimit ? std::numeric_limits<C>::max()
                           : static_cast<C>(std::ceil(min));
      hi = max >= kLimit ? std::numeric_limits<C>::max()
           : max <= -kLimit ? std::numeric_limits<C>::lowest()
                            : static_cast<C>(std::floor(max));
    }
    MLR_LAUNCH((blocks_for(n, kThreads), kThreads, 0, stream), clamp_kernel<T>)(
        static_cast<T*>(out.data_ptr()), static_cast<const T*>(a.data_ptr()), lo, hi, idx, n);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_shape("where", out, cond);
  check_same_shape("where", out, a);
  check_same_shape("where", out, b);
  check_device("where", out, cond);
  check_device("where", out, a);
  check_device("where", out, b);
  check_dtype("where", cond, DType::boolean, "cond");
  check_dtype("where", a, out.dtype(), "a");
  check_dtype("where", b, out.dtype(), "b");
  const int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t stream = device_stream(out);
  const Strided<4> idx =
      make_strided<4>(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()}, "where");
  auto launch = [&](auto bits) {
    using B = decltype(bits);
    MLR_LAUNCH((blocks_for(n, kThreads), kThreads, 0, stream), where_kernel<B>)(
        static_cast<B*>(out.data_ptr()), static_cast<const bool*>(cond.data_ptr()),
        static_cast<const B*>(a.data_ptr()), static_cast<const B*>(b.data_ptr()), idx, n);
    MLR_CUDA_CHECK_LAUNCH();
  };
  switch (out.element_size()) {
    case 1: return launch(uint8_t{});
    case 2: return launch(uint16_t{});
    case 4: return launch(uint32_t{});
    default: return launch(uint64_t{});
  }
}

}  // namespace mlr::cuda
