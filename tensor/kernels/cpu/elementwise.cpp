// Elementwise kernels: binary (tensor-tensor and tensor-scalar), unary, their derivatives, clamp, where.
//
// Every value is loaded into its compute type C (f32 for bf16/f16/f32, f64 for f64, i64 for the
// integers and for bool), computed once, and rounded once on store. Predicates store bool.
//
// Forward, and the derivative each backward op computes (g is the incoming gradient):
//   sigmoid(x) = 1 / (1 + e^-x)                      d = g * y (1 - y)            (y = sigmoid(x), saved)
//   tanh(x)                                          d = g * (1 - y^2)            (y = tanh(x), saved)
//   silu(x)    = x s,  s = sigmoid(x)                d = g * s (1 + x (1 - s))
//   gelu(x)    = x Phi(x),  Phi(x) = (1 + erf(x/sqrt2)) / 2,  phi(x) = e^(-x^2/2) / sqrt(2 pi)
//                                                    d = g * (Phi(x) + x phi(x))
//   gelu_tanh(x) = x (1 + t) / 2,  t = tanh(u),  u = k (x + c x^3),  k = sqrt(2/pi), c = 0.044715
//                                                    d = g * ((1 + t)/2 + x (1 - t^2) k (1 + 3c x^2) / 2)
// maximum/minimum propagate NaN (like torch); relu, sign and clamp keep NaN as NaN.
#include <cmath>
#include <limits>
#include <type_traits>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/loops.h"

