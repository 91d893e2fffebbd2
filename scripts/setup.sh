#!/usr/bin/env bash
# Makes this host ready for a purpose: installs the Debian packages it lacks
# (as root), or says exactly which are missing and how to install them.
#
#   scripts/setup.sh [--check] PURPOSE
#
# PURPOSE is what the host must be ready for, each including the one before:
#   build  compile Launchway (protoc, a C compiler, Rust)
#   run    run the daemon and `make run` (containerd, runc, git, mmdebstrap, nft, ssh, curl)
#   test   `make test` (sshd, busybox-static for test runtimes, mkfs.xfs and mkfs.ext4,
#          docker-registry and skopeo for the image registry tests)
#   bench  `make bench` (nginx, the baseline the router is measured against)
#   ci     what `.ci/run` needs: the same as test
#
# --check only reports: it installs nothing and exits 1 when something is
# missing. Without it, root installs what is missing with apt-get; anyone
# else gets the command to run and exit status 1.
#
# `make run`, `make test`, `make bench` and `.ci/run` all start with this
# script, so a fresh Debian 12 machine needs nothing done before them.
#
# LAUNCHWAY_SETUP_DPKG_ADMINDIR reads another dpkg database (tests use it to
# make a package look missing without touching the host).
set -euo pipefail

usage() {
  echo "usage: $0 [--check] build|run|test|bench|ci" >&2
  exit 2
}

check_only=0
purpose=""
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    build | run | test | bench | ci) purpose=$arg ;;
    *) usage ;;
  esac
done
[ -n "$purpose" ] || usage
[ "$purpose" = ci ] && purpose=test

root=$(cd "$(dirname "$0")/.." && pwd)

# Debian package names per purpose; each purpose includes the ones before it.
build_packages=(protobuf-compiler gcc libc6-dev make ca-certificates)
run_packages=(containerd runc git openssh-client mmdebstrap nftables curl tzdata)
test_packages=(openssh-server postgresql-client busybox-static xfsprogs e2fsprogs tinyproxy pebble openssl chromium chromium-driver fonts-dejavu-core docker-registry skopeo)
bench_packages=(nginx-light php8.2-fpm php8.2-opcache zstd)

packages=("${build_packages[@]}")
case "$purpose" in
  run) packages+=("${run_packages[@]}") ;;
  test) packages+=("${run_packages[@]}" "${test_packages[@]}") ;;
  bench) packages+=("${run_packages[@]}" "${test_packages[@]}" "${bench_packages[@]}") ;;
esac

say() { echo "setup: $*" >&2; }

dpkg_args=()
if [ -n "${LAUNCHWAY_SETUP_DPKG_ADMINDIR:-}" ]; then
  dpkg_args=(--admindir="$LAUNCHWAY_SETUP_DPKG_ADMINDIR")
fi

installed() {
  dpkg-query "${dpkg_args[@]}" -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# The Rust toolchain comes from rustup, not Debian (Debian 12's is too old).
rust_problem() {
  local wanted have
  wanted=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust $wanted or newer with rustup (https://rustup.rs)"
    return
  fi
  have=$(rustc --version 2>/dev/null | awk '{print $2}')
  if [ -n "$wanted" ] && [ -n "$have" ] &&
    [ "$(printf '%s\n%s\n' "$wanted" "${have%%-*}" | sort -V | head -n 1)" != "$wanted" ]; then
    echo "rustc $have is older than the $wanted this workspace needs: rustup update stable"
  fi
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  say "this is not a Debian host (no dpkg-query); install the equivalents of these Debian packages:"
  say "  ${packages[*]}"
  exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
rust=$(rust_problem)

if ((${#missing[@]} == 0)) && [ -z "$rust" ]; then
  say "ready for '$purpose'"
  exit 0
fi

if ((${#missing[@]})); then
  if ((check_only)) || [ "$(id -u)" != 0 ]; then
    sudo=""
    [ "$(id -u)" != 0 ] && sudo="sudo "
    say "missing Debian packages for '$purpose': ${missing[*]}"
    say "install them with:"
    say "  ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${missing[*]}"
  else
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian's docker-registry enables a unit serving :5000 on every
    # interface, with a config that cannot work (its htpasswd path is a
    # directory). The tests start registries of their own: stop that one.
    if [[ " ${missing[*]} " == *" docker-registry "* ]] && [ -d /run/systemd/system ]; then
      systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
    missing=()
  fi
fi
if [ -n "$rust" ]; then
  say "$rust"
fi
if ((${#missing[@]})) || [ -n "$rust" ]; then
  exit 1
fi
say "ready for '$purpose'"
