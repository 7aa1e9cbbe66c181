// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based generator. Output = bijection(counter, key) after 10 rounds, so element i of a
// random tensor is a pure function of (seed, offset, i) and the CPU and CUDA kernels agree.
//   round:  (hi0, lo0) = M0 * c0,  (hi1, lo1) = M1 * c2     (32x32 -> 64-bit products)
//           c = (hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0);  k += (W0, W1)
// Counter = (offset + block, 0, 0) as four 32-bit words; key = seed as two 32-bit words.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MLR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MLR_HOST_DEVICE inline
#endif

namespace mlr::philox {

struct U32x4 {
  uint32_t x, y, z, w;
};

MLR_HOST_DEVICE U32x4 philox4x32_10(uint64_t counter, uint64_t seed) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return {c0, c1, c2, c3};
}

MLR_HOST_DEVICE uint32_t lane(const U32x4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// 24 random bits -> [0, 1) exactly representable in f32.
MLR_HOST_DEVICE float to_unit(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

// Element i of a uniform draw [0, 1): counter offset + i/4, lane i%4.
MLR_HOST_DEVICE float uniform(uint64_t seed, uint64_t offset, uint64_t i) {
  return to_unit(lane(philox4x32_10(offset + i / 4, seed), static_cast<int>(i % 4)));
}

// Element i of a standard normal draw: counter offset + i/2, lanes (2(i%2), 2(i%2)+1), Box-Muller
// with u1 in (0, 1]:  z = sqrt(-2 ln u1) cos(2 pi u2). Computed in f32.
MLR_HOST_DEVICE float normal(uint64_t seed, uint64_t offset, uint64_t i) {
  U32x4 r = philox4x32_10(offset + i / 2, seed);
  int j = static_cast<int>(i % 2) * 2;
  float u1 = (static_cast<float>(lane(r, j) >> 8) + 1.0f) * (1.0f / 16777216.0f);
  float u2 = to_unit(lane(r, j + 1));
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864769f * u2);
}

}  // namespace mlr::philox