namespace mlr::cpu {

namespace {

// Compute type: f32 for the 16-bit floats, the type itself for f32/f64, i64 for integers and bool.
template <typename T> struct calc { using type = T; };
template <> struct calc<bf16> { using type = float; };
template <> struct calc<f16> { using type = float; };
template <> struct calc<int32_t> { using type = int64_t; };
template <> struct calc<bool> { using type = int64_t; };
template <typename T> using calc_t = typename calc<T>::type;

template <typename C, typename T>
inline C load(T v) {
  return static_cast<C>(v);
}

template <typename O, typename C>
inline O store(C v) {
  if constexpr (std::is_same_v<O, C>) {
    return v;
  } else if constexpr (std::is_same_v<O, bool>) {
    return v != C(0);
  } else if constexpr (std::is_same_v<O, bf16> || std::is_same_v<O, f16>) {
    return O(static_cast<float>(v));
  } else {
    return static_cast<O>(v);
  }
}

template <typename C>
inline bool is_nan(C v) {
  if constexpr (std::is_floating_point_v<C>) return std::isnan(v);
  return false;
}

// Integer power by squaring; a negative exponent truncates 1 / a^|e| toward zero as integer
// division would (only +-1 survive).
inline int64_t int_pow(int64_t base, int64_t e) {
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
inline C sigmoid_of(C x) {
  // 1 / (1 + e^-x): for very negative x, e^-x overflows to inf and the result is exactly 0.
  return C(1) / (C(1) + std::exp(-x));
}

template <typename C> constexpr C kSqrt1_2 = C(0.70710678118654752440);         // 1/sqrt(2)
template <typename C> constexpr C kInvSqrt2Pi = C(0.39894228040143267794);      // 1/sqrt(2 pi)
template <typename C> constexpr C kSqrt2OverPi = C(0.79788456080286535588);     // sqrt(2/pi)
template <typename C> constexpr C kGeluC = C(0.044715);

// out = f(a, b) over out's shape; a and b are (possibly expanded) views of the same shape.
template <typename O, typename T, typename F>
void map2(const Tensor& out, const Tensor& a, const Tensor& b, F f) {
  O* po = static_cast<O*>(out.data_ptr());
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  strided_loop<3>(out.shape(), {&out.strides(), &a.strides(), &b.strides()},
                  [&](const std::array<int64_t, 3>& o, const std::array<int64_t, 3>& st, int64_t n) {
                    O* x = po + o[0];
                    const T* y = pa + o[1];
                    const T* z = pb + o[2];
                    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
                      for (int64_t i = 0; i < n; ++i) x[i] = f(y[i], z[i]);
                    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {  // tensor op broadcast value
                      const T zv = z[0];
                      for (int64_t i = 0; i < n; ++i) x[i] = f(y[i], zv);
                    } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
                      const T yv = y[0];
                      for (int64_t i = 0; i < n; ++i) x[i] = f(yv, z[i]);
                    } else {
                      for (int64_t i = 0; i < n; ++i) x[i * st[0]] = f(y[i * st[1]], z[i * st[2]]);
                    }
                  });
}

// out = f(a) over out's shape.
template <typename O, typename T, typename F>
void map1(const Tensor& out, const Tensor& a, F f) {
  O* po = static_cast<O*>(out.data_ptr());
  const T* pa = static_cast<const T*>(a.data_ptr());
  strided_loop<2>(out.shape(), {&out.strides(), &a.strides()},
                  [&](const std::array<int64_t, 2>& o, const std::array<int64_t, 2>& st, int64_t n) {
                    O* x = po + o[0];
                    const T* y = pa + o[1];
                    if (st[0] == 1 && st[1] == 1) {
                      for (int64_t i = 0; i < n; ++i) x[i] = f(y[i]);
                    } else {
                      for (int64_t i = 0; i < n; ++i) x[i * st[0]] = f(y[i * st[1]]);
                    }
                  });
}

void check_same_shape(const char* op, const Tensor& out, const Tensor& a) {
  MLR_CHECK(out.shape() == a.shape(), "{}: output shape {} and input shape {} differ (expand inputs first)", op,
            shape_str(out.shape()), shape_str(a.shape()));
}

void check_dtype(const char* op, const Tensor& t, DType expected, const char* what) {
  MLR_CHECK(t.dtype() == expected, "{}: {} has dtype {}, expected {}", op, what, t.dtype(), expected);
}

// ---- the math of every op of tensor/op_table.h, in the compute type C ----
// One specialisation per table entry. The dispatch (visit_unary, ...) instantiates the one of every
// entry of the table, so an entry without its math here is a compile error, never a pass-through.
template <UnaryOp op> struct UnaryMath;              // f(x)
template <BinaryOp op> struct BinaryMath;            // f(x, y)
template <UnaryBackwardOp op> struct UnaryGradMath;  // f(g, saved) = g * the derivative

#define MLR_CPU_UNARY(op, expr) \
  template <> struct UnaryMath<UnaryOp::op> { template <typename C> static auto f(C x) { return expr; } };
MLR_CPU_UNARY(neg, -x)
MLR_CPU_UNARY(abs, x < C(0) ? -x : x)
MLR_CPU_UNARY(sign, x > C(0) ? C(1) : x < C(0) ? C(-1) : x)  // keeps 0, -0 and NaN
MLR_CPU_UNARY(exp, std::exp(x))
MLR_CPU_UNARY(log, std::log(x))
MLR_CPU_UNARY(sqrt, std::sqrt(x))
MLR_CPU_UNARY(rsqrt, C(1) / std::sqrt(x))
MLR_CPU_UNARY(square, x * x)
MLR_CPU_UNARY(reciprocal, C(1) / x)
MLR_CPU_UNARY(sin, std::sin(x))
MLR_CPU_UNARY(cos, std::cos(x))
MLR_CPU_UNARY(tanh, std::tanh(x))
MLR_CPU_UNARY(sigmoid, sigmoid_of(x))
MLR_CPU_UNARY(relu, x < C(0) ? C(0) : x)  // NaN stays NaN
MLR_CPU_UNARY(silu, x * sigmoid_of(x))
MLR_CPU_UNARY(gelu, C(0.5) * x * (C(1) + std::erf(x * kSqrt1_2<C>)))
MLR_CPU_UNARY(gelu_tanh, C(0.5) * x * (C(1) + std::tanh(kSqrt2OverPi<C> * (x + kGeluC<C> * x * x * x))))
MLR_CPU_UNARY(logical_not, x == C(0))
MLR_CPU_UNARY(isnan, is_nan(x))
#undef MLR_CPU_UNARY
template <> struct UnaryMath<UnaryOp::isfinite> {
  template <typename C> static bool f(C x) {
    if constexpr (std::is_floating_point_v<C>) return std::isfinite(x);
    else return true;
  }
};

#define MLR_CPU_BINARY(op, expr) \
  template <> struct BinaryMath<BinaryOp::op> { template <typename C> static auto f(C x, C y) { return expr; } };
MLR_CPU_BINARY(add, x + y)
MLR_CPU_BINARY(sub, x - y)
MLR_CPU_BINARY(mul, x * y)
MLR_CPU_BINARY(div, x / y)
MLR_CPU_BINARY(maximum, (x > y || is_nan(x)) ? x : y)
MLR_CPU_BINARY(minimum, (x < y || is_nan(x)) ? x : y)
MLR_CPU_BINARY(eq, x == y)
MLR_CPU_BINARY(ne, x != y)
MLR_CPU_BINARY(lt, x < y)
MLR_CPU_BINARY(le, x <= y)
MLR_CPU_BINARY(gt, x > y)
MLR_CPU_BINARY(ge, x >= y)
MLR_CPU_BINARY(logical_and, x != C(0) && y != C(0))
MLR_CPU_BINARY(logical_or, x != C(0) || y != C(0))
#undef MLR_CPU_BINARY
template <> struct BinaryMath<BinaryOp::pow> {
  template <typename C> static C f(C x, C y) {
    if constexpr (std::is_integral_v<C>) return int_pow(x, y);
    else return std::pow(x, y);
  }
};

template <> struct UnaryGradMath<UnaryBackwardOp::sigmoid_from_output> {
  template <typename C> static C f(C g, C y) { return g * y * (C(1) - y); }
};
template <> struct UnaryGradMath<UnaryBackwardOp::tanh_from_output> {
  template <typename C> static C f(C g, C y) { return g * (C(1) - y * y); }
};
template <> struct UnaryGradMath<UnaryBackwardOp::silu> {
  template <typename C> static C f(C g, C x) {
    C s = sigmoid_of(x);
    return g * s * (C(1) + x * (C(1) - s));
  }
};
template <> struct UnaryGradMath<UnaryBackwardOp::gelu> {
  template <typename C> static C f(C g, C x) {
    C cdf = C(0.5) * (C(1) + std::erf(x * kSqrt1_2<C>));
    C pdf = kInvSqrt2Pi<C> * std::exp(C(-0.5) * x * x);
    return g * (cdf + x * pdf);
  }
};
template <> struct UnaryGradMath<UnaryBackwardOp::gelu_tanh> {
  template <typename C> static C f(C g, C x) {
    C x2 = x * x;
    C t = std::tanh(kSqrt2OverPi<C> * (x + kGeluC<C> * x2 * x));
    C du = kSqrt2OverPi<C> * (C(1) + C(3) * kGeluC<C> * x2);
    return g * (C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * du);
  }
};

// Calls f(std::integral_constant<Enum, op>{}) for the runtime op: one case per table entry.
template <typename F>
void visit_unary(UnaryOp op, F&& f) {
  switch (op) {
#define MLR_CPU_CASE(name, ...) case UnaryOp::name: return f(std::integral_constant<UnaryOp, UnaryOp::name>{});
    MLR_UNARY_OPS(MLR_CPU_CASE)
#undef MLR_CPU_CASE
  }
  throw Error(fmt::format("unary: op code {} is not in the op table", static_cast<int>(op)));
}
template <typename F>
void visit_binary(BinaryOp op, F&& f) {
  switch (op) {
#define MLR_CPU_CASE(name, ...) case BinaryOp::name: return f(std::integral_constant<BinaryOp, BinaryOp::name>{});
    MLR_BINARY_OPS(MLR_CPU_CASE)
#undef MLR_CPU_CASE
  }
  throw Error(fmt::format("binary: op code {} is not in the op table", static_cast<int>(op)));
}
template <typename F>
void visit_unary_backward(UnaryBackwardOp op, F&& f) {
  switch (op) {
#define MLR_CPU_CASE(name, ...) \
  case UnaryBackwardOp::name: return f(std::integral_constant<UnaryBackwardOp, UnaryBackwardOp::name>{});
    MLR_UNARY_BACKWARD_OPS(MLR_CPU_CASE)
#undef MLR_CPU_CASE
  }
  throw Error(fmt::format("unary_backward: op code {} is not in the op table", static_cast<int>(op)));
}

bool integral_valued(double v) { return std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.2e18; }

// The floating ops (div, exp, ...) never see integers: the front-end computes them in f32.
void check_float_math(const char* kernel, bool float_math, DType dtype, const char* op) {
  MLR_CHECK(!float_math || is_floating(dtype),
            "{}: {} on dtype {} (the op needs a floating dtype; the front-end computes integers in f32)", kernel, op,
            dtype);
}

}  // namespace

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  check_same_shape("binary", out, a);
  check_same_shape("binary", out, b);
  MLR_CHECK(a.dtype() == b.dtype(), "binary: operands have dtypes {} and {} (cast to one dtype first)", a.dtype(),
            b.dtype());
  check_dtype("binary", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  check_float_math("binary", is_float_math(op), a.dtype(), op_name(op));
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using C = calc_t<T>;
    visit_binary(op, [&](auto opc) {
      constexpr BinaryOp o = decltype(opc)::value;
      using M = BinaryMath<o>;
      if constexpr (op_kind(o) == OpKind::predicate) {
        map2<bool, T>(out, a, b, [](T x, T y) -> bool { return M::f(load<C>(x), load<C>(y)); });
      } else if constexpr (op_kind(o) == OpKind::floating && !std::is_floating_point_v<C>) {
        throw Error("binary: unreachable (checked above)");
      } else {
        map2<T, T>(out, a, b, [](T x, T y) { return store<T>(M::f(load<C>(x), load<C>(y))); });
      }
    });
  });
}

