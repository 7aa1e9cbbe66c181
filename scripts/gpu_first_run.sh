#!/usr/bin/env bash
# The first run of the CUDA backend on a GPU, made to fit one short loan of a GPU machine (under 10
# minutes, nothing downloaded): builds the CUDA tests and the two benchmarks for this GPU's
# architecture only, runs the cuda-labelled tests with CUDA_LAUNCH_BLOCKING=1, compute-sanitizer's
# memcheck, racecheck and synccheck over the CUDA tests at small shapes, the kernel benchmark, and a
# short llama_bench (LoRA r32 on q,k,v,o: 1.1B at 8 x 2048, 7B at 4 x 2048) next to a PEFT baseline
# of the same 1.1B configuration (python3 with torch, transformers and peft; random weights).
# Every stage has a time limit; logs go to $OUT (or build-first-run/logs), at most 8 files so that
# they all come back from the GPU machine; one summary table at the end (also $OUT/summary.txt).
#
#   scripts/gpu_first_run.sh            on the GPU machine (needs nvcc, cmake, ninja, g++, python3)
#   scripts/gpu_first_run.sh --smoke    the rehearsal without a GPU: the emulated CUDA build
#                                       (tensor/kernels/cuda/emulator.h), tiny benchmark shapes, the
#                                       PEFT baseline at a two-layer shape on the CPU
#
# The rehearsal runs every stage that can run without a GPU (configure, build, the CUDA tests on the
# emulated device, kernels_bench --smoke, llama_bench --smoke --first-run, the PEFT script) and
# reports the sanitizer stage as skipped. On this repository's development machine:
#   JOBS=2 PYTHON=VENV/bin/python BUILD_DIR=build-emu scripts/gpu_first_run.sh --smoke
# (BUILD_DIR reuses an emulated build; JOBS caps the parallel compiles; SMOKE_TESTS, a ctest -R
# pattern, picks the suites the rehearsal runs, default the tensor kernels' suite.)
#
# Stage limits in seconds (environment): T_CONFIGURE 60, T_BUILD 300, T_TESTS 120, T_SANITIZER 120
# (each tool a third), T_KERNELS 60, T_LLAMA 150, T_PEFT 120; TOTAL (570) bounds the whole run: a
# stage gets at most what is left of it, and is skipped when less than 10 s is left, so the summary
# is always written inside a 10-minute device command.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
python=${PYTHON:-python3}
jobs=${JOBS:-16}
logs=${OUT:-build-first-run/logs}
mkdir -p "$logs"
summary=()
started=$(date +%s)
deadline=$((started + ${TOTAL:-570}))

# stage NAME LIMIT LOG COMMAND...: runs COMMAND under `timeout LIMIT`, appending to LOG, and records
# one summary line (ok, FAILED (exit N), TIMEOUT after N s, or skipped: reason).
stage() {
  local name=$1 limit=$2 log=$3
  shift 3
  local t0 rc left
  t0=$(date +%s)
  # Within the whole run's budget, so that the summary is written before the loan's command limit.
  left=$((deadline - t0))
  if [ "$left" -lt 10 ]; then
    echo "== $name: skipped, the run's ${TOTAL:-570} s are spent" | tee -a "$log"
    skip "$name" "no time left of TOTAL=${TOTAL:-570} s"
    return 124
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s): $*" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local took=$(($(date +%s) - t0)) status
  if [ $rc -eq 0 ]; then status=ok
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="TIMEOUT after ${limit} s"
  else status="FAILED (exit $rc)"; fi
  echo "   $status in ${took} s" | tee -a "$log"
  summary+=("$(printf '%-34s | %-22s | %5s s | %s' "$name" "$status" "$took" "$(basename "$log")")")
  return $rc
}
skip() { summary+=("$(printf '%-34s | %-22s | %5s   | %s' "$1" "skipped" "-" "$2")"); }

info=$logs/info.log
{
  date -u
  git log -1 --oneline 2>/dev/null
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  nvcc --version 2>&1 | tail -2
  cmake --version | head -1
  "$python" -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'| transformers', transformers.__version__, '| peft', peft.__version__)" 2>&1
  command -v compute-sanitizer || echo "no compute-sanitizer"
} >"$info" 2>&1
cat "$info"

if [ $smoke -eq 1 ]; then
  build=${BUILD_DIR:-build-first-run-emu}
  config=(-DMLR_CUDA_EMULATION=ON)
  arch=emulated
else
  build=${BUILD_DIR:-build-first-run}
  # The device's architecture only ("9.0" -> 90): one compile per kernel instead of two.
  arch=${CMAKE_CUDA_ARCHITECTURES:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')}
  if [ -z "$arch" ]; then
    echo "gpu_first_run: no GPU found (nvidia-smi); rehearse with --smoke" | tee -a "$info"
    exit 1
  fi
  config=(-DMLR_CUDA=ON -DMLR_CUDA_KERNELS=ON "-DCMAKE_CUDA_ARCHITECTURES=$arch")
fi
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)

b=$logs/build.log
: >"$b"
stage "configure (arch $arch)" "${T_CONFIGURE:-60}" "$b" \
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${config[@]}" "${launcher[@]}"
targets=(cuda_tests kernels_bench llama_bench)
[ $smoke -eq 0 ] && targets+=(check_kernel_resources)
[ $smoke -eq 1 ] && targets=(test_tensor_cuda kernels_bench llama_bench)
stage "build (-j$jobs)" "${T_BUILD:-300}" "$b" cmake --build "$build" -j "$jobs" --target "${targets[@]}"
built=$?

