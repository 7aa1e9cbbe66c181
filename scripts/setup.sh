#!/usr/bin/env bash
# One command for a new user: install dependencies, build, and run the main job on its built-in
# default (CPU when no GPU is present).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
./scripts/build.sh
echo "== main job: examples/mlp_regression (autograd + SGD on a synthetic regression) =="
./build/examples/mlp_regression
