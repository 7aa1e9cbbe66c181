#!/usr/bin/env python3
"""Per-request log-likelihoods from lm-evaluation-harness's own Hugging Face backend (HFLM, f32, CPU)
for a fixture model on a fixed slice of the shared data, for tests/eval/reference_test.cpp.

    pip install lm-eval torch transformers      # lm-eval 0.4.13, transformers 5.24, torch 2.15 were used
    python3 scripts/eval/reference_loglikelihoods.py configs/demo/model ../shared/data \
        tests/fixtures/eval/demo_loglikelihoods.json

The tasks are the harness's YAMLs over the shared files (loaded as in render_with_harness.py), so
prompts, few-shot draws, the context/continuation split, BOS handling (the tokenizer's default),
left truncation to the model's max_length and the metrics are all the harness's. The slice:
  boolq      first 12 validation rows, 0-shot
  copa       first 10 validation rows, 0-shot (continuations with two spaces)
  cb         first 6 validation rows, 2-shot with the validation file as the pool (random sampler)
  mmlu_abstract_algebra, mmlu_high_school_european_history
             first 4 test rows each, 5-shot (the second subject's contexts exceed 512 tokens, so
             left truncation is exercised)
and greedy generate_until on three prompts with GSM8K's stop strings and max_gen_toks 24.
"""
import json
import logging
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render_with_harness as R  # noqa: E402
import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

logging.disable(logging.WARNING)

def fnv1a64(text):
    """FNV-1a 64 of the UTF-8 bytes (mlr::data::fnv1a64), to keep long contexts out of the fixture."""
    h = 0xcbf29ce484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


SLICE = [("boolq", 12, 0), ("copa", 10, 0), ("cb", 6, 2),
         ("mmlu_abstract_algebra", 4, 5), ("mmlu_high_school_european_history", 4, 5)]


def slice_task(name, tasks_dir, data, tmp):
    """The harness's task `name` (boolq, a SuperGLUE task or mmlu_<subject>) over the shared files, and its docs."""
    if name.startswith("mmlu_"):
        return R.mmlu_task(os.path.join(tasks_dir, "mmlu", "default", name + ".yaml"), data, tmp)
    return R.superglue_task(name, tasks_dir, data, tmp)


def score(lm, task, docs, shots, name):
    """HFLM log-likelihoods of every request of docs: (request entries, process_results per doc)."""
    instances = []
    for i, doc in enumerate(docs):
        ctx = task.fewshot_context(doc, shots)
        instances.append(task.construct_requests(doc=doc, ctx=ctx, metadata=(name, i, 1)))
    flat = [inst for doc_instances in instances for inst in doc_instances]
    results = lm.loglikelihood(flat)
    k = 0
    entries, per_doc = [], []
    for i, doc in enumerate(docs):
        doc_results = results[k:k + len(instances[i])]
        k += len(instances[i])
        per_doc.append(task.process_results(doc, list(doc_results)))
        for c, (inst, (ll, greedy)) in enumerate(zip(instances[i], doc_results)):
            entries.append({"doc": i, "choice": c, "context_fnv1a64": fnv1a64(inst.arguments[0]),
                            "context_chars": len(inst.arguments[0]), "continuation": inst.arguments[1],
                            "ll": ll, "is_greedy": bool(greedy)})
    return entries, per_doc


def main():
    model_dir, data, output = sys.argv[1], sys.argv[2], sys.argv[3]
    tasks_dir = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    tmp = tempfile.mkdtemp()
    lm = HFLM(pretrained=model_dir, device="cpu", dtype="float32", batch_size=8)
    out = {"model": model_dir, "lm_eval_version": lm_eval.__version__, "max_length": lm.max_length, "tasks": []}
    for name, limit, shots in SLICE:
        task, docs = slice_task(name, tasks_dir, data, tmp)
        entries, per_doc = score(lm, task, docs[:limit], shots, name)
        accs = [d["acc"] for d in per_doc]
        out["tasks"].append({"task": name, "limit": limit, "num_fewshot": shots, "acc": sum(accs) / len(accs),
                             "doc_acc": accs, "requests": entries})
    prompts = ["Question: Natalia sold clips to 48 of her friends in April. How many clips did she sell?\nAnswer:",
               "Once upon a time",
               "Question: What is 2 + 2?\nAnswer: 4\n\nQuestion: What is 3 + 5?\nAnswer:"]
    kwargs = {"until": ["Question:", "</s>", "<|im_end|>"], "max_gen_toks": 24, "do_sample": False, "temperature": 0.0}
    requests = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(kwargs)), idx=0) for p in prompts]
    out["generations"] = [{"context": p, "until": kwargs["until"], "max_gen_toks": kwargs["max_gen_toks"], "output": o}
                          for p, o in zip(prompts, lm.generate_until(requests))]
    with open(output, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
