#!/bin/sh
# Kill one rank of a 2-rank run: the other must exit non-zero within the timeout (MLR_DIST_TIMEOUT)
# with a message naming the lost rank. Both ways: rank 1 killed (rank 0's collective fails), and
# rank 0 killed (rank 1 loses the rendezvous store rank 0 hosts).
# Usage: kill_rank_test.sh <mlr-train> <scratch dir>
set -eu
train=$1
dir=$2
timeout=5
rm -rf "$dir"
mkdir -p "$dir"
for victim in 1 0; do
  survivor=$((1 - victim))
  port=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
  for r in 0 1; do
    MLR_DIST_TIMEOUT=$timeout MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 RANK=$r LOCAL_RANK=$r \
      "$train" configs/demo.yaml train.steps=100000 eval.interval=0 save.interval=0 log.interval=1 \
      log.tensorboard=false data.packing.batch_rows=2 output_dir="$dir/run-$victim" --no-progress-bar \
      > "$dir/victim-$victim.rank-$r.log" 2>&1 &
    eval "pid$r=\$!"
  done
  # Wait until training runs (rank 0 logs its steps), then kill the victim.
  i=0
  until grep -q "step 3/" "$dir/victim-$victim.rank-0.log" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 600 ]; then echo "no training steps after 60 s"; cat "$dir/victim-$victim.rank-0.log"; exit 1; fi
    sleep 0.1
  done
  eval "kill -9 \$pid$victim"
  start=$(date +%s)
  status=0
  eval "wait \$pid$survivor" || status=$?
  elapsed=$(($(date +%s) - start))
  eval "wait \$pid$victim" || true
  log="$dir/victim-$victim.rank-$survivor.log"
  if [ $status -eq 0 ]; then echo "rank $survivor exited 0 after rank $victim was killed"; cat "$log"; exit 1; fi
  if [ $elapsed -gt $((timeout + 5)) ]; then echo "rank $survivor took $elapsed s to exit"; cat "$log"; exit 1; fi
  grep -q "rank $victim" "$log" || { echo "rank $survivor's message does not name rank $victim:"; cat "$log"; exit 1; }
  echo "rank $victim killed: rank $survivor exited with status $status after $elapsed s: $(grep -m1 "rank $victim" "$log")"
done
