#!/usr/bin/env bash
# Installs what the container test needs from Debian's packages when it is missing: podman (the
# engine, daemonless), runc (crun refuses this machine's hybrid cgroup layout) and debootstrap
# (the test makes its own base image: no registry is reachable). Idempotent; no service is
# started or enabled (test/support/apt-install.sh).
set -euo pipefail
exec bash "$(dirname "$0")/../support/apt-install.sh" container-test podman runc debootstrap
