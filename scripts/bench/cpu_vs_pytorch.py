#!/usr/bin/env python3
"""CPU fine-tuning and evaluation, side by side: PyTorch eager + PEFT (and lm-evaluation-harness's HF
backend) against mlr-train (and mlr-eval), on the same random LLaMA checkpoint and the same documents.
Run through scripts/bench/cpu_vs_pytorch.sh, which finds or makes the Python environment.

Training: each case runs `--rounds` times, PyTorch and mlr alternating (each run a fresh process with
`--warmup` untimed and `--steps` timed optimizer steps), at each thread count. Per side: tokens/s =
rows x seq_len / the median of the timed steps' seconds over all rounds; peak RSS = the largest
ru_maxrss of its processes; "bound" = tokens/s / (GEMM rate / FLOPs per token), the GEMM rate being
bench/matmul_bench's f32 1024^3 figure at the same thread count, measured in every round (median), and
FLOPs per token counted from the shapes:
    4 x (GEMM weights: q, k, v, o, gate, up, down of every layer, and lm_head)       (frozen base)
  + 6 x (GEMM weights) instead of 4 for full fine-tuning (weight gradients too)
  + 6 x (adapter weights per token: r (in + out) per adapted projection; SMoRA: top_k ranks)
  + 3 x causal attention forward (2 x 2 x seq_len/2 x heads x head_dim per layer: QK^T and PV)
The row batches are `--rows` documents of at least `--seq-len` tokens each, truncated to seq_len (one
document per row, every position real, plain causal attention on both sides). MultiLoRA and SMoRA
have no PEFT counterpart: their rows compare with our LoRA q,k,v,o, run in the same rounds alternated
with them, and with PEFT's LoRA r16 q,k,v,o (from the lora_qkvo case when it is in --cases).
`--baseline-build DIR` adds a third side, another mlr build (before a change), in the same rounds.

Evaluation: MMLU 5-shot on `--eval-subjects` (first `--eval-limit` test documents each), f32 on the
CPU, mlr-eval against lm_eval.simple_evaluate with HFLM, offline over the shared CSV files (through
scripts/eval/render_with_harness.py's task builder). Wall time includes loading; requests = documents x
4 choices; accuracies per subject must be identical.
"""
import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
QKVO = ALL_PROJ[:4]

# name -> (label, mlr adapter section, PEFT target modules or None (no PEFT run) or "full")
CASES = {
    "lora_qkvo": ("LoRA r16 q,k,v,o", dict(type="lora", r=16, alpha=32, target_modules=QKVO), QKVO),
    "lora_all": ("LoRA r16 all 7 projections", dict(type="lora", r=16, alpha=32, target_modules=ALL_PROJ), ALL_PROJ),
    "multilora": ("MultiLoRA n=4, total r16, q,k,v,o",
                  dict(type="multilora", r=16, alpha=32, n_modules=4, target_modules=QKVO), None),
    "smora": ("SMoRA 64 ranks top 8, q,k,v,o", dict(type="smora", r=64, alpha=32, top_k=8, target_modules=QKVO), None),
    "full": ("full fine-tuning (AdamW, f32)", dict(type="full"), "full"),
    # mlr in bf16 (train.precision: bf16: the AVX512-BF16 GEMM, f32 master weights) against PyTorch's f32
    # LoRA: the bf16 target is a multiple of PyTorch's f32 speed. Its "bound" columns are still
    # against the f32 GEMM rate.
    "lora_qkvo_bf16": ("LoRA r16 q,k,v,o, mlr bf16 vs PyTorch f32", dict(type="lora", r=16, alpha=32, target_modules=QKVO),
                       QKVO),
}


def shape_args(a):
    return dict(hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                num_key_value_heads=a.kv_heads, intermediate_size=a.intermediate, vocab_size=a.vocab)


