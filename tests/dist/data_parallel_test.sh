#!/bin/sh
# Data parallel equals one process with the whole batch: N CPU ranks (separate processes, launched
# by scripts/launch_cpu_ranks.sh as torchrun would) x R/N rows per micro-batch against 1 rank x R
# rows, on the demo configuration; every step's loss and the final weights must agree to the
# bounds (dist_compare_runs). Extra arguments are overrides for both runs (adapter.type=...).
# With model.device=cuda (the cuda-labelled runs): exit 77 (skipped) where there is no GPU for every
# rank or no NCCL in the build; in the emulated CUDA build the ranks' collectives go through the
# NCCL communicator over the emulated NCCL (dist/emulated_nccl.cpp).
# Usage: data_parallel_test.sh <mlr-train> <dist_compare_runs> <scratch dir> <ranks> <loss bound> <weight bound> [overrides]
set -eu
train=$1
compare=$2
dir=$3
ranks=$4
loss_bound=$5
weight_bound=$6
shift 6
rows=4
common="configs/demo.yaml train.steps=6 eval.interval=0 save.interval=0 log.interval=1 log.tensorboard=false"
rm -rf "$dir"
mkdir -p "$dir"
. "$(dirname "$0")/need_gpus.sh"
case " $* " in
  *" model.device=cuda "*) need_gpus "$ranks" ;;
esac
skip_if_no_gpu() {
  if no_gpu_in "$@"; then exit 77; fi
}
# shellcheck disable=SC2086
"$train" $common data.packing.batch_rows=$rows output_dir="$dir/one" "$@" --no-progress-bar \
  > "$dir/one.log" 2>&1 || { skip_if_no_gpu "$dir/one.log"; cat "$dir/one.log"; exit 1; }
# shellcheck disable=SC2086
MLR_DIST_TIMEOUT=60 MLR_LAUNCH_LOG_DIR="$dir/logs" sh scripts/launch_cpu_ranks.sh "$ranks" \
  "$train" $common data.packing.batch_rows=$((rows / ranks)) output_dir="$dir/many" "$@" --no-progress-bar \
  > "$dir/many.log" 2>&1 || { skip_if_no_gpu "$dir/many.log" "$dir"/logs/*.log; cat "$dir/many.log"; exit 1; }
grep -q "done: 6 steps" "$dir/many.log" || { cat "$dir/many.log"; exit 1; }
grep -q "data parallel: $ranks ranks x $((rows / ranks)) rows" "$dir/many.log" || { cat "$dir/many.log"; exit 1; }
case " $* " in
  *" train.zero_stage=1 "*) grep -q "ZeRO-1: rank 0 keeps the optimizer state of" "$dir/many.log" || { cat "$dir/many.log"; exit 1; } ;;
  *" train.zero_stage=2 "*) grep -q "ZeRO-2: rank 0 keeps the optimizer state and gradients of" "$dir/many.log" || { cat "$dir/many.log"; exit 1; } ;;
esac
case " $* " in
  *" train.shard_frozen_base=true "*) grep -q "frozen base sharded: rank 0 keeps" "$dir/many.log" || { cat "$dir/many.log"; exit 1; } ;;
esac
# Periodic evaluation with the base sharded runs in lockstep (dist/sharded_base.h): rank 0 never
# holds more than one decoder layer whole (gathering the base whole would show all of them).
case " $* " in
  *" train.shard_frozen_base=true "*" eval.interval="[1-9]*)
    grep -q "frozen base sharded, evaluated in lockstep: forward passes per rank" "$dir/many.log" || { cat "$dir/many.log"; exit 1; }
    if grep "evaluated in lockstep" "$dir/many.log" | grep -qv "at most 1 of [0-9]* layers whole at once on a rank"; then
      cat "$dir/many.log"; exit 1
    fi ;;
esac
"$compare" "$dir/one" "$dir/many" "$loss_bound" "$weight_bound"