void binary_scalar(BinaryOp op, const Tensor& out, const Tensor& a, double b) {
  check_same_shape("binary_scalar", out, a);
  check_dtype("binary_scalar", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  check_float_math("binary_scalar", is_float_math(op), a.dtype(), op_name(op));
  MLR_CHECK(is_floating(a.dtype()) || integral_valued(b),
            "binary_scalar: scalar {} is not an integer, but the operand has dtype {} (promote to f32 first)", b,
            a.dtype());
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using C = calc_t<T>;
    // Arithmetic uses the scalar in the compute type (like torch's opmath); comparisons first
    // round it to the tensor's dtype, so a bf16 tensor holding 0.1 compares equal to 0.1.
    const C s_arith = static_cast<C>(b);
    const C s_cmp = is_floating(a.dtype()) ? load<C>(store<T>(static_cast<C>(b))) : static_cast<C>(b);
    visit_binary(op, [&](auto opc) {
      constexpr BinaryOp o = decltype(opc)::value;
      using M = BinaryMath<o>;
      if constexpr (op_kind(o) == OpKind::predicate) {
        map1<bool, T>(out, a, [s_cmp](T x) -> bool { return M::f(load<C>(x), s_cmp); });
      } else if constexpr (op_kind(o) == OpKind::floating && !std::is_floating_point_v<C>) {
        throw Error("binary_scalar: unreachable (checked above)");
      } else if constexpr (o == BinaryOp::pow && std::is_floating_point_v<C>) {
        if (s_arith == C(2)) {
          map1<T, T>(out, a, [](T x) { C v = load<C>(x); return store<T>(v * v); });
        } else {
          map1<T, T>(out, a, [s_arith](T x) { return store<T>(std::pow(load<C>(x), s_arith)); });
        }
      } else {
        map1<T, T>(out, a, [s_arith](T x) { return store<T>(M::f(load<C>(x), s_arith)); });
      }
    });
  });
}

