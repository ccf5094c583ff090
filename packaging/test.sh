#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sets everything up on a fresh Debian/Ubuntu machine and runs the whole test
# suite: installs missing packages, builds (Release, with the CUDA plugin
# where nvcc is found), runs ctest, then builds the unit tests with
# AddressSanitizer + UndefinedBehaviorSanitizer (without CUDA: the sanitizers
# check host code) and runs them again. CI runs exactly this (.ci/run).
# Without a GPU the GPU tests skip with a message; packaging/gpu-check.sh
# runs them on a GPU machine.
#
#   bash packaging/test.sh            # everything
#   NEOX_SKIP_SANITIZE=1 bash packaging/test.sh   # skip the sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
bash packaging/install-deps.sh

echo "== build (Release) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
echo "== tests (Release) =="
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 900

if [ "${NEOX_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== build (Debug, ASan + UBSan) =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DNEOX_SANITIZE=ON -DNEOX_WITH_CUDA=OFF
  cmake --build build-asan -j"$jobs"
  echo "== tests (ASan + UBSan) =="
  # OpenBLAS and libgomp keep thread pools alive at exit; leaks in them are not ours.
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 1800
fi
