#!/usr/bin/env bash
# Builds everything and runs every test suite with ctest. CUDA suites (label "cuda") report
# "skipped" on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
