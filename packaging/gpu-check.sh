#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The GPU check: builds neox with the cuda backend, then, on a machine with an
# NVIDIA GPU, runs the GPU tests, compute-sanitizer and the benchmarks, and
# prints a summary table last.
#
#   bash packaging/gpu-check.sh prepare   # build build-gpu (Release, CUDA) and stage
#                                         # .gpu/ for a GPU machine without the build deps
#   bash packaging/gpu-check.sh run       # on the GPU machine, from the repository root
#   bash packaging/gpu-check.sh           # both in sequence (a machine with a GPU and
#                                         # the build dependencies)
#
# prepare: configures and builds build-gpu (NEOX_WITH_CUDA=ON,
# NEOX_CUDA_ARCHITECTURES=90 unless set), then stages under .gpu/ (ignored by
# git) everything `run` needs besides the tracked tree: .gpu/build (the
# binaries, libneox, the plugins and the test plugins, stripped),
# .gpu/carry-lib.tar.xz (every shared library they need beyond glibc,
# libstdc++, libgcc and the CUDA toolkit: spdlog, fmt, Boost, OpenBLAS and its
# Fortran runtime, libgomp; also left unpacked in build-gpu/carry-lib) and
# .gpu/testdata (the part of ../shared/testdata the GPU tests read:
# GPU_TESTDATA). It prints the size of what
# must travel (the tree plus .gpu) and fails above 64 MiB.
#
# run: expects .gpu (or build-gpu) and runs, each phase under its own time
# limit within a total budget (GPU_CHECK_BUDGET seconds, default 540), the
# phases of GPU_CHECK_PHASES (default: all, in this order):
#   env, libs    nvidia-smi, compute-sanitizer, `neox plugins`; every binary
#                and plugin finds its shared libraries (always run)
#   kernels      the kernel conformance suite (tests/unit/test_kernels.cpp) on cuda
#   cuda-backend tests/gpu/test_cuda_backend.cpp
#   bench-160m, bench-1.4b  `neox bench train --profile` on
#                configs/bench/pythia-160m-cuda.toml (micro-batch 16, else 8)
#                and pythia-1.4b-cuda.toml (8, else 4): tokens/s, MFU, peak
#                memory and the per-op table with floors from the card's
#                measured copy bandwidth and GEMM rate
#   baseline-160m, baseline-1.4b, baseline-160m-compile
#                packaging/bench/pytorch_baseline.py (PyTorch + transformers)
#                on the same card
#   gpu-model    tests/gpu/test_gpu_model.cpp (HF oracle fp32/bf16/f16, 200-step
#                training vs CPU, activation checkpointing)
#   attention-check  tests/cuda-emulation/attention_check.cpp built with nvcc,
#                quick mode: both attention paths against float64, long rows,
#                and timings
#   bench-160m-simt  bench-160m with attention_tensor_cores = false (A/B)
#   bench-160m-ckpt, bench-fp32  activation checkpointing; fp32 (micro-batch 4)
#   comm-nccl    tests/gpu/test_comm_nccl.cpp (the nccl comm plugin: every
#                collective on one rank, two processes over the TCP bootstrap,
#                mpirun when present, a dead peer; the TCP rendezvous; ZeRO-3
#                with overlap and prefetch trained by two processes on the GPU
#                against one)
#   ops          `neox bench op` matmul and attention_forward bf16, cuda vs cpu
#   memcheck, racecheck  compute-sanitizer on a reduced kernel suite plus the
#                small HF oracle (skipped where compute-sanitizer is missing or
#                does not support the device)
# Logs go to $OUT (default .gpu/out), at most 8 files. A test phase in which
# tests skipped shows WARN (FAIL when as many skipped as passed: the GPU was
# not used). The exit status is non-zero when a test phase (libs, the three
# test phases, the sanitizers) failed or timed out (a sanitizer that times
# out only reports); benchmarks only report.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

BUILD=${NEOX_GPU_BUILD_DIR:-build-gpu}
ARCH=${NEOX_CUDA_ARCHITECTURES:-90}
STAGE=.gpu
LIMIT_MIB=64

die() {
  echo "gpu-check: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------
# prepare

# Libraries the GPU machine has itself (or must take from its own driver and
# toolkit): never carried.
is_system_lib() {
  case "$1" in
    linux-vdso.so* | ld-linux*.so* | libc.so.* | libm.so.* | libstdc++.so.* | libgcc_s.so.* | \
      libpthread.so.* | libdl.so.* | librt.so.* | libutil.so.* | libresolv.so.* | \
      libcuda.so.* | libnvidia-*.so* | libcudart.so.* | libcublas*.so.* | libneox.so.*)
      return 0 ;;
  esac
  return 1
}

