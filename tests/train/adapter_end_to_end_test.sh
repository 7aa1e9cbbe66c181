#!/bin/sh
# An adapter type end to end through the programs: mlr-train trains it (with adapter dropout),
# mlr-eval scores the saved adapter unmerged and with --merge, mlr-merge writes a merged checkpoint
# and mlr-eval scores that; the three evaluations must give the same per-choice log-likelihoods (to
# float32 rounding) and the same BoolQ table row, and the merged checkpoint holds no adapter tensors.
# Usage: adapter_end_to_end_test.sh <bin dir> <scratch dir> <adapter type>   (from the repository root)
set -eu
bin=$1
dir=$2
type=$3
task="--tasks boolq --task-file boolq=configs/demo/data/boolq/val.jsonl"
rm -rf "$dir"
"$bin/mlr-train" configs/demo.yaml adapter.type="$type" adapter.dropout=0.1 train.steps=6 eval.interval=0 \
  save.interval=0 output_dir="$dir/run" --no-progress-bar > "$dir.train.log" 2>&1 || { cat "$dir.train.log"; exit 1; }
"$bin/mlr-eval" --model configs/demo/model --adapter "$dir/run/final" $task --log-samples "$dir/unmerged" > "$dir.unmerged.log"
"$bin/mlr-eval" --model configs/demo/model --adapter "$dir/run/final" --merge $task --log-samples "$dir/merge_flag" \
  > "$dir.merge_flag.log"
"$bin/mlr-merge" --model configs/demo/model --adapter "$dir/run/final" --out "$dir/merged"
"$bin/mlr-eval" --model "$dir/merged" $task --log-samples "$dir/merged_samples" > "$dir.merged.log"
row() { grep '^|boolq|' "$1"; }
# The log-likelihood of every choice of every document, one per line.
loglik() { grep -o '"filtered_resps":\[[^}]*\]\]' "$1/samples_boolq.jsonl" | grep -o '\[-\?[0-9.e+-]*,' | tr -d '[,'; }
loglik "$dir/unmerged" > "$dir.unmerged.ll"
[ -s "$dir.unmerged.ll" ] || { echo "no log-likelihoods in $dir/unmerged"; exit 1; }
for run in merge_flag merged; do
  samples="$dir/$run"; [ "$run" = merged ] && samples="$dir/merged_samples"
  loglik "$samples" > "$dir.$run.ll"
  paste "$dir.unmerged.ll" "$dir.$run.ll" | awk -v run="$run" '
    { d = $1 - $2; if (d < 0) d = -d; m = $1 < 0 ? -$1 : $1; if (NF != 2 || d > 1e-4 * (m > 1 ? m : 1)) bad = 1; n++ }
    END { if (bad || n == 0) { print run ": log-likelihoods differ from the unmerged adapter"; exit 1 }
          print run ": " n " log-likelihoods match the unmerged adapter" }'
  [ "$(row "$dir.$run.log")" = "$(row "$dir.unmerged.log")" ] || { echo "$run: the BoolQ row differs"; exit 1; }
done
if grep -q lora_ "$dir/merged/model.safetensors"; then echo "the merged checkpoint holds adapter tensors"; exit 1; fi
echo "$type: trained, evaluated, merged"