void unary(UnaryOp op, const Tensor& out, const Tensor& a) {
  check_same_shape("unary", out, a);
  check_dtype("unary", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  check_float_math("unary", is_float_math(op), a.dtype(), op_name(op));
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using C = calc_t<T>;
    visit_unary(op, [&](auto opc) {
      constexpr UnaryOp o = decltype(opc)::value;
      using M = UnaryMath<o>;
      if constexpr (op_kind(o) == OpKind::predicate) {
        map1<bool, T>(out, a, [](T x) -> bool { return M::f(load<C>(x)); });
      } else if constexpr (op_kind(o) == OpKind::floating && !std::is_floating_point_v<C>) {
        throw Error("unary: unreachable (checked above)");
      } else {
        map1<T, T>(out, a, [](T x) { return store<T>(M::f(load<C>(x))); });
      }
    });
  });
}

void unary_backward(UnaryBackwardOp op, const Tensor& out, const Tensor& g, const Tensor& saved) {
  check_same_shape("unary_backward", out, g);
  check_same_shape("unary_backward", out, saved);
  MLR_CHECK(g.dtype() == saved.dtype() && out.dtype() == g.dtype(),
            "unary_backward: dtypes differ (out {}, g {}, saved {})", out.dtype(), g.dtype(), saved.dtype());
  visit_floating(g.dtype(), "unary_backward", [&](auto tag) {
    using T = decltype(tag);
    using C = calc_t<T>;
    visit_unary_backward(op, [&](auto opc) {
      using M = UnaryGradMath<decltype(opc)::value>;
      map2<T, T>(out, g, saved, [](T gv, T sv) { return store<T>(M::f(load<C>(gv), load<C>(sv))); });
    });
  });
}