def proj_dims(s):
    h, hd = s["hidden_size"], s["hidden_size"] // s["num_attention_heads"]
    q, kv, i = s["num_attention_heads"] * hd, s["num_key_value_heads"] * hd, s["intermediate_size"]
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def flops_per_token(s, seq_len, case):
    """The GEMM FLOPs of one trained token (the module docstring's count)."""
    dims = proj_dims(s)
    layers = s["num_hidden_layers"]
    gemm = layers * sum(i * o for i, o in dims.values()) + s["hidden_size"] * s["vocab_size"]
    adapter = CASES[case][1]
    flops = (6 if adapter["type"] == "full" else 4) * gemm
    if adapter["type"] != "full":
        rank = adapter.get("top_k", adapter["r"]) if adapter["type"] == "smora" else adapter["r"]
        flops += 6 * layers * sum(rank * (dims[m][0] + dims[m][1]) for m in adapter["target_modules"])
    head_dim = s["hidden_size"] // s["num_attention_heads"]
    flops += 3 * layers * 2 * 2 * (seq_len / 2) * s["num_attention_heads"] * head_dim
    return flops


# ---- the checkpoint and the documents ----

def make_checkpoint(out, s, tokenizer_model, seed):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer
    config = LlamaConfig(max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False, **s)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(tokenizer_model, os.path.join(out, "tokenizer.model"))
    tok = LlamaTokenizer.from_pretrained(out, add_bos_token=True)
    tok.save_pretrained(out)
    print(f"wrote {out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, f32", flush=True)


def make_documents(path, model_dir, count, seq_len, seed):
    """`count` documents of random vocabulary words, each at least seq_len + 32 tokens."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    words = sorted({p[1:] for p in tok.get_vocab() if p.startswith("\u2581") and p[1:].isalpha() and len(p) > 3})
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(count):
            text = " ".join(rng.choice(words) for _ in range(seq_len))
            while len(tok(text).input_ids) < seq_len + 32:
                text += " " + " ".join(rng.choice(words) for _ in range(64))
            head, rest = text.split(" ", 1)
            f.write(json.dumps({"prompt": head, "completion": " " + rest}) + "\n")


# ---- one PyTorch run (a child process: its own RSS) ----

def torch_worker(a):
    import resource
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.model)
    docs = [json.loads(line) for line in open(a.docs, encoding="utf-8")]
    rows = [tok(d["prompt"] + d["completion"]).input_ids[:a.seq_len] for d in docs]
    model = LlamaForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="sdpa")
    target = CASES[a.case][2]
    if target == "full":
        params = list(model.parameters())
    else:
        from peft import LoraConfig, get_peft_model
        spec = CASES[a.case][1]
        model = get_peft_model(model, LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=0.0,
                                                 target_modules=target))
        params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    times = []
    for step in range(a.warmup + a.steps):
        batch = rows[(step * a.rows) % len(rows):][:a.rows]
        ids = torch.tensor(batch, dtype=torch.long)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": times[a.warmup:], "rss": rss, "loss": loss.item()}))


# ---- the driver ----

def run_child(cmd, env=None, log=None):
    """Runs cmd; returns (stdout, peak RSS in bytes of the child)."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    if log:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{out}\n")
    if p.returncode != 0:
        sys.exit(f"cpu_vs_pytorch: {' '.join(cmd)} failed ({p.returncode}):\n{out[-4000:]}")
    return out, usage.ru_maxrss * 1024


def thread_env(threads):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def gemm_rate(a, threads):
    out, _ = run_child([os.path.join(a.build, "bench", "matmul_bench"), "1024", "64", "5"], thread_env(threads), a.log)
    m = re.search(r"mlr::matmul \(OpenBLAS\)\s+f32\s+\S+\s+\S+\s+([0-9.]+)", out)
    if not m:
        sys.exit(f"cpu_vs_pytorch: no f32 row in matmul_bench's output:\n{out}")
    return float(m.group(1)) * 1e9


def mlr_config(a, case, model, docs, steps, out_dir):
    adapter = CASES[case][1]
    items = ", ".join(f"{k}: {json.dumps(v)}" for k, v in adapter.items())
    return f"""model: {{path: {model}, device: cpu}}
adapter: {{{items}}}
data:
  tokenizer: {model}
  cache_dir: {a.work}/data-cache
  mixture: {{mode: proportional, shuffle: false}}
  packing: {{seq_len: {a.seq_len}, batch_rows: {a.rows}, packed: false, train_on_prompt: true, truncation: right}}
  datasets:
    - {{name: docs, format: prompt_completion, path: {docs}}}
train: {{steps: {steps}, precision: {"bf16" if case.endswith("_bf16") else "f32"}}}
optim: {{lr: 1.0e-4, schedule: constant, clip_grad_norm: 1.0}}
log: {{interval: 1, tensorboard: false}}
output_dir: {out_dir}
seed: 1
"""


