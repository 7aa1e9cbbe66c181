#!/bin/sh
# mlr-demo --quick end to end: it must exit 0, print the accuracy table (a chance column and a
# column per method, a row per family) and write index.html with the same tables and the plots.
# Usage: demo_quick_test.sh MLR_DEMO OUT_DIR
set -eu
demo=$1
out=$2
rm -rf "$out"
"$demo" --quick --device cpu --out "$out" > "$out.log" 2>&1 || { cat "$out.log"; echo "FAIL: mlr-demo exited with $?"; exit 1; }
cat "$out.log"
fail() { echo "FAIL: $*"; exit 1; }
grep -q "^family .*chance .*base .*LoRA .*MultiLoRA .*SMoRA .*full FT" "$out.log" || fail "no accuracy header with chance and method columns"
# A row per family: chance, then an accuracy in [0, 1] for the base model and each of the 4 methods.
for family in traits categories counting people; do
  grep -Eq "^$family +.* (0\.[0-9]{2}|~0)( +(0\.[0-9]{2}|1\.00)){5}\$" "$out.log" || fail "no accuracy row for $family (chance + 5 models in [0, 1])"
done
grep -q "^LoRA r=8 .*[0-9]" "$out.log" || fail "no method row for LoRA"
# Even the quick run learns: at least one family where every fine-tuned model (the last 4
# columns) scores at least chance + 0.25 on the held-out split.
learned=$(awk '/^(traits|categories|counting|people) / {
    chance = ($(NF-5) == "~0") ? 0 : $(NF-5); ok = 1
    for (i = NF-3; i <= NF; ++i) if ($i + 0 < chance + 0.25) ok = 0
    if (ok) print $1 }' "$out.log")
[ -n "$learned" ] || fail "no family where every method is at least 0.25 above chance"
echo "learned by every method: $learned"
page="$out/index.html"
[ -s "$page" ] || fail "$page missing"
grep -q 'id="accuracy-table"' "$page" || fail "no accuracy table in $page"
grep -q '<th>chance</th>' "$page" || fail "no chance column in $page"
for col in base LoRA MultiLoRA SMoRA "full FT"; do grep -q "<th>$col</th>" "$page" || fail "no $col column in $page"; done
for family in traits categories counting people; do grep -q "<tr><td>$family</td>" "$page" || fail "no $family row in $page"; done
[ "$(grep -c '<svg' "$page")" -ge 4 ] || fail "fewer than 4 inline plots in $page"
grep -q 'src="http\|href="http' "$page" && fail "$page refers to an external asset"
# The base model is a Hugging Face checkpoint with its tokenizer; the data files are in the public layouts.
for f in base/config.json base/model.safetensors base/tokenizer.json base/tokenizer_config.json \
         data/traits/train.jsonl data/traits/test.jsonl data/counting/train.json data/counting/test.json \
         data/mmlu/test/people_test.csv data/mmlu/test/word_categories_test.csv configs/lora.yaml runs/lora/final/adapter_config.json; do
  [ -s "$out/$f" ] || fail "$out/$f missing"
done
echo "mlr-demo --quick: ok"
