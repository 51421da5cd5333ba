#!/usr/bin/env bash
# A real Prometheus (Debian bookworm's `prometheus` 2.42 package, binary only) for the prometheus.query
# tests: downloaded with apt-get and unpacked under $PROM_HOME, nothing installed system-wide (~20 MB, 1 s).
#   scripts/prometheus-install.sh      # idempotent; prints the binary path
set -euo pipefail
P=${PROM_HOME:-$HOME/.cache/opsctl-prometheus-2.42}
if [ ! -x "$P/root/usr/bin/prometheus" ]; then
  mkdir -p "$P/dl"
  # a fresh machine may need its package lists first
  ( cd "$P/dl" && { apt-get -qq download prometheus 2>/dev/null || { apt-get -qq update && apt-get -qq download prometheus 2>/dev/null; }; } && dpkg -x prometheus_*.deb "$P/root" )
  rm -rf "$P/dl"
fi
echo "$P/root/usr/bin/prometheus"
