#!/usr/bin/env bash
# Builds everything and runs every test suite with ctest. CUDA suites (label "cuda") report
# "skipped" on a machine without a GPU; when the CUDA headers are installed they then run once more
# in the emulated CUDA build (build-emulated/, cmake -DMLR_CUDA_EMULATION=ON), where every kernel
# they launch runs on the CPU (tensor/kernels/cuda/emulator.h).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"

cuda_home=${CUDA_HOME:-/usr/local/cuda}
if [ -f "$cuda_home/include/cuda_runtime.h" ]; then
  generator=()
  if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
  if [ ! -f build-emulated/CMakeCache.txt ]; then
    cmake -S . -B build-emulated "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMLR_CUDA_EMULATION=ON \
      -DCUDAToolkit_ROOT="$cuda_home"
  fi
  cmake --build build-emulated -j "$(nproc)" --target cuda_tests
  echo "== the CUDA suites on the emulated device (CPU) =="
  ctest --test-dir build-emulated -L cuda --output-on-failure -j "$(nproc)"
else
  echo "== no CUDA headers under $cuda_home: the emulated CUDA suites are skipped =="
fi

# Every parser's libFuzzer target (fuzz/) for 30 s each, two at a time, in a clang build with
# ASan and UBSan (build-fuzz/); scripts/fuzz.sh runs them longer.
echo "== fuzzing every parser for 30 s (build-fuzz/) =="
./scripts/fuzz.sh --build-only
ctest --test-dir build-fuzz -L fuzz --output-on-failure -j 2
