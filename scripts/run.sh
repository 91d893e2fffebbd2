#!/bin/sh
# `make run`: start Launchway on its embedded defaults, push the sample app
# and show the page it serves through the router.
#
# The daemon uses the built-in settings (data in /var/lib/launchway, SSH on
# 127.0.0.1:2222) unless LAUNCHWAY_CONFIG names a settings file. A key for the
# demo is generated under the data directory's parent-free scratch dir
# ($RUN_DIR, default /tmp/launchway-run). The daemon keeps running in the
# foreground after the push; stop it with Ctrl-C.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/debug/launchway"
RUN_DIR=${RUN_DIR:-/tmp/launchway-run}
DATA=${LAUNCHWAY_DATA:-/var/lib/launchway}
mkdir -p "$RUN_DIR"

"$BIN" serve 2>"$RUN_DIR/serve.log" &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null || true' EXIT INT TERM
i=0
until [ -S "$DATA/launchway.sock" ] && "$BIN" project list >/dev/null 2>&1; do
  i=$((i + 1))
  if [ $i -gt 300 ] || ! kill -0 $DAEMON 2>/dev/null; then
    cat "$RUN_DIR/serve.log" >&2
    echo "launchway serve did not start" >&2
    exit 1
  fi
  sleep 0.1
done

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
echo "[$HOST]:$PORT $(cut -d' ' -f1,2 "$DATA/ssh_host_ed25519_key.pub")" > "$RUN_DIR/known_hosts"

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
ROUTER=$(sed -n 's/.*router=\([0-9.]*:[0-9]*\).*/\1/p' "$RUN_DIR/serve.log" | head -n 1)
URL="http://main.sample.localhost:${ROUTER##*:}/"
echo "\$ curl --resolve main.sample.localhost:${ROUTER##*:}:${ROUTER%:*} $URL"
curl -sS --resolve "main.sample.localhost:${ROUTER##*:}:${ROUTER%:*}" "$URL"
echo
echo "\$ launchway builds -p sample"
"$BIN" builds -p sample
echo
echo "The sample app is live at $URL (served by Launchway's router)."
echo "Try: $BIN logs -p sample -e main -f, $BIN activities -p sample,"
echo "     or edit $WORK/app/server.py, commit and git push again (Ctrl-C stops the daemon)."
wait $DAEMON
