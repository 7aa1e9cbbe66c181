#!/bin/sh
# World size 1 through NCCL equals the plain path on a GPU: the same short run on cuda as one plain
# process and as launched jobs of one rank (RANK=0 WORLD_SIZE=1: the data-parallel path, its
# gradients all-reduced by the NCCL communicator): buckets queued on NCCL's stream while backward
# runs (the default), reduced after backward, and the frozen base sharded (world 1: whole shards)
# with its gathers prefetched on NCCL's stream under activation checkpointing. Exit 77 (skipped)
# without a GPU or without NCCL in the build (the emulated CUDA build has none).
# Usage: nccl_world1_test.sh <mlr-train> <dist_compare_runs> <scratch dir> <loss bound> <weight bound>
# MLR_TEST_DEVICE=cpu rehearses the same runs on Gloo (the script's own check, no GPU needed).
set -eu
train=$1
compare=$2
dir=$3
loss_bound=$4
weight_bound=$5
device=${MLR_TEST_DEVICE:-cuda}
common="configs/demo.yaml model.device=$device train.steps=6 eval.interval=0 save.interval=0 log.interval=1 log.tensorboard=false"
rm -rf "$dir"
mkdir -p "$dir"
. "$(dirname "$0")/need_gpus.sh"
skip_if_no_gpu() {
  if no_gpu_in "$1"; then exit 77; fi
}
launched() {  # <name> <overrides...>: one launched rank
  name=$1
  shift
  # shellcheck disable=SC2086
  MLR_DIST_TIMEOUT=60 sh scripts/launch_cpu_ranks.sh 1 "$train" $common "$@" output_dir="$dir/$name" \
    --no-progress-bar > "$dir/$name.log" 2>&1 || { skip_if_no_gpu "$dir/$name.log"; cat "$dir/$name.log"; exit 1; }
}
# The launched runs first: without NCCL (the emulated build) they skip before the plain run.
launched nccl
grep -q "reduced during backward" "$dir/nccl.log" || { echo "nccl: the buckets were not reduced during backward"; cat "$dir/nccl.log"; exit 1; }
launched nccl_after train.overlap_grad_reduce=false
grep -q "reduced after backward" "$dir/nccl_after.log" || { echo "nccl_after: the buckets were not reduced after backward"; exit 1; }
launched nccl_sharded train.shard_frozen_base=true train.activation_checkpointing=true
# shellcheck disable=SC2086
"$train" $common output_dir="$dir/plain" --no-progress-bar > "$dir/plain.log" 2>&1 || { skip_if_no_gpu "$dir/plain.log"; cat "$dir/plain.log"; exit 1; }
"$compare" "$dir/plain" "$dir/nccl" "$loss_bound" "$weight_bound"
"$compare" "$dir/plain" "$dir/nccl_after" "$loss_bound" "$weight_bound"
# Activation checkpointing is exact (tests/multilora/checkpoint_exact_test.cpp): the plain run stands.
"$compare" "$dir/plain" "$dir/nccl_sharded" "$loss_bound" "$weight_bound"
