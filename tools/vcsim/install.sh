#!/usr/bin/env bash
# Install what the patched vcsim (govmomi's vSphere API simulator) needs on a
# Debian 12 machine, as root, then build it (tools/vcsim/build.sh);
# openssl makes the CA and certificate a vcsim serves (tools/vcsim/tls.sh).
#
# Debian ships govmomi 0.24.2; its binary package leaves vcsim out, so the
# simulator is built from the Debian *source* package with Debian's Go. The
# sources list of a stock Debian 12 image has "Types: deb" only: a deb-src
# entry for bookworm is added once.
#
# Idempotent and quick when everything is there already.
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)

apt_get() {
    # Other installers may hold the dpkg lock; wait for it instead of failing.
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 "$@"
}

updated=0
src_list=/etc/apt/sources.list.d/cinder-vmdk-backup-deb-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ \
        && ! grep -qs '^deb-src .* bookworm ' /etc/apt/sources.list; then
    cat > "$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_get update -qq
    updated=1
fi

packages=(golang-go golang-github-google-uuid-dev
          golang-github-klauspost-compress-dev dpkg-dev patch xz-utils
          qemu-utils openssl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ $updated = 1 ] || apt_get update -qq
    apt_get install -y -qq "${missing[@]}" >/dev/null
fi

bash "$here/build.sh" >/dev/null