t=$logs/tests.log
: >"$t"
if [ $built -ne 0 ]; then
  skip "cuda tests" "the build failed"
elif [ $smoke -eq 1 ]; then
  stage "cuda tests (emulated device)" "${T_TESTS:-120}" "$t" \
    ctest --test-dir "$build" -L cuda -R "${SMOKE_TESTS:-^tensor_cuda$}" --output-on-failure
else
  # Launch errors surface at the launch that made them.
  stage "cuda tests (CUDA_LAUNCH_BLOCKING=1)" "${T_TESTS:-120}" "$t" \
    env CUDA_LAUNCH_BLOCKING=1 ctest --test-dir "$build" -L cuda -E "_seed|bench_smoke" -j 4 --output-on-failure
  stage "kernel resources vs arch limits" 30 "$t" ctest --test-dir "$build" -R cuda_kernel_resources --output-on-failure
fi

s=$logs/sanitizer.log
: >"$s"
# Small shapes: the fused kernels' and flash attention's test cases of the tensor suite.
cases='cuda vs cpu: causal attention*,cuda vs cpu: rmsnorm*,cuda vs cpu: reductions and softmax,cuda vs cpu: cross-entropy*'
if [ $smoke -eq 1 ]; then
  skip "compute-sanitizer" "--smoke: no GPU (the emulator checks races, bounds, barriers)"
elif ! command -v compute-sanitizer >/dev/null 2>&1; then
  skip "compute-sanitizer" "not installed"
elif [ $built -ne 0 ]; then
  skip "compute-sanitizer" "the build failed"
else
  for tool in memcheck racecheck synccheck; do
    stage "compute-sanitizer $tool" $((${T_SANITIZER:-120} / 3)) "$s" \
      compute-sanitizer --tool "$tool" --error-exitcode 3 "$build/tests/test_tensor_cuda" -tc="$cases"
  done
fi

k=$logs/kernels_bench.log
: >"$k"
if [ $built -ne 0 ]; then skip "kernels_bench" "the build failed"
elif [ $smoke -eq 1 ]; then stage "kernels_bench --smoke" "${T_KERNELS:-60}" "$k" "$build/bench/kernels_bench" --smoke
else stage "kernels_bench" "${T_KERNELS:-60}" "$k" "$build/bench/kernels_bench"; fi

l=$logs/llama_bench.log
: >"$l"
if [ $built -ne 0 ]; then skip "llama_bench" "the build failed"
elif [ $smoke -eq 1 ]; then
  stage "llama_bench --smoke --first-run" "${T_LLAMA:-150}" "$l" "$build/bench/llama_bench" --smoke --first-run --no-load
else
  stage "llama_bench 1.1B + 7B LoRA r32" "${T_LLAMA:-150}" "$l" \
    "$build/bench/llama_bench" --first-run --no-load --steps 3 --warmup 1
fi
if [ $smoke -eq 1 ]; then
  stage "PEFT baseline (smoke shape, CPU)" "${T_PEFT:-120}" "$l" \
    "$python" scripts/bench/peft_baseline.py --shape smoke --rank 8 --batch 1 --seq 64 --steps 2 --warmup 1
else
  stage "PEFT baseline 1.1B LoRA r32" "${T_PEFT:-120}" "$l" \
    "$python" scripts/bench/peft_baseline.py --shape 1.1B --batch 8 --seq 2048 --steps 3 --warmup 1
fi

# ---- summary ----
{
  echo
  echo "== gpu_first_run$([ $smoke -eq 1 ] && echo ' --smoke'): arch $arch, $(($(date +%s) - started)) s in all"
  printf '%-34s | %-22s | %7s | %s\n' stage result time log
  for line in "${summary[@]}"; do echo "$line"; done
  echo
  echo "tests:      $(grep -E '[0-9]+% tests passed' "$t" | tr '\n' ' ')"
  grep -E "ERROR SUMMARY" "$s" | sed 's/^/sanitizer:  /'
  echo "training (tokens/s, peak GiB):"
  grep -E '\| LoRA r(8|32) on q,k,v,o' "$l" | awk -F'|' '{printf "  ours %-5s %-9s %10s tok/s %8s GiB\n", $1, $3, $5, $6}'
  grep -E '^PEFT ' "$l" | sed 's/^/  /'
  ours=$(grep -E '^1\.1B +\| LoRA r32 on q,k,v,o' "$l" | awk -F'|' '{gsub(/ /,"",$5); print $5}')
  theirs=$(grep -E '^PEFT 1\.1B' "$l" | sed -E 's/.*: ([0-9,]+) tokens.*/\1/' | tr -d ,)
  if [ -n "$ours" ] && [ -n "$theirs" ]; then
    awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "  1.1B LoRA r32: ours / PEFT = %.2fx tokens/s (same run)\n", a / b }'
  fi
} | tee "$logs/summary.txt"
failed=0
for line in "${summary[@]}"; do case "$line" in *FAILED*|*TIMEOUT*|*"no time left"*) failed=1 ;; esac; done
exit $failed