def mlr_run(a, case, threads, model, docs, build=None):
    out_dir = os.path.join(a.work, "runs", f"{case}-{threads}")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    cfg = os.path.join(out_dir, "..", f"{case}-{threads}.yaml")
    with open(cfg, "w") as f:
        f.write(mlr_config(a, case, model, docs, a.warmup + a.steps, out_dir))
    _, rss = run_child([os.path.join(build or a.build, "apps", "mlr-train"), cfg, "--no-progress-bar"],
                       thread_env(threads), a.log)
    steps = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl")) if '"tokens_per_s"' in line]
    seconds = [a.rows * a.seq_len / s["tokens_per_s"] for s in steps[a.warmup:]]
    return seconds, rss


def torch_run(a, case, threads, model, docs):
    cmd = [sys.executable, os.path.abspath(__file__), "torch-worker", "--model", model, "--docs", docs, "--case", case,
           "--threads", str(threads), "--steps", str(a.steps), "--warmup", str(a.warmup), "--rows", str(a.rows),
           "--seq-len", str(a.seq_len)]
    out, rss = run_child(cmd, thread_env(threads), a.log)
    return json.loads(out.strip().splitlines()[-1])["seconds"], rss


def fmt_bytes(b):
    return f"{b / 2**30:.2f} GiB"


def bench_training(a, s, model, docs):
    results = {}  # (case, threads) -> dict
    for threads in a.threads:
        for case in a.cases:
            r = results[(case, threads)] = dict(torch=[], mlr=[], base=[], lora_ref=[], torch_rss=0, mlr_rss=0,
                                                base_rss=0, lora_ref_rss=0, rate=[])
            for rnd in range(a.rounds):
                r["rate"].append(gemm_rate(a, threads))
                # No PEFT counterpart (MultiLoRA, SMoRA): their target is a ratio to our LoRA q,k,v,o,
                # so that runs in the same rounds, alternated with the case.
                first = "torch" if CASES[case][2] is not None else "lora_ref"
                order = [first, "mlr"] + (["base"] if a.baseline_build else [])
                order = order if rnd % 2 == 0 else order[::-1]
                for side in order:
                    if side == "torch":
                        secs, rss = torch_run(a, case, threads, model, docs)
                    elif side == "lora_ref":
                        secs, rss = mlr_run(a, "lora_qkvo", threads, model, docs)
                    else:
                        secs, rss = mlr_run(a, case, threads, model, docs, a.baseline_build if side == "base" else None)
                    r[side] += secs
                    r[side + "_rss"] = max(r[side + "_rss"], rss)
                    print(f"  {case} {threads}t round {rnd + 1} {side}: "
                          f"{statistics.median(secs):.2f} s/step, RSS {fmt_bytes(rss)}", flush=True)
    tokens = a.rows * a.seq_len
    print(f"\nTraining, {a.rows} x {a.seq_len} tokens per step, f32, shape {s}; median of {a.steps} steps after "
          f"{a.warmup} warm-up x {a.rounds} rounds")
    head = ("| case | threads | PyTorch tok/s | mlr tok/s | ratio | PyTorch RSS | mlr RSS | RSS ratio | GEMM GFLOP/s | "
            "PyTorch bound | mlr bound |" + (" baseline mlr tok/s | baseline ratio | baseline RSS |" if a.baseline_build else ""))
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for (case, threads), r in results.items():
        rate = statistics.median(r["rate"])
        bound = rate / flops_per_token(s, a.seq_len, case)
        mlr_tps = tokens / statistics.median(r["mlr"])
        if r["torch"]:
            ref_tps, ref_rss, ref_label = tokens / statistics.median(r["torch"]), r["torch_rss"], ""
        else:  # no PEFT counterpart: PEFT's LoRA q,k,v,o of the same thread count
            base = results.get(("lora_qkvo", threads))
            ref_tps = tokens / statistics.median(base["torch"]) if base and base["torch"] else float("nan")
            ref_rss, ref_label = (base["torch_rss"] if base else 0), " (PEFT LoRA qkvo)"
        vs_lora = ""
        if r["lora_ref"]:  # our LoRA in the same rounds
            lora_tps = tokens / statistics.median(r["lora_ref"])
            vs_lora = f"; {mlr_tps / lora_tps:.2f}x our LoRA ({lora_tps:.0f})"
        have_ref = ref_tps == ref_tps and ref_rss > 0  # no PyTorch run of this case or of lora_qkvo: "-"
        ref_cell = f"{ref_tps:.0f}{ref_label}" if have_ref else "-"
        ratio_cell = (f"{mlr_tps / ref_tps:.2f}x" if have_ref else "-") + vs_lora
        ref_rss_cell = fmt_bytes(ref_rss) if have_ref else "-"
        rss_ratio_cell = f"{r['mlr_rss'] / ref_rss:.2f}" if have_ref else "-"
        ref_bound_cell = f"{ref_tps / bound:.0%}" if have_ref else "-"
        print(f"| {CASES[case][0]} | {threads} | {ref_cell} | {mlr_tps:.0f} | {ratio_cell} | {ref_rss_cell} | "
              f"{fmt_bytes(r['mlr_rss'])} | {rss_ratio_cell} | {rate / 1e9:.0f} | {ref_bound_cell} | "
              f"{mlr_tps / bound:.0%} |" +
              (f" {tokens / statistics.median(r['base']):.0f} | {tokens / statistics.median(r['base']) / ref_tps:.2f}x | "
               f"{fmt_bytes(r['base_rss'])} |" if a.baseline_build else ""))