prepare() {
  local jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] ||
    die "prepare: nvcc not found (install the CUDA toolkit or put nvcc on PATH)"
  if ! command -v nvcc >/dev/null 2>&1; then export PATH=/usr/local/cuda/bin:$PATH; fi

  echo "== prepare: configure $BUILD (Release, NEOX_WITH_CUDA=ON, architectures $ARCH) =="
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DNEOX_WITH_CUDA=ON \
    -DNEOX_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" >"$BUILD.configure.log" 2>&1 ||
    { tail -30 "$BUILD.configure.log"; die "prepare: configure failed (log: $BUILD.configure.log)"; }
  rm -f "$BUILD.configure.log"
  echo "== prepare: build ($jobs jobs) =="
  cmake --build "$BUILD" -j"$jobs" || die "prepare: build failed"
  [ -f "$BUILD/plugins/neox_backend_cuda.so" ] || die "prepare: $BUILD/plugins/neox_backend_cuda.so was not built"
  [ -x "$BUILD/bin/neox_tests" ] || die "prepare: $BUILD/bin/neox_tests was not built"

  # The CUDA attention kernels' own check (the same source the CPU build runs
  # under an emulation, ctest CudaAttentionEmulation.*), built for the device.
  local attn_src=tests/cuda-emulation/attention_check.cpp
  rm -f "$BUILD/bin/attention_check"
  if [ -f "$attn_src" ]; then
    echo "== prepare: $attn_src with nvcc -> $BUILD/bin/attention_check =="
    local -a gencode=()
    local a
    for a in ${ARCH//;/ }; do gencode+=("-gencode=arch=compute_$a,code=sm_$a"); done
    # shellcheck disable=SC2016  # $ORIGIN is for the linker
    nvcc -x cu -std=c++20 -O2 "${gencode[@]}" -I core/include -I plugins/backend-cuda "$attn_src" \
      -L "$BUILD/lib" -lneox -Xlinker -rpath -Xlinker '$ORIGIN/../lib' -o "$BUILD/bin/attention_check" ||
      { echo "prepare: warning: $attn_src did not build; the run skips it"; rm -f "$BUILD/bin/attention_check"; }
  fi

  # The binaries that travel.
  local -a files=("$BUILD/bin/neox" "$BUILD/bin/neox_tests" "$BUILD/lib/libneox.so.0")
  [ -x "$BUILD/bin/neox_nccl_collectives_check" ] && files+=("$BUILD/bin/neox_nccl_collectives_check")
  local f
  for f in "$BUILD"/plugins/*.so "$BUILD"/tests/plugins/*.so; do files+=("$f"); done

  echo "== prepare: shared libraries beyond the system's -> $BUILD/carry-lib =="
  rm -rf "$BUILD/carry-lib"
  mkdir -p "$BUILD/carry-lib"
  local name path
  while read -r name path; do
    is_system_lib "$name" && continue
    case "$path" in /usr/local/cuda* | "$ROOT/$BUILD"/* | "$BUILD"/*) continue ;; esac
    [ -f "$BUILD/carry-lib/$name" ] && continue
    cp -L "$path" "$BUILD/carry-lib/$name" || die "prepare: cannot copy $path"
    printf '  %-36s %8s KiB  (%s)\n' "$name" "$(($(stat -c %s "$BUILD/carry-lib/$name") / 1024))" "$path"
  done < <(for f in "${files[@]}"; do ldd "$f" 2>/dev/null; done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u)
  if for f in "${files[@]}"; do ldd "$f" 2>/dev/null; done | grep -q "not found"; then
    for f in "${files[@]}"; do ldd "$f" 2>/dev/null | sed "s|^|$f: |"; done | grep "not found"
    die "prepare: some libraries are not found here"
  fi

  echo "== prepare: stage $STAGE/ =="
  rm -rf "$STAGE/build" "$STAGE/testdata" "$STAGE/carry-lib" "$STAGE/carry-lib.tar.gz" "$STAGE/carry-lib.tar.xz" "$STAGE/out"
  mkdir -p "$STAGE/build/bin" "$STAGE/build/lib" "$STAGE/build/plugins" "$STAGE/build/tests/plugins"
  cp -L "$BUILD/bin/neox" "$BUILD/bin/neox_tests" "$STAGE/build/bin/"
  [ -x "$BUILD/bin/attention_check" ] && cp -L "$BUILD/bin/attention_check" "$STAGE/build/bin/"
  # The nccl plugin's collectives check (built with the plugin, where NCCL was found).
  [ -x "$BUILD/bin/neox_nccl_collectives_check" ] &&
    cp -L "$BUILD/bin/neox_nccl_collectives_check" "$STAGE/build/bin/"
  cp -L "$BUILD/lib/libneox.so.0" "$STAGE/build/lib/"
  cp -L "$BUILD"/plugins/*.so "$STAGE/build/plugins/"
  cp -L "$BUILD"/tests/plugins/*.so "$STAGE/build/tests/plugins/"  # deliberately broken: not stripped
  strip --strip-unneeded "$STAGE"/build/bin/* "$STAGE"/build/lib/* "$STAGE"/build/plugins/*.so ||
    die "prepare: strip failed"
  # xz: ICU's data library alone is 31 MB, 7 MB packed; the carry limit is 64 MiB.
  tar -C "$BUILD" -cf - carry-lib | xz -9 -T0 >"$STAGE/carry-lib.tar.xz"
  # Only the test data the GPU phases read (../shared/testdata holds the
  # references of every issue and keeps growing: 37 MB of it would not fit
  # the 64 MiB carry). A GPU test that reads more adds it here.
  local testdata=${NEOX_TESTDATA_SRC:-../shared/testdata}
  local -a gpu_testdata=(${GPU_TESTDATA:-README.md hf/neox_tiny_parallel hf/neox_tiny_sequential megatron})
  [ -d "$testdata/hf" ] || die "prepare: no test data at $testdata (set NEOX_TESTDATA_SRC)"
  mkdir -p "$STAGE/testdata"
  local item
  for item in "${gpu_testdata[@]}"; do
    [ -e "$testdata/$item" ] || die "prepare: no $testdata/$item (GPU_TESTDATA)"
    mkdir -p "$STAGE/testdata/$(dirname "$item")"
    cp -rL "$testdata/$item" "$STAGE/testdata/$item"
  done
  chmod -R u+w "$STAGE/testdata"

  # What travels: tracked and untracked-but-not-ignored files, plus .gpu.
  local tree stage total
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  stage=$(du -sb "$STAGE" | cut -f1)
  total=$((tree + stage))
  echo "== prepare: sizes =="
  du -sh "$STAGE"/build "$STAGE"/carry-lib.tar.xz "$STAGE"/testdata | sed 's/^/  /'
  mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
  printf '  %-47s %6s MiB\n' "working tree (tracked + untracked, not ignored)" "$(mib "$tree")"
  printf '  %-47s %6s MiB\n' "$STAGE (carry it)" "$(mib "$stage")"
  printf '  %-47s %6s MiB (limit %d MiB)\n' "total" "$(mib "$total")" "$LIMIT_MIB"
  [ "$total" -lt $((LIMIT_MIB * 1048576)) ] || die "prepare: $total bytes to carry, over $LIMIT_MIB MiB"
  echo "prepare: done. On the GPU machine, from the repository root, with '$STAGE' carried:"
  echo "  bash packaging/gpu-check.sh run"
}

# ---------------------------------------------------------------------------
# run

now() { date +%s; }

# Phase bookkeeping: one row per phase for the summary.
declare -a P_NAME=() P_STATUS=() P_TIME=() P_NOTE=() P_COUNTS=()
record() {  # name status seconds counts(0/1: counts for the exit status) note
  P_NAME+=("$1")
  P_STATUS+=("$2")
  P_TIME+=("$3")
  P_COUNTS+=("$4")
  P_NOTE+=("$5")
  printf -- '-- %s: %s (%ss) %s\n' "$1" "$2" "$3" "$5"
}

# Seconds a phase may take: its own limit, within what is left of the budget.
phase_limit() {
  local want=$1 left
  left=$((DEADLINE - $(now) - 10))
  ((left < want)) && want=$left
  echo "$want"
}

# run_logged LIMIT LOG CMD...: appends the command's output to LOG; returns
# its exit status (124 on timeout).
run_logged() {
  local limit=$1 log=$2
  shift 2
  {
    echo
    echo "### $(date -u +%H:%M:%S) (limit ${limit}s): $*"
  } >>"$log"
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
}

# gtest filter of every suite defined in the given test sources.
filter_for() {
  local suites s filter=""
  suites=$(grep -hoE '^[[:space:]]*(TEST|TEST_F|TEST_P|TYPED_TEST|TYPED_TEST_P)\([[:space:]]*[A-Za-z0-9_]+' "$@" |
    sed -E 's/.*\([[:space:]]*//' | sort -u)
  for s in $suites; do filter+="${filter:+:}$s.*:*/$s.*"; done
  echo "$filter"
}

