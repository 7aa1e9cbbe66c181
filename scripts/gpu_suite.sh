#!/usr/bin/env bash
# The GPU suite, for the GPU machine: builds with the CUDA kernels (build-gpu/, sm_90 unless
# CMAKE_CUDA_ARCHITECTURES is set), runs every CUDA test (ctest label "cuda") and the CPU suites,
# then the kernel benchmark, and prints a summary. Logs go to $OUT (or build-gpu/logs).
# On a machine without a GPU the CUDA tests report "skipped" and the benchmark says so.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
logs=${OUT:-build-gpu/logs}
mkdir -p "$logs"
arch=${CMAKE_CUDA_ARCHITECTURES:-90}
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLR_CUDA=ON -DMLR_CUDA_KERNELS=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" >"$logs/configure.log" 2>&1 || { tail -30 "$logs/configure.log"; exit 1; }
if ! cmake --build build-gpu -j "$(nproc)" >"$logs/build.log" 2>&1; then
  grep -E "error|FAILED" "$logs/build.log" | head -40
  exit 1
fi
ctest --test-dir build-gpu -L cuda --output-on-failure >"$logs/cuda_tests.log" 2>&1
cuda_rc=$?
ctest --test-dir build-gpu -L cpu -j "$(nproc)" >"$logs/cpu_tests.log" 2>&1
cpu_rc=$?
./build-gpu/bench/kernels_bench ${KERNELS_BENCH_ARGS:-} >"$logs/kernels_bench.log" 2>&1
bench_rc=$?
./build-gpu/bench/matmul_bench >"$logs/matmul_bench.log" 2>&1
echo "== CUDA tests (exit $cuda_rc)"; tail -15 "$logs/cuda_tests.log"
echo "== CPU tests (exit $cpu_rc)"; tail -4 "$logs/cpu_tests.log"
echo "== kernel benchmark (exit $bench_rc)"; cat "$logs/kernels_bench.log"
[ $cuda_rc -eq 0 ] && [ $cpu_rc -eq 0 ] && [ $bench_rc -eq 0 ]
