#!/usr/bin/env bash
# The GPU suite, for the GPU machine: builds with the CUDA kernels (build-gpu/, sm_90 unless
# CMAKE_CUDA_ARCHITECTURES is set), runs every CUDA test (ctest label "cuda") and the CPU suites,
# then the kernel benchmark and the LLaMA benchmark (checkpoint load time and memory, training-step
# throughput against shared/BASELINES.md), and prints a summary. Logs go to $OUT (or build-gpu/logs).
# The LLaMA benchmark runs its --quick rows (1.1B shapes) unless LLAMA_BENCH_FULL=1 (adds the 7B rows
# and a 7B checkpoint; LLAMA_BENCH_DIR picks where that is written, default /tmp; LLAMA_BENCH_ARGS
# passes more options, e.g. "--load-shape 7B --steps 10").
# On a machine without a GPU the CUDA tests report "skipped" and the benchmarks say so.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
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
# The figures the model's CUDA tests measure (errors against transformers, bf16 argmax agreement).
if [ -x build-gpu/tests/test_llama_cuda ]; then
  build-gpu/tests/test_llama_cuda -s 2>&1 | grep "MESSAGE:" >"$logs/llama_cuda_figures.log"
fi
ctest --test-dir build-gpu -L cpu -j "$(nproc)" >"$logs/cpu_tests.log" 2>&1
cpu_rc=$?
# shellcheck disable=SC2086  # split into words on purpose
./build-gpu/bench/kernels_bench ${KERNELS_BENCH_ARGS:-} >"$logs/kernels_bench.log" 2>&1
bench_rc=$?
./build-gpu/bench/matmul_bench >"$logs/matmul_bench.log" 2>&1
llama_args=(--dir "${LLAMA_BENCH_DIR:-/tmp}")
[ "${LLAMA_BENCH_FULL:-0}" = 1 ] || llama_args+=(--quick)
# shellcheck disable=SC2086  # LLAMA_BENCH_ARGS is split into words on purpose (e.g. "--load-shape 7B")
./build-gpu/bench/llama_bench "${llama_args[@]}" ${LLAMA_BENCH_ARGS:-} >"$logs/llama_bench.log" 2>&1
llama_rc=$?
echo "== CUDA tests (exit $cuda_rc)"; tail -15 "$logs/cuda_tests.log"
[ -s "$logs/llama_cuda_figures.log" ] && { echo "== LLaMA on CUDA, measured"; sed 's/^.*MESSAGE: //' "$logs/llama_cuda_figures.log"; }
echo "== CPU tests (exit $cpu_rc)"; tail -4 "$logs/cpu_tests.log"
echo "== kernel benchmark (exit $bench_rc)"; cat "$logs/kernels_bench.log"
echo "== LLaMA benchmark (exit $llama_rc)"; cat "$logs/llama_bench.log"
[ $cuda_rc -eq 0 ] && [ $cpu_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $llama_rc -eq 0 ]
