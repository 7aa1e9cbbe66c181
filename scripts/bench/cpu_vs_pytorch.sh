#!/usr/bin/env bash
# CPU fine-tuning and MMLU evaluation, PyTorch eager + PEFT and lm-evaluation-harness against mlr-train
# and mlr-eval, side by side on one machine (scripts/bench/cpu_vs_pytorch.py says what is measured and
# how). Prints the tables of the README's performance section.
#
#   scripts/bench/cpu_vs_pytorch.sh [--venv DIR] [cpu_vs_pytorch.py options: --quick, --threads 1,2,
#                                    --cases lora_qkvo,full, --rounds N, --hidden ..., --build DIR]
#
# --venv DIR: a Python environment with torch, transformers, peft, sentencepiece and lm-eval. Without
# it, one is made (once) in .cache/bench-venv from PyPI (torch's CPU wheels). This is a tool for a
# developer's machine: neither CI nor the product depends on Python.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv=""
if [ "${1:-}" = "--venv" ]; then
  venv="${2:?--venv needs a directory}"
  shift 2
fi
if [ -z "$venv" ]; then
  venv="$root/.cache/bench-venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --index-url https://download.pytorch.org/whl/cpu torch
    "$venv/bin/pip" install --quiet transformers peft sentencepiece lm-eval
  fi
fi
[ -x "$venv/bin/python" ] || { echo "cpu_vs_pytorch: $venv/bin/python not found" >&2; exit 1; }
exec "$venv/bin/python" "$root/scripts/bench/cpu_vs_pytorch.py" "$@"
