#!/usr/bin/env bash
# A real Prometheus Alertmanager (Debian bookworm's `prometheus-alertmanager` 0.25 package) for the
# alert-receiver tests: downloaded with apt-get and unpacked under $ALERTMANAGER_HOME, nothing
# installed system-wide (~30 MB, 1 s).  Debian's build reads its notification templates from the
# fixed path /usr/share/prometheus/alertmanager, so the launcher written next to it runs the binary
# in a private mount namespace where the unpacked usr/share is bind-mounted over /usr/share (for that
# process only; `unshare -r` maps the user to root when not root).
#   scripts/alertmanager-install.sh      # idempotent; prints the launcher's path
set -euo pipefail
A=${ALERTMANAGER_HOME:-$HOME/.cache/opsctl-alertmanager-0.25}
if [ ! -x "$A/root/usr/bin/prometheus-alertmanager" ]; then
  mkdir -p "$A/dl"
  # a fresh machine may need its package lists first
  ( cd "$A/dl" && { apt-get -qq download prometheus-alertmanager 2>/dev/null || { apt-get -qq update && apt-get -qq download prometheus-alertmanager 2>/dev/null; }; } && dpkg -x prometheus-alertmanager_*.deb "$A/root" )
  rm -rf "$A/dl"
fi
cat > "$A/alertmanager" <<LAUNCHER
#!/bin/sh
# runs Debian's alertmanager with its templates at /usr/share/prometheus/alertmanager (see alertmanager-install.sh)
if [ "\$(id -u)" = 0 ]; then ns="unshare -m"; else ns="unshare -rm"; fi
exec \$ns sh -c 'mount --bind "\$0/root/usr/share" /usr/share && exec "\$0/root/usr/bin/prometheus-alertmanager" "\$@"' "$A" "\$@"
LAUNCHER
chmod +x "$A/alertmanager"
echo "$A/alertmanager"
