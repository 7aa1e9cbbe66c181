// Philox draws into a contiguous tensor: element i = f(seed, offset, i) (tensor/philox.h).
#include <omp.h>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/philox.h"

namespace mlr::cpu {

namespace {
template <typename Draw>
void fill_random(const Tensor& dst, Draw draw) {
  MLR_CHECK(dst.is_contiguous(), "random: destination must be contiguous");
  const int64_t n = dst.numel();
  visit_floating(dst.dtype(), "random", [&](auto tag) {
    using T = decltype(tag);
    T* p = static_cast<T*>(dst.data_ptr());
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) p[i] = T(draw(static_cast<uint64_t>(i)));
  });
}
}  // namespace

void random_uniform(const Tensor& dst, uint64_t seed, uint64_t offset, double low, double high) {
  const double span = high - low;
  fill_random(dst, [&](uint64_t i) { return low + span * static_cast<double>(philox::uniform(seed, offset, i)); });
}

void random_normal(const Tensor& dst, uint64_t seed, uint64_t offset, double mean, double std) {
  fill_random(dst, [&](uint64_t i) { return mean + std * static_cast<double>(philox::normal(seed, offset, i)); });
}

}  // namespace mlr::cpu
