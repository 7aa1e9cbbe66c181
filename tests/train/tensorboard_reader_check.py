#!/usr/bin/env python3
"""Reads the TensorBoard event file of an mlr-train run with TensorBoard's own Python reader and
checks the logged scalars against metrics.jsonl. Exit 77 (skipped) when tensorboard is not installed.
Usage: tensorboard_reader_check.py <output_dir>"""
import glob
import json
import sys

try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError:
    print("tensorboard is not installed: skipped")
    sys.exit(77)

out = sys.argv[1]
acc = EventAccumulator(glob.glob(out + "/tensorboard")[0])
acc.Reload()
loss = {e.step: e.value for e in acc.Scalars("train/loss")}
want = {}
with open(out + "/metrics.jsonl") as f:
    for line in f:
        r = json.loads(line)
        if "loss" in r:
            want[r["step"]] = r["loss"]
assert loss, "no train/loss scalars"
assert set(loss) == set(want), (sorted(loss), sorted(want))
for step, value in want.items():
    assert abs(loss[step] - value) <= 1e-6 * max(1.0, abs(value)), (step, loss[step], value)
print(f"tensorboard reader: {len(loss)} train/loss scalars match metrics.jsonl")
