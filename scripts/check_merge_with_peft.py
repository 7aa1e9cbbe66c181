#!/usr/bin/env python3
"""Checks mlr-merge against PEFT: merges the LoRA fixture adapter into the demo model with mlr-merge,
merges it with PEFT's merge_and_unload, loads both in transformers and prints the largest logit
difference. Needs torch, transformers and peft.
Usage: scripts/check_merge_with_peft.py [path to mlr-merge (default build/apps/mlr-merge)]"""
import os
import subprocess
import sys
import tempfile

import torch
from peft import PeftModel
from transformers import LlamaForCausalLM

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
merge = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build", "apps", "mlr-merge")
model_dir = os.path.join(root, "configs", "demo", "model")
adapter = os.path.join(root, "tests", "fixtures", "train", "lora_run", "initial_adapter")
with tempfile.TemporaryDirectory() as out:
    subprocess.run([merge, "--model", model_dir, "--adapter", adapter, "--out", out], check=True)
    ours = LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
    base = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    ids = torch.randint(0, base.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(ids).logits - peft(ids).logits).abs().max().item()
print(f"max |logits(mlr-merge) - logits(PEFT merge_and_unload)| = {diff}")
sys.exit(0 if diff <= 1e-5 else 1)
