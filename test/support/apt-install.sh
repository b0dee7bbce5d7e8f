#!/usr/bin/env bash
# `apt-install.sh LABEL PKG...`: installs the Debian packages of a test's own tools that are
# missing, without starting or enabling any service they bring (the tests run their own
# instances, on ports of their own). Idempotent: installs nothing when all are there. LABEL
# names the caller in messages.
set -euo pipefail
label="$1"
shift
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} = 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then exec sudo -n bash "$0" "$label" "$@"; fi
  echo "$label: missing ${missing[*]} and this is not root (no sudo)" >&2
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
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "$label: installed ${missing[*]}"
