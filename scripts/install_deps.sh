#!/usr/bin/env bash
# Installs every build and test dependency with apt-get on a fresh Debian (12 or later) machine.
# The CUDA toolkit is not installed here: when nvcc is on PATH (or in /usr/local/cuda/bin) the
# CUDA backend is built too, otherwise the build is CPU-only.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config python3 \
  libopenblas-dev libopenblas-openmp-dev libomp-dev \
  doctest-dev libfmt-dev nlohmann-json3-dev libcli11-dev libyaml-cpp-dev \
  libzstd-dev libsentencepiece-dev \
  libgloo-dev openmpi-bin \
  clang libclang-rt-dev llvm  # scripts/fuzz.sh: clang with libFuzzer and the sanitizer runtimes, llvm-symbolizer