# "P passed, F failed, S skipped" from the last gtest run in LOG.
gtest_counts() {
  local log=$1 passed failed skipped
  passed=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | tail -1 | awk '{print $4}')
  failed=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | tail -1 | awk '{print $4}')
  skipped=$(grep -E '^\[  SKIPPED \] [0-9]+ test' "$log" | tail -1 | awk '{print $4}')
  echo "${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
}

# test_phase NAME MAXSECONDS SOURCE [ENV=VALUE...]: runs the suites of SOURCE.
test_phase() {
  local name=$1 max=$2 src=$3
  shift 3
  local log="$OUT/tests-$name.log" limit t0 rc status counts
  if [ ! -f "$src" ]; then
    record "$name" SKIP 0 1 "$src not in this tree"
    return
  fi
  limit=$(phase_limit "$max")
  if ((limit < 15)); then
    record "$name" SKIP 0 1 "no time left in the budget"
    return
  fi
  echo "== $name: $src (limit ${limit}s) =="
  t0=$(now)
  run_logged "$limit" "$log" env "$@" "$BIN/neox_tests" --gtest_color=no --gtest_print_time=1 \
    --gtest_filter="$(filter_for "$src")"
  rc=$?
  counts=$(gtest_counts "$log")
  case $rc in
    0) status=PASS ;;
    124 | 137) status=TIMEOUT ;;
    *) status=FAIL ;;
  esac
  # On the GPU machine nothing should skip: a few skips are worth a look
  # (WARN), more skips than passes mean the GPU was not used (FAIL).
  local passed skipped
  passed=$(echo "$counts" | awk '{print $1}')
  skipped=$(echo "$counts" | awk '{print $5}')
  if [ "$status" = PASS ] && [ "${passed:-0}" -eq 0 ] && [ "${skipped:-0}" -eq 0 ]; then
    status=FAIL counts="no test ran"
  elif [ "$status" = PASS ] && [ "${skipped:-0}" -gt 0 ]; then
    if [ "$skipped" -ge "$passed" ]; then status=FAIL; else status=WARN; fi
    echo "   skipped: $(grep -E '^\[  SKIPPED \] [A-Za-z]' "$log" | sed 's/^\[  SKIPPED \] //' | head -5 | tr '\n' ' ')"
    grep -B1 -E '^\[  SKIPPED \] [A-Za-z].*\([0-9]+ ms\)' "$log" | grep -vE '^\[|^--' | sort | uniq -c | sort -rn |
      head -3 | sed 's/^/   reason: /'
  fi
  if [ "$status" != PASS ]; then
    grep -E '^\[  FAILED  \]|Failure$|error:|Expected|Which is|actual' "$log" | tail -25 | sed 's/^/   /'
    [ $rc -ne 1 ] && tail -8 "$log" | sed 's/^/   | /'
  fi
  record "$name" "$status" $(($(now) - t0)) 1 "$counts (rc $rc)"
}

