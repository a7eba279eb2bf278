#!/usr/bin/env bash
# Stop what tools/deploy/up.sh started, by the PIDs it recorded.
#
#   tools/deploy/down.sh [plugin|stock|kvm|all] [--keep-infra]
#
# plugin / stock / kvm: that profile's Cinder services and vcsim, Nova,
#   Placement and Neutron if up.sh started them (kvm: the mounts of Nova's
#   NFS stand-in, the libvirtd up.sh started for it, if it did, once no
#   libvirt domain is left defined and no other client is connected to
#   it); then Keystone,
#   RabbitMQ and MariaDB too when no other profile is running any more
#   (unless --keep-infra), and the deployment's Swift (tools/deploy/swift.sh).
# all (default): every profile, then Keystone, RabbitMQ and MariaDB.
# Data and logs stay in CVB_DEPLOY_DIR for inspection; up.sh starts afresh.
set -eu -o pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/swift.sh"
source "$(dirname "$0")/nova.sh"

what=${1:-all}
keep_infra=0
[ "${2:-}" = --keep-infra ] && keep_infra=1
case "$what" in
    plugin|stock|kvm) profiles=("$what") ;;
    all) profiles=("${CVB_PROFILES[@]}") ;;
    *) cvb_die "unknown argument '$what' (plugin, stock, kvm or all)" ;;
esac
[ -d "$CVB_DEPLOY_DIR" ] || exit 0

private_libvirt_down() {
    # private_libvirt_down DIR: the profile's own libvirtd (tools/deploy/
    # nova.sh, Nova's): every domain on it is the profile's, destroyed and
    # undefined first (QEMU processes would outlive libvirtd), then
    # libvirtd is stopped by its PID.
    local uri name
    [ -f "$1/libvirt.uri" ] || return 0
    uri=$(cat "$1/libvirt.uri")
    if cvb_pid_alive "$1/libvirtd.pid"; then
        for name in $(timeout 10 virsh -q -c "$uri" list --all --name \
                      2>/dev/null); do
            cvb_log "destroying domain $name left on the profile's libvirtd"
            timeout 30 virsh -q -c "$uri" destroy "$name" >/dev/null 2>&1 \
                || true
            timeout 30 virsh -q -c "$uri" undefine --nvram "$name" \
                >/dev/null 2>&1 || true
        done
        cvb_stop "$1/libvirtd.pid" 15
        cvb_log "stopped the profile's libvirtd"
    fi
    rm -f "$1/libvirt.uri"
}

libvirt_down() {
    # libvirt_down DIR: stop the libvirtd up.sh started for the kvm profile
    # in DIR (tools/libvirt/stop.sh, by its pid file there), unless a
    # domain is still defined: whoever made it (a test's stand-in instance,
    # or another user of this libvirtd) removes it first.
    local piddir=$1/libvirt domains clients
    cvb_pid_alive "$piddir/libvirtd.pid" || return 0
    domains=$(timeout 10 virsh -q -c qemu:///system list --all --name \
              2>/dev/null | grep -v '^$' || true)
    if [ -n "$domains" ]; then
        cvb_log "libvirtd left running: domains defined:" $domains
        return 0
    fi
    # Someone else (a KVM test on another worker) connected to it.
    clients=$(timeout 10 virt-admin -q -c libvirtd:///system client-list \
              libvirtd 2>/dev/null | grep -cE '^ *[0-9]+ ' || true)
    if [ "${clients:-0}" != 0 ]; then
        cvb_log "libvirtd left running: $clients client(s) connected"
        return 0
    fi
    CVB_LIBVIRT_PIDDIR=$piddir bash "$CVB_TOP/tools/libvirt/stop.sh"
    cvb_log "stopped libvirtd"
}

if [ "${CVB_DEPLOY_LOCKED:-0}" != 1 ]; then
    exec 7>"$CVB_DEPLOY_DIR/.lock"
    flock 7
fi

for profile in "${profiles[@]}"; do
    dir=$CVB_DEPLOY_DIR/$profile
    [ -d "$dir" ] || continue
    # Nova first (nova-compute may still detach volumes through Cinder),
    # all its services at once.
    pidfiles=()
    for s in nova-compute nova-scheduler nova-conductor nova-api placement \
            neutron-api; do
        [ -f "$dir/$s.pid" ] && pidfiles+=("$dir/$s.pid")
    done
    if [ ${#pidfiles[@]} -gt 0 ]; then
        cvb_stop_all 30 "${pidfiles[@]}"
        cvb_log "stopped Nova of profile '$profile'"
    fi
    pidfiles=()
    for s in cinder-backup cinder-backup2 cinder-volume cinder-scheduler \
            cinder-api vcsim; do
        [ -f "$dir/$s.pid" ] && pidfiles+=("$dir/$s.pid")
    done
    if [ ${#pidfiles[@]} -gt 0 ]; then
        cvb_stop_all 30 "${pidfiles[@]}"
        cvb_log "stopped profile '$profile'"
    fi
    # The coordination backend after the services that hold its locks.
    if [ -f "$dir/etcd.pid" ]; then
        cvb_stop "$dir/etcd.pid" 15
        cvb_log "stopped the etcd of profile '$profile'"
    fi
    private_libvirt_down "$dir"
    # After the domains: the NFS stand-in's mounts (tools/deploy/nova.sh).
    nova_nfs_standin_down "$dir"
    libvirt_down "$dir"
done

[ "$keep_infra" = 1 ] && exit 0
for profile in "${CVB_PROFILES[@]}"; do
    for s in up cinder-api cinder-scheduler cinder-volume cinder-backup \
            cinder-backup2 nova-compute neutron-api; do
        if cvb_pid_alive "$CVB_DEPLOY_DIR/$profile/$s.pid"; then
            cvb_log "profile '$profile' still runs or starts: RabbitMQ," \
                "MariaDB and Keystone stay up"
            exit 0
        fi
    done
done
infra=$CVB_DEPLOY_DIR/infra
swift_down
for s in keystone rabbitmq epmd mariadb; do
    if [ -f "$infra/$s.pid" ]; then
        cvb_stop "$infra/$s.pid" 30
        cvb_log "stopped $s"
    fi
done
exit 0
