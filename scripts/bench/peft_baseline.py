#!/usr/bin/env python3
"""Training-step throughput of Hugging Face transformers + PEFT, the baseline llama_bench is compared with.

Random LLaMA-shaped weights in bf16 (nothing is downloaded), SDPA attention, LoRA on q,k,v,o, fused
torch AdamW; each step is forward, cross-entropy on shifted targets, backward, optimizer step,
zero_grad, as bench/cuda/llama_bench.cpp runs ours. Prints one table row: tokens/s (median of the
timed steps) and peak GPU memory (torch.cuda.max_memory_allocated, from before the model is built).

  peft_baseline.py [--shape 1.1B|7B|smoke] [--rank 32] [--batch 8] [--seq 2048] [--steps 5] [--warmup 2]

--shape smoke is a two-layer model that runs in seconds on a CPU too (the rehearsal of
scripts/gpu_first_run.sh --smoke). Used on the GPU machine only: no product or CI step depends on Python.
"""
import argparse
import statistics
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "1.1B": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                 head_dim=64, intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048),
    "7B": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
               head_dim=128, intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096),
    "smoke": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=64, intermediate_size=512, vocab_size=512, max_position_embeddings=256),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="1.1B")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and a.shape != "smoke":
        sys.exit("peft_baseline: no CUDA device (only --shape smoke runs on the CPU)")
    torch.manual_seed(0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    config = LlamaConfig(rms_norm_eps=1e-5, attn_implementation="sdpa", torch_dtype=torch.bfloat16, **SHAPES[a.shape])
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    for n, prm in model.named_parameters():
        if prm.requires_grad:  # f32 adapters, as ours
            prm.data = prm.data.float()
    params = [prm for prm in model.parameters() if prm.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device == "cuda")
    tokens = torch.randint(0, config.vocab_size, (a.batch, a.seq), device=device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    times = []
    loss = float("nan")
    for step in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            out = model(input_ids=tokens, labels=tokens)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
        loss = out.loss.item()
    tokens_s = a.batch * a.seq / statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"PEFT {a.shape} LoRA r{a.rank} q,k,v,o {a.batch}x{a.seq} on {device}: "
          f"{tokens_s:,.0f} tokens/s | peak {peak:.1f} GiB | loss {loss:.2f} | torch {torch.__version__}")


if __name__ == "__main__":
    main()
