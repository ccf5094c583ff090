#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job on a fresh Debian/Ubuntu machine: installs what is missing,
# builds neox, turns the license texts every Debian machine has into a
# dataset, trains the small default model (configs/tiny-cpu.toml) on the CPU
# for a few minutes, saves a checkpoint and prints a generated sample.
#
#   bash packaging/demo.sh                     # everything
#   bash packaging/demo.sh --set training.train_iters=100   # extra neox train options
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
bash packaging/install-deps.sh

echo "== build (Release) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$jobs"

echo "== data: /usr/share/common-licenses -> data/licenses_text_document =="
mkdir -p data
build/bin/neox preprocess --input /usr/share/common-licenses --output-prefix data/licenses --append-eod

echo "== train: configs/tiny-cpu.toml =="
# Run again, the demo continues its own run (a finished one has nothing left
# to do) instead of starting a second run into the same save directory,
# which neox refuses (docs/checkpoints.md).
resume=()
if [ -e checkpoints/tiny-cpu/latest ]; then resume=(--set training.load=checkpoints/tiny-cpu); fi
build/bin/neox train configs/tiny-cpu.toml ${resume[@]+"${resume[@]}"} "$@"

echo "== sample from checkpoints/tiny-cpu =="
build/bin/neox generate --model checkpoints/tiny-cpu --prompt "Permission is hereby granted" \
  --max-new-tokens 220 --temperature 0.8 --top-k 40 --seed 1
echo