# The CUDA attention kernels' standalone check, when prepare could build it.
attention_check() {
  local log="$OUT/tests-cuda-backend.log" limit t0 rc part before
  if [ ! -x "$BIN/attention_check" ]; then
    record attention-check SKIP 0 1 "not built (tests/cuda-emulation/attention_check.cpp)"
    return
  fi
  limit=$(phase_limit 90)
  if ((limit < 15)); then
    record attention-check SKIP 0 1 "no time left in the budget"
    return
  fi
  echo "== attention-check: tests/cuda-emulation/attention_check.cpp on the GPU (limit ${limit}s) =="
  t0=$(now)
  before=$(wc -l <"$log")
  run_logged "$limit" "$log" "$BIN/attention_check" quick
  rc=$?
  part=$(tail -n +"$((before + 1))" "$log")
  echo "$part" | grep -E '^bench|FAIL' | head -8 | sed 's/^/   /'
  if [ $rc -eq 0 ] && echo "$part" | grep -q "ALL PASSED"; then
    record attention-check PASS $(($(now) - t0)) 1 "$(echo "$part" | grep -c '^bench') timings in tests-cuda-backend.log"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    record attention-check TIMEOUT $(($(now) - t0)) 1 ""
  else
    record attention-check FAIL $(($(now) - t0)) 1 \
      "rc $rc: $(echo "$part" | grep -v '^###' | grep -E 'FAIL|error|Error' | tail -1 | cut -c1-100)"
  fi
}

