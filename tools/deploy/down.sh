#!/usr/bin/env bash
# Stop what tools/deploy/up.sh started, by the PIDs it recorded.
#
#   tools/deploy/down.sh [plugin|stock|all] [--keep-infra]
#
# plugin / stock: that profile's Cinder services and vcsim; then Keystone,
#   RabbitMQ and MariaDB too when no other profile is running any more
#   (unless --keep-infra).
# all (default): both profiles, then Keystone, RabbitMQ and MariaDB.
# Data and logs stay in CVB_DEPLOY_DIR for inspection; up.sh starts afresh.
set -eu -o pipefail
source "$(dirname "$0")/lib.sh"

what=${1:-all}
keep_infra=0
[ "${2:-}" = --keep-infra ] && keep_infra=1
case "$what" in
    plugin|stock) profiles=("$what") ;;
    all) profiles=("${CVB_PROFILES[@]}") ;;
    *) cvb_die "unknown argument '$what' (plugin, stock or all)" ;;
esac
[ -d "$CVB_DEPLOY_DIR" ] || exit 0

if [ "${CVB_DEPLOY_LOCKED:-0}" != 1 ]; then
    exec 7>"$CVB_DEPLOY_DIR/.lock"
    flock 7
fi

for profile in "${profiles[@]}"; do
    dir=$CVB_DEPLOY_DIR/$profile
    [ -d "$dir" ] || continue
    pidfiles=()
    for s in cinder-backup cinder-volume cinder-scheduler cinder-api vcsim; do
        [ -f "$dir/$s.pid" ] && pidfiles+=("$dir/$s.pid")
    done
    if [ ${#pidfiles[@]} -gt 0 ]; then
        cvb_stop_all 30 "${pidfiles[@]}"
        cvb_log "stopped profile '$profile'"
    fi
done

[ "$keep_infra" = 1 ] && exit 0
for profile in "${CVB_PROFILES[@]}"; do
    for s in up cinder-api cinder-scheduler cinder-volume cinder-backup; do
        if cvb_pid_alive "$CVB_DEPLOY_DIR/$profile/$s.pid"; then
            cvb_log "profile '$profile' still runs or starts: RabbitMQ," \
                "MariaDB and Keystone stay up"
            exit 0
        fi
    done
done
infra=$CVB_DEPLOY_DIR/infra
for s in keystone rabbitmq epmd mariadb; do
    if [ -f "$infra/$s.pid" ]; then
        cvb_stop "$infra/$s.pid" 30
        cvb_log "stopped $s"
    fi
done
exit 0
