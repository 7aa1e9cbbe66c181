# Shared by the dist shell tests (sourced). need_gpus <n>: exit 77 (skipped) on a machine whose
# nvidia-smi lists fewer than n GPUs: ranks on cuda take the GPU of their LOCAL_RANK, and NCCL
# refuses two ranks on one GPU. Without nvidia-smi (no driver: the emulated CUDA build's machines)
# the run goes on.
need_gpus() {
  if command -v nvidia-smi > /dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2> /dev/null | grep -c "^GPU" || true)
    if [ "$gpus" -lt "$1" ]; then
      echo "skipped: $1 ranks on cuda need $1 GPUs; nvidia-smi lists $gpus"
      exit 77
    fi
  fi
}