# sanitizer_phase TOOL MAXSECONDS FILTER
sanitizer_phase() {
  local tool=$1 max=$2 filter=$3
  local log="$OUT/sanitizer.log" limit t0 rc status note
  if [ -z "$SANITIZER" ]; then
    record "$tool" SKIP 0 1 "compute-sanitizer not found"
    return
  fi
  limit=$(phase_limit "$max")
  if ((limit < 20)); then
    record "$tool" SKIP 0 1 "no time left in the budget"
    return
  fi
  echo "== $tool: compute-sanitizer on the reduced suite (limit ${limit}s) =="
  local before
  before=$(wc -l <"$log")
  t0=$(now)
  run_logged "$limit" "$log" env NEOX_TEST_BACKENDS=cuda "$SANITIZER" --tool "$tool" --error-exitcode 86 \
    --print-limit 20 "$BIN/neox_tests" --gtest_color=no --gtest_filter="$filter"
  rc=$?
  local part
  part=$(tail -n +"$((before + 1))" "$log")
  note=$(echo "$part" | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' | tail -1 | sed 's/^=* *//')
  case $rc in
    0) status=PASS ;;
    86) status=FAIL ;;
    124 | 137) status=TIMEOUT note="timed out (not counted as a failure)${note:+; $note}" ;;
    *)
      if echo "$part" | grep -qiE 'not supported|unsupported|device not supported|Unable to|Error: Target application terminated before'; then
        status=SKIP note="compute-sanitizer could not run here: $(echo "$part" | grep -iE 'not supported|unsupported|Unable to|Error:' | head -1 | sed 's/^=* *//')"
      else
        status=FAIL note="tests failed under the sanitizer${note:+; $note}"
      fi
      ;;
  esac
  if [ "$status" = FAIL ]; then
    echo "$part" | grep -E '^=+ +(Invalid|Race|Error|ERROR|Warning)|^\[  FAILED  \]|at 0x|in .*\(' | head -25 | sed 's/^/   /'
  fi
  local counts=1
  [ "$status" = TIMEOUT ] && counts=0
  record "$tool" "$status" $(($(now) - t0)) "$counts" "${note:-rc $rc}"
}

# bench_train NAME MAXSECONDS CONFIG MB FALLBACK_MB [--set k=v...]: `neox bench
# train --profile` (tokens/s, MFU, peak memory, then the per-op table).
bench_train() {
  local name=$1 max=$2 config=$3 mb=$4 fallback=$5
  shift 5
  local log="$OUT/bench.log" limit t0 rc status note used=$mb
  if [ ! -f "$config" ]; then
    record "$name" SKIP 0 0 "$config not in this tree"
    return
  fi
  limit=$(phase_limit "$max")
  if ((limit < 20)); then
    record "$name" SKIP 0 0 "no time left in the budget"
    return
  fi
  echo "== $name: neox bench train $config, micro-batch $mb $* (limit ${limit}s) =="
  t0=$(now)
  local before
  before=$(wc -l <"$log")
  local -a cmd=("$BIN/neox" bench train --config "$config" --steps 8 --warmup 3 --profile --profile-rows 30
    --mem-gbs "$MEM_GBS" --gemm-tflops "$GEMM_TFLOPS")
  run_logged "$limit" "$log" "${cmd[@]}" --set training.train_micro_batch_size_per_gpu="$mb" "$@"
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ] && [ -n "$fallback" ]; then
    echo "   micro-batch $mb failed (rc $rc): $(tail -n +"$((before + 1))" "$log" | grep -iE 'error|memory' | head -1)"
    limit=$(phase_limit $((max - ($(now) - t0))))
    if ((limit >= 20)); then
      used=$fallback
      before=$(wc -l <"$log")
      run_logged "$limit" "$log" "${cmd[@]}" --set training.train_micro_batch_size_per_gpu="$fallback" "$@"
      rc=$?
    fi
  fi
  local part tps mfu mem step loss
  part=$(tail -n +"$((before + 1))" "$log")
  tps=$(echo "$part" | awk '/^throughput:/ {print $2}' | tail -1)
  mfu=$(echo "$part" | awk '/^MFU:/ {print $2}' | tail -1)
  mem=$(echo "$part" | awk '/^memory:/ {print $3}' | tail -1)
  step=$(echo "$part" | awk '/^step:/ {print $2}' | tail -1)
  loss=$(echo "$part" | awk '/^final loss:/ {print $3}' | tail -1)
  case $rc in
    0) status=PASS ;;
    124 | 137) status=TIMEOUT ;;
    *) status=FAIL ;;
  esac
  if [ -n "$tps" ]; then
    note="$tps tokens/s, MFU ${mfu:-?}, peak ${mem:-?} GiB, step ${step:-?} ms, mb $used, loss ${loss:-?}"
    echo "$part" | grep -E '^(forward|backward|optimizer|step|throughput|MFU|memory|profile|by op):' | cut -c1-400 |
      sed 's/^/   /'
  else
    note="no throughput line (rc $rc): $(echo "$part" | grep -iE 'error' | head -1 | cut -c1-150)"
    echo "$part" | tail -6 | sed 's/^/   | /'
  fi
  record "$name" "$status" $(($(now) - t0)) 0 "$note"
}

