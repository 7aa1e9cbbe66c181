#!/bin/sh
# World size 1 through NCCL equals the plain path on a GPU: the same short run on cuda as one plain
# process and as a launched job of one rank (RANK=0 WORLD_SIZE=1: the data-parallel path, its
# gradients all-reduced by the NCCL communicator). Exit 77 (skipped) without a GPU or without NCCL
# in the build (the emulated CUDA build has none).
# Usage: nccl_world1_test.sh <mlr-train> <dist_compare_runs> <scratch dir> <loss bound> <weight bound>
set -eu
train=$1
compare=$2
dir=$3
loss_bound=$4
weight_bound=$5
common="configs/demo.yaml model.device=cuda train.steps=6 eval.interval=0 save.interval=0 log.interval=1 log.tensorboard=false"
rm -rf "$dir"
mkdir -p "$dir"
skip_if_no_gpu() {
  if grep -q "no such CUDA device\|has no CUDA backend\|needs NCCL, and this build has none" "$1"; then
    echo "skipped: $(grep -m1 "CUDA\|NCCL" "$1")"
    exit 77
  fi
}
# The launched run first: without NCCL (the emulated build) it skips before the plain run.
# shellcheck disable=SC2086
MLR_DIST_TIMEOUT=60 sh scripts/launch_cpu_ranks.sh 1 "$train" $common output_dir="$dir/nccl" --no-progress-bar \
  > "$dir/nccl.log" 2>&1 || { skip_if_no_gpu "$dir/nccl.log"; cat "$dir/nccl.log"; exit 1; }
# shellcheck disable=SC2086
"$train" $common output_dir="$dir/plain" --no-progress-bar > "$dir/plain.log" 2>&1 || { skip_if_no_gpu "$dir/plain.log"; cat "$dir/plain.log"; exit 1; }
"$compare" "$dir/plain" "$dir/nccl" "$loss_bound" "$weight_bound"
