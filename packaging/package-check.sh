#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks that an installed neox works on its own and that a plugin built out
# of tree against the installed SDK only (examples/plugin) trains with it.
#
#   bash packaging/package-check.sh --deb [BUILD_DIR]       # as root (CI)
#   bash packaging/package-check.sh --prefix DIR [BUILD_DIR]  # any user (ctest)
#   bash packaging/package-check.sh --installed               # neox already in /usr
#
# BUILD_DIR (default: build) is a finished build of this tree.
#
# --deb: makes the packages with cpack (neox, neox-dev and, where the CUDA
#   plugin was built, neox-cuda .deb files, and the .tar.gz), prints
#   `dpkg-deb -I` and `-c` of each, unpacks the .tar.gz elsewhere and runs its
#   neox (relocatable), installs neox and neox-dev with apt-get (neox-cuda too
#   when the machine has an NVIDIA GPU), then runs the checks below against
#   /usr. At the end it removes what it installed (apt-get purge -y neox
#   neox-dev neox-cuda, and the example plugins' files), so the machine is as
#   before for the rest of CI; NEOX_KEEP_PACKAGES=1 leaves them installed.
#   Then, unless NEOX_FRESH_DEBIAN=0, the same on a fresh Debian 12: a minimal
#   bookworm made with debootstrap (installed if missing) in a temporary
#   directory, where apt-get installs the neox and neox-dev .deb files (their
#   dependencies from Debian) with cmake, g++ and make for the plugin, and
#   this script runs with --installed in a chroot.
# --installed: the checks below against a neox already installed in /usr
#   (what --deb runs inside the fresh Debian).
# --prefix DIR: `cmake --install BUILD_DIR --prefix DIR` and the same checks
#   against DIR (no root, no packages). DIR is left as it is.
#
# The checks: `neox plugins` from the installed bin/ with no NEOX_PLUGIN_PATH
# lists the CPU plugins from the installed plugin directory and nothing from
# the build tree; examples/plugin configures with find_package(NeoX) finding
# the installed package (never the source or build tree), builds, installs
# into neox's plugin directory; `neox plugins --check` accepts both example
# plugins; a short CPU training run with examples/plugin/train.toml (the
# text-file data source, the fast-gelu kernels for gelu_forward and
# gelu_backward) logs both plugins at work and ends with a finite loss below
# the first; `neox bench op` compares fast-gelu with the cpu backend's GeLU.
set -euo pipefail

usage() {
  sed -n '3,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

mode=""
prefix=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --deb) mode=deb; shift ;;
    --prefix) mode=prefix; prefix="${2:-}"; [[ -n "$prefix" ]] || usage; shift 2 ;;
    --installed) mode=installed; shift ;;
    -h|--help) usage ;;
    -*) echo "package-check: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[[ -n "$mode" ]] || usage
src="$(cd "$(dirname "$0")/.." && pwd)"
build=""
if [[ "$mode" != installed ]]; then
  build="$(cd "${1:-$src/build}" && pwd)"
  [[ -f "$build/CMakeCache.txt" ]] || { echo "package-check: $build is not a CMake build directory" >&2; exit 2; }
  [[ -x "$build/bin/neox" ]] || { echo "package-check: $build/bin/neox is missing: build first" >&2; exit 2; }
fi
jobs=$(nproc 2>/dev/null || echo 2)

