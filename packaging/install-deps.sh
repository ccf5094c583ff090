#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian/Ubuntu packages neox needs to build and test, skipping
# those already installed. Runs apt-get directly as root, through sudo
# otherwise; never asks questions. `apt-get update` runs only when something
# is missing.
set -euo pipefail

packages=(
  build-essential
  cmake
  pkg-config
  libtomlplusplus-dev
  libcxxopts-dev
  libspdlog-dev
  libboost-dev
  libboost-filesystem-dev
  libopenblas-dev
  libgtest-dev
  nlohmann-json3-dev
  libicu-dev
  zlib1g-dev
  libzstd-dev
  libopenmpi-dev
  openmpi-bin
  # cpack's .deb packages (packaging/package-check.sh): dpkg-shlibdeps and
  # the file utility compute the packages' library dependencies.
  dpkg-dev
  file
)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} build dependencies are already installed"
  exit 0
fi

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    env DEBIAN_FRONTEND=noninteractive "$@"
  else
    sudo env DEBIAN_FRONTEND=noninteractive "$@"
  fi
}
if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
  echo "install-deps: not root and sudo is not available; as root run:" >&2
  echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: missing ${missing[*]}"
as_root apt-get update
as_root apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
