#!/bin/sh
# SIGTERM to one rank of a 2-rank run: the ranks agree at the end of the step (the stop flag is
# summed with the step's statistics), rank 0 saves a checkpoint, both exit with 130; the run then
# resumes from it on 2 ranks.
# Usage: sigterm_test.sh <mlr-train> <scratch dir>
set -eu
train=$1
dir=$2
rm -rf "$dir"
mkdir -p "$dir"
port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
for r in 0 1; do
  MLR_DIST_TIMEOUT=30 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 RANK=$r LOCAL_RANK=$r \
    "$train" configs/demo.yaml train.steps=100000 eval.interval=0 save.interval=0 log.interval=1 log.tensorboard=false \
    data.packing.batch_rows=2 output_dir="$dir/run" --no-progress-bar > "$dir/rank-$r.log" 2>&1 &
  eval "pid$r=\$!"
done
i=0
until grep -q "step 2/" "$dir/rank-0.log" 2>/dev/null; do
  i=$((i + 1))
  if [ $i -gt 600 ]; then echo "no training steps after 60 s"; cat "$dir/rank-0.log"; exit 1; fi
  sleep 0.1
done
kill -TERM "$pid1"
s0=0; s1=0
wait "$pid0" || s0=$?
wait "$pid1" || s1=$?
if [ $s0 -ne 130 ] || [ $s1 -ne 130 ]; then
  echo "exit statuses $s0 and $s1, expected 130 and 130"; cat "$dir/rank-0.log" "$dir/rank-1.log"; exit 1
fi
grep -q "stop requested: saving a checkpoint" "$dir/rank-0.log" || { cat "$dir/rank-0.log"; exit 1; }
step=$(ls "$dir/run/checkpoints" | sed -n 's/^step-//p' | sort -n | tail -1)
[ -n "$step" ] || { echo "no checkpoint"; exit 1; }
MLR_DIST_TIMEOUT=30 sh scripts/launch_cpu_ranks.sh 2 "$train" configs/demo.yaml train.steps=$((step + 2)) eval.interval=0 \
  save.interval=0 log.interval=1 log.tensorboard=false data.packing.batch_rows=2 output_dir="$dir/run" --resume \
  --no-progress-bar > "$dir/resume.log" 2>&1 || { cat "$dir/resume.log"; exit 1; }
grep -q "resumed from .*step-$step at step $step" "$dir/resume.log" || { cat "$dir/resume.log"; exit 1; }
grep -q "done: $((step + 2)) steps" "$dir/resume.log" || { cat "$dir/resume.log"; exit 1; }
echo "SIGTERM to rank 1 stopped both ranks at step $step (status 130), and the run resumed from there"
