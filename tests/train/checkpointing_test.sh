#!/bin/sh
# Exact activation checkpointing, end to end: the demo configuration trained for a few steps with
# train.activation_checkpointing=true and =false must log the same loss, gradient norm (and, for
# SMoRA, the same load statistics) at every step, to the last digit of metrics.jsonl, and end with
# the same trainer state (each dropout stream's position, SMoRA's cumulative rank loads) and
# bit-identical weights. The recompute in backward must draw every adapter's dropout masks again
# and count no SMoRA load twice.
# Usage: checkpointing_test.sh <mlr-train> <scratch dir> [override ...]   (run from the repository root)
# CHECKPOINTING_STEPS (default 6) sets the length of the runs.
set -eu
train=$1
dir=$2
shift 2
steps=${CHECKPOINTING_STEPS:-6}
for mode in true false; do
  rm -rf "$dir.$mode"
  "$train" configs/demo.yaml output_dir="$dir.$mode" log.interval=1 train.steps="$steps" eval.interval=0 \
    save.interval=0 train.activation_checkpointing=$mode "$@" --no-progress-bar > "$dir.$mode.log" 2>&1 ||
    { rc=$?; echo "mlr-train (activation_checkpointing=$mode) failed with exit code $rc:"; cat "$dir.$mode.log"; exit 1; }
done
# Everything but the timing and memory fields (checkpointing exists to change the peak memory).
strip() { sed -e 's/"tokens_per_s":[^,}]*//' -e 's/"peak_memory_bytes":[^,}]*//' -e 's/"mfu":[^,}]*//'; }
on=$(grep '"loss"' "$dir.true/metrics.jsonl" | strip)
off=$(grep '"loss"' "$dir.false/metrics.jsonl" | strip)
count=$(echo "$on" | grep -c '"grad_norm"' || true)
if [ "$count" -ne "$steps" ]; then
  echo "expected $steps logged steps with a gradient norm, found $count:"; echo "$on"
  exit 1
fi
if [ "$on" != "$off" ]; then
  echo "checkpointed and plain runs differ:"; echo "checkpointing on:"; echo "$on"; echo "checkpointing off:"; echo "$off"
  exit 1
fi
state=checkpoints/step-$steps/trainer_state.json
if ! cmp -s "$dir.true/$state" "$dir.false/$state"; then
  echo "checkpointed and plain runs end in different trainer states ($state):"
  cat "$dir.true/$state"; echo; echo "---"; cat "$dir.false/$state"; echo
  exit 1
fi
weights=adapter_model.safetensors
[ -f "$dir.true/final/$weights" ] || weights=model.safetensors
cmp "$dir.true/final/$weights" "$dir.false/final/$weights"
echo "activation checkpointing reproduces loss and gradient norm at all $steps steps, the trainer state and the weights"
echo "$on" | head -n 1
