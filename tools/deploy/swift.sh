# Sourced by tools/deploy/up.sh and down.sh: a one-replica Swift cluster
# (Debian's swift-proxy, -account, -container and -object servers) for the
# profiles whose backups go to Swift (CVB_DEPLOY_BACKUP_STORE=swift).
#
# One Swift per deployment directory, shared by its profiles like MariaDB
# and Keystone: Cinder's Swift driver in single_user mode takes the
# object-store endpoint from Keystone's catalog without a region filter,
# so a deployment has exactly one. Everything lives in $infra/swift: the
# servers' configuration, the rings (built here, one device, one
# replica) and the device itself, a plain directory (mount_check = false;
# no loop device). The four servers listen on 127.0.0.1 (plain HTTP: TLS
# buys nothing on the loopback interface), run as one process each
# (workers = 0) and are started and stopped by their PIDs.
#
# Keystone authenticates Swift's users (keystonemiddleware's authtoken and
# Swift's keystoneauth in the proxy's pipeline): the proxy validates tokens
# as the 'swift' service user; the 'object-store' service and its endpoint
# are in the catalog. Cinder's backup driver logs in as its own service
# user ('cinder', project 'service', role admin: an operator role of
# keystoneauth), so every profile's backups land in the service project's
# Swift account, in a container named after the profile.
#
# The hash path prefix and suffix and the storage policies come from
# Debian's /etc/swift/swift.conf (Swift reads them from there and nowhere
# else); this file does not change it.
#
# Uses up.sh's variables and functions (infra, cvb_*, openstack_admin).

swift_servers=(swift-account swift-container swift-object swift-proxy)

swift_wanted() {
    [ "${CVB_DEPLOY_BACKUP_STORE:-posix}" = swift ]
}

swift_prerequisites() {
    # Echoes what is missing for Swift (nothing: all there).
    local s
    for s in "${swift_servers[@]}"; do
        command -v "$s-server" >/dev/null || { echo "$s"; return 0; }
    done
    command -v swift-ring-builder >/dev/null || { echo swift; return 0; }
    /usr/bin/python3 -c 'import keystonemiddleware.auth_token' \
        2>/dev/null || echo python3-keystonemiddleware
    "$VENV/bin/python" -c 'import swiftclient' 2>/dev/null \
        || echo "python-swiftclient in $VENV"
}

swift_running() {
    local s
    for s in "${swift_servers[@]}"; do
        cvb_pid_alive "$infra/$s.pid" || return 1
    done
}

swift_env() {
    # Ports (the rings name the storage servers' ports: chosen once) and
    # the password of the proxy's service user.
    if [ ! -f "$infra/swift.env" ]; then
        cat >"$infra/swift.env" <<ENV
SWIFT_PORT=$(cvb_free_port)
SWIFT_ACCOUNT_PORT=$(cvb_free_port)
SWIFT_CONTAINER_PORT=$(cvb_free_port)
SWIFT_OBJECT_PORT=$(cvb_free_port)
SWIFT_SERVICE_PASSWORD=$(cvb_secret)
ENV
    fi
    cvb_load_env "$infra/swift.env"
}

swift_storage_conf() {
    # swift_storage_conf KIND PORT: the configuration of a storage server.
    local kind=$1 port=$2 sd=$infra/swift
    cat >"$sd/$kind-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = 0
user = $(id -un)
swift_dir = $sd
devices = $sd/devices
mount_check = false
log_name = $kind-server
log_level = INFO

[pipeline:main]
pipeline = $kind-server

[app:$kind-server]
use = egg:swift#$kind
CONF
}

swift_rings() {
    # One device (d1) per ring, one replica, 2^6 partitions.
    local sd=$infra/swift kind port
    for kind in account container object; do
        [ -f "$sd/$kind.ring.gz" ] && continue
        case $kind in
            account) port=$SWIFT_ACCOUNT_PORT ;;
            container) port=$SWIFT_CONTAINER_PORT ;;
            object) port=$SWIFT_OBJECT_PORT ;;
        esac
        (cd "$sd" && rm -f "$kind.builder"
         swift-ring-builder "$kind.builder" create 6 1 1
         swift-ring-builder "$kind.builder" add \
             "r1z1-127.0.0.1:$port/d1" 100
         swift-ring-builder "$kind.builder" rebalance) \
            >>"$infra/swift-setup.log" 2>&1 \
            || cvb_die "swift-ring-builder failed: $infra/swift-setup.log"
    done
}

swift_proxy_conf() {
    local sd=$infra/swift
    cat >"$sd/proxy-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $SWIFT_PORT
workers = 0
user = $(id -un)
swift_dir = $sd
log_name = proxy-server
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging listing_formats authtoken keystoneauth copy dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
# Keystone's projects get their Swift account on first use.
account_autocreate = true

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = http://127.0.0.1:$KEYSTONE_PORT/v3
auth_url = http://127.0.0.1:$KEYSTONE_PORT/v3
auth_type = password
interface = public
project_domain_name = Default
user_domain_name = Default
project_name = service
username = swift
password = $SWIFT_SERVICE_PASSWORD
delay_auth_decision = true
# No memcached here: authtoken caches tokens in the process.

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
reseller_admin_role = ResellerAdmin

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging
# Tokens never in the log, not even their first characters.
reveal_sensitive_prefix = 0

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
CONF
}

