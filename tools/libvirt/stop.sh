#!/usr/bin/env bash
# Stop the libvirtd that start.sh started, by the PID in its pid file.
# Idempotent: does nothing when that process is not running. A libvirtd
# that start.sh did not start is left alone. Running domains are not
# touched (libvirtd leaves them running); whoever started them stops them.
set -eu -o pipefail
piddir=${CVB_LIBVIRT_PIDDIR:-/run/cvb-libvirt}
pidfile=$piddir/libvirtd.pid
[ -s "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null && \
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = libvirtd ]; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
    fi
fi
rm -f "$pidfile"
exit 0
