#!/bin/sh
# SIGTERM to one rank of a 2-rank run: the ranks agree at the end of the step (the stop flag is
# summed with the step's statistics), rank 0 saves a checkpoint, both exit with 130; the run then
# resumes from it on 2 ranks. Before its training loop (here: rank 1 waiting at the rendezvous for
# a rank 0 that never starts) a rank stopped by SIGTERM leaves at once with 143, as a launcher that
# stops its workers expects.
# Usage: sigterm_test.sh <mlr-train> <scratch dir>
set -eu
train=$1
dir=$2
rm -rf "$dir"
mkdir -p "$dir"
. "$(dirname "$0")/two_ranks.sh"
start_two_ranks "$train" "$dir/run" "$dir/run" 30
wait_for_step "$dir/run.rank-0.log" 2
kill -TERM "$pid1"
s0=0; s1=0
wait "$pid0" || s0=$?
wait "$pid1" || s1=$?
if [ $s0 -ne 130 ] || [ $s1 -ne 130 ]; then
  echo "exit statuses $s0 and $s1, expected 130 and 130"; cat "$dir/run.rank-0.log" "$dir/run.rank-1.log"; exit 1
fi
grep -q "stop requested: saving a checkpoint" "$dir/run.rank-0.log" || { cat "$dir/run.rank-0.log"; exit 1; }
step=$(ls "$dir/run/checkpoints" | sed -n 's/^step-//p' | sort -n | tail -1)
[ -n "$step" ] || { echo "no checkpoint"; exit 1; }
MLR_DIST_TIMEOUT=30 sh scripts/launch_cpu_ranks.sh 2 "$train" configs/demo.yaml train.steps=$((step + 2)) eval.interval=0 \
  save.interval=0 log.interval=1 log.tensorboard=false data.packing.batch_rows=2 output_dir="$dir/run" --resume \
  --no-progress-bar > "$dir/resume.log" 2>&1 || { cat "$dir/resume.log"; exit 1; }
grep -q "resumed from .*step-$step at step $step" "$dir/resume.log" || { cat "$dir/resume.log"; exit 1; }
grep -q "done: $((step + 2)) steps" "$dir/resume.log" || { cat "$dir/resume.log"; exit 1; }
echo "SIGTERM to rank 1 stopped both ranks at step $step (status 130), and the run resumed from there"
MASTER_ADDR=127.0.0.1 MASTER_PORT=$(sh scripts/random_port.sh) RANK=1 WORLD_SIZE=2 \
  MLR_DIST_TIMEOUT=60 "$train" configs/demo.yaml output_dir="$dir/alone" --no-progress-bar > "$dir/alone.log" 2>&1 &
alone=$!
sleep 1
kill -TERM "$alone"
t0=$(date +%s)
s=0
wait "$alone" || s=$?
t1=$(date +%s)
if [ $s -ne 143 ] || [ $((t1 - t0)) -gt 5 ]; then
  echo "a rank waiting at the rendezvous exited with $s after $((t1 - t0)) s of SIGTERM, expected 143 at once"
  cat "$dir/alone.log"; exit 1
fi
grep -q "stopped by a signal before training started" "$dir/alone.log" || { cat "$dir/alone.log"; exit 1; }
echo "SIGTERM at the rendezvous: exit 143 within $((t1 - t0)) s"
