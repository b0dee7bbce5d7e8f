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
export DEBIAN_FRONTEND=noninteractive
# invoke-rc.d asks policy-rc.d whether a package may start its service; 101 means "no". Only a
# policy we put here ourselves is removed again.
ours=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  ours=1
fi
trap 'if [ "$ours" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends haproxy >/dev/null
# Where systemd runs, keep the unit from ever starting at boot either.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
haproxy -v | head -1
