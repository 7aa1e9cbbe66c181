#!/bin/sh
# Resuming a 2-rank run: from its step-4 checkpoint on 2 ranks (every step's loss and the final
# weights bit-identical to the uninterrupted run), and on 1 rank with the same global batch (equal
# within the bounds of data_parallel_test.sh).
# Usage: resume_test.sh <mlr-train> <dist_compare_runs> <scratch dir> <loss bound> <weight bound> [overrides]
set -eu
train=$1
compare=$2
dir=$3
loss_bound=$4
weight_bound=$5
shift 5
common="configs/demo.yaml train.steps=8 save.interval=4 eval.interval=0 log.interval=1 log.tensorboard=false"
launch() {
  # shellcheck disable=SC2086
  MLR_DIST_TIMEOUT=60 MLR_LAUNCH_LOG_DIR="$dir/logs" sh scripts/launch_cpu_ranks.sh 2 "$train" $common \
    data.packing.batch_rows=2 "$@" --no-progress-bar
}
rm -rf "$dir"
mkdir -p "$dir"
launch output_dir="$dir/straight" "$@" > "$dir/straight.log" 2>&1 || { cat "$dir/straight.log"; exit 1; }
for run in resumed single; do
  mkdir -p "$dir/$run/checkpoints"
  cp -r "$dir/straight/checkpoints/step-4" "$dir/$run/checkpoints/"
  head -n 4 "$dir/straight/metrics.jsonl" > "$dir/$run/metrics.jsonl"
done
launch output_dir="$dir/resumed" "$@" --resume > "$dir/resumed.log" 2>&1 || { cat "$dir/resumed.log"; exit 1; }
grep -q "resumed from .*step-4 at step 4" "$dir/resumed.log" || { cat "$dir/resumed.log"; exit 1; }
# Bit-identical: the same ranks redo the same operations.
"$compare" "$dir/straight" "$dir/resumed" 0 0 5
# shellcheck disable=SC2086
"$train" $common data.packing.batch_rows=4 output_dir="$dir/single" "$@" --resume --no-progress-bar \
  > "$dir/single.log" 2>&1 || { cat "$dir/single.log"; exit 1; }
grep -q "resumed from .*step-4 at step 4" "$dir/single.log" || { cat "$dir/single.log"; exit 1; }
"$compare" "$dir/straight" "$dir/single" "$loss_bound" "$weight_bound" 5
# A global batch that does not match is refused with the rows to use.
# shellcheck disable=SC2086
if "$train" $common data.packing.batch_rows=2 output_dir="$dir/single" "$@" --resume --no-progress-bar \
  > "$dir/mismatch.log" 2>&1; then
  echo "resuming with half the global batch was accepted"; exit 1
fi
grep -q "set data.packing.batch_rows=4" "$dir/mismatch.log" || { cat "$dir/mismatch.log"; exit 1; }
echo "2-rank resume bit-identical; 1-rank resume of the 2-rank checkpoint equal within the bounds"
