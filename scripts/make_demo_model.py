#!/usr/bin/env python3
"""Writes configs/demo/model: a tiny randomly initialised LLaMA (grouped-query attention) in
Hugging Face's layout, with the small byte-level BPE tokenizer of tests/fixtures/tokenizer/gpt2
(600 pieces, trained for our tests), so that `mlr-train configs/demo.yaml` runs anywhere in seconds.
Run once; the output is committed. Needs torch and transformers."""
import json
import os
import shutil

import torch
from transformers import LlamaConfig, LlamaForCausalLM

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "configs", "demo", "model")
tok_dir = os.path.join(root, "tests", "fixtures", "tokenizer", "gpt2")
os.makedirs(out, exist_ok=True)
with open(os.path.join(tok_dir, "tokenizer.json")) as f:
    tok = json.load(f)
vocab = max(list(tok["model"]["vocab"].values()) + [t["id"] for t in tok.get("added_tokens", [])]) + 1
torch.manual_seed(0)
config = LlamaConfig(vocab_size=vocab, hidden_size=48, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                     rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                     bos_token_id=None, eos_token_id=None)
model = LlamaForCausalLM(config).to(torch.float32)
model.save_pretrained(out, safe_serialization=True)
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(tok_dir, name), os.path.join(out, name))
print(f"wrote {out}: vocab {vocab}, {sum(p.numel() for p in model.parameters())} parameters")
