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

// The arithmetic ops as a functor over compute values, selected once outside the loop.
template <BinaryOp op, typename C>
inline C arith(C x, C y) {
  if constexpr (op == BinaryOp::add) return x + y;
  if constexpr (op == BinaryOp::sub) return x - y;
  if constexpr (op == BinaryOp::mul) return x * y;
  if constexpr (op == BinaryOp::div) return x / y;
  if constexpr (op == BinaryOp::pow) {
    if constexpr (std::is_integral_v<C>) return int_pow(x, y);
    else return std::pow(x, y);
  }
  if constexpr (op == BinaryOp::maximum) return (x > y || is_nan(x)) ? x : y;
  if constexpr (op == BinaryOp::minimum) return (x < y || is_nan(x)) ? x : y;
  return C(0);
}

template <BinaryOp op, typename C>
inline bool predicate(C x, C y) {
  if constexpr (op == BinaryOp::eq) return x == y;
  if constexpr (op == BinaryOp::ne) return x != y;
  if constexpr (op == BinaryOp::lt) return x < y;
  if constexpr (op == BinaryOp::le) return x <= y;
  if constexpr (op == BinaryOp::gt) return x > y;
  if constexpr (op == BinaryOp::ge) return x >= y;
  if constexpr (op == BinaryOp::logical_and) return x != C(0) && y != C(0);
  if constexpr (op == BinaryOp::logical_or) return x != C(0) || y != C(0);
  return false;
}

// Calls f(std::integral_constant<BinaryOp, op>{}) for the runtime op.
template <typename F>
void visit_binary(BinaryOp op, F&& f) {
  using B = BinaryOp;
  switch (op) {
    case B::add: return f(std::integral_constant<B, B::add>{});
    case B::sub: return f(std::integral_constant<B, B::sub>{});
    case B::mul: return f(std::integral_constant<B, B::mul>{});
    case B::div: return f(std::integral_constant<B, B::div>{});
    case B::pow: return f(std::integral_constant<B, B::pow>{});
    case B::maximum: return f(std::integral_constant<B, B::maximum>{});
    case B::minimum: return f(std::integral_constant<B, B::minimum>{});
    case B::eq: return f(std::integral_constant<B, B::eq>{});
    case B::ne: return f(std::integral_constant<B, B::ne>{});
    case B::lt: return f(std::integral_constant<B, B::lt>{});
    case B::le: return f(std::integral_constant<B, B::le>{});
    case B::gt: return f(std::integral_constant<B, B::gt>{});
    case B::ge: return f(std::integral_constant<B, B::ge>{});
    case B::logical_and: return f(std::integral_constant<B, B::logical_and>{});
    case B::logical_or: return f(std::integral_constant<B, B::logical_or>{});
  }
  throw Error("binary: unknown op");
}

bool integral_valued(double v) { return std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.2e18; }

}  // namespace

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  check_same_shape("binary", out, a);
  check_same_shape("binary", out, b);
  MLR_CHECK(a.dtype() == b.dtype(), "binary: operands have dtypes {} and {} (cast to one dtype first)", a.dtype(),
            b.dtype());
  check_dtype("binary", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  MLR_CHECK(!(op == BinaryOp::div && !is_floating(a.dtype())),
            "binary: div on dtype {} (integer division is not an op; promote to a floating dtype)", a.dtype());
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using C = calc_t<T>;
    visit_binary(op, [&](auto opc) {
      constexpr BinaryOp o = decltype(opc)::value;
      if constexpr (o >= BinaryOp::eq) {
        map2<bool, T>(out, a, b, [](T x, T y) { return predicate<o, C>(load<C>(x), load<C>(y)); });
      } else {
        map2<T, T>(out, a, b, [](T x, T y) { return store<T>(arith<o, C>(load<C>(x), load<C>(y))); });
      }
    });
  });
}

void binary_scalar(BinaryOp op, const Tensor& out, const Tensor& a, double b) {
  check_same_shape("binary_scalar", out, a);
  check_dtype("binary_scalar", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  MLR_CHECK(!(op == BinaryOp::div && !is_floating(a.dtype())),
            "binary_scalar: div on dtype {} (integer division is not an op; promote to a floating dtype)", a.dtype());
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
      if constexpr (o >= BinaryOp::eq) {
        map1<bool, T>(out, a, [s_cmp](T x) { return predicate<o, C>(load<C>(x), s_cmp); });
      } else if constexpr (o == BinaryOp::pow && std::is_floating_point_v<C>) {
        if (s_arith == C(2)) {
          map1<T, T>(out, a, [](T x) { C v = load<C>(x); return store<T>(v * v); });
        } else {
          map1<T, T>(out, a, [s_arith](T x) { return store<T>(std::pow(load<C>(x), s_arith)); });
        }
      } else {
        map1<T, T>(out, a, [s_arith](T x) { return store<T>(arith<o, C>(load<C>(x), s_arith)); });
      }
    });
  });
}

