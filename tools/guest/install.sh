#!/usr/bin/env bash
# Build the Linux test guest (kernel + initramfs with the QEMU guest agent)
# into its cache, so that the functional tests find it ready. The Debian
# packages it copies libraries from are installed by tools/install-peers.sh.
# Idempotent: quick when the cache holds a build of the same inputs.
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/build-linux-guest.py" >/dev/null
