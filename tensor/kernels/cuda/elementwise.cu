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
#include <tuple>

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

// ---- the math of every op of tensor/op_table.h, in the compute type C ----
// One specialisation per table entry. The switches below have one case per entry of the table
// and instantiate that entry's math, so an entry without its math here is a compile error, never
// a pass-through.
template <UnaryOp op> struct UnaryMath;              // f(x)
template <BinaryOp op> struct BinaryMath;            // f(x, y)
template <UnaryBackwardOp op> struct UnaryGradMath;  // f(g, saved) = g * the derivative

#define MLR_CUDA_UNARY(op, expr)                                        \
  template <> struct UnaryMath<UnaryOp::op> {                           \
    template <typename C> __device__ __forceinline__ static auto f(C x) { \
      return expr;                                                      \
    }                                                                   \
  };
MLR_CUDA_UNARY(neg, -x)
MLR_CUDA_UNARY(abs, x < C(0) ? -x : x)
MLR_CUDA_UNARY(sign, x > C(0) ? C(1) : x < C(0) ? C(-1) : x)  // keeps 0, -0 and NaN
MLR_CUDA_UNARY(exp, m_exp(x))
MLR_CUDA_UNARY(log, m_log(x))
MLR_CUDA_UNARY(sqrt, m_sqrt(x))
MLR_CUDA_UNARY(rsqrt, C(1) / m_sqrt(x))
MLR_CUDA_UNARY(square, x * x)
MLR_CUDA_UNARY(reciprocal, C(1) / x)
MLR_CUDA_UNARY(sin, m_sin(x))
MLR_CUDA_UNARY(cos, m_cos(x))
MLR_CUDA_UNARY(tanh, m_tanh(x))
MLR_CUDA_UNARY(sigmoid, sigmoid_of(x))
MLR_CUDA_UNARY(relu, x < C(0) ? C(0) : x)  // NaN stays NaN
MLR_CUDA_UNARY(silu, x * sigmoid_of(x))
MLR_CUDA_UNARY(gelu, C(0.5) * x * (C(1) + m_erf(x * kSqrt1_2<C>)))
MLR_CUDA_UNARY(gelu_tanh, C(0.5) * x * (C(1) + m_tanh(kSqrt2OverPi<C> * (x + kGeluC<C> * x * x * x))))
MLR_CUDA_UNARY(logical_not, x == C(0))
MLR_CUDA_UNARY(isnan, is_nan(x))
#undef MLR_CUDA_UNARY
template <> struct UnaryMath<UnaryOp::isfinite> {
  template <typename C> __device__ __forceinline__ static bool f(C x) {
    if constexpr (std::is_floating_point_v<C>) return m_isfinite(x);
    else return true;
  }
};

#define MLR_CUDA_BINARY(op, expr)                                            \
  template <> struct BinaryMath<BinaryOp::op> {                              \
    template <typename C> __device__ __forceinline__ static auto f(C x, C y) { \
      return expr;                                                           \
    }                                                                        \
  };
MLR_CUDA_BINARY(add, x + y)
MLR_CUDA_BINARY(sub, x - y)
MLR_CUDA_BINARY(mul, x * y)
MLR_CUDA_BINARY(div, x / y)
MLR_CUDA_BINARY(maximum, (x > y || is_nan(x)) ? x : y)
MLR_CUDA_BINARY(minimum, (x < y || is_nan(x)) ? x : y)
MLR_CUDA_BINARY(eq, x == y)
MLR_CUDA_BINARY(ne, x != y)
MLR_CUDA_BINARY(lt, x < y)
MLR_CUDA_BINARY(le, x <= y)
MLR_CUDA_BINARY(gt, x > y)
MLR_CUDA_BINARY(ge, x >= y)
MLR_CUDA_BINARY(logical_and, x != C(0) && y != C(0))
MLR_CUDA_BINARY(logical_or, x != C(0) || y != C(0))
#undef MLR_CUDA_BINARY
template <> struct BinaryMath<BinaryOp::pow> {
  template <typename C> __device__ __forceinline__ static C f(C x, C y) {
    if constexpr (std::is_floating_point_v<C>) return y == C(2) ? x * x : m_pow(x, y);
    else return int_pow(x, y);
  }
};

