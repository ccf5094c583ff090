#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job on a fresh Debian/Ubuntu machine: installs what is missing,
# builds neox, turns the license texts every Debian machine has into a
# dataset, trains the small default model (configs/tiny-cpu.toml) on the CPU
# for a few minutes, saves a checkpoint and prints a generated sample. It
# builds only what it runs (the neox command and the four CPU plugins the
# run uses; `bash packaging/test.sh` builds the rest), and links `neox` into
# /usr/local/bin so that the README's commands run as written afterwards.
#
#   bash packaging/demo.sh                     # everything
#   bash packaging/demo.sh --set training.train_iters=100   # extra neox train options
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
bash packaging/install-deps.sh

echo "== build (Release): the neox command and the plugins of a CPU run =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$jobs" --target neox neox_backend_cpu neox_comm_local neox_optimizer_adamw neox_data_mmap

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

# `neox` on the PATH: a symbolic link /usr/local/bin/neox -> build/bin/neox
# (it always runs this build: rebuilding updates it). A neox found elsewhere
# on the PATH (an installed package), or a /usr/local/bin/neox that is not a
# link, is left alone.
target="$(pwd -P)/build/bin/neox"
link=/usr/local/bin/neox
current=$(command -v neox 2>/dev/null || true)
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo > /dev/null; then sudo "$@"; else return 1; fi; }
if [[ -n "$current" && "$(readlink -f "$current")" == "$target" ]]; then
  echo "neox is on your PATH: $current -> $target"
elif [[ -n "$current" && "$current" != "$link" ]]; then
  echo "note: 'neox' on your PATH is $current, not this build; this build's is $target"
elif [[ ! -e "$link" || -L "$link" ]] && as_root ln -sfn "$target" "$link"; then
  echo "neox is on your PATH: $link -> $target"
else
  echo "to type 'neox' as the README does: export PATH=\"$(dirname "$target"):\$PATH\""
fi
