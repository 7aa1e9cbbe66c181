# Shared by the dist shell tests (sourced): when a run on cuda is skipped (exit 77).
#
# need_gpus <n>: exits 77 on a machine whose nvidia-smi lists fewer than n GPUs: ranks on cuda take
# the GPU of their LOCAL_RANK, and NCCL refuses two ranks on one GPU. Without nvidia-smi (no driver:
# the emulated CUDA build's machines) the run goes on.
need_gpus() {
  if command -v nvidia-smi > /dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2> /dev/null | grep -c "^GPU" || true)
    if [ "$gpus" -lt "$1" ]; then
      echo "skipped: $1 ranks on cuda need $1 GPUs; nvidia-smi lists $gpus"
      exit 77
    fi
  fi
}

# no_gpu_in <log>...: true (and prints why) when a log says this build or machine has no GPU for
# the run, or no NCCL.
no_gpu_in() {
  line=$(grep -h -m1 "no such CUDA device\|has no CUDA backend\|needs NCCL, and this build has none" "$@" 2> /dev/null |
    head -1)
  [ -n "$line" ] && echo "skipped: $line"
}
