#!/bin/sh
# Variants of one N-rank run that must train identically (to the bounds): the first variant is the
# reference, every other is compared with it (dist_compare_runs), e.g. train.zero_stage=0 / 1 / 2,
# or gradients reduced during / after backward. A variant is a comma-separated list of overrides
# ("-" for none); `common` (comma-separated too) goes to every run.
# Usage: variants_test.sh <mlr-train> <dist_compare_runs> <scratch dir> <ranks> <loss bound> <weight bound> <common> <variant>...
set -eu
train=$1
compare=$2
dir=$3
ranks=$4
loss_bound=$5
weight_bound=$6
common=$(echo "$7" | tr ',' ' ')
shift 7
base="configs/demo.yaml train.steps=6 eval.interval=0 save.interval=0 log.interval=1 log.tensorboard=false"
rm -rf "$dir"
mkdir -p "$dir"
k=0
for variant in "$@"; do
  overrides=$(echo "$variant" | tr ',' ' ')
  [ "$overrides" = "-" ] && overrides=""
  # shellcheck disable=SC2086
  MLR_DIST_TIMEOUT=60 MLR_LAUNCH_LOG_DIR="$dir/logs-$k" sh scripts/launch_cpu_ranks.sh "$ranks" \
    "$train" $base $common $overrides output_dir="$dir/run-$k" --no-progress-bar \
    > "$dir/run-$k.log" 2>&1 || { cat "$dir/run-$k.log"; exit 1; }
  grep -q "done: 6 steps" "$dir/run-$k.log" || { cat "$dir/run-$k.log"; exit 1; }
  if [ $k -gt 0 ]; then
    echo "variant $k ($variant) against variant 0 ($1):"
    "$compare" "$dir/run-0" "$dir/run-$k" "$loss_bound" "$weight_bound"
  fi
  k=$((k + 1))
done
