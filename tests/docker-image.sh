#!/usr/bin/env bash
# Builds the busybox image that tests/exec.rs runs EXEC_CMD containers in,
# without a registry: a root filesystem of busybox-static and its applet
# symlinks, tarred and loaded with `docker import`.
#
#   tests/docker-image.sh SOCKET [IMAGE]
#
# SOCKET is the engine's Unix socket (e.g. /run/agentos-test-docker/docker.sock);
# IMAGE defaults to agentos-busybox:test. Idempotent: an existing image is kept.
# Needs busybox-static (/bin/busybox, statically linked) and the docker CLI.
set -euo pipefail

sock="${1:?usage: $0 SOCKET [IMAGE]}"
image="${2:-agentos-busybox:test}"
docker=(docker -H "unix://${sock#unix://}")

if "${docker[@]}" image inspect "$image" >/dev/null 2>&1; then
  echo "image $image present"
  exit 0
fi

busybox=/bin/busybox
# ldd exits 1 on a static binary; only its message matters.
if [[ "$(ldd "$busybox" 2>&1 || true)" != *"not a dynamic"* ]]; then
  echo "$busybox is not statically linked: install busybox-static" >&2
  exit 1
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,workspace,proc,sys,dev}
cp "$busybox" "$root/bin/busybox"
# One symlink per applet, where busybox itself would install it.
"$root/bin/busybox" --list-full | while read -r applet; do
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
# `--tmpfs /tmp` takes the mode of the image's /tmp.
chmod 1777 "$root/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
tar -C "$root" -cf "$root.tar" .
"${docker[@]}" import "$root.tar" "$image" >/dev/null
rm -f "$root.tar"
echo "image $image imported"
