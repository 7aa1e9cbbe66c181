#!/usr/bin/env python3
"""Renders every labelled row of the shared MMLU / BoolQ / SuperGLUE files with lm-evaluation-harness
itself, for tests/eval/harness_crosscheck_test.cpp.

    pip install lm-eval            # 0.4.13 was used
    python3 scripts/eval/render_with_harness.py ../shared/data /tmp/harness_prompts.jsonl
    MLR_EVAL_HARNESS_PROMPTS=/tmp/harness_prompts.jsonl build/tests/test_eval -tc='*harness*'

The shared files are converted to the Hugging Face row layout the harness's YAMLs expect
(aps/super_glue, cais/mmlu; WSC with the span fixes of HF's super_glue.py `_fix_wst`, as wsc.fixed
has them) and loaded through the harness's own task YAMLs with dataset_path "json". Few-shot
settings: MMLU 5-shot (dev, first_n); boolq and cb 2-shot with the validation file as the train pool
(so the random sampler's n + 1 draw and eval-doc exclusion run); the rest 0-shot. One JSONL line per
row: {task, i, ctx, choices, gold}.
"""
import csv
import glob
import json
import logging
import os
import sys
import tempfile

from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml
import lm_eval

logging.disable(logging.WARNING)

SUPERGLUE = {  # harness task -> (shared folder, yaml folder)
    "boolq": ("boolq", "boolq"), "cb": ("superglue/CB", "cb"), "copa": ("superglue/COPA", "copa"),
    "multirc": ("superglue/MultiRC", "multirc"), "sglue_rte": ("superglue/RTE", "rte"),
    "wic": ("superglue/WiC", "wic"), "wsc": ("superglue/WSC", "wsc"),
}
SHOTS = {"boolq": 2, "cb": 2}


def as_bool(x):
    return 1 if x is True or str(x).lower() == "true" else 0


def fix_wst(ex):
    """Hugging Face super_glue.py _fix_wst (wsc.fixed)."""
    def fix(k):
        text, index = ex[k + "_text"], ex[k + "_index"]
        if text in ex["text"] or text in ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin"):
            return
        if "theyscold" in text:
            ex["span2_index"] = 10
        first_word = ex["text"].split()[index]
        text = (text[0].lower() if first_word[0].islower() else text[0].upper()) + text[1:]
        ex[k + "_text"] = text.rstrip(".").replace("\n", " ")
    fix("span1")
    fix("span2")
    return ex


def hf_rows(task, path):
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    if task == "boolq":
        return [dict(question=d["question"], passage=d["passage"], idx=d["idx"], label=as_bool(d["label"])) for d in rows]
    if task in ("cb", "sglue_rte"):
        names = ["entailment", "contradiction", "neutral"] if task == "cb" else ["entailment", "not_entailment"]
        return [dict(premise=d["premise"], hypothesis=d["hypothesis"], idx=d["idx"], label=names.index(d["label"])) for d in rows]
    if task == "copa":
        return [dict(premise=d["premise"], choice1=d["choice1"], choice2=d["choice2"], question=d["question"],
                     idx=d["idx"], label=int(d["label"])) for d in rows]
    if task == "wic":
        keys = ["word", "sentence1", "sentence2", "start1", "start2", "end1", "end2", "idx"]
        return [dict({k: d[k] for k in keys}, label=as_bool(d["label"])) for d in rows]
    if task == "multirc":
        return [dict(paragraph=d["passage"]["text"], question=q["question"], answer=a["text"], label=int(a["label"]))
                for d in rows for q in d["passage"]["questions"] for a in q["answers"]]
    if task == "wsc":
        return [fix_wst(dict(text=d["text"], span1_index=d["target"]["span1_index"], span2_index=d["target"]["span2_index"],
                             span1_text=d["target"]["span1_text"], span2_text=d["target"]["span2_text"], idx=d["idx"],
                             label=as_bool(d["label"]))) for d in rows]
    raise ValueError(task)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def make_task(yaml_path, files):
    cfg = dict(load_yaml(yaml_path))
    cfg.pop("tag", None)
    cfg.pop("dataset_name", None)
    cfg["dataset_path"] = "json"
    cfg["dataset_kwargs"] = {"data_files": files}
    task = ConfigurableTask(config=cfg)
    task.set_fewshot_seed(1234)
    return task


def emit(out, task, name, docs, shots):
    for i, doc in enumerate(docs):
        target = task.doc_to_target(doc)
        choices = task.doc_to_choice(doc)
        gold = target if isinstance(target, int) else choices.index(target)
        out.write(json.dumps(dict(task=name, i=i, ctx=task.fewshot_context(doc, shots), choices=choices, gold=gold)) + "\n")


def superglue_task(name, tasks_dir, data, tmp):
    """The harness's task over the shared validation file (also the few-shot pool), and its docs."""
    folder, yaml_folder = SUPERGLUE[name]
    path = os.path.join(tmp, name + ".jsonl")
    write_jsonl(path, hf_rows(name, os.path.join(data, folder, "val.jsonl")))
    task = make_task(os.path.join(tasks_dir, "super_glue", yaml_folder, "default.yaml"),
                     {"validation": path, "train": path})
    return task, list(task.validation_docs())


def mmlu_task(yaml_path, data, tmp):
    """An MMLU subject's task over the shared test (scored) and dev (few-shot) files, and its docs."""
    name = os.path.basename(yaml_path)[:-5]
    subject = name[len("mmlu_"):]
    files = {}
    for split in ("test", "dev"):
        csv_path = os.path.join(data, "mmlu", split, f"{subject}_{split}.csv")
        rows = [dict(question=r[0], subject=subject, choices=r[1:5], answer="ABCD".index(r[5]))
                for r in csv.reader(open(csv_path, newline="", encoding="utf-8"))]
        files[split] = os.path.join(tmp, f"{name}_{split}.jsonl")
        write_jsonl(files[split], rows)
    task = make_task(yaml_path, files)
    return task, list(task.test_docs())


def main():
    data, output = sys.argv[1], sys.argv[2]
    tasks_dir = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    tmp = tempfile.mkdtemp()
    with open(output, "w", encoding="utf-8") as out:
        for name in SUPERGLUE:
            task, docs = superglue_task(name, tasks_dir, data, tmp)
            emit(out, task, name, docs, SHOTS.get(name, 0))
        for yaml_path in sorted(glob.glob(os.path.join(tasks_dir, "mmlu", "default", "mmlu_*.yaml"))):
            task, docs = mmlu_task(yaml_path, data, tmp)
            emit(out, task, os.path.basename(yaml_path)[:-5], docs, 5)


if __name__ == "__main__":
    main()
