#!/usr/bin/env bash
# Build the project's patched vcsim, or reuse the cached build.
#
#   bash tools/vcsim/build.sh [--tree]
#
# Source: Debian's golang-github-vmware-govmomi 0.24.2 source package
# (`apt-get source`, needs a deb-src line: tools/vcsim/install.sh adds one).
# The project's patch series tools/vcsim/patches/*.patch is applied in
# order, then vcsim is built with Debian's Go in GOPATH mode
# (GO111MODULE=off; github.com/google/uuid and github.com/klauspost/compress
# come from Debian's golang-github-google-uuid-dev and
# golang-github-klauspost-compress-dev).
#
# Cache: $CVB_CACHE_DIR (default ~/.cache/cinder-vmdk-backup)/vcsim-<hash>/,
# <hash> covering the patches and this script, so a changed patch means a
# new build and an unchanged series is never rebuilt. It holds the binary
# (vcsim), the patched source tree (gopath/, for selfcheck.sh) and the
# vim25 Go sources the WSDL is generated from (see wsdl.sh).
#
# The last line printed on stdout is the binary's path (with --tree: the
# patched govmomi source tree's path).
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=0.24.2
cache_root=${CVB_CACHE_DIR:-${HOME:-/root}/.cache/cinder-vmdk-backup}

series_digest() {
    cat "$here/build.sh"
    local p
    for p in "$here"/patches/*.patch; do
        if [ -f "$p" ]; then basename "$p"; cat "$p"; fi
    done
}
hash=$(series_digest | sha256sum | cut -c1-16)
out=$cache_root/vcsim-$hash
tree=$out/gopath/src/github.com/vmware/govmomi

report() {
    if [ "${1:-}" = --tree ]; then echo "$tree"; else echo "$out/vcsim"; fi
}

if [ -x "$out/vcsim" ] && [ -f "$out/.complete" ]; then
    report "${1:-}"
    exit 0
fi

mkdir -p "$cache_root"
# One build at a time (parallel test workers may all ask for the binary).
exec 9>"$cache_root/.vcsim-build.lock"
flock 9
if [ -x "$out/vcsim" ] && [ -f "$out/.complete" ]; then
    report "${1:-}"
    exit 0
fi

# The pristine Debian source, fetched once and kept.
src=$cache_root/govmomi-$version-debian
if [ ! -f "$src/.complete" ]; then
    rm -rf "$src" "$src.tmp"
    mkdir -p "$src.tmp"
    (cd "$src.tmp" && apt-get source -qq "golang-github-vmware-govmomi" \
        >&2)
    unpacked=$(ls -d "$src.tmp"/golang-github-vmware-govmomi-*/ | head -n1)
    case "$unpacked" in
        *-$version/) ;;
        *) echo "build.sh: expected govmomi $version, apt-get source gave" \
                "$unpacked" >&2; exit 1 ;;
    esac
    mv "$unpacked" "$src"
    rm -rf "$src.tmp"
    touch "$src/.complete"
fi

rm -rf "$out"
mkdir -p "$out/gopath/src/github.com/vmware" "$out/gopath/src/github.com/google"
cp -a "$src" "$tree"
rm -f "$tree/.complete"
ln -s /usr/share/gocode/src/github.com/google/uuid \
    "$out/gopath/src/github.com/google/uuid"
ln -s /usr/share/gocode/src/github.com/klauspost \
    "$out/gopath/src/github.com/klauspost"
for p in "$here"/patches/*.patch; do
    [ -f "$p" ] || continue
    echo "build.sh: applying $(basename "$p")" >&2
    patch -s -p1 -N -d "$tree" < "$p" >&2
done

(cd "$tree" && GOPATH=$out/gopath GO111MODULE=off GOFLAGS= \
    GOCACHE=$cache_root/go-build go build -o "$out/vcsim" ./vcsim) >&2
mkdir -p "$out/vim25"
cp "$tree/vim25/types/types.go" "$tree/vim25/types/enum.go" \
    "$tree/vim25/methods/methods.go" "$out/vim25/"
# The series' own bindings (vSphere's internal methods), for gen_wsdl.py.
for f in "$tree"/vim25/types/cvb_*.go "$tree"/vim25/methods/cvb_*.go; do
    if [ -f "$f" ]; then cp "$f" "$out/vim25/"; fi
done
touch "$out/.complete"
# Older builds (other patch series) are left for `rm -rf` by hand; they
# are small and a branch switch would otherwise rebuild.
report "${1:-}"