void clamp(const Tensor& out, const Tensor& a, double min, double max) {
  check_same_shape("clamp", out, a);
  check_dtype("clamp", out, a.dtype(), "output");
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using C = calc_t<T>;
    C lo, hi;
    if constexpr (std::is_floating_point_v<C>) {
      lo = static_cast<C>(min);
      hi = static_cast<C>(max);
    } else {
      // Integer bounds: round inward, saturate infinities and out-of-range values.
      constexpr double kLimit = 9.2e18;
      lo = min <= -kLimit ? std::numeric_limits<C>::lowest() : min >= kLimit ? std::numeric_limits<C>::max()
                                                                              : static_cast<C>(std::ceil(min));
      hi = max >= kLimit ? std::numeric_limits<C>::max() : max <= -kLimit ? std::numeric_limits<C>::lowest()
                                                                           : static_cast<C>(std::floor(max));
    }
    // Lower bound first, then upper: with min > max every element becomes max (as torch). NaN
    // fails both comparisons and stays NaN.
    map1<T, T>(out, a, [lo, hi](T x) {
      C v = load<C>(x);
      v = v < lo ? lo : v;
      v = v > hi ? hi : v;
      return store<T>(v);
    });
  });
}

void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_shape("where", out, cond);
  check_same_shape("where", out, a);
  check_same_shape("where", out, b);
  check_dtype("where", cond, DType::boolean, "cond");
  check_dtype("where", a, out.dtype(), "a");
  check_dtype("where", b, out.dtype(), "b");
  visit_dtype(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* po = static_cast<T*>(out.data_ptr());
    const bool* pc = static_cast<const bool*>(cond.data_ptr());
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = static_cast<const T*>(b.data_ptr());
    strided_loop<4>(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()},
                    [&](const std::array<int64_t, 4>& o, const std::array<int64_t, 4>& st, int64_t n) {
                      T* x = po + o[0];
                      const bool* c = pc + o[1];
                      const T* y = pa + o[2];
                      const T* z = pb + o[3];
                      if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
                        for (int64_t i = 0; i < n; ++i) x[i] = c[i] ? y[i] : z[i];
                      } else {
                        for (int64_t i = 0; i < n; ++i) x[i * st[0]] = c[i * st[1]] ? y[i * st[2]] : z[i * st[3]];
                      }
                    });
  });
}

}  // namespace mlr::cpu
