# Sourced by tools/deploy/up.sh and down.sh: the coordination backend of
# the backup plans (issue 18) and the second cinder-backup service.
#
# Cinder's coordination layer (tooz, [coordination] backend_url) decides
# which cinder-backup runs a due backup plan. A per-host file:// backend
# cannot do that for several hosts, so the deployment runs a real etcd
# (Debian's etcd-server): one member on 127.0.0.1, free ports, data in the
# profile's directory, started and stopped by its PID. cinder-backup
# reaches it through tooz's etcd3+http driver (etcd3gw, in the project's
# virtualenv: test-requirements.txt).
#
# Environment:
#   CVB_DEPLOY_PLANS  1: also for the kvm profile, and the deployment runs
#                     a second cinder-backup service (host
#                     cvb-<profile>-backup2, its own log and PID file) and
#                     ticks the plan runner every 5 s: the end-to-end tests
#                     of backup plans across two backup nodes
#                     (tests/functional/deploy/test_backup_plans_cli.py).
#
# The etcd lease of a cinder-backup's locks lasts ETCD_LOCK_TIMEOUT
# seconds after its last heartbeat (tooz's ``timeout``): how long a plan
# stays locked by a node that died.
ETCD_LOCK_TIMEOUT=${CVB_DEPLOY_ETCD_LOCK_TIMEOUT:-10}

plans_two_nodes() {
    [ "${CVB_DEPLOY_PLANS:-0}" = 1 ]
}

coordination_wanted() {
    # The plugin and kvm profiles with CVB_DEPLOY_PLANS=1 (then a missing
    # etcd is an error); otherwise one cinder-backup, for which Cinder's
    # default file:// coordination is enough; never the stock profile.
    case "$profile" in
        plugin|kvm) plans_two_nodes ;;
        *) return 1 ;;
    esac
}

etcd_prerequisites() {
    # What the coordination backend lacks here (empty: nothing).
    command -v etcd >/dev/null || echo "etcd-server (tools/install-peers.sh)"
    "$VENV/bin/python" -P -c 'import etcd3gw' 2>/dev/null \
        || echo "etcd3gw in $VENV (test-requirements.txt)"
}

etcd_up() {
    # Start the profile's etcd; its client port goes to $dir/etcd.env.
    local client peer
    client=$(cvb_free_port)
    peer=$(cvb_free_port)
    mkdir -p "$dir/etcd" "$dir/log"
    cvb_log "starting etcd on 127.0.0.1:$client (coordination)"
    cvb_start "$dir/etcd.pid" "$dir/log/etcd.log" \
        etcd --name "cvb-$profile" --data-dir "$dir/etcd/data" \
        --listen-client-urls "http://127.0.0.1:$client" \
        --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "cvb-$profile=http://127.0.0.1:$peer"
    cvb_wait_http "http://127.0.0.1:$client/health" 30 "$dir/etcd.pid" \
        || cvb_die "etcd did not start: $dir/log/etcd.log"
    echo "ETCD_PORT=$client" >"$dir/etcd.env"
}

etcd_running() {
    cvb_pid_alive "$dir/etcd.pid"
}

coordination_lines() {
    # cinder.conf's [coordination] (and, for the plan tests, [backup_plans])
    # sections.
    if ! coordination_wanted; then
        echo '# [coordination]: Cinder'"'"'s default (file://, one host)'
        return 0
    fi
    local port
    port=$(sed -n 's/^ETCD_PORT=//p' "$dir/etcd.env")
    echo '[coordination]'
    echo "backend_url = etcd3+http://127.0.0.1:$port?timeout=$ETCD_LOCK_TIMEOUT"
    if plans_two_nodes; then
        echo '[backup_plans]'
        echo '# Quick ticks for the end-to-end tests of backup plans.'
        echo 'tick_interval = 5'
    fi
}

backup2_up() {
    # The second cinder-backup: the same cinder.conf, another host name.
    printf '[DEFAULT]\nhost = cvb-%s-backup2\n' "$profile" \
        >"$dir/cinder-backup2.conf"
    cvb_start "$dir/cinder-backup2.pid" "$dir/log/cinder-backup2.out" \
        "$VENV/bin/cinder-backup" --config-file "$dir/cinder.conf" \
        --config-file "$dir/cinder-backup2.conf" \
        --log-file "$dir/log/cinder-backup2.log"
}
