#!/usr/bin/env bash
# `make run`: check the host (`launchway doctor`), start Launchway on its
# embedded defaults, push the sample app and show the page it serves through
# the router; then keep serving until Ctrl-C, which stops the daemon
# gracefully and exits 0.
#
# The daemon uses the built-in settings (data in /var/lib/launchway, SSH on
# 127.0.0.1:2222) unless LAUNCHWAY_CONFIG names a settings file. A key for the
# demo is generated in $RUN_DIR (default /tmp/launchway-run). When a daemon
# already serves these settings, the sample is pushed to it and the script
# ends there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/debug/launchway"
RUN_DIR=${RUN_DIR:-/tmp/launchway-run}
mkdir -p "$RUN_DIR"

DAEMON=""
if "$BIN" project list >/dev/null 2>&1; then
  echo "A launchway daemon already serves these settings: pushing the sample to it."
else
  echo "\$ launchway doctor"
  if ! "$BIN" doctor; then
    echo >&2
    echo "make run: this host is not ready for Launchway; fix what failed above and run it again." >&2
    exit 1
  fi
  echo
  # With a terminal, the daemon gets a process group of its own, which `fg`
  # hands the terminal to once the sample is up: Ctrl-C then reaches the
  # daemon alone (it stops gracefully and exits 0), not make, which would
  # report the interrupt as a failure.
  interactive=0
  if [ -t 0 ]; then
    interactive=1
    set -m
  fi
  "$BIN" serve 2>"$RUN_DIR/serve.log" &
  DAEMON=$!
  stop_daemon() {
    if [ -n "$DAEMON" ] && kill -0 "$DAEMON" 2>/dev/null; then
      kill -TERM "$DAEMON" 2>/dev/null || true
      wait "$DAEMON" 2>/dev/null || true
    fi
  }
  trap stop_daemon EXIT
  i=0
  until "$BIN" project list >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 "$DAEMON" 2>/dev/null; then
      cat "$RUN_DIR/serve.log" >&2
      echo "launchway serve did not start (its log is above)" >&2
      exit 1
    fi
    sleep 0.1
  done
fi

DATA=$("$BIN" settings show | sed -n 's/^data_dir = "\(.*\)"$/\1/p')
REMOTE=$("$BIN" project list | awk '$1 == "sample" { print $3 }')
if [ -z "$REMOTE" ]; then
  REMOTE=$("$BIN" project create sample)
fi
if [ ! -f "$RUN_DIR/id_ed25519" ]; then
  ssh-keygen -q -t ed25519 -N '' -C make-run -f "$RUN_DIR/id_ed25519"
fi
"$BIN" keys add --project sample --role admin "$RUN_DIR/id_ed25519.pub" >/dev/null
PORT=$(echo "$REMOTE" | sed 's/.*:\([0-9]*\)\/.*/\1/')
HOST=$(echo "$REMOTE" | sed 's/.*@\(.*\):[0-9]*\/.*/\1/')
echo "[$HOST]:$PORT $(cut -d' ' -f1,2 "$DATA/ssh_host_ed25519_key.pub")" >"$RUN_DIR/known_hosts"

WORK="$RUN_DIR/sample"
rm -rf "$WORK"
cp -r "$ROOT/fixtures/apps/hello" "$WORK"
cd "$WORK"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=Launchway GIT_AUTHOR_EMAIL=run@launchway.invalid
export GIT_COMMITTER_NAME=Launchway GIT_COMMITTER_EMAIL=run@launchway.invalid
export GIT_SSH_COMMAND="ssh -F /dev/null -i $RUN_DIR/id_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile=$RUN_DIR/known_hosts -o StrictHostKeyChecking=yes"
git init -q --initial-branch=main
git add -A
git commit -q -m "Sample app ($(date -u +%FT%TZ))"
echo "\$ git push $REMOTE main"
git push --force "$REMOTE" main
echo
ROUTER=$("$BIN" settings show | sed -n '/^\[router\]/,/^\[/s/^listen = "\(.*\)"$/\1/p')
URL="http://main.sample.localhost:${ROUTER##*:}/"
echo "\$ curl --resolve main.sample.localhost:${ROUTER##*:}:${ROUTER%:*} $URL"
curl -sS --resolve "main.sample.localhost:${ROUTER##*:}:${ROUTER%:*}" "$URL"
echo
echo "\$ launchway builds -p sample"
"$BIN" builds -p sample
echo
echo "The sample app is live at $URL (served by Launchway's router)."
echo "Try: $BIN logs -p sample -e main -f, $BIN activities -p sample,"
echo "     or edit $WORK/app/server.py, commit and git push again."
[ -n "$DAEMON" ] || exit 0
echo "The daemon's log is $RUN_DIR/serve.log; Ctrl-C stops it."
if ((interactive)); then
  fg %1 >/dev/null && status=0 || status=$?
else
  # No terminal: SIGINT or SIGTERM to this script stops the daemon.
  trap 'kill -TERM "$DAEMON" 2>/dev/null || true' INT TERM
  status=0
  while kill -0 "$DAEMON" 2>/dev/null; do
    wait "$DAEMON" && status=0 || status=$?
  done
fi
DAEMON=""
if [ "$status" != 0 ]; then
  echo "launchway serve exited with status $status; its log: $RUN_DIR/serve.log" >&2
  exit "$status"
fi
echo "launchway serve stopped."
