// Vector code for the CPU kernels, for whichever x86 CPU runs the binary. The binary is built for
// the baseline x86-64 (it must run on AVX2-only machines and on AVX-512 ones), so a kernel's hot
// loops sit in an always-inline template that is instantiated three times: inside a function
// compiled for AVX-512 (MLR_TARGET_AVX512), one for AVX2 + FMA (MLR_TARGET_AVX2), and one for the
// baseline; simd_level() picks one at run time (__builtin_cpu_supports). Everything a hot loop
// calls must be always-inline too: a call that is not inlined runs at the baseline ISA.
//
// MLR_CPU_SIMD=avx512|avx2|generic in the environment caps the level (tests run the fallbacks on
// an AVX-512 machine with it). Vec<W> is W floats in one GCC/Clang vector (W = 16, 8 or 4).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "tensor/dtype.h"

// Vec<W> values only live inside always-inline functions of one target, so the ABI notes GCC
// gives about passing wide vectors between functions do not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace mlr::cpu {

#define MLR_ALWAYS_INLINE __attribute__((always_inline)) inline

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MLR_HAVE_X86_TARGETS 1
#define MLR_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c,bmi2")))
#define MLR_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))
#define MLR_TARGET_AVX512_BF16 \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma,f16c,bmi2")))
#else
#define MLR_HAVE_X86_TARGETS 0
#define MLR_TARGET_AVX512
#define MLR_TARGET_AVX2
#define MLR_TARGET_AVX512_BF16
#endif

enum class SimdLevel { generic, avx2, avx512 };

// The widest level this CPU runs (capped by MLR_CPU_SIMD, or by cap_simd_level).
SimdLevel simd_level();
// The widest level the CPU itself supports, before any cap.
SimdLevel cpu_simd_level();
// Caps the level from now on (tests time and check every fallback in one process); returns the
// previous cap. A cap above what the CPU supports has no effect.
SimdLevel cap_simd_level(SimdLevel cap);
// Whether the CPU has AVX512-BF16 (vdpbf16ps) and the level is avx512.
bool cpu_has_avx512_bf16();
const char* simd_level_name(SimdLevel level);

template <int W>
struct VecType {
  typedef float type __attribute__((vector_size(W * sizeof(float))));
};
template <int W>
using Vec = typename VecType<W>::type;

template <int W>
MLR_ALWAYS_INLINE Vec<W> load(const float* p) {
  Vec<W> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int W>
MLR_ALWAYS_INLINE void store(float* p, const Vec<W>& v) {
  std::memcpy(p, &v, sizeof v);
}

// exp(x) in f32 within 2 ulp over the normal range, written so that a `#pragma omp simd` loop
// vectorises it (no calls, no branches): x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor
// polynomial of degree 7 (truncation 2e-9 relative), times 2^n built in the exponent bits.
// exp(-inf) = 0 and results below the normal range flush to 0; exp(+inf) and overflow give +inf;
// NaN stays NaN.
MLR_ALWAYS_INLINE float fast_exp(float x) {
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  float n = x * 1.44269504088896341f + magic;
  uint32_t n_bits;
  std::memcpy(&n_bits, &n, sizeof n_bits);
  n -= magic;
  float r = x - n * 0.693145751953125f;  // ln2 split in two so n * ln2_hi is exact
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const uint32_t scale_bits = (n_bits + 127u) << 23;  // 2^n (the low bits of n_bits hold n)
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  float y = p * scale;
  y = x < -87.0f ? 0.0f : y;
  y = x > 88.0f ? std::numeric_limits<float>::infinity() : y;
  return x != x ? x : y;
}

// Rounds f32 to bf16 (nearest even; NaN stays a quiet NaN), as mlr::bf16's constructor does, in
// integer operations a simd loop vectorises.
MLR_ALWAYS_INLINE uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}
MLR_ALWAYS_INLINE float bf16_bits_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Storage <-> compute conversions a simd loop vectorises (bf16 in integer operations; f16 through
// its class, which stays scalar; f32 and f64 as they are).
template <typename T>
MLR_ALWAYS_INLINE compute_t<T> to_compute(T v) {
  if constexpr (std::is_same_v<T, bf16>) return bf16_bits_to_f32(v.bits);
  else return static_cast<compute_t<T>>(v);
}
template <typename T>
MLR_ALWAYS_INLINE T from_compute(compute_t<T> v) {
  if constexpr (std::is_same_v<T, bf16>) {
    T r;
    r.bits = f32_to_bf16_bits(v);
    return r;
  } else {
    return static_cast<T>(v);
  }
}

// exp in the compute type: fast_exp for f32, std::exp for the f64 reference path.
template <typename A>
MLR_ALWAYS_INLINE A exp_of(A x) {
  if constexpr (std::is_same_v<A, float>) return fast_exp(x);
  else return std::exp(x);
}

// Calls f.template operator()<Level>() for the level simd_level() picks; `f` is a functor whose
// templated call operator runs the kernel (declared MLR_ALWAYS_INLINE) and the three wrappers below
// give it the ISA.
template <SimdLevel L, typename F>
MLR_ALWAYS_INLINE void run_at_level(F& f) {
  f.template operator()<L>();
}
template <typename F>
MLR_TARGET_AVX512 void run_avx512(F& f) {
  run_at_level<SimdLevel::avx512>(f);
}
template <typename F>
MLR_TARGET_AVX2 void run_avx2(F& f) {
  run_at_level<SimdLevel::avx2>(f);
}
template <typename F>
void run_generic(F& f) {
  run_at_level<SimdLevel::generic>(f);
}
template <typename F>
void dispatch_simd(F& f) {
#if MLR_HAVE_X86_TARGETS
  switch (simd_level()) {
    case SimdLevel::avx512: run_avx512(f); return;
    case SimdLevel::avx2: run_avx2(f); return;
    case SimdLevel::generic: break;
  }
#endif
  run_generic(f);
}

template <typename F>
struct LevelRange {
  F& f;
  int64_t begin, end;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void operator()() {
    f.template rows<L>(begin, end);
  }
};

// Runs f.rows<L>(begin, end) (an always-inline member template) over [0, n) in chunks of at
// least `grain` items split over OpenMP threads, at the level simd_level() picks. Which items go
// together never changes the result: each item is computed on its own.
template <typename F>
void parallel_rows(int64_t n, int64_t grain, F& f) {
  if (n <= 0) return;
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t chunks = std::min<int64_t>(n / std::max<int64_t>(grain, 1), threads * 4);
  if (chunks <= 1) {
    LevelRange<F> all{f, 0, n};
    dispatch_simd(all);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    LevelRange<F> part{f, n * c / chunks, n * (c + 1) / chunks};
    dispatch_simd(part);
  }
}

// Vector width in floats of a level: the kernels' register tiles are sized from it.
template <SimdLevel L>
inline constexpr int kVecWidth = L == SimdLevel::avx512 ? 16 : L == SimdLevel::avx2 ? 8 : 4;

}  // namespace mlr::cpu
