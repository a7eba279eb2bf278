#!/usr/bin/env bash
# Install the test peers on a Debian 12 machine (as root): Debian packages
# the tests use, and what the tools under tools/ build (vcsim).
# Safe to run again: it only installs what is missing.
set -eu -o pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

packages=(python3-venv qemu-utils)
# The coordination backend of the backup plan tests (tests/functional/plans):
# a real etcd that the tests start on 127.0.0.1, reached through tooz.
packages+=(etcd-server)
# The Linux test guest (tools/guest): e2fsprogs makes and reads its ext4
# filesystems on the host; qemu-ga's shared libraries are copied from the
# host into its initramfs (the kernel, busybox and qemu-ga themselves are
# fetched with apt-get download, not installed).
packages+=(e2fsprogs libglib2.0-0 libnuma1 liburing2 libudev1)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Each peer's own installer, where one exists.
for installer in "$top"/tools/*/install.sh; do
    [ -f "$installer" ] && bash "$installer"
done
exit 0