# baseline NAME MAXSECONDS SHAPE [--compile]: packaging/bench/pytorch_baseline.py
# (PyTorch + transformers GPTNeoXForCausalLM) on this machine.
baseline() {
  local name=$1 max=$2 shape=$3
  shift 3
  local log="$OUT/bench.log" limit t0 rc part before note
  if ! python3 -c 'import torch, transformers' >/dev/null 2>&1; then
    record "$name" SKIP 0 0 "python3 has no torch or transformers"
    return
  fi
  limit=$(phase_limit "$max")
  if ((limit < 30)); then
    record "$name" SKIP 0 0 "no time left in the budget"
    return
  fi
  echo "== $name: pytorch_baseline.py --shape $shape $* (limit ${limit}s) =="
  t0=$(now)
  before=$(wc -l <"$log")
  run_logged "$limit" "$log" env PYTHONUNBUFFERED=1 python3 packaging/bench/pytorch_baseline.py --shape "$shape" \
    --steps 8 --warmup 3 "$@"
  rc=$?
  part=$(tail -n +"$((before + 1))" "$log")
  note=$(echo "$part" | awk '/^throughput:/ {sub(/^throughput: +/, ""); printf "%s", $0} /^peak memory:/ {printf ", peak %s GiB", $3} /^step:/ {printf ", step %s ms; ", $2}')
  echo "$part" | grep -E '^(device|versions|throughput|peak memory|step):' | sed 's/^/   /'
  case $rc in
    0) record "$name" PASS $(($(now) - t0)) 0 "${note:-see bench.log}" ;;
    124 | 137) record "$name" TIMEOUT $(($(now) - t0)) 0 "$note" ;;
    *)
      echo "$part" | grep -v '^###' | tail -4 | sed 's/^/   | /'
      record "$name" FAIL $(($(now) - t0)) 0 "rc $rc: $(echo "$part" | grep -iE 'error' | tail -1 | cut -c1-120)"
      ;;
  esac
}

# bench_op OP DTYPE SHORT: `neox bench op` cuda vs cpu at the op's realistic
# shape (--size 1), when this neox has the command.
bench_op() {
  local op=$1 dtype=$2 name="op-$3-$2"
  local log="$OUT/bench.log" limit t0 rc note part before
  if ! "$BIN/neox" bench --help 2>&1 | grep -q "bench op"; then
    record "$name" SKIP 0 0 "this neox has no 'bench op'"
    return
  fi
  limit=$(phase_limit 45)
  if ((limit < 15)); then
    record "$name" SKIP 0 0 "no time left in the budget"
    return
  fi
  echo "== $name: neox bench op $op --a cuda --b cpu --dtype $dtype (limit ${limit}s) =="
  t0=$(now)
  before=$(wc -l <"$log")
  run_logged "$limit" "$log" "$BIN/neox" bench op "$op" --a cuda --b cpu --dtype "$dtype" --size 1 --runs 5 --warmup 1
  rc=$?
  part=$(tail -n +"$((before + 1))" "$log")
  # provider backend device median_ms min_ms max_ms rate rel_err max_abs_err
  note=$(echo "$part" | awk '
    $1 == "provider" { unit = $7; on = 1; next }
    on && NF == 9 { printf "%s%s %.3f ms %.2f %s (err %s)", sep, $1, $4, $7, unit, $8; sep = "; " }')
  case $rc in
    0) record "$name" PASS $(($(now) - t0)) 0 "${note:-see bench.log}" ;;
    124 | 137) record "$name" TIMEOUT $(($(now) - t0)) 0 "$note" ;;
    *)
      echo "$part" | grep -v '^###' | grep -v '^$' | tail -4 | sed 's/^/   | /'
      record "$name" FAIL $(($(now) - t0)) 0 "rc $rc: $(echo "$part" | grep -iE 'error' | head -1 | cut -c1-120)"
      ;;
  esac
}

