#!/usr/bin/env bash
# `make install` / `make uninstall`, as root.
#
#   scripts/install.sh BINARY     install BINARY (the release build) as a service
#   scripts/install.sh --uninstall
#
# Install: the binary in $PREFIX/bin (/usr/local/bin), the settings file
# /etc/launchway/launchway.toml with the documented defaults when it is
# absent (an existing one is never touched), the systemd unit, and the data
# directory the settings name (mode 0700). Uninstall removes the binary and
# the unit, never the settings nor the data.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
ETC=${LAUNCHWAY_ETC:-/etc/launchway}
UNIT_DIR=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
BIN="$PREFIX/bin/launchway"
CONFIG="$ETC/launchway.toml"
UNIT="$UNIT_DIR/launchway.service"

if [ "$(id -u)" != 0 ]; then
  echo "install: run this as root (sudo make install)" >&2
  exit 1
fi
systemd=0
[ -d /run/systemd/system ] && command -v systemctl >/dev/null && systemd=1
# Units elsewhere (tests, staging a package) are not systemd's business.
[ "$UNIT_DIR" = /etc/systemd/system ] || systemd=0

if [ "${1:-}" = --uninstall ]; then
  if ((systemd)) && systemctl is-active --quiet launchway 2>/dev/null; then
    echo "install: stopping launchway"
    systemctl disable --now launchway
  fi
  rm -f "$UNIT" "$BIN"
  ((systemd)) && systemctl daemon-reload
  echo "install: removed $BIN and $UNIT; kept $CONFIG and the data directory"
  exit 0
fi

built=${1:?usage: install.sh BINARY | --uninstall}
install -D -m 0755 "$built" "$BIN"
echo "install: $BIN"
install -d -m 0755 "$ETC"
if [ -e "$CONFIG" ]; then
  echo "install: $CONFIG exists; left as it is"
else
  "$BIN" settings defaults >"$CONFIG.new"
  chmod 0644 "$CONFIG.new"
  mv "$CONFIG.new" "$CONFIG"
  echo "install: $CONFIG (the documented defaults)"
fi
# The unit runs the installed binary with the installed settings.
install -d -m 0755 "$UNIT_DIR"
sed -e "s|/usr/local/bin/launchway|$BIN|" -e "s|/etc/launchway/launchway.toml|$CONFIG|" \
  "$ROOT/dist/launchway.service" >"$UNIT.new"
chmod 0644 "$UNIT.new"
mv "$UNIT.new" "$UNIT"
echo "install: $UNIT"
data=$("$BIN" --config "$CONFIG" settings show | sed -n 's/^data_dir = "\(.*\)"$/\1/p')
install -d -m 0700 "$data"
echo "install: data directory $data"
if ((systemd)); then
  systemctl daemon-reload
  if systemctl is-active --quiet launchway; then
    echo "install: done; the service runs the old binary until: systemctl restart launchway"
    exit 0
  fi
  echo "install: done. Check the host, then start the service:"
  echo "  $BIN doctor"
  echo "  systemctl enable --now launchway"
else
  echo "install: done (systemd is not running here: start it with \`$BIN serve\`)."
  echo "  $BIN doctor"
fi
