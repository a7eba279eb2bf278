#!/usr/bin/env bash
# Stop what tools/deploy/up.sh started, by the PIDs it recorded.
#
#   tools/deploy/down.sh [plugin|stock|all]
#
# plugin / stock: that profile's Cinder services and vcsim.
# all (default): both profiles, then Keystone, RabbitMQ and MariaDB.
# Data and logs stay in CVB_DEPLOY_DIR for inspection; up.sh starts afresh.
set -eu -o pipefail
source "$(dirname "$0")/lib.sh"

what=${1:-all}
case "$what" in
    plugin|stock) profiles=("$what") ;;
    all) profiles=("${CVB_PROFILES[@]}") ;;
    *) cvb_die "unknown argument '$what' (plugin, stock or all)" ;;
esac

for profile in "${profiles[@]}"; do
    dir=$CVB_DEPLOY_DIR/$profile
    [ -d "$dir" ] || continue
    for s in cinder-backup cinder-volume cinder-scheduler cinder-api vcsim; do
        if [ -f "$dir/$s.pid" ]; then
            cvb_stop "$dir/$s.pid" 30
            cvb_log "stopped $profile $s"
        fi
    done
done

if [ "$what" = all ]; then
    infra=$CVB_DEPLOY_DIR/infra
    for s in keystone rabbitmq epmd mariadb; do
        if [ -f "$infra/$s.pid" ]; then
            cvb_stop "$infra/$s.pid" 30
            cvb_log "stopped $s"
        fi
    done
fi
exit 0
