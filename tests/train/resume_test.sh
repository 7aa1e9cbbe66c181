#!/bin/sh
# Exact resume, end to end: run the demo configuration for 40 steps (checkpoints at 20 and 40),
# remove the step-40 checkpoint as if the run had been killed after step 20, resume, and require
# the resumed steps to log exactly the losses of the uninterrupted run and to end with bit-identical
# weights.
# Usage: resume_test.sh <mlr-train> <scratch dir>   (run from the repository root)
# RESUME_STEPS (default 40, even) sets the length of the run; the checkpoint is at half of it.
set -eu
train=$1
dir=$2
shift 2
steps=${RESUME_STEPS:-40}
half=$((steps / 2))
# Extra arguments are overrides for both runs (e.g. adapter.dropout=0.1: the dropout masks must resume too).
rm -rf "$dir"
"$train" configs/demo.yaml output_dir="$dir" log.interval=1 train.steps=$steps save.interval=$half "$@" \
  --no-progress-bar > "$dir.first.log" 2>&1 || { cat "$dir.first.log"; exit 1; }
rm -rf "$dir.straight" && cp -r "$dir/final" "$dir.straight"
rm -rf "$dir/checkpoints/step-$steps" "$dir/final"
"$train" configs/demo.yaml output_dir="$dir" log.interval=1 train.steps=$steps save.interval=$half "$@" \
  --no-progress-bar --resume > "$dir.resume.log" 2>&1 || { cat "$dir.resume.log"; exit 1; }
grep -q "resumed from .*step-$half at step $half" "$dir.resume.log"
# metrics.jsonl: steps 1..steps of the first run, then half+1..steps of the resumed one.
first=$(grep '"loss"' "$dir/metrics.jsonl" | head -n $steps | tail -n $half)
second=$(grep '"loss"' "$dir/metrics.jsonl" | tail -n $half)
strip() { sed -e 's/"tokens_per_s":[^,}]*//' -e 's/"peak_memory_bytes":[^,}]*//' -e 's/"mfu":[^,}]*//'; }
if [ "$(echo "$first" | strip)" != "$(echo "$second" | strip)" ]; then
  echo "resumed losses differ:"; echo "$first" | strip; echo "---"; echo "$second" | strip
  exit 1
fi
# The trained weights: the adapter file, or the full checkpoint for full fine-tuning.
weights=adapter_model.safetensors
[ -f "$dir/final/$weights" ] || weights=model.safetensors
cmp "$dir/final/$weights" "$dir.straight/$weights"
echo "resume reproduces steps $((half + 1))-$steps exactly, final weights bit-identical"
