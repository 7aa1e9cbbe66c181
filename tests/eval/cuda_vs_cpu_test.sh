#!/bin/sh
# Evaluation on CUDA against the CPU: mlr-eval on the demo model with an unmerged LoRA adapter,
# BoolQ on the committed rows, run with --device cuda and --device cpu; every per-choice
# log-likelihood must agree within 1e-4 (f32) and the accuracies exactly. Exits 77 (skipped) when
# there is no CUDA device. In the emulated CUDA build (scripts/test.sh) the KV-cache scoring with
# shared contexts runs on the CPU emulator.
# Usage: cuda_vs_cpu_test.sh <mlr-eval> <scratch dir>   (from the repository root)
set -eu
eval_bin=$1
dir=$2
run() {
  rm -rf "$dir.$1"
  mkdir -p "$dir.$1"
  "$eval_bin" --model configs/demo/model --adapter tests/fixtures/train/lora_run/initial_adapter --device "$1" \
    --tasks boolq --task-file boolq=configs/demo/data/boolq/val.jsonl --output "$dir.$1/results.json" \
    --log-samples "$dir.$1/samples" > "$dir.$1.log" 2>&1
}
if ! run cuda; then
  if grep -q "no such CUDA device\|has no CUDA backend" "$dir.cuda.log"; then
    echo "skipped: no CUDA device"
    exit 77
  fi
  cat "$dir.cuda.log"
  exit 1
fi
run cpu || { cat "$dir.cpu.log"; exit 1; }
# The log-likelihoods of every choice of every document, in order, one per line.
logliks() {
  sed -e 's/.*"filtered_resps":\(\[\[.*\]\]\),"metrics".*/\1/' "$1/samples/samples_boolq.jsonl" |
    grep -oE '\-?[0-9]+\.[0-9]+(e-?[0-9]+)?'
}
logliks "$dir.cuda" > "$dir.cuda.ll"
logliks "$dir.cpu" > "$dir.cpu.ll"
[ "$(wc -l < "$dir.cpu.ll")" -gt 0 ] || { echo "no log-likelihoods found"; exit 1; }
paste "$dir.cuda.ll" "$dir.cpu.ll" | awk '
  { d = $1 - $2; if (d < 0) d = -d; if (d > worst) worst = d; if (NF != 2 || d > 1e-4) bad = 1 }
  END { printf "cuda vs cpu over %d choices: worst log-likelihood difference %.2e\n", NR, worst; exit bad }'
acc() { grep -oE '"acc,none": *[0-9.e-]+' "$1/results.json"; }
[ "$(acc "$dir.cuda")" = "$(acc "$dir.cpu")" ] || { echo "accuracies differ:"; acc "$dir.cuda"; acc "$dir.cpu"; exit 1; }
echo "evaluation on cuda matches the cpu: $(acc "$dir.cpu")"
