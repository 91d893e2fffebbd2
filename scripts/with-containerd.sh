#!/usr/bin/env bash
# Run a command with a containerd answering at $LAUNCHWAY_CONTAINERD_SOCKET.
#
# Order: an already exported LAUNCHWAY_CONTAINERD_SOCKET that answers, then the
# system socket, otherwise a private containerd (own config, root, state and
# socket, CRI off) started for the command and stopped when it ends. Each
# invocation gets a private containerd of its own (under a directory named by
# its pid), so one that ends never stops another's. Used by `make test`,
# `make bench` and `.ci/run`, so a fresh machine needs nothing else.
set -euo pipefail

answers() { [ -S "$1" ] && ctr --address "$1" version >/dev/null 2>&1; }

socket=""
for candidate in "${LAUNCHWAY_CONTAINERD_SOCKET:-}" /run/containerd/containerd.sock; do
  if [ -n "$candidate" ] && answers "$candidate"; then
    socket=$candidate
    break
  fi
done

if [ -z "$socket" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "with-containerd: no containerd answers and starting one needs root" >&2
    exit 1
  fi
  base=/run/launchway-dev/$$
  root=/var/lib/launchway-dev/$$/containerd
  mkdir -p "$base" "$root"
  socket=$base/containerd.sock
  cat > "$base/containerd.toml" <<TOML
version = 2
root = "$root"
state = "$base/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$socket"
TOML
  containerd --config "$base/containerd.toml" >"$base/containerd.log" 2>&1 &
  containerd_pid=$!
  trap 'kill "$containerd_pid" 2>/dev/null || true; wait "$containerd_pid" 2>/dev/null || true; rm -rf --one-file-system "$base" "${root%/containerd}" 2>/dev/null || true' EXIT
  for _ in $(seq 1 60); do
    answers "$socket" && break
    sleep 0.5
  done
  if ! answers "$socket"; then
    echo "with-containerd: containerd did not start; its log ($base/containerd.log):" >&2
    cat "$base/containerd.log" >&2
    exit 1
  fi
fi

version=$(ctr --address "$socket" version 2>/dev/null | awk '/Server:/ {s=1} s && /Version:/ {print $2; exit}')
echo "with-containerd: containerd $version at $socket" >&2
export LAUNCHWAY_CONTAINERD_SOCKET=$socket
"$@"