run_checks() {
  OUT=${OUT:-$ROOT/$STAGE/out}
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  # At most 8 files come back from a device run: these 8.
  local f
  for f in env tests-kernels tests-cuda-backend tests-comm-nccl tests-gpu-model bench sanitizer summary; do
    [ "$f" = summary ] && f=summary.txt || f=$f.log
    : >"$OUT/$f"
  done
  local budget=${GPU_CHECK_BUDGET:-540}
  START=$(now)
  DEADLINE=$((START + budget))

  # The build: the staged one when there is one, else the build tree.
  local build
  if [ -x "$STAGE/build/bin/neox_tests" ]; then build=$STAGE/build; else build=$BUILD; fi
  [ -x "$build/bin/neox_tests" ] || die "run: no $STAGE/build or $BUILD (run 'bash packaging/gpu-check.sh prepare' first)"
  build=$(cd "$build" && pwd)
  BIN=$build/bin

  # Carried libraries.
  local libdir=""
  if [ -f "$STAGE/carry-lib.tar.xz" ]; then
    rm -rf "$STAGE/carry-lib"
    tar -C "$STAGE" -xJf "$STAGE/carry-lib.tar.xz" && libdir=$ROOT/$STAGE/carry-lib
  elif [ -d "$BUILD/carry-lib" ]; then
    libdir=$ROOT/$BUILD/carry-lib
  fi
  local testdata=$ROOT/$STAGE/testdata
  [ -d "$testdata/hf" ] || testdata=$(cd "$ROOT/.." && pwd)/shared/testdata

  local cudalib=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && cudalib+="${cudalib:+:}$d"
  done
  export LD_LIBRARY_PATH="${libdir}${libdir:+:}${cudalib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export NEOX_TEST_BUILD_DIR=$build
  export NEOX_TEST_TESTDATA_DIR=$testdata
  export NEOX_TEST_SOURCE_DIR=$ROOT
  export NEOX_PLUGIN_PATH=$build/plugins
  export NEOX_TEST_REQUIRE_CUDA=1
  export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
  export PATH=$PATH:/usr/local/cuda/bin

  SANITIZER=$(command -v compute-sanitizer || true)
  for s in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [ -z "$SANITIZER" ] && [ -x "$s" ] && SANITIZER=$s
  done

  # env
  local env_log="$OUT/env.log" t0 gpu
  t0=$(now)
  {
    echo "date: $(date -u)"
    echo "host: $(uname -a)"
    grep PRETTY_NAME /etc/os-release 2>/dev/null
    echo "build: $build"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "NEOX_TEST_TESTDATA_DIR=$NEOX_TEST_TESTDATA_DIR"
    echo "--- nvidia-smi"
    timeout 20 nvidia-smi 2>&1
    timeout 20 nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1
    echo "--- compute-sanitizer: ${SANITIZER:-none}"
    [ -n "$SANITIZER" ] && timeout 20 "$SANITIZER" --version 2>&1
    echo "--- nvcc"
    timeout 20 nvcc --version 2>&1
    echo "--- neox plugins"
    timeout 30 "$BIN/neox" plugins 2>&1
  } >"$env_log" 2>&1
  gpu=$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
  echo "== env: ${gpu:-no GPU found by nvidia-smi} =="
  grep -E '^(backend|rejected)|cuda' "$env_log" | grep -v '^LD_' | head -6 | sed 's/^/   /'
  if [ -n "$gpu" ]; then record env PASS $(($(now) - t0)) 0 "$gpu"; else record env FAIL $(($(now) - t0)) 0 "nvidia-smi found no GPU"; fi

  # libs
  t0=$(now)
  local missing
  missing=$(for f in "$BIN"/* "$build"/lib/* "$build"/plugins/*.so; do ldd "$f" 2>&1 | grep "not found" | sed "s|^|$(basename "$f"): |"; done)
  if [ -z "$missing" ]; then
    record libs PASS $(($(now) - t0)) 1 "every library found${libdir:+ (carried: $(find "$libdir" -type f | wc -l))}"
  else
    echo "$missing" | sed 's/^/   /' | head -20
    echo "$missing" >>"$env_log"
    record libs FAIL $(($(now) - t0)) 1 "$(echo "$missing" | wc -l) missing (see env.log)"
  fi

  # The ceilings for the profile's floors, measured on these cards
  # (/work/.library/device/KINDS.md): device-to-device copy and bf16 GEMM.
  case "$gpu" in
    *H200*) MEM_GBS=${MEM_GBS:-4300} ;;
    *H100*) MEM_GBS=${MEM_GBS:-3000} ;;
    *) MEM_GBS=${MEM_GBS:-0} ;;
  esac
  GEMM_TFLOPS=${GEMM_TFLOPS:-790}

  # Phases: GPU_CHECK_PHASES (space-separated names) or all, in this order:
  # correctness of the ops first, then the benchmarks beside the PyTorch
  # baseline, then the slower model and comm tests, the sanitizers last.
  local phases=${GPU_CHECK_PHASES:-"kernels cuda-backend bench-160m bench-1.4b baseline-160m baseline-1.4b
    baseline-160m-compile gpu-model attention-check bench-160m-simt bench-160m-ckpt bench-fp32 comm-nccl ops
    memcheck racecheck"}
  local p reduced
  for p in $phases; do
    case $p in
      kernels) test_phase kernels 90 tests/unit/test_kernels.cpp NEOX_TEST_BACKENDS=cuda ;;
      cuda-backend) test_phase cuda-backend 60 tests/gpu/test_cuda_backend.cpp NEOX_TEST_BACKENDS=cuda ;;
      comm-nccl) test_phase comm-nccl 120 tests/gpu/test_comm_nccl.cpp ;;
      gpu-model) test_phase gpu-model 150 tests/gpu/test_gpu_model.cpp ;;
      attention-check) attention_check ;;
      bench-160m) bench_train bench-160m 75 configs/bench/pythia-160m-cuda.toml 16 8 ;;
      bench-1.4b) bench_train bench-1.4b 90 configs/bench/pythia-1.4b-cuda.toml 8 4 ;;
      bench-160m-simt)  # A/B: the same bench with attention on the CUDA cores (the run-1 kernels)
        bench_train bench-160m-simt 75 configs/bench/pythia-160m-cuda.toml 16 8 \
          --set plugins.options.cuda.attention_tensor_cores=false ;;
      bench-160m-ckpt)
        bench_train bench-160m-ckpt 60 configs/bench/pythia-160m-cuda.toml 16 8 --set training.checkpoint_activations=true ;;
      bench-fp32)
        bench_train bench-fp32 60 configs/bench/pythia-160m-cuda.toml 4 2 --set training.precision=fp32 ;;
      baseline-160m) baseline baseline-160m 60 pythia-160m ;;
      baseline-1.4b) baseline baseline-1.4b 75 pythia-1.4b ;;
      baseline-160m-compile) baseline baseline-160m-compile 150 pythia-160m --compile ;;
      ops)
        bench_op matmul bf16 matmul
        bench_op attention_forward bf16 attention
        ;;
      memcheck | racecheck)
        # a reduced suite: the kernels without the finite-difference tests,
        # and the small HF oracle's forward + backward in every dtype
        reduced="$(filter_for tests/unit/test_kernels.cpp)-*FiniteDifferences*"
        [ "$p" = memcheck ] && reduced="$(filter_for tests/unit/test_kernels.cpp):*CudaHfOracle.EveryParameterGradientMatches/neox_tiny_parallel_*-*FiniteDifferences*"
        sanitizer_phase "$p" 90 "$reduced"
        ;;
      *) record "$p" SKIP 0 0 "unknown phase" ;;
    esac
  done

  # summary, last
  local i failed=0 summary="$OUT/summary.txt"
  for i in "${!P_NAME[@]}"; do
    if [ "${P_COUNTS[$i]}" = 1 ] && { [ "${P_STATUS[$i]}" = FAIL ] || [ "${P_STATUS[$i]}" = TIMEOUT ]; }; then
      failed=$((failed + 1))
    fi
  done
  {
    echo
    echo "== gpu-check summary (${gpu:-no GPU}; $(($(now) - START))s of ${budget}s; logs in $OUT) =="
    printf '%-20s %-8s %6s  %s\n' phase status time note
    for i in "${!P_NAME[@]}"; do
      printf '%-20s %-8s %5ss  %s\n' "${P_NAME[$i]}" "${P_STATUS[$i]}" "${P_TIME[$i]}" "${P_NOTE[$i]:0:120}"
    done
    if ((failed > 0)); then
      echo "RESULT: FAIL ($failed test phase(s) failed)"
    else
      echo "RESULT: PASS (no test phase failed; WARN and SKIP rows are worth a look)"
    fi
  } | tee "$summary"
  ((failed == 0))
}

case "${1:-all}" in
  prepare) prepare ;;
  run) run_checks ;;
  all)
    prepare || exit 1
    run_checks
    ;;
  -h | --help) sed -n '2,40p' "$0" ;;
  *) die "unknown command '$1' (prepare, run, or nothing for both)" ;;
esac