def harness_worker(a):
    import glob
    import logging
    sys.path.insert(0, os.path.join(ROOT, "scripts", "eval"))
    import render_with_harness as R
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    logging.disable(logging.WARNING)
    torch.set_num_threads(a.threads)
    tmp = os.path.join(a.work, "harness_jsonl")
    os.makedirs(tmp, exist_ok=True)
    yaml_dir = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "mmlu", "default")
    tasks = [R.mmlu_task(os.path.join(yaml_dir, f"mmlu_{s}.yaml"), a.data, tmp)[0] for s in a.eval_subjects]
    lm = HFLM(pretrained=a.model, device="cpu", dtype="float32", batch_size=a.harness_batch)
    results = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=5, limit=a.eval_limit or None,
                                      bootstrap_iters=0, log_samples=False)
    print(json.dumps({k: v["acc,none"] for k, v in results["results"].items()}))


def bench_eval(a, model):
    threads = max(a.threads)
    env = thread_env(threads)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    tasks = ",".join(f"mmlu_{s}" for s in a.eval_subjects)
    out_json = os.path.join(a.work, "mlr_eval.json")
    cmd = [os.path.join(a.build, "apps", "mlr-eval"), "--model", model, "--data-dir", a.data, "--tasks", tasks,
           "--num-fewshot", "5", "--dtype", "f32", "--device", "cpu", "--output", out_json]
    if a.eval_limit:
        cmd += ["--limit", str(a.eval_limit)]
    t0 = time.perf_counter()
    run_child(cmd, env, a.log)
    mlr_s = time.perf_counter() - t0
    subjects = {f"mmlu_{x}" for x in a.eval_subjects}
    mlr_acc = {k: v["acc,none"] for k, v in json.load(open(out_json))["results"].items() if k in subjects}
    t0 = time.perf_counter()
    out, _ = run_child([sys.executable, os.path.abspath(__file__), "harness-worker", "--model", model, "--data", a.data,
                        "--work", a.work, "--threads", str(threads), "--eval-subjects", *a.eval_subjects,
                        "--eval-limit", str(a.eval_limit), "--harness-batch", str(a.harness_batch)], env, a.log)
    hf_s = time.perf_counter() - t0
    hf_acc = {k: v for k, v in json.loads(out.strip().splitlines()[-1]).items() if k in subjects}
    docs = 0
    for s in a.eval_subjects:
        with open(os.path.join(a.data, "mmlu", "test", f"{s}_test.csv"), newline="", encoding="utf-8") as f:
            import csv
            n = sum(1 for _ in csv.reader(f))
        docs += min(n, a.eval_limit) if a.eval_limit else n
    requests = 4 * docs
    same = sorted(mlr_acc) == sorted(hf_acc) and all(abs(mlr_acc[k] - v) < 1e-12 for k, v in hf_acc.items())
    print(f"\nMMLU 5-shot, {len(a.eval_subjects)} subjects ({', '.join(a.eval_subjects)}), "
          f"{docs} documents, {requests} requests, f32, {threads} threads")
    print("| evaluator | wall s | requests/s | accuracies |")
    print("|---|---|---|---|")
    fmt_acc = lambda d: ", ".join(f"{k[5:]} {v:.4f}" for k, v in sorted(d.items()))
    print(f"| lm-evaluation-harness HFLM (batch {a.harness_batch}) | {hf_s:.1f} | {requests / hf_s:.1f} | {fmt_acc(hf_acc)} |")
    print(f"| mlr-eval | {mlr_s:.1f} | {requests / mlr_s:.1f} | {fmt_acc(mlr_acc)} |")
    print(f"mlr-eval {hf_s / mlr_s:.2f}x the harness's speed; accuracies {'identical' if same else 'DIFFER'}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("torch-worker", "harness-worker"):
        p = argparse.ArgumentParser()
        for k in ("--model", "--docs", "--case", "--data", "--work"):
            p.add_argument(k)
        for k in ("--threads", "--steps", "--warmup", "--rows", "--seq-len", "--eval-limit", "--harness-batch"):
            p.add_argument(k, type=int)
        p.add_argument("--eval-subjects", nargs="+")
        a = p.parse_args(sys.argv[2:])
        return torch_worker(a) if sys.argv[1] == "torch-worker" else harness_worker(a)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build-cpu"), help="mlr build directory (CPU build)")
    p.add_argument("--baseline-build", help="another mlr build (e.g. before a change): a third column, same rounds")
    p.add_argument("--work", default="/tmp/mlr_cpu_vs_pytorch", help="checkpoint, documents, runs, log")
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"), help="has mmlu/{dev,test}")
    p.add_argument("--tokenizer", default=os.path.join(ROOT, "..", "shared", "models", "llama-tokenizer", "tokenizer.model"))
    p.add_argument("--quick", action="store_true", help="tiny shapes, 1 round, few steps: a smoke test")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    p.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated thread counts")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--eval-subjects", default="abstract_algebra,college_physics,marketing")
    p.add_argument("--eval-limit", type=int, default=20, help="test documents per subject (0: all)")
    p.add_argument("--harness-batch", type=int, default=8)
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--no-eval", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.hidden, a.layers, a.heads, a.kv_heads, a.intermediate = 64, 2, 4, 2, 172
        a.rounds, a.steps, a.warmup, a.seq_len = 1, 2, 1, 64
        a.eval_subjects, a.eval_limit = "abstract_algebra", 4
    a.cases = [c for c in a.cases.split(",") if c]
    for c in a.cases:
        if c not in CASES:
            sys.exit(f"cpu_vs_pytorch: unknown case '{c}' (known: {', '.join(CASES)})")
    a.threads = [int(t) for t in a.threads.split(",") if t]
    a.eval_subjects = [x for x in a.eval_subjects.split(",") if x]
    a.work = os.path.abspath(a.work)
    a.build = os.path.abspath(a.build)
    if a.baseline_build:
        a.baseline_build = os.path.abspath(a.baseline_build)
    for exe in ("apps/mlr-train", "apps/mlr-eval", "bench/matmul_bench"):
        if not os.access(os.path.join(a.build, exe), os.X_OK):
            sys.exit(f"cpu_vs_pytorch: {a.build}/{exe} not found (build the mlr-train, mlr-eval and matmul_bench targets)")
    os.makedirs(a.work, exist_ok=True)
    a.log = os.path.join(a.work, "log.txt")
    s = shape_args(a)
    model = os.path.join(a.work, "model-" + "-".join(str(v) for v in s.values()))
    if not os.path.exists(os.path.join(model, "config.json")):
        make_checkpoint(model, s, a.tokenizer, 0)
    docs = os.path.join(model, f"docs-{a.seq_len}.jsonl")
    if not os.path.exists(docs):
        make_documents(docs, model, a.rows * (a.steps + a.warmup), a.seq_len, 0)
    print(f"cpu_vs_pytorch: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; "
          f"log in {a.log}", flush=True)
    if not a.no_train:
        bench_training(a, s, model, docs)
    if not a.no_eval:
        bench_eval(a, model)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
