// Top-k selection mask along the last dimension (the SMoRA router's choice of ranks):
//   key_i = scores_i + bias_i (f64; NaN ranks below every number)
//   out_i = true for the k largest keys of the row; ties go to the lower index.
// k passes of "largest key not yet taken" per row: rows are short (the ranks of an adapter).
#include <cmath>
#include <type_traits>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/loops.h"

namespace mlr::cpu {

namespace {

template <typename T>
double value_of(T v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return static_cast<double>(static_cast<float>(v));  // bf16 and f16 through f32, exactly
}

}  // namespace

void topk_mask(const Tensor& out, const Tensor& scores, int64_t k, const Tensor& bias) {
  MLR_CHECK(scores.dim() == 2 && scores.is_contiguous() && out.shape() == scores.shape() &&
                out.dtype() == DType::boolean && out.is_contiguous(),
            "topk_mask (cpu kernel): expects contiguous [rows, n] scores and a bool output of that shape");
  const int64_t rows = scores.size(0), n = scores.size(1);
  const double* pb = bias.defined() ? bias.data<double>() : nullptr;
  bool* po = out.data<bool>();
  visit_floating(scores.dtype(), "topk_mask", [&](auto tag) {
    using T = decltype(tag);
    const T* ps = static_cast<const T*>(scores.data_ptr());
#pragma omp parallel for if (rows * n > 65536)
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = ps + r * n;
      bool* taken = po + r * n;
      for (int64_t i = 0; i < n; ++i) taken[i] = false;
      for (int64_t pass = 0; pass < k; ++pass) {
        int64_t best = -1;
        double best_key = 0;
        for (int64_t i = 0; i < n; ++i) {
          if (taken[i]) continue;
          const double v = value_of(row[i]) + (pb ? pb[i] : 0.0);
          // Strictly better only: ties keep the lower index; NaN never beats a number.
          if (best < 0 || (!std::isnan(v) && (std::isnan(best_key) || v > best_key))) {
            best = i;
            best_key = v;
          }
        }
        taken[best] = true;
      }
    }
  });
}

}  // namespace mlr::cpu
