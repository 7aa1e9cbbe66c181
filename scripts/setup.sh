#!/usr/bin/env bash
# One command for a new user: install dependencies, build, and run the main job on its built-in
# default (configs/demo.yaml: CPU when no GPU is present). Extra arguments go to mlr-train as
# key=value overrides, e.g. ./scripts/setup.sh train.steps=100
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
./scripts/build.sh
echo "== main job: mlr-train configs/demo.yaml (MultiLoRA on a tiny LLaMA, multi-task mixture) =="
./build/apps/mlr-train configs/demo.yaml "$@"
