#!/bin/sh
# SIGTERM during training: mlr-train saves a checkpoint after the current step and exits with 130;
# --resume then continues from that checkpoint.
# Usage: sigterm_test.sh <mlr-train> <scratch dir>   (run from the repository root)
set -eu
train=$1
dir=$2
# The logs sit beside the directory: a stale one would be read as this run's first step.
rm -rf "$dir" "$dir.log" "$dir.resume.log" "$dir.kill9.log"
"$train" configs/demo.yaml output_dir="$dir" train.steps=100000 save.interval=0 --no-progress-bar > "$dir.log" 2>&1 &
pid=$!
# Wait for the first logged step, then ask it to stop.
for i in $(seq 1 200); do
  grep -q "^step " "$dir.log" 2>/dev/null && break
  sleep 0.2
done
kill -TERM $pid
rc=0
wait $pid || rc=$?
if [ $rc -ne 130 ]; then echo "exit code $rc, expected 130"; cat "$dir.log"; exit 1; fi
grep -q "stop requested: saving a checkpoint" "$dir.log"
ls "$dir"/checkpoints/step-*/trainer_state.json > /dev/null
"$train" configs/demo.yaml output_dir="$dir" train.steps=100000 save.interval=0 --no-progress-bar --resume > "$dir.resume.log" 2>&1 &
pid=$!
for i in $(seq 1 200); do
  grep -q "^step " "$dir.resume.log" 2>/dev/null && break
  sleep 0.2
done
kill -INT $pid
rc=0
wait $pid || rc=$?
grep -q "resumed from" "$dir.resume.log"
[ $rc -eq 130 ] || { echo "resume run: exit code $rc"; exit 1; }
# kill -9 while checkpoints are being written (one per step): the newest complete checkpoint must
# still load. Several kills at different moments, so some land inside a write.
for delay in 0.3 0.7 1.1; do
  "$train" configs/demo.yaml output_dir="$dir" train.steps=100000 save.interval=1 save.keep_last=2 --no-progress-bar --resume > "$dir.kill9.log" 2>&1 &
  pid=$!
  for i in $(seq 1 200); do
    grep -q "^step " "$dir.kill9.log" 2>/dev/null && break
    sleep 0.1
  done
  sleep $delay
  kill -9 $pid
  wait $pid || true
done
"$train" configs/demo.yaml output_dir="$dir" train.steps=100000 save.interval=0 --no-progress-bar --resume > "$dir.after_kill9.log" 2>&1 &
pid=$!
for i in $(seq 1 200); do
  grep -q "^step " "$dir.after_kill9.log" 2>/dev/null && break
  sleep 0.2
done
kill -TERM $pid
wait $pid || true
grep -q "resumed from" "$dir.after_kill9.log" || { echo "no resume after kill -9:"; cat "$dir.after_kill9.log"; exit 1; }
echo "SIGTERM and SIGINT saved checkpoints; resume picked them up, also after kill -9 during checkpoint writes"
