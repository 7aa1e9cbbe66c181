#!/usr/bin/env python3
"""Checks mlr-generate against transformers on a trained LLaMA checkpoint: converts llama2.c's
stories260K (../shared/models/stories260K: stories260K.bin + tok512.model) into a Hugging Face
checkpoint (LlamaForCausalLM + LlamaTokenizer files), then generates greedily from a few prompts with
transformers' generate() and with mlr-generate (one prompt at a time, and batched), and compares the
text. Needs torch and transformers (and sentencepiece for the tokenizer).

llama2.c's file: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative:
untied classifier), seq_len), then f32 arrays: token embedding, attention norms, wq, wk, wv, wo, ffn
norms, w1, w2, w3, final norm, the RoPE tables (skipped), the classifier when untied. Its RoPE
rotates interleaved pairs (Meta's layout); transformers rotates halves, so wq and wk rows are
permuted as transformers' convert_llama_weights_to_hf permutes Meta's.

Usage: scripts/check_generate_with_transformers.py [mlr-generate (default build/apps/mlr-generate)]
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
generate = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build", "apps", "mlr-generate")
stories = os.path.join(root, "..", "shared", "models", "stories260K")
PROMPTS = ["Once upon a time", "Lily wanted to", "The dog and the cat"]
MAX_NEW = 40


def convert(out):
    raw = open(os.path.join(stories, "stories260K.bin"), "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    data = np.frombuffer(raw[28:], dtype=np.float32)
    pos = 0
    head_dim = dim // heads

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        t = torch.from_numpy(data[pos:pos + n].copy()).reshape(shape)
        pos += n
        return t

    def permute(w, n):  # interleaved RoPE pairs -> rotate-half layout
        return w.view(n, w.shape[0] // n // 2, 2, w.shape[1]).transpose(1, 2).reshape(w.shape)

    emb = take(vocab, dim)
    att_norm = take(layers, dim)
    wq, wk = take(layers, dim, dim), take(layers, kv_heads * head_dim, dim)
    wv, wo = take(layers, kv_heads * head_dim, dim), take(layers, dim, dim)
    ffn_norm = take(layers, dim)
    w1, w2, w3 = take(layers, hidden, dim), take(layers, dim, hidden), take(layers, hidden, dim)
    final_norm = take(dim)
    pos += seq_len * head_dim  # freq_cis real and imaginary halves
    cls = emb if shared else take(vocab, dim)
    config = LlamaConfig(vocab_size=vocab, hidden_size=dim, intermediate_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=seq_len,
                         rms_norm_eps=1e-5, tie_word_embeddings=shared, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config)
    sd = {"model.embed_tokens.weight": emb, "model.norm.weight": final_norm, "lm_head.weight": cls}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = permute(wq[i], heads)
        sd[p + "self_attn.k_proj.weight"] = permute(wk[i], kv_heads)
        sd[p + "self_attn.v_proj.weight"] = wv[i]
        sd[p + "self_attn.o_proj.weight"] = wo[i]
        sd[p + "mlp.gate_proj.weight"] = w1[i]
        sd[p + "mlp.down_proj.weight"] = w2[i]
        sd[p + "mlp.up_proj.weight"] = w3[i]
        sd[p + "input_layernorm.weight"] = att_norm[i]
        sd[p + "post_attention_layernorm.weight"] = ffn_norm[i]
    model.load_state_dict(sd, strict=not shared)
    model.save_pretrained(out)
    shutil.copy(os.path.join(stories, "tok512.model"), os.path.join(out, "tokenizer.model"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "add_bos_token": True, "add_eos_token": False, "legacy": True}, f)
    return model.eval()


def main():
    if not os.path.exists(os.path.join(stories, "stories260K.bin")):
        print("skipped: ../shared/models/stories260K is absent")
        return 77
    failures = 0
    with tempfile.TemporaryDirectory() as out:
        model = convert(out)
        tok = AutoTokenizer.from_pretrained(out)
        expected = []
        for p in PROMPTS:
            enc = tok(p, return_tensors="pt")
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=MAX_NEW, do_sample=False)[0, enc["input_ids"].shape[1]:]
            expected.append(tok.decode(ids, skip_special_tokens=True))
        for batch in ("1", str(len(PROMPTS))):
            run = subprocess.run([generate, "--model", out, "--max-new-tokens", str(MAX_NEW), "--batch-size", batch,
                                  "--jsonl", *PROMPTS], check=True, capture_output=True, text=True)
            got = [json.loads(line)["completion"] for line in run.stdout.splitlines()]
            for p, e, g in zip(PROMPTS, expected, got):
                # transformers' decode of the new tokens alone drops a word-start space that
                # mlr-generate keeps (it decodes after the prompt's last token).
                same = g == e or g.lstrip(" ") == e.lstrip(" ")
                failures += not same
                verdict = "same" if g == e else "same but the leading space" if same else "DIFFERENT"
                print(f"batch {batch} {verdict}: {p!r} -> {g!r}" +
                      ("" if same else f"\n  transformers: {e!r}"))
            print(run.stderr.strip())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