template <> struct UnaryGradMath<UnaryBackwardOp::sigmoid_from_output> {
  template <typename C> __device__ __forceinline__ static C f(C g, C y) { return g * y * (C(1) - y); }
};
template <> struct UnaryGradMath<UnaryBackwardOp::tanh_from_output> {
  template <typename C> __device__ __forceinline__ static C f(C g, C y) { return g * (C(1) - y * y); }
};
template <> struct UnaryGradMath<UnaryBackwardOp::silu> {
  template <typename C> __device__ __forceinline__ static C f(C g, C x) {
    const C sg = sigmoid_of(x);
    return g * sg * (C(1) + x * (C(1) - sg));
  }
};
template <> struct UnaryGradMath<UnaryBackwardOp::gelu> {
  template <typename C> __device__ __forceinline__ static C f(C g, C x) {
    const C cdf = C(0.5) * (C(1) + m_erf(x * kSqrt1_2<C>));
    const C pdf = kInvSqrt2Pi<C> * m_exp(C(-0.5) * x * x);
    return g * (cdf + x * pdf);
  }
};
template <> struct UnaryGradMath<UnaryBackwardOp::gelu_tanh> {
  template <typename C> __device__ __forceinline__ static C f(C g, C x) {
    const C x2 = x * x;
    const C t = m_tanh(kSqrt2OverPi<C> * (x + kGeluC<C> * x2 * x));
    const C du = kSqrt2OverPi<C> * (C(1) + C(3) * kGeluC<C> * x2);
    return g * (C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * du);
  }
};

// One op's value in the output type O (T, or bool for predicates). The kernels are instantiated
// per storage and output type with the op a runtime value, so every (op, O, C) combination
// compiles; those the host rejects (a predicate into a non-bool output, float math on integers)
// return O() and are never launched.
template <typename Math, OpKind kind, typename O, typename... C>
__device__ __forceinline__ O op_value(C... x) {
  using First = std::tuple_element_t<0, std::tuple<C...>>;
  if constexpr (kind == OpKind::predicate) {
    if constexpr (std::is_same_v<O, bool>) return Math::f(x...);
    else return O();
  } else if constexpr (kind == OpKind::floating && !std::is_floating_point_v<First>) {
    return O();
  } else {
    return convert<O>(Math::f(x...));
  }
}

template <typename O, typename C>
__device__ __forceinline__ O binary_value(BinaryOp op, C x, C y) {
  switch (op) {
#define MLR_CUDA_CASE(name, kind, ...) \
  case BinaryOp::name: return op_value<BinaryMath<BinaryOp::name>, OpKind::kind, O>(x, y);
    MLR_BINARY_OPS(MLR_CUDA_CASE)
#undef MLR_CUDA_CASE
  }
  return O();  // unreachable: one case per op of the table
}

template <typename O, typename C>
__device__ __forceinline__ O unary_out(UnaryOp op, C x) {
  switch (op) {
#define MLR_CUDA_CASE(name, kind, ...) \
  case UnaryOp::name: return op_value<UnaryMath<UnaryOp::name>, OpKind::kind, O>(x);
    MLR_UNARY_OPS(MLR_CUDA_CASE)
#undef MLR_CUDA_CASE
  }
  return O();  // unreachable: one case per op of the table
}

template <typename C>
__device__ __forceinline__ C unary_grad(UnaryBackwardOp op, C g, C s) {
  switch (op) {
#define MLR_CUDA_CASE(name, ...) \
  case UnaryBackwardOp::name: return UnaryGradMath<UnaryBackwardOp::name>::f(g, s);
    MLR_UNARY_BACKWARD_OPS(MLR_CUDA_CASE)
#undef MLR_CUDA_CASE
  }
  return C(0);  // unreachable: one case per op of the table
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

// The floating ops (div, exp, ...) never see integers: the front-end computes them in f32.
void check_float_math(const char* kernel, bool float_math, DType dtype, const char* op) {
  MLR_CHECK(!float_math || is_floating(dtype),
            "{}: {} on dtype {} (the op needs a floating dtype; the front-end computes integers in f32)", kernel, op,
            dtype);
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
  check_float_math("binary", is_float_math(op), a.dtype(), op_name(op));
  run_binary(op, out, a, &b, 0.0);
}

void binary_scalar(BinaryOp op, const Tensor& out, const Tensor& a, double b) {
  check_same_shape("binary_scalar", out, a);
  check_device("binary_scalar", out, a);
  check_dtype("binary_scalar", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  check_float_math("binary_scalar", is_float_math(op), a.dtype(), op_name(op));
  MLR_CHECK(is_floating(a.dtype()) || integral_valued(b),
            "binary_scalar: scalar {} is not an integer, but the operand has dtype {} (promote to f32 first)", b,
            a.dtype());
  run_binary(op, out, a, nullptr, b);
}

void unary(UnaryOp op, const Tensor& out, const Tensor& a) {
  check_same_shape("unary", out, a);
  check_device("unary", out, a);
  check_dtype("unary", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  check_float_math("unary", is_float_math(op), a.dtype(), op_name(op));
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
