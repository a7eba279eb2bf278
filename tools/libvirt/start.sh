#!/usr/bin/env bash
# Start libvirtd (qemu:///system) without systemd, as root, remembering its
# PID in its own pid file so that stop.sh ends exactly this process.
# Idempotent: does nothing when a libvirtd already answers. Prints the pid
# file's path on its last stdout line. Run tools/libvirt/install.sh first.
set -eu -o pipefail
piddir=${CVB_LIBVIRT_PIDDIR:-/run/cvb-libvirt}
pidfile=$piddir/libvirtd.pid
uri=qemu:///system

answers() { timeout 10 virsh -q -c "$uri" uri >/dev/null 2>&1; }

if answers; then
    echo "$pidfile"
    exit 0
fi
mkdir -p "$piddir" /var/log/libvirt /run/libvirt
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    : # ours, started but not answering yet
else
    rm -f "$pidfile"
    # Messages about dnsmasq, D-Bus and dmidecode at start are harmless.
    libvirtd -d --pid-file "$pidfile" >>/var/log/libvirt/cvb-libvirtd.log 2>&1
fi
for _ in $(seq 1 100); do
    if answers; then
        echo "$pidfile"
        exit 0
    fi
    sleep 0.1
done
echo "libvirtd did not answer on $uri; see /var/log/libvirt/cvb-libvirtd.log" >&2
exit 1