namespace {

template <UnaryOp op, typename C>
inline C unary_value(C x) {
  using U = UnaryOp;
  if constexpr (op == U::neg) return -x;
  if constexpr (op == U::abs) return x < C(0) ? -x : x;
  if constexpr (op == U::sign) return x > C(0) ? C(1) : x < C(0) ? C(-1) : x;  // keeps 0, -0 and NaN
  if constexpr (op == U::square) return x * x;
  if constexpr (op == U::relu) return x < C(0) ? C(0) : x;  // NaN stays NaN
  if constexpr (std::is_floating_point_v<C>) {
    if constexpr (op == U::exp) return std::exp(x);
    if constexpr (op == U::log) return std::log(x);
    if constexpr (op == U::sqrt) return std::sqrt(x);
    if constexpr (op == U::rsqrt) return C(1) / std::sqrt(x);
    if constexpr (op == U::reciprocal) return C(1) / x;
    if constexpr (op == U::sin) return std::sin(x);
    if constexpr (op == U::cos) return std::cos(x);
    if constexpr (op == U::tanh) return std::tanh(x);
    if constexpr (op == U::sigmoid) return sigmoid_of(x);
    if constexpr (op == U::silu) return x * sigmoid_of(x);
    if constexpr (op == U::gelu) return C(0.5) * x * (C(1) + std::erf(x * kSqrt1_2<C>));
    if constexpr (op == U::gelu_tanh)
      return C(0.5) * x * (C(1) + std::tanh(kSqrt2OverPi<C> * (x + kGeluC<C> * x * x * x)));
  }
  return x;
}

template <UnaryOp op>
constexpr bool is_float_math() {
  return op != UnaryOp::neg && op != UnaryOp::abs && op != UnaryOp::sign && op != UnaryOp::square &&
         op != UnaryOp::relu && op < UnaryOp::logical_not;
}

template <typename F>
void visit_unary(UnaryOp op, F&& f) {
  using U = UnaryOp;
  switch (op) {
#define MLR_UNARY_CASE(name) \
  case U::name: return f(std::integral_constant<U, U::name>{});
    MLR_UNARY_CASE(neg) MLR_UNARY_CASE(abs) MLR_UNARY_CASE(sign) MLR_UNARY_CASE(exp) MLR_UNARY_CASE(log)
    MLR_UNARY_CASE(sqrt) MLR_UNARY_CASE(rsqrt) MLR_UNARY_CASE(square) MLR_UNARY_CASE(reciprocal)
    MLR_UNARY_CASE(sin) MLR_UNARY_CASE(cos) MLR_UNARY_CASE(tanh) MLR_UNARY_CASE(sigmoid) MLR_UNARY_CASE(relu)
    MLR_UNARY_CASE(silu) MLR_UNARY_CASE(gelu) MLR_UNARY_CASE(gelu_tanh) MLR_UNARY_CASE(logical_not)
    MLR_UNARY_CASE(isnan) MLR_UNARY_CASE(isfinite)
#undef MLR_UNARY_CASE
  }
  throw Error("unary: unknown op");
}

}  // namespace

void unary(UnaryOp op, const Tensor& out, const Tensor& a) {
  check_same_shape("unary", out, a);
  check_dtype("unary", out, is_predicate(op) ? DType::boolean : a.dtype(), "output");
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using C = calc_t<T>;
    visit_unary(op, [&](auto opc) {
      constexpr UnaryOp o = decltype(opc)::value;
      if constexpr (o == UnaryOp::logical_not) {
        map1<bool, T>(out, a, [](T x) { return load<C>(x) == C(0); });
      } else if constexpr (o == UnaryOp::isnan) {
        map1<bool, T>(out, a, [](T x) { return is_nan(load<C>(x)); });
      } else if constexpr (o == UnaryOp::isfinite) {
        map1<bool, T>(out, a, [](T x) {
          if constexpr (std::is_floating_point_v<C>) return std::isfinite(load<C>(x));
          return true;
        });
      } else if constexpr (is_float_math<o>() && !std::is_floating_point_v<C>) {
        throw Error(fmt::format("unary: op {} on dtype {} (the front-end computes float math in f32)",
                                static_cast<int>(o), a.dtype()));
      } else {
        map1<T, T>(out, a, [](T x) { return store<T>(unary_value<o, C>(load<C>(x))); });
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
    auto run = [&](auto f) { map2<T, T>(out, g, saved, [f](T gv, T sv) { return store<T>(f(load<C>(gv), load<C>(sv))); }); };
    switch (op) {
      case UnaryBackwardOp::sigmoid_from_output:
        return run([](C gv, C y) { return gv * y * (C(1) - y); });
      case UnaryBackwardOp::tanh_from_output:
        return run([](C gv, C y) { return gv * (C(1) - y * y); });
      case UnaryBackwardOp::silu:
        return run([](C gv, C x) {
          C s = sigmoid_of(x);
          return gv * s * (C(1) + x * (C(1) - s));
        });
      case UnaryBackwardOp::gelu:
        return run([](C gv, C x) {
          C cdf = C(0.5) * (C(1) + std::erf(x * kSqrt1_2<C>));
          C pdf = kInvSqrt2Pi<C> * std::exp(C(-0.5) * x * x);
          return gv * (cdf + x * pdf);
        });
      case UnaryBackwardOp::gelu_tanh:
        return run([](C gv, C x) {
          C x2 = x * x;
          C t = std::tanh(kSqrt2OverPi<C> * (x + kGeluC<C> * x2 * x));
          C du = kSqrt2OverPi<C> * (C(1) + C(3) * kGeluC<C> * x2);
          return gv * (C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * du);
        });
    }
    throw Error("unary_backward: unknown op");
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
