#!/usr/bin/env bash
# Installs Debian's haproxy for the scale-out tests when it is missing, without starting the
# system service: the tests run their own haproxy in the foreground on ports of their own, and a
# packaged one listening on *:80 or restarted by an init system would only get in their way.
set -euo pipefail
if command -v haproxy >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then exec sudo -n bash "$0" "$@"; fi
  echo "install-haproxy: haproxy is missing and this is not root (no sudo)" >&2
  exit 1
fi
bash "$(dirname "$0")/apt-install.sh" install-haproxy haproxy >/dev/null
# Where systemd runs, keep the unit from ever starting at boot either.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
haproxy -v | head -1
