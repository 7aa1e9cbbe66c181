// Strided copy with dtype conversion, and fill. Conversions go through the compute type
// (f32 for bf16/f16, f64 for f64, i64 for integers): float -> int truncates toward zero,
// anything -> bool is "!= 0".
#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/loops.h"

namespace mlr::cpu {

namespace {
template <typename To, typename From>
inline To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    return static_cast<float>(v) != 0.0f || static_cast<double>(v) != 0.0;
  } else if constexpr (std::is_same_v<To, bf16> || std::is_same_v<To, f16>) {
    return To(static_cast<float>(v));
  } else if constexpr (std::is_same_v<From, bf16> || std::is_same_v<From, f16>) {
    return static_cast<To>(static_cast<float>(v));
  } else {
    return static_cast<To>(v);
  }
}
}  // namespace

void copy(const Tensor& dst, const Tensor& src) {
  MLR_CHECK(dst.shape() == src.shape(), "copy: shapes {} and {} differ", shape_str(dst.shape()), shape_str(src.shape()));
  visit_dtype(dst.dtype(), [&](auto d) {
    using D = decltype(d);
    visit_dtype(src.dtype(), [&](auto s) {
      using S = decltype(s);
      D* out = static_cast<D*>(dst.data_ptr());
      const S* in = static_cast<const S*>(src.data_ptr());
      strided_loop<2>(dst.shape(), {&dst.strides(), &src.strides()},
                      [&](const std::array<int64_t, 2>& o, const std::array<int64_t, 2>& st, int64_t n) {
                        D* po = out + o[0];
                        const S* pi = in + o[1];
                        if (st[0] == 1 && st[1] == 1) {
                          for (int64_t i = 0; i < n; ++i) po[i] = convert<D>(pi[i]);
                        } else {
                          for (int64_t i = 0; i < n; ++i) po[i * st[0]] = convert<D>(pi[i * st[1]]);
                        }
                      });
    });
  });
}

void fill(const Tensor& dst, double value) {
  visit_dtype(dst.dtype(), [&](auto d) {
    using D = decltype(d);
    const D v = convert<D>(value);
    D* out = static_cast<D*>(dst.data_ptr());
    strided_loop<1>(dst.shape(), {&dst.strides()},
                    [&](const std::array<int64_t, 1>& o, const std::array<int64_t, 1>& st, int64_t n) {
                      D* p = out + o[0];
                      for (int64_t i = 0; i < n; ++i) p[i * st[0]] = v;
                    });
  });
}

}  // namespace mlr::cpu
