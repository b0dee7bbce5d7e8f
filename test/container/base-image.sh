#!/usr/bin/env bash
# Makes the Dockerfile's base image, node:20-bookworm-slim, locally (no registry is reachable
# here): Debian bookworm from debootstrap's minbase variant, this machine's Node.js 20 with npm
# and its headers under /usr/local (where the official image has them), and a `node` user
# 1000:1000. The root filesystem is kept as a tarball in the state folder, and imported into the
# test's own podman storage when the image is missing there. Both steps are skipped when done.
# Usage: base-image.sh STATE_DIR   (podman's environment: CONTAINERS_CONF, CONTAINERS_STORAGE_CONF)
set -euo pipefail
state="$1"
image="node:20-bookworm-slim"
tarball="$state/base/node20-bookworm-slim.tar"
node_bin="$(command -v node)"
mkdir -p "$state/base"
# One maker at a time (concurrent runs share the state folder).
exec 9>"$state/base/lock"
flock 9
node_version="$("$node_bin" -v)"
case "$node_version" in
  v20.*) ;;
  *) echo "base-image: the machine's node is $node_version, not 20" >&2; exit 1 ;;
esac
# A tarball made from another Node.js version is remade.
if [ -f "$tarball" ] && [ "$(cat "$tarball.node" 2>/dev/null)" != "$node_version" ]; then
  rm -f "$tarball"
fi
if [ ! -f "$tarball" ]; then
  prefix="$(dirname "$(dirname "$(readlink -f "$node_bin")")")"   # /usr or /usr/local
  [ -d "$prefix/include/node" ] || { echo "base-image: no Node.js headers in $prefix/include/node" >&2; exit 1; }
  [ -d "$prefix/lib/node_modules/npm" ] || { echo "base-image: no npm in $prefix/lib/node_modules" >&2; exit 1; }
  rootfs="$state/base/rootfs"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  echo "base-image: debootstrap --variant=minbase bookworm (once; a few minutes)"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$state/base/debootstrap.log" 2>&1 \
    || { tail -20 "$state/base/debootstrap.log" >&2; exit 1; }
  install -D -m 755 "$node_bin" "$rootfs/usr/local/bin/node"
  mkdir -p "$rootfs/usr/local/lib/node_modules" "$rootfs/usr/local/include"
  cp -a "$prefix/lib/node_modules/npm" "$rootfs/usr/local/lib/node_modules/npm"
  cp -a "$prefix/include/node" "$rootfs/usr/local/include/node"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  chroot "$rootfs" groupadd --gid 1000 node
  chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  # As slim as the official image: no package lists, no downloaded packages, no docs.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  echo "$node_version" >"$tarball.node"
  rm -rf "$rootfs"
fi
if ! podman image exists "$image"; then
  podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=${node_version#v}" \
    --change 'CMD ["node"]' \
    "$tarball" "$image" >/dev/null
  echo "base-image: imported $image ($node_version)"
fi
