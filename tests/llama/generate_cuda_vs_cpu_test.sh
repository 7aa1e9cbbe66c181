#!/bin/sh
# mlr-generate on CUDA against the CPU: greedy generation on the generate fixture with its LoRA
# adapter (unmerged), three prompts batched with left padding, --device cuda and --device cpu; the
# tokens of every prompt must be identical, and the CPU's must be transformers' (the fixture's).
# Exits 77 (skipped) when there is no CUDA device; in the emulated CUDA build (scripts/test.sh) the
# cached decoding runs on the CPU emulator.
# Usage: generate_cuda_vs_cpu_test.sh <mlr-generate> <scratch prefix>   (from the repository root)
set -eu
generate=$1
out=$2
fixture=tests/fixtures/llama/generate
run() {
  "$generate" --model $fixture/model --adapter $fixture/lora --device "$1" --batch-size 3 --max-new-tokens 8 --jsonl \
    'The capital of France is' 'Once upon a time' 'hello world' > "$out.$1.jsonl" 2> "$out.$1.log"
}
if ! run cuda; then
  if grep -q "no such CUDA device\|has no CUDA backend" "$out.cuda.log"; then
    echo "skipped: no CUDA device"
    exit 77
  fi
  cat "$out.cuda.log"
  exit 1
fi
run cpu || { cat "$out.cpu.log"; exit 1; }
tokens() { grep -oE '"tokens":\[[0-9,]*\]' "$1"; }
[ "$(tokens "$out.cuda.jsonl" | wc -l)" -eq 3 ] || { echo "expected 3 completions:"; cat "$out.cuda.jsonl"; exit 1; }
if [ "$(tokens "$out.cuda.jsonl")" != "$(tokens "$out.cpu.jsonl")" ]; then
  echo "tokens differ:"; tokens "$out.cuda.jsonl"; tokens "$out.cpu.jsonl"; exit 1
fi
# The fixture's expected adapter tokens (transformers' generate on the PeftModel), in order.
expected=$(tr -d ' \n' < $fixture/reference.json | grep -oE '"adapter":\{.*\},"chat"' | grep -oE '"tokens":\[[0-9,]*\]')
[ "$(tokens "$out.cpu.jsonl")" = "$expected" ] || { echo "cpu tokens are not the fixture's:"; echo "$expected"; exit 1; }
echo "generation on cuda matches the cpu and transformers:"
tokens "$out.cuda.jsonl"
