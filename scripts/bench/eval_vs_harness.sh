#!/usr/bin/env bash
# Full MMLU 5-shot (57 subjects, test split scored, dev split as the few-shot pool) on one random
# LLaMA checkpoint in bf16: mlr-eval against lm-evaluation-harness's own Hugging Face backend
# (HFLM through lm_eval.simple_evaluate, the harness's MMLU task YAMLs over the same CSV files),
# one after the other in the same call, and both wall times printed (each includes loading the
# model and the data). The issue's bar: mlr-eval at least 2x faster. Random weights make the
# choices near-ties, so accuracies are printed but not compared (agreement is checked on the f32
# fixture by tests/eval/reference_test.cpp).
#
#   scripts/bench/eval_vs_harness.sh [build_dir=build] [work_dir=/tmp/mlr_eval_vs_harness]
#
# Environment:
#   DATA        directory with mmlu/{dev,test}/<subject>_{dev,test}.csv   (default: ../shared/data)
#   TOKENIZER   a LLaMA sentencepiece tokenizer.model       (default: ../shared/models/llama-tokenizer/tokenizer.model)
#   SHAPE       7b (LLaMA-7B: 32 layers, hidden 4096, 32 heads, vocab 32000; the default) or tiny (a
#               smoke test that runs on a CPU in a minute)
#   DEVICE      cuda (default when torch sees a GPU) or cpu
#   LIMIT       documents per subject (default: all)
#   HF_BATCH    the harness's --batch_size (default: auto, its largest batch that fits)
#   MLR_BATCH_TOKENS  mlr-eval --batch-tokens (default 16384)
# Needs: python3 with torch, transformers, sentencepiece and lm-eval (0.4.13 was used); the
# checkpoint is written once to work_dir/model-$SHAPE (about 13.5 GB for 7b) and reused.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build}"
work="${2:-/tmp/mlr_eval_vs_harness}"
data="${DATA:-$root/../shared/data}"
tokenizer="${TOKENIZER:-$root/../shared/models/llama-tokenizer/tokenizer.model}"
shape="${SHAPE:-7b}"
limit="${LIMIT:-}"
hf_batch="${HF_BATCH:-auto}"
mlr_batch_tokens="${MLR_BATCH_TOKENS:-16384}"
device="${DEVICE:-$(python3 -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
mlr_eval="$build/apps/mlr-eval"
model="$work/model-$shape"

die() { echo "eval_vs_harness: $*" >&2; exit 1; }
[ -x "$mlr_eval" ] || die "$mlr_eval not found (build the mlr-eval target, or pass the build directory)"
[ -d "$data/mmlu/test" ] && [ -d "$data/mmlu/dev" ] || die "$data/mmlu/{test,dev} not found (set DATA)"
[ -f "$tokenizer" ] || die "$tokenizer not found (set TOKENIZER)"
case "$shape" in 7b|tiny) ;; *) die "SHAPE must be 7b or tiny, got '$shape'" ;; esac
case "$device" in cuda|cpu) ;; *) die "DEVICE must be cuda or cpu, got '$device'" ;; esac
mkdir -p "$work"

# 1. The checkpoint: random normal(0, 0.02) weights (transformers' LLaMA init) in bf16, the LLaMA
#    tokenizer saved by transformers (tokenizer.json for the harness, tokenizer.model for us).
if [ ! -f "$model/config.json" ]; then
  python3 - "$model" "$tokenizer" "$shape" "$device" <<'PY'
import os, shutil, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer
out, tok_model, shape, device = sys.argv[1:5]
dims = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=32) if shape == "7b" else \
       dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
config = LlamaConfig(vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
                     bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **dims)
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
with torch.device(device):
    model = LlamaForCausalLM(config)
os.makedirs(out, exist_ok=True)
model.save_pretrained(out, safe_serialization=True)
shutil.copy(tok_model, os.path.join(out, "tokenizer.model"))
# The harness's encode uses the tokenizer's own BOS rule, as mlr-eval does: LLaMA prepends <s>.
tok = LlamaTokenizer.from_pretrained(out, add_bos_token=True)
assert tok("Hello world").input_ids[0] == 1, "the LLaMA tokenizer must prepend BOS (id 1)"
tok.save_pretrained(out)
print(f"wrote {out}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, bf16")
PY
fi

# 2. mlr-eval.
mlr_args=(--model "$model" --data-dir "$data" --tasks mmlu --num-fewshot 5 --dtype bf16 --device "$device"
          --batch-tokens "$mlr_batch_tokens" --output "$work/mlr_results.json")
[ -n "$limit" ] && mlr_args+=(--limit "$limit")
echo "== mlr-eval ${mlr_args[*]}"
start=$(date +%s.%N)
"$mlr_eval" "${mlr_args[@]}" | tail -n 8
mlr_seconds=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")

# 3. lm-evaluation-harness, HFLM, the same files through its own MMLU YAMLs (dataset_path json).
echo "== lm-evaluation-harness HFLM (batch_size $hf_batch)"
start=$(date +%s.%N)
python3 - "$model" "$data" "$device" "$hf_batch" "$limit" "$work" "$root/scripts/eval" <<'PY'
import csv, glob, json, logging, os, sys
model, data, device, batch, limit, work, helpers = sys.argv[1:8]
sys.path.insert(0, helpers)
import render_with_harness as R  # make_task: the harness YAML with dataset_path json over our files
import lm_eval
from lm_eval.models.huggingface import HFLM
logging.disable(logging.WARNING)
yamls = sorted(glob.glob(os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "mmlu", "default", "mmlu_*.yaml")))
tasks, tmp = [], os.path.join(work, "harness_jsonl")
os.makedirs(tmp, exist_ok=True)
for yaml_path in yamls:
    tasks.append(R.mmlu_task(yaml_path, data, tmp)[0])
lm = HFLM(pretrained=model, device=device, dtype="bfloat16", batch_size=batch)
results = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=5, limit=int(limit) if limit else None,
                                  bootstrap_iters=0, log_samples=False)
accs = [v["acc,none"] for k, v in results["results"].items() if k.startswith("mmlu_")]
print(f"{len(accs)} subjects, mean acc {sum(accs) / len(accs):.4f}")
with open(os.path.join(work, "harness_results.json"), "w") as f:
    json.dump(results["results"], f, indent=1)
PY
harness_seconds=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")

echo
echo "MMLU 5-shot${limit:+ (limit $limit per subject)}, SHAPE=$shape, bf16 on $device"
printf '%-32s %10s\n' "evaluator" "wall s"
printf '%-32s %10s\n' "mlr-eval" "$mlr_seconds"
printf '%-32s %10s\n' "lm-evaluation-harness HFLM" "$harness_seconds"
python3 -c "print(f'mlr-eval is {$harness_seconds / $mlr_seconds:.2f}x faster')"