keystone_swift() {
    # The proxy's service user, the object-store service and its endpoint
    # (region RegionOne, Keystone's own). Once per Keystone and Swift port.
    # One client session does it all (each client start costs seconds);
    # an object-store service from before (a Swift on another port) has
    # its endpoints replaced.
    local ks=$infra/keystone types ids out
    [ "$(cat "$ks/.swift" 2>/dev/null)" = "$SWIFT_PORT" ] && return 0
    types=$(openstack_admin service list -f value -c Type 2>/dev/null) \
        || true
    ids=
    if grep -qx object-store <<<"$types"; then
        ids=$(openstack_admin endpoint list --service object-store \
              -f value -c ID 2>/dev/null) || true
    fi
    out=$({
        echo "user create --domain default --or-show swift"
        echo "user set --password $SWIFT_SERVICE_PASSWORD swift"
        echo "role add --project service --user swift service"
        grep -qx object-store <<<"$types" \
            || echo "service create --name swift object-store"
        for id in $ids; do echo "endpoint delete $id"; done
        echo "endpoint create --region RegionOne object-store public" \
             "http://127.0.0.1:$SWIFT_PORT/v1/AUTH_%(project_id)s"
        echo "endpoint list --service object-store -f value -c URL"
    } | openstack_admin 2>&1) || true
    echo "$out" >>"$infra/keystone-setup.log"
    grep -q "127.0.0.1:$SWIFT_PORT/v1/AUTH_" <<<"$out" \
        || cvb_die "no object-store endpoint in Keystone:" \
            "$infra/keystone-setup.log"
    echo "$SWIFT_PORT" >"$ks/.swift"
}

swift_ready() {
    # swift_ready SECONDS: until Cinder's own client, logged in as Cinder
    # through Keystone, reads the service project's Swift account (the
    # whole path: catalog, proxy, authtoken, keystoneauth, the account
    # and container servers; the account is made on this first use).
    CVB_SWIFT_KEY=$CINDER_SERVICE_PASSWORD "$VENV/bin/python" - \
        "http://127.0.0.1:$KEYSTONE_PORT/v3" "$1" <<'PY'
import os
import sys
import time

from swiftclient import client

deadline = time.monotonic() + float(sys.argv[2])
while True:
    conn = client.Connection(
        authurl=sys.argv[1], auth_version='3', user='cinder',
        key=os.environ['CVB_SWIFT_KEY'], retries=0,
        os_options={'project_name': 'service', 'user_domain_name': 'Default',
                    'project_domain_name': 'Default'})
    try:
        conn.put_container('cvb-ready-check')
        conn.delete_container('cvb-ready-check')
        break
    except Exception as e:
        if time.monotonic() > deadline:
            sys.exit('Swift does not answer: %s' % type(e).__name__)
        time.sleep(0.3)
PY
}

swift_up() {
    local sd=$infra/swift s kind port
    swift_env
    if swift_running; then
        keystone_swift
        return 0
    fi
    cvb_log "starting Swift on 127.0.0.1:$SWIFT_PORT"
    for s in "${swift_servers[@]}"; do
        cvb_stop "$infra/$s.pid" 5
    done
    mkdir -p "$sd/devices/d1"
    swift_rings
    swift_storage_conf account "$SWIFT_ACCOUNT_PORT"
    swift_storage_conf container "$SWIFT_CONTAINER_PORT"
    swift_storage_conf object "$SWIFT_OBJECT_PORT"
    swift_proxy_conf
    keystone_swift
    # -v: the servers log to their standard error (their log file) too;
    # without a syslog socket their syslog handler sends to nobody.
    for kind in account container object proxy; do
        cvb_start "$infra/swift-$kind.pid" "$infra/swift-$kind.log" \
            "swift-$kind-server" "$sd/$kind-server.conf" -v
    done
    for kind in account container object proxy; do
        case $kind in
            account) port=$SWIFT_ACCOUNT_PORT ;;
            container) port=$SWIFT_CONTAINER_PORT ;;
            object) port=$SWIFT_OBJECT_PORT ;;
            proxy) port=$SWIFT_PORT ;;
        esac
        cvb_wait_port "$port" 60 "$infra/swift-$kind.pid" \
            || cvb_die "swift-$kind-server did not start:" \
                "$infra/swift-$kind.log"
    done
    swift_ready 60 || cvb_die "Swift is not usable: $infra/swift-proxy.log"
    cvb_log "Swift is up"
}

swift_down() {
    local s pidfiles=()
    for s in "${swift_servers[@]}"; do
        [ -f "$infra/$s.pid" ] && pidfiles+=("$infra/$s.pid")
    done
    [ ${#pidfiles[@]} -gt 0 ] || return 0
    cvb_stop_all 30 "${pidfiles[@]}"
    cvb_log "stopped Swift"
}
