#!/bin/sh
# train.precision: bf16 on the CPU against f32: the same short run of the demo configuration (LoRA on
# the attention projections, model.device=cpu) must log losses within bf16 tolerance of the f32
# run: at every step |loss_bf16 - loss_f32| <= 0.01 * loss_f32 (bf16 keeps 8 significant bits, so
# each product is off by up to 2^-9 relative, and the errors of 6 optimizer steps add up, but the
# trajectory stays the same). Exits 77 (skipped) on a CPU without AVX512-BF16, where the run
# computes in f32 and says so.
# Usage: cpu_bf16_test.sh <mlr-train> <scratch dir>   (from the repository root)
set -eu
train=$1
dir=$2
run() {
  precision=$1
  rm -rf "$dir.$precision"
  "$train" configs/demo.yaml model.device=cpu adapter.type=lora train.steps=6 train.precision="$precision" \
    eval.interval=0 save.interval=0 log.interval=1 output_dir="$dir.$precision" --no-progress-bar \
    > "$dir.$precision.log" 2>&1 || { cat "$dir.$precision.log"; exit 1; }
}
run bf16
if grep -q "has no AVX512-BF16" "$dir.bf16.log"; then
  echo "skipped: this CPU has no AVX512-BF16"
  exit 77
fi
grep -q " in bf16," "$dir.bf16.log" || { echo "the bf16 run did not compute in bf16:"; cat "$dir.bf16.log"; exit 1; }
run f32
extract() { grep '"loss"' "$1/metrics.jsonl" | sed -e 's/.*"loss":\([^,}]*\).*"step":\([^,}]*\).*/\2 \1/'; }
extract "$dir.f32" > "$dir.f32.steps"
extract "$dir.bf16" > "$dir.bf16.steps"
[ "$(wc -l < "$dir.bf16.steps")" -eq 6 ] || { echo "expected 6 logged steps"; cat "$dir.bf16.steps"; exit 1; }
paste "$dir.f32.steps" "$dir.bf16.steps" | awk '
  { if ($1 != $3) { print "step mismatch: " $0; bad = 1 }
    d = $4 - $2; if (d < 0) d = -d; r = d / $2; if (r > worst) worst = r
    if (r > 0.01) { print "step " $1 ": f32 loss " $2 ", bf16 loss " $4; bad = 1 } }
  END { printf "bf16 vs f32 over %d steps: worst relative loss difference %.2e\n", NR, worst; exit bad }'
