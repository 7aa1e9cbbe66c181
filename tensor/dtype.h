// Element types, their host representations, and the type-promotion rules.
//
// Promotion (result dtype of a binary op on tensors a and b), as in PyTorch:
//   - categories rank bool < integer < floating;
//   - within a category the wider type wins (i32 < i64; f16, bf16 < f32 < f64);
//   - f16 with bf16 gives f32 (neither holds the other);
//   - a C++ scalar (double) operand never widens a floating tensor: f16 * 2.0 stays f16;
//     a floating scalar with an integer or bool tensor gives f32.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "tensor/error.h"

namespace mlr {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, boolean };

// bfloat16: the upper 16 bits of an IEEE float32. Conversion from float rounds to nearest even;
// NaN stays NaN.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  bf16(float f) {  // NOLINT: implicit, like a builtin float type
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
    } else {
      uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<uint16_t>((u + rounding) >> 16);
    }
  }
  operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

// IEEE binary16. Conversion from float rounds to nearest even, handles subnormals, overflows to inf.
struct f16 {
  uint16_t bits = 0;
  f16() = default;
  f16(float f) { bits = from_float(f); }  // NOLINT
  operator float() const { return to_float(bits); }

  static uint16_t from_float(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);        // NaN
    if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);       // overflow -> inf
    if (abs < 0x38800000u) {                                                     // subnormal or zero
      // value = abs_float; f16 subnormal unit is 2^-24. Round to nearest even in integer math.
      if (abs < 0x33000000u) return static_cast<uint16_t>(sign);                // < 2^-25 -> 0
      uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
      // value = mant * 2^(E-150) and the subnormal unit is 2^-24, so q = mant >> (126 - E).
      uint32_t drop = 126u - (abs >> 23);
      uint32_t half = 1u << (drop - 1);
      uint32_t rest = mant & ((1u << drop) - 1);
      uint32_t q = mant >> drop;
      if (rest > half || (rest == half && (q & 1u))) q += 1;
      return static_cast<uint16_t>(sign | q);
    }
    uint32_t q = abs + 0xfffu + ((abs >> 13) & 1u);  // round mantissa to 10 bits, nearest even
    q -= 0x38000000u;                                // rebias exponent 127 -> 15
    return static_cast<uint16_t>(sign | (q >> 13));
  }
  static float to_float(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
      u = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
      if (mant == 0) {
        u = sign;
      } else {  // subnormal: normalise
        int e = -1;
        do {
          e++;
          mant <<= 1;
        } while ((mant & 0x400u) == 0);
        u = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
      }
    } else {
      u = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::boolean: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::boolean: return "bool";
  }
  return "?";
}

inline bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}
inline bool is_integral(DType t) { return t == DType::i32 || t == DType::i64; }

// Parses "f32", "float32", "bf16", "bfloat16", "f16", "float16", "fp16", ... ; throws on anything else.
DType parse_dtype(const std::string& name);

// Result dtype of a binary op on two tensors (rules at the top of this file).
DType promote_types(DType a, DType b);
// Result dtype of a binary op on a tensor and a C++ scalar; scalar_is_floating says whether the
// scalar is a floating-point value.
DType promote_with_scalar(DType tensor_dtype, bool scalar_is_floating);

// The host type stored for each dtype: dtype_of<T>::value and visit helpers.
template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::boolean; };

// Compute type of a storage type: f32 for the 16-bit floats (and f32), f64 for f64, int64 for
// the integers, bool for bool.
template <typename T> struct compute_type { using type = T; };
template <> struct compute_type<bf16> { using type = float; };
template <> struct compute_type<f16> { using type = float; };
template <> struct compute_type<int32_t> { using type = int64_t; };
template <typename T> using compute_t = typename compute_type<T>::type;

// Calls f(T{}) with T the host type of `t`.
template <typename F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::bf16: return f(bf16{});
    case DType::f16: return f(f16{});
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
    case DType::boolean: return f(bool{});
  }
  throw Error("unknown dtype");
}

// Same, restricted to floating types; `op` names the caller for the error message.
template <typename F>
decltype(auto) visit_floating(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::bf16: return f(bf16{});
    case DType::f16: return f(f16{});
    default: break;
  }
  throw Error(fmt::format("{}: dtype {} is not supported (expected a floating dtype)", op, dtype_name(t)));
}

}  // namespace mlr

template <>
struct fmt::formatter<mlr::DType> : fmt::formatter<std::string_view> {
  auto format(mlr::DType t, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(mlr::dtype_name(t), ctx);
  }
};
