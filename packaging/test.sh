#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sets everything up on a fresh Debian/Ubuntu machine and runs the whole test
# suite: installs missing packages, builds (Release, with the CUDA plugin
# where nvcc is found), runs ctest, then builds the unit tests with
# AddressSanitizer + UndefinedBehaviorSanitizer (without CUDA: the sanitizers
# check host code) and runs them again. Between the two, as root, it makes
# the .deb and .tar.gz packages of the Release build, installs them, and
# builds, installs, trains with and benchmarks the out-of-tree example plugin
# against them (packaging/package-check.sh), then removes the packages.
# CI runs exactly this (.ci/run).
# Without a GPU the GPU tests skip with a message; packaging/gpu-check.sh
# runs them on a GPU machine.
#
#   bash packaging/test.sh            # everything
#   NEOX_SKIP_SANITIZE=1 bash packaging/test.sh   # skip the sanitizer pass
#   NEOX_SKIP_PACKAGE=1 bash packaging/test.sh    # skip the package phase
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
bash packaging/install-deps.sh

echo "== build (Release) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
echo "== tests (Release) =="
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 900

if [ "${NEOX_SKIP_PACKAGE:-0}" != 1 ]; then
  echo "== packages (.deb, .tar.gz) and an out-of-tree plugin against them =="
  if [ "$(id -u)" -eq 0 ]; then
    bash packaging/package-check.sh --deb build
  else
    # Installing .deb files needs root; the ctest Install.OutOfTreePlugin
    # above ran the same checks against `cmake --install --prefix`.
    echo "not root: packages not built and installed (run packaging/package-check.sh --deb build as root)"
  fi
fi

if [ "${NEOX_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== build (Debug, ASan + UBSan) =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DNEOX_SANITIZE=ON -DNEOX_WITH_CUDA=OFF
  cmake --build build-asan -j"$jobs"
  echo "== tests (ASan + UBSan) =="
  # OpenBLAS and libgomp keep thread pools alive at exit; leaks in them are not ours.
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 1800
fi
