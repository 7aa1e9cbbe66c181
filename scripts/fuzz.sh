#!/usr/bin/env bash
# Builds the libFuzzer targets of every parser (fuzz/, one per file format) with clang, ASan and
# UBSan into build-fuzz/, then runs each in turn and prints its executions, time and result.
#
#   scripts/fuzz.sh                       every target for 60 s
#   scripts/fuzz.sh --time 600 safetensors data_readers
#   scripts/fuzz.sh --runs 1000000 --time 600   every target for 1M executions or 10 minutes
#   scripts/fuzz.sh --build-only          (scripts/test.sh: then ctest -L fuzz runs each for 30 s)
#
# A target fails on a crash, an out-of-bounds access, undefined behaviour, a leak, a hang (one input
# over 10 s), more than 2 GB of memory, or an exception other than mlr::Error (fuzz/fuzz_support.h).
# The input that failed is written to build-fuzz/fuzz/artifacts/<target>-crash-<sha1>; rerun it
# with build-fuzz/fuzz/fuzz_<target> <file>. Seeds: fuzz/corpus/<target>/ (committed, small), the
# test fixtures copied to build-fuzz/fuzz/seeds/<target>/; what the fuzzer finds is kept in
# build-fuzz/fuzz/corpus/<target>/ for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=$PWD
build_dir=build-fuzz
limit=()
limit_text=""
build=1
run=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) limit+=(-max_total_time="$2"); limit_text+="${limit_text:+ or }$2 s"; shift 2 ;;
    --runs) limit+=(-runs="$2"); limit_text+="${limit_text:+ or }$2 executions"; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --build-only) run=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

if [ "$build" = 1 ]; then
  command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (scripts/install_deps.sh installs it)" >&2; exit 1; }
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    options=(-DCMAKE_CXX_COMPILER=clang++ -DMLR_CUDA=OFF -DMLR_FUZZ=ON -DMLR_BUILD_TESTS=OFF -DMLR_BUILD_BENCH=OFF
             # The libraries under the parsers at -O0 (a quicker build); the parsers themselves get
             # -O1 with the sanitizers (MLR_FUZZ_COMPILE_OPTIONS in CMakeLists.txt).
             -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O0)
    if command -v ninja >/dev/null 2>&1; then options+=(-G Ninja); fi
    if command -v ccache >/dev/null 2>&1; then options+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
    cmake -S . -B "$build_dir" "${options[@]}"
  fi
  cmake --build "$build_dir" -j "$(nproc)" --target fuzz_all
fi
[ "$run" = 1 ] || exit 0
if [ ${#limit[@]} -eq 0 ]; then limit=(-max_total_time=60); limit_text="60 s"; fi

fuzz_dir=$build_dir/fuzz
if [ ${#targets[@]} -eq 0 ]; then
  for binary in "$fuzz_dir"/fuzz_*; do
    [ -x "$binary" ] && targets+=("${binary##*/fuzz_}")
  done
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets in $fuzz_dir (build first)" >&2; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$fuzz_dir/artifacts" "$fuzz_dir/logs"
failed=()
for target in "${targets[@]}"; do
  binary=$fuzz_dir/fuzz_$target
  [ -x "$binary" ] || { echo "fuzz.sh: no target $target ($binary)" >&2; exit 2; }
  corpora=("$fuzz_dir/corpus/$target")
  mkdir -p "${corpora[0]}"
  [ -d "$source_dir/fuzz/corpus/$target" ] && corpora+=("$source_dir/fuzz/corpus/$target")
  [ -d "$fuzz_dir/seeds/$target" ] && corpora+=("$fuzz_dir/seeds/$target")
  log=$fuzz_dir/logs/$target.log
  echo "== fuzz $target: $limit_text (log: $log)"
  status=0
  "$binary" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$fuzz_dir/artifacts/$target-" "${corpora[@]}" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  seconds=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  corpus=$(grep -o 'corp: [0-9]*/[0-9a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ "$status" = 0 ]; then
    echo "   ok: ${runs:-?} executions in ${seconds:-?} s, corpus ${corpus:-?} (inputs/bytes)"
  else
    failed+=("$target")
    echo "   FAILED (exit $status) after ${runs:-?} executions; the end of $log:"
    grep -E 'ERROR|runtime error|terminate|what\(\)|Test unit written|SUMMARY' "$log" | head -20 | sed 's/^/   /'
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
