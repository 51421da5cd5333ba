#!/usr/bin/env bash
# A real Prometheus Alertmanager (Debian bookworm's `prometheus-alertmanager` 0.25 package, binary only)
# for the alert-receiver tests: downloaded with apt-get and unpacked under $ALERTMANAGER_HOME, nothing
# installed system-wide (~30 MB, 1 s).
#   scripts/alertmanager-install.sh      # idempotent; prints the binary path
set -euo pipefail
A=${ALERTMANAGER_HOME:-$HOME/.cache/opsctl-alertmanager-0.25}
if [ ! -x "$A/root/usr/bin/prometheus-alertmanager" ]; then
  mkdir -p "$A/dl"
  # a fresh machine may need its package lists first
  ( cd "$A/dl" && { apt-get -qq download prometheus-alertmanager 2>/dev/null || { apt-get -qq update && apt-get -qq download prometheus-alertmanager 2>/dev/null; }; } && dpkg -x prometheus-alertmanager_*.deb "$A/root" )
  rm -rf "$A/dl"
fi
echo "$A/root/usr/bin/prometheus-alertmanager"
