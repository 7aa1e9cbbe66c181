#!/usr/bin/env bash
# One command for a new user: install the dependencies, build, and run the built-in demo
# (mlr-demo: a small LLaMA pretrained here, then LoRA / MultiLoRA / SMoRA / full fine-tuning on a
# generated multi-task dataset, per-task accuracy, spectra, index.html; nothing is downloaded).
#
# Without a GPU (nvidia-smi finds none) the build is CPU-only (build-cpu/, -DMLR_CUDA=OFF) and
# only the programs are compiled, so no time goes to CUDA kernels or test suites; with a GPU the
# full build (build/, the CUDA kernels when nvcc is present, as scripts/test.sh builds it) and the
# demo runs on the GPU. Extra arguments go to mlr-demo, e.g. ./scripts/setup.sh --out /tmp/demo
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
programs=(mlr-demo mlr-train mlr-eval mlr-merge mlr-analyze mlr-data)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
  echo "== a GPU is present: building with CUDA into build/ =="
  ./scripts/build.sh
  bin=build/apps
else
  echo "== no GPU: CPU-only build of the programs into build-cpu/ =="
  generator=()
  if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
  if [ ! -f build-cpu/CMakeCache.txt ]; then
    cmake -S . -B build-cpu "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMLR_CUDA=OFF \
      -DMLR_BUILD_TESTS=OFF -DMLR_BUILD_BENCH=OFF
  fi
  cmake --build build-cpu -j "$(nproc)" --target "${programs[@]}"
  bin=build-cpu/apps
fi
# OpenMP threads that wait by yielding: on a 2-core machine with other work running, spinning
# threads stall each other (40 pretraining steps of the quick demo: 18 s and 6.6 s wall with 2
# spinning threads, 2.3 s passive, 2.6 s with 1 thread, at load 4-6).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
echo "== the demo: $bin/mlr-demo --out demo_out $* (OMP_WAIT_POLICY=$OMP_WAIT_POLICY) =="
start=$(date +%s)
"$bin/mlr-demo" --out demo_out "$@"
echo "== demo finished in $(( $(date +%s) - start )) s; open demo_out/index.html in a browser =="
