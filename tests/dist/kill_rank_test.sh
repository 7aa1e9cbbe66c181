#!/bin/sh
# Kill one rank of a 2-rank run: the other must exit non-zero within the timeout (MLR_DIST_TIMEOUT)
# with a message naming the lost rank. Both ways: rank 1 killed (rank 0's collective fails), and
# rank 0 killed (rank 1 loses the rendezvous store rank 0 hosts).
# Usage: kill_rank_test.sh <mlr-train> <scratch dir>
set -eu
train=$1
dir=$2
timeout=5
. "$(dirname "$0")/two_ranks.sh"
case " ${MLR_TEST_OVERRIDES:-} " in
  *" model.device=cuda "*) need_gpus 2 ;;
esac
rm -rf "$dir"
mkdir -p "$dir"
for victim in 1 0; do
  survivor=$((1 - victim))
  start_two_ranks "$train" "$dir/run-$victim" "$dir/victim-$victim" $timeout
  wait_for_step "$dir/victim-$victim.rank-0.log" 3  # training runs: kill the victim
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
