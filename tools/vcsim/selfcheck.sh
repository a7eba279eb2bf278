#!/usr/bin/env bash
# Self-check of the patched vcsim (not part of CI: minutes of CPU).
#
#   bash tools/vcsim/selfcheck.sh
#
# Builds the patched tree (build.sh) and runs govmomi's own simulator tests
# on it: the patch series must keep them passing. Only the Test* functions
# run; the Example* functions of ./simulator try to start docker and hang.
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${CVB_CACHE_DIR:-${HOME:-/root}/.cache/cinder-vmdk-backup}
tree=$(bash "$here/build.sh" --tree | tail -n1)
gopath=${tree%/src/github.com/vmware/govmomi}
cd "$tree"
GOPATH=$gopath GO111MODULE=off GOFLAGS= GOCACHE=$cache_root/go-build \
    go test -count=1 -run '^Test' ./simulator/ ./vim25/xml/
