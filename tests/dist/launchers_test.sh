#!/bin/sh
# mlr-train unchanged under the launchers users run: `mpirun -np 2` (Open MPI's OMPI_COMM_WORLD_*
# variables), `torchrun --nproc_per_node 2 --no-python` (its elastic agent holds MASTER_PORT with
# PyTorch's own store: ours must take another port) and, where a Slurm cluster answers `sinfo`,
# `srun -n 2`; each against 1 process with the whole batch.
# torchrun is PyTorch's, not a dependency: found on PATH or given as MLR_TORCHRUN, else its place
# is taken by torchrun's environment as its `env` shows it (TORCHELASTIC_USE_AGENT_STORE=True) with
# a listener holding MASTER_PORT as its agent does. A launcher that is not installed is named and
# left out; exit 77 (skipped) when neither mpirun nor python3 (for the stand-in) exists.
# Usage: launchers_test.sh <mlr-train> <dist_compare_runs> <scratch dir> <loss bound> <weight bound>
set -eu
train=$1
compare=$2
dir=$3
loss_bound=$4
weight_bound=$5
common="configs/demo.yaml train.steps=6 eval.interval=0 save.interval=0 log.interval=1 log.tensorboard=false --no-progress-bar"
rm -rf "$dir"
mkdir -p "$dir"
ran=""
check() {  # <name>: the launched run's log says 2 ranks of that launcher and it equals the single run
  grep -q "data parallel: 2 ranks x 2 rows per micro-batch ($2 launch)" "$dir/$1.log" || { echo "$1: not a 2-rank $2 run"; cat "$dir/$1.log"; exit 1; }
  "$compare" "$dir/one" "$dir/$1" "$loss_bound" "$weight_bound"
  ran="$ran $1"
}
# shellcheck disable=SC2086
"$train" $common data.packing.batch_rows=4 output_dir="$dir/one" > "$dir/one.log" 2>&1 || { cat "$dir/one.log"; exit 1; }

if command -v mpirun > /dev/null 2>&1; then
  # Open MPI refuses root without these (CI runs as root); --oversubscribe: 2 ranks on any core count.
  # shellcheck disable=SC2086
  if OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MLR_DIST_TIMEOUT=60 \
    mpirun -np 2 --oversubscribe "$train" $common data.packing.batch_rows=2 output_dir="$dir/mpirun" \
    > "$dir/mpirun.log" 2>&1; then
    check mpirun openmpi
  elif grep -q "resolved configuration" "$dir/mpirun.log"; then
    cat "$dir/mpirun.log"; exit 1  # mlr-train started under mpirun and failed
  else
    # Open MPI itself could not start processes on this machine (a container without what its
    # launcher needs): named, and left out.
    echo "mpirun could not start any process here: $(head -c 600 "$dir/mpirun.log")"
  fi
else
  echo "mpirun not found (Debian: openmpi-bin): its run is left out"
fi

if command -v srun > /dev/null 2>&1 && timeout 5 sinfo > /dev/null 2>&1; then
  # shellcheck disable=SC2086
  MLR_DIST_TIMEOUT=60 timeout 240 srun -n 2 --overcommit "$train" $common data.packing.batch_rows=2 output_dir="$dir/srun" \
    > "$dir/srun.log" 2>&1 || { cat "$dir/srun.log"; exit 1; }
  check srun slurm
else
  echo "no Slurm cluster answers sinfo: the srun run is left out"
fi

# A port that another job on this machine takes between our draw and our bind fails a run with
# "Address already in use" (rank 0 names the port; torchrun says "address already in use").
# retrying_on_taken_port <name> <command...>: runs the command (which draws its own ports) into
# $dir/<name>.log, again on fresh ports after such a failure, 3 tries at most; any other failure
# fails the test.
retrying_on_taken_port() {
  name=$1
  shift
  try=1
  until "$@" > "$dir/$name.log" 2>&1; do
    if grep -qi "address already in use" "$dir/$name.log" && [ $try -lt 3 ]; then
      echo "$name, try $try: a port was taken by another job; trying fresh ports"
      try=$((try + 1))
      rm -rf "${dir:?}/$name"
      continue
    fi
    cat "$dir/$name.log"
    exit 1
  done
}

run_torchrun() {
  # shellcheck disable=SC2086
  MLR_DIST_TIMEOUT=60 "$torchrun" --nproc_per_node 2 --master_port "$(sh scripts/random_port.sh 2)" --no-python \
    "$train" $common data.packing.batch_rows=2 output_dir="$dir/torchrun"
}

# torchrun's environment, with a listener holding MASTER_PORT as its agent does (its error, such
# as a taken port, goes to the run's log).
agent=""
run_torchrun_env() {
  port=$(sh scripts/random_port.sh 2)
  rm -f "$dir/agent.ready"
  python3 -c "
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', $port)); s.listen(16); open('$dir/agent.ready', 'w').close()
time.sleep(300)" &
  agent=$!
  i=0
  while [ ! -e "$dir/agent.ready" ] && [ $i -lt 100 ] && kill -0 $agent 2> /dev/null; do sleep 0.1; i=$((i + 1)); done
  if [ ! -e "$dir/agent.ready" ]; then
    echo "the stand-in for torchrun's agent did not take port $port"
    return 1
  fi
  status=0
  # shellcheck disable=SC2086
  MASTER_PORT=$port TORCHELASTIC_USE_AGENT_STORE=True TORCHELASTIC_RUN_ID=test MLR_DIST_TIMEOUT=60 \
    MLR_LAUNCH_LOG_DIR="$dir/logs" sh scripts/launch_cpu_ranks.sh 2 "$train" $common data.packing.batch_rows=2 \
    output_dir="$dir/torchrun_env" || status=$?
  kill $agent 2> /dev/null || true
  wait $agent 2> /dev/null || true
  return $status
}

torchrun=${MLR_TORCHRUN:-$(command -v torchrun || true)}
if [ -n "$torchrun" ]; then
  retrying_on_taken_port torchrun run_torchrun
  check torchrun torchrun
elif command -v python3 > /dev/null 2>&1; then
  echo "torchrun not found: its environment and a listener on MASTER_PORT stand in for it"
  trap 'if [ -n "$agent" ]; then kill $agent 2> /dev/null || true; fi' EXIT
  retrying_on_taken_port torchrun_env run_torchrun_env
  check torchrun_env torchrun
fi
if [ -z "$ran" ]; then
  echo "skipped: neither mpirun nor torchrun (nor python3 for its stand-in) is installed"
  exit 77
fi
echo "launched:$ran"
