# Shared by the dist shell tests (sourced): two ranks of an endless demo run started in the
# background, as torchrun would start them, and a wait for rank 0's training steps.

# start_two_ranks <mlr-train> <output dir> <log prefix> <timeout s>: sets pid0 and pid1; the logs are
# <log prefix>.rank-0.log and <log prefix>.rank-1.log. MLR_TEST_OVERRIDES: more overrides for both
# (model.device=cuda).
. "$(dirname "$0")/need_gpus.sh"

start_two_ranks() {
  port=$(sh scripts/random_port.sh)
  for r in 0 1; do
    MLR_DIST_TIMEOUT=$4 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 RANK=$r LOCAL_RANK=$r \
      "$1" configs/demo.yaml train.steps=100000 eval.interval=0 save.interval=0 log.interval=1 \
      log.tensorboard=false data.packing.batch_rows=2 output_dir="$2" ${MLR_TEST_OVERRIDES:-} --no-progress-bar \
      > "$3.rank-$r.log" 2>&1 &
    eval "pid$r=\$!"
  done
}

# wait_for_step <log> <step>: until rank 0 has logged that step (60 s at most). Exits 77 (skipped)
# when a rank found no GPU for itself or no NCCL in the build (runs with model.device=cuda).
wait_for_step() {
  i=0
  until grep -q "step $2/" "$1" 2>/dev/null; do
    if no_gpu_in "$1" "${1%.rank-0.log}.rank-1.log"; then
      kill "$pid0" "$pid1" 2> /dev/null || true
      exit 77
    fi
    i=$((i + 1))
    if [ $i -gt 600 ]; then echo "no training step $2 after 60 s"; cat "$1"; exit 1; fi
    sleep 0.1
  done
}
