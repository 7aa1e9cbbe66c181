#!/bin/sh
# The training path on CUDA against the CPU: the same short run of the demo configuration in f32
# with model.device=cuda and with model.device=cpu must log the same loss and gradient norm at
# every step, within 1e-5 relative (the devices sum in different orders). Exits 77 (skipped) when
# there is no CUDA device. In the emulated CUDA build (scripts/test.sh) this runs every kernel of a
# training step (forward, backward, fused AdamW, evaluation) on the CPU emulator.
# Usage: cuda_vs_cpu_test.sh <mlr-train> <scratch dir> [overrides...]   (from the repository root)
set -eu
train=$1
dir=$2
shift 2
run() {
  dev=$1
  shift
  rm -rf "$dir.$dev"
  "$train" configs/demo.yaml model.device="$dev" train.steps=6 eval.interval=3 save.interval=0 log.interval=1 \
    output_dir="$dir.$dev" "$@" --no-progress-bar > "$dir.$dev.log" 2>&1
}
if ! run cuda "$@"; then
  if grep -q "no such CUDA device\|has no CUDA backend" "$dir.cuda.log"; then
    echo "skipped: no CUDA device"
    exit 77
  fi
  cat "$dir.cuda.log"
  exit 1
fi
run cpu "$@" || { cat "$dir.cpu.log"; exit 1; }
# step, loss and grad_norm of each logged step, one line per step and device.
extract() { grep '"loss"' "$1/metrics.jsonl" | sed -e 's/.*"grad_norm":\([^,}]*\).*"loss":\([^,}]*\).*"step":\([^,}]*\).*/\3 \2 \1/'; }
extract "$dir.cuda" > "$dir.cuda.steps"
extract "$dir.cpu" > "$dir.cpu.steps"
[ "$(wc -l < "$dir.cpu.steps")" -eq 6 ] || { echo "expected 6 logged steps"; cat "$dir.cpu.steps"; exit 1; }
paste "$dir.cuda.steps" "$dir.cpu.steps" | awk '
  function rel(a, b) { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; return m > 0 ? d / m : d }
  { if ($1 != $4) { print "step mismatch: " $0; bad = 1 }
    l = rel($2, $5); g = rel($3, $6); if (l > worst) worst = l; if (g > worst) worst = g
    if (l > 1e-5 || g > 1e-5) { print "step " $1 ": cuda loss " $2 " grad norm " $3 ", cpu " $5 " " $6; bad = 1 } }
  END { printf "cuda vs cpu over %d steps: worst relative difference %.2e\n", NR, worst; exit bad }'
# The periodic evaluation (BoolQ accuracy, held-out loss) agrees too.
[ "$(grep '^eval' "$dir.cuda.log")" = "$(grep '^eval' "$dir.cpu.log")" ] || {
  echo "evaluation differs:"; grep '^eval' "$dir.cuda.log" "$dir.cpu.log"; exit 1; }
echo "training on cuda matches the cpu"
