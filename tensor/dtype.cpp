#include "tensor/dtype.h"

#include <algorithm>
#include <cctype>

namespace mlr {

DType parse_dtype(const std::string& raw) {
  std::string name = raw;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  if (name == "f32" || name == "float32" || name == "fp32" || name == "float") return DType::f32;
  if (name == "f64" || name == "float64" || name == "fp64" || name == "double") return DType::f64;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "f16" || name == "float16" || name == "fp16" || name == "half") return DType::f16;
  if (name == "i32" || name == "int32") return DType::i32;
  if (name == "i64" || name == "int64") return DType::i64;
  if (name == "bool") return DType::boolean;
  throw Error(fmt::format("unknown dtype '{}' (expected f32, f64, bf16, f16, i32, i64 or bool)", raw));
}

namespace {
// 0 = bool, 1 = integer, 2 = floating
int category(DType t) { return t == DType::boolean ? 0 : is_integral(t) ? 1 : 2; }
int width_rank(DType t) {
  switch (t) {
    case DType::boolean: return 0;
    case DType::i32: return 1;
    case DType::i64: return 2;
    case DType::f16:
    case DType::bf16: return 3;
    case DType::f32: return 4;
    case DType::f64: return 5;
  }
  return 0;
}
}  // namespace

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  if ((a == DType::f16 && b == DType::bf16) || (a == DType::bf16 && b == DType::f16)) return DType::f32;
  if (category(a) != category(b)) return category(a) > category(b) ? a : b;
  return width_rank(a) >= width_rank(b) ? a : b;
}

DType promote_with_scalar(DType t, bool scalar_is_floating) {
  if (is_floating(t)) return t;
  if (scalar_is_floating) return DType::f32;
  return t == DType::boolean ? DType::i64 : t;
}

}  // namespace mlr
