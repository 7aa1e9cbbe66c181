// Run-time choice of the CPU kernels' instruction set (tensor/kernels/cpu/simd.h).
#include "tensor/kernels/cpu/simd.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

namespace mlr::cpu {

namespace {

SimdLevel detect_cpu_level() {
  SimdLevel level = SimdLevel::generic;
#if MLR_HAVE_X86_TARGETS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = SimdLevel::avx2;
  if (level == SimdLevel::avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    level = SimdLevel::avx512;
#endif
  return level;
}

// The cap from the environment: MLR_CPU_SIMD=generic|avx2|avx512 (anything else: no cap).
SimdLevel environment_cap() {
  if (const char* cap = std::getenv("MLR_CPU_SIMD")) {
    const std::string c = cap;
    if (c == "generic") return SimdLevel::generic;
    if (c == "avx2") return SimdLevel::avx2;
  }
  return SimdLevel::avx512;
}

std::atomic<int> g_cap{static_cast<int>(environment_cap())};

bool detect_avx512_bf16() {
#if MLR_HAVE_X86_TARGETS && (defined(__clang__) || __GNUC__ >= 12)
  return cpu_simd_level() == SimdLevel::avx512 && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

}  // namespace

SimdLevel cpu_simd_level() {
  static const SimdLevel level = detect_cpu_level();
  return level;
}

SimdLevel simd_level() {
  return static_cast<SimdLevel>(std::min(static_cast<int>(cpu_simd_level()), g_cap.load(std::memory_order_relaxed)));
}

SimdLevel cap_simd_level(SimdLevel cap) { return static_cast<SimdLevel>(g_cap.exchange(static_cast<int>(cap))); }

bool cpu_has_avx512_bf16() {
  static const bool has = detect_avx512_bf16();
  return has && simd_level() == SimdLevel::avx512;
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::avx512: return "avx512";
    case SimdLevel::avx2: return "avx2";
    case SimdLevel::generic: return "generic";
  }
  return "generic";
}

}  // namespace mlr::cpu
