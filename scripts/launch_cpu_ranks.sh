#!/bin/sh
# Launches N ranks of a command on this machine, as `torchrun --standalone --nproc_per_node N`
# would, without torchrun: every rank gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
# MASTER_ADDR (127.0.0.1) and MASTER_PORT (MASTER_PORT from the environment, else a random one).
# Rank 0's output passes through; the other ranks' stdout goes to $MLR_LAUNCH_LOG_DIR/rank-K.log
# when that is set (else it passes through too); stderr always passes through. Waits for every
# rank and exits with the first non-zero status (each rank's own watchdog ends it when a peer is
# lost, dist/process_group.h).
#
#   scripts/launch_cpu_ranks.sh 2 build-cpu/apps/mlr-train configs/demo.yaml data.packing.batch_rows=2
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 N command [args...]" >&2
  exit 2
fi
n=$1
shift
case $n in
  ''|*[!0-9]*|0) echo "$0: N must be a positive integer, got '$n'" >&2; exit 2 ;;
esac
if [ -z "${MASTER_PORT:-}" ]; then
  # A random port below the ephemeral range (rank 0 names the port in its error if it is taken).
  MASTER_PORT=$(sh "$(dirname "$0")/random_port.sh")
fi
export MASTER_ADDR=127.0.0.1 MASTER_PORT WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n
pids=""
rank=0
while [ $rank -lt "$n" ]; do
  if [ $rank -gt 0 ] && [ -n "${MLR_LAUNCH_LOG_DIR:-}" ]; then
    mkdir -p "$MLR_LAUNCH_LOG_DIR"
    RANK=$rank LOCAL_RANK=$rank "$@" > "$MLR_LAUNCH_LOG_DIR/rank-$rank.log" &
  else
    RANK=$rank LOCAL_RANK=$rank "$@" &
  fi
  pids="$pids $!"
  rank=$((rank + 1))
done
status=0
for pid in $pids; do
  if wait "$pid"; then :; else
    rc=$?
    [ $status -eq 0 ] && status=$rc
  fi
done
exit $status