work="$(mktemp -d "${TMPDIR:-/tmp}/neox-package-check.XXXXXX")"
installed_debs=()
example_manifest=""
fresh=""  # the fresh Debian's root while its /proc is mounted
cleanup() {
  local rc=$?
  if [[ -n "$fresh" ]]; then umount "$fresh/proc" 2> /dev/null || umount -l "$fresh/proc" 2> /dev/null || true; fi
  if [[ "$mode" == deb && "${NEOX_KEEP_PACKAGES:-0}" != 1 ]]; then
    if [[ -n "$example_manifest" && -f "$example_manifest" ]]; then
      xargs -r -d '\n' rm -f < "$example_manifest" || true
    fi
    if [[ ${#installed_debs[@]} -gt 0 ]]; then
      echo "== removing ${installed_debs[*]} =="
      DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${installed_debs[@]}" > /dev/null || true
    fi
  fi
  rm -rf --one-file-system "$work"
  if [[ $rc -ne 0 ]]; then echo "package-check: FAILED (exit $rc)" >&2; fi
  exit $rc
}
trap cleanup EXIT

fail() { echo "package-check: FAILED: $*" >&2; exit 1; }
step() { echo; echo "== $* =="; }
# Runs the installed neox with no plugin path from the environment.
neox() { env -u NEOX_PLUGIN_PATH "$neox_bin" "$@"; }

if [[ "$mode" == deb ]]; then
  [[ $(id -u) -eq 0 ]] || fail "--deb installs packages: run it as root (or use --prefix DIR)"
  command -v dpkg-shlibdeps > /dev/null || fail "dpkg-shlibdeps is missing: apt-get install dpkg-dev (packaging/install-deps.sh)"

  step "packages: cpack in $build"
  rm -rf "$build/packages"
  cpack --config "$build/CPackConfig.cmake" -B "$build/packages" > "$work/cpack.log" 2>&1 ||
    { cat "$work/cpack.log"; fail "cpack"; }
  grep -E "package: .* generated" "$work/cpack.log" || true
  shopt -s nullglob
  debs=("$build"/packages/*.deb)
  tgzs=("$build"/packages/*.tar.gz)
  shopt -u nullglob
  base=$(ls "$build"/packages/neox_*.deb 2>/dev/null | head -1 || true)
  dev=$(ls "$build"/packages/neox-dev_*.deb 2>/dev/null | head -1 || true)
  cuda=$(ls "$build"/packages/neox-cuda_*.deb 2>/dev/null | head -1 || true)
  [[ -n "$base" && -n "$dev" ]] || fail "cpack made no neox/neox-dev .deb (made: ${debs[*]:-none})"
  [[ ${#tgzs[@]} -ge 1 ]] || fail "cpack made no .tar.gz"
  if [[ -f "$build/plugins/neox_backend_cuda.so" && -z "$cuda" ]]; then
    fail "the cuda plugin is built but cpack made no neox-cuda package"
  fi
  for deb in "${debs[@]}"; do
    step "dpkg-deb -I $(basename "$deb")"
    dpkg-deb -I "$deb" | sed -n '/^ [A-Z][A-Za-z-]*:/,$p'
    echo "-- contents:"
    dpkg-deb -c "$deb" | awk '{print $1, $3, $6, $7, $8}'
  done
  depends=$(dpkg-deb -f "$base" Depends)
  for lib in libspdlog libopenblas libboost-filesystem libicu; do
    [[ "$depends" == *"$lib"* ]] || fail "neox's Depends lacks $lib (dpkg-shlibdeps did not run?): $depends"
  done
  [[ "$(dpkg-deb -f "$dev" Depends)" == *"neox (= "* ]] || fail "neox-dev does not depend on neox of its version"
  if [[ -n "$cuda" ]]; then
    [[ "$(dpkg-deb -f "$cuda" Depends)" == "neox (= "* ]] || fail "neox-cuda does not depend on neox of its version"
    dpkg-deb -c "$cuda" | grep 'neox_backend_cuda.so$' > /dev/null || fail "neox-cuda lacks the cuda backend plugin"
    if dpkg-deb -c "$base" | grep -E 'neox_(backend_cuda|comm_nccl)\.so$' > /dev/null; then fail "the neox package holds a CUDA plugin"; fi
  fi

  step "the .tar.gz, unpacked elsewhere (relocatable): neox plugins"
  mkdir -p "$work/tgz"
  tar -xzf "${tgzs[0]}" -C "$work/tgz"
  tgz_neox=$(ls "$work"/tgz/*/bin/neox)
  tgz_root=$(dirname "$(dirname "$tgz_neox")")
  env -u NEOX_PLUGIN_PATH "$tgz_neox" plugins > "$work/tgz-plugins.txt"
  grep -P "^backend\tcpu\t.*\t$tgz_root/lib[^\t]*/neox/plugins/neox_backend_cpu.so$" "$work/tgz-plugins.txt" ||
    { cat "$work/tgz-plugins.txt"; fail "the unpacked .tar.gz's neox does not find its own cpu plugin"; }

  step "apt-get install ./$(basename "$base") ./$(basename "$dev")"
  to_install=("$base" "$dev")
  installed_debs=(neox neox-dev)
  if [[ -n "$cuda" ]] && command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
    to_install+=("$cuda")
    installed_debs+=(neox-cuda)
    echo "(an NVIDIA GPU is present: installing $(basename "$cuda") too)"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${to_install[@]}" > "$work/apt.log" 2>&1 ||
    { cat "$work/apt.log"; fail "apt-get install"; }
  dpkg-query -W -f='${Package} ${Version} ${Status}\n' "${installed_debs[@]}"
  root=/usr
  neox_bin=/usr/bin/neox
  [[ "$(type -P neox)" == /usr/bin/neox ]] || echo "note: 'neox' on PATH is $(type -P neox), checking /usr/bin/neox"
elif [[ "$mode" == installed ]]; then
  [[ -x /usr/bin/neox ]] || fail "--installed: /usr/bin/neox is missing (install the neox package first)"
  root=/usr
  neox_bin=/usr/bin/neox
else
  step "cmake --install $build --prefix $prefix"
  mkdir -p "$prefix"
  root="$(cd "$prefix" && pwd)"
  cmake --install "$build" --prefix "$root" > "$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
  neox_bin="$root/bin/neox"
fi

step "neox plugins ($neox_bin, no NEOX_PLUGIN_PATH)"
cd "$work"
neox plugins | tee "$work/plugins.txt"
grep -qP "^backend\tcpu\t.*\t$root/lib[^\t]*/neox/plugins/neox_backend_cpu\.so$" "$work/plugins.txt" ||
  fail "the installed neox does not list the cpu backend from $root/lib*/neox/plugins"
expected=("comm\tlocal" "optimizer\tadamw" "data\tmmap")
if [[ " ${installed_debs[*]} " == *" neox-cuda "* ]]; then expected+=("backend\tcuda"); fi
for p in "${expected[@]}"; do
  grep -qP "^$p\t" "$work/plugins.txt" || fail "the installed neox does not list $p"
done
if [[ -n "$build" ]] && grep -qE "(^search path:.* |\t)$build/plugins(/| |$)" "$work/plugins.txt"; then
  fail "the installed neox searched or loaded the build tree's plugins ($build/plugins)"
fi
plugin_dir=$(grep -oP "\t\K$root/lib[^\t]*/neox/plugins(?=/neox_backend_cpu\.so$)" "$work/plugins.txt")

step "examples/plugin: configure against the installed SDK only"
ex="$work/example-build"
cmake_args=(-S "$src/examples/plugin" -B "$ex" -DCMAKE_BUILD_TYPE=Release
            -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_PREFIX_PATH="$root")
if [[ "$mode" == prefix ]]; then cmake_args+=(-DCMAKE_INSTALL_PREFIX="$root"); fi
if [[ "$mode" == installed ]]; then example_manifest="$ex/install_manifest.txt"; fi
env -u CMAKE_PREFIX_PATH -u NeoX_DIR -u NeoX_ROOT -u NEOX_PLUGIN_PATH cmake "${cmake_args[@]}" > "$work/example-configure.log" 2>&1 ||
  { cat "$work/example-configure.log"; fail "configuring examples/plugin"; }
grep "neox " "$work/example-configure.log" || true
neox_dir=$(sed -n 's/^NeoX_DIR:PATH=//p' "$ex/CMakeCache.txt")
echo "NeoX_DIR = $neox_dir"
[[ "$neox_dir" == "$root"/lib*/cmake/NeoX ]] || fail "find_package(NeoX) found $neox_dir, not the package installed in $root"

step "examples/plugin: build and install"
cmake --build "$ex" -j"$jobs" > "$work/example-build.log" 2>&1 || { cat "$work/example-build.log"; fail "building examples/plugin"; }
cmake --install "$ex" | tee "$work/example-install.log"
example_manifest="$ex/install_manifest.txt"
for f in neox_kernels_fast-gelu.so neox_data_text-file.so; do
  [[ -f "$plugin_dir/$f" ]] || fail "$f was not installed into neox's plugin directory $plugin_dir"
  neox plugins --check "$plugin_dir/$f"
done
neox plugins > "$work/plugins-after.txt"
grep -P "^(kernels\tfast-gelu|data\ttext-file)\t" "$work/plugins-after.txt"
[[ $(grep -cP "^(kernels\tfast-gelu|data\ttext-file)\t.*\t$plugin_dir/" "$work/plugins-after.txt") -eq 2 ]] ||
  fail "neox plugins does not list both example plugins from $plugin_dir"

step "training with both example plugins (examples/plugin/train.toml)"
text="/usr/share/common-licenses/Apache-2.0"
[[ -f "$text" ]] || { text="$src/LICENSE"; echo "($text instead of the system's Apache-2.0 text)"; }
neox train "$src/examples/plugin/train.toml" --set training.log_dir="$work/runs" \
  --set training.train_iters=30 --set plugins.options.text-file.path="$text" 2>&1 | tee "$work/train.log"
grep -q "plugins: backend cpu .*data text-file" "$work/train.log" || fail "the run did not use the text-file data source"
grep -q "text-file: .* tokens; samples of" "$work/train.log" || fail "the text-file data source did not log its corpus"
calls=$(grep -oP "fast-gelu \(tanh approximation\): \K[0-9]+ gelu_forward and [0-9]+ gelu_backward" "$work/train.log" || true)
[[ -n "$calls" ]] || fail "the fast-gelu kernels did not report their calls"
read -r fwd _ _ bwd _ <<< "$calls"
[[ "$fwd" -gt 0 && "$bwd" -gt 0 ]] || fail "the fast-gelu kernels were not called ($calls)"
metrics=$(ls "$work"/runs/*/metrics.jsonl | head -1)
losses=$(grep -v '"split"' "$metrics" | grep -oP '"loss":\s*\K[^,}]+' | tr '\n' ' ')
echo "training losses logged: $losses"
awk -v l="$losses" 'BEGIN {
  n = split(l, a, " "); if (n < 2) exit 1
  for (i = 1; i <= n; i++) if (a[i] !~ /^[0-9.eE+-]+$/ || a[i] + 0 != a[i] + 0 || a[i] + 0 > 1e30) exit 1
  exit !(a[n] + 0 < a[1] + 0)
}' || fail "the losses are not finite or did not fall: $losses"
echo "ok: $fwd gelu_forward and $bwd gelu_backward calls by fast-gelu; loss ${losses%% *} -> $(echo "$losses" | awk '{print $NF}')"

step "neox bench op: fast-gelu against the cpu backend's GeLU"
for op in gelu_forward gelu_backward; do
  neox bench op "$op" --a cpu --b fast-gelu --size 0.25 --runs 10 --warmup 2 | tee "$work/bench-$op.txt"
  err=$(awk '$1 == "fast-gelu" {print $8}' "$work/bench-$op.txt")
  awk -v e="$err" 'BEGIN { exit !(e != "" && e + 0 < 2e-3) }' ||
    fail "$op: fast-gelu's relative error against the exact GeLU is ${err:-missing}, expected below 2e-3"
done

if [[ "$mode" == deb && "${NEOX_FRESH_DEBIAN:-1}" != 0 ]]; then
  step "a fresh Debian 12 (debootstrap --variant=minbase bookworm): the .deb files, then these checks"
  if ! command -v debootstrap > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap > "$work/debootstrap-install.log" 2>&1 ||
      { cat "$work/debootstrap-install.log"; fail "apt-get install debootstrap"; }
  fi
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2> /dev/null | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  root_dir="$work/fresh"
  debootstrap --variant=minbase bookworm "$root_dir" "$mirror" > "$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; fail "debootstrap bookworm from $mirror"; }
  mkdir -p "$root_dir/tmp/debs" "$root_dir/src/packaging" "$root_dir/src/examples"
  cp "$base" "$dev" "$root_dir/tmp/debs/"
  cp "$src/packaging/package-check.sh" "$root_dir/src/packaging/"
  cp -r "$src/examples/plugin" "$root_dir/src/examples/"
  cp "$src/LICENSE" "$root_dir/src/"
  fresh="$root_dir"
  mount -t proc proc "$root_dir/proc"
  chroot "$root_dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive \
    /bin/bash -c 'set -e
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends /tmp/debs/*.deb cmake g++ make > /tmp/apt.log 2>&1 ||
        { cat /tmp/apt.log; exit 1; }
      echo "installed in the fresh Debian:"
      dpkg-query -W -f="  \${Package} \${Version}\n" neox neox-dev cmake g++
      bash /src/packaging/package-check.sh --installed' ||
    fail "the checks on a fresh Debian 12 (chroot $root_dir)"
  umount "$root_dir/proc"
  fresh=""
fi

echo
echo "package-check ($mode): ok"
