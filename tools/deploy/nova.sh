# Sourced by tools/deploy/up.sh when CVB_DEPLOY_NOVA=1, for the kvm and the
# plugin profiles: Nova (nova-api, nova-conductor, nova-scheduler,
# nova-compute) and Placement, from Nova's own virtualenv
# (tools/deploy/install.sh: $CVB_NOVA_VENV), with the deployment's RabbitMQ,
# MariaDB and Keystone, everything on 127.0.0.1 and started by PID.
# nova-compute runs the libvirt driver on QEMU/TCG in the kvm profile, and
# Nova's VMware driver (vmwareapi.VMwareVCDriver) against the profile's
# vcsim in the plugin profile.
#
# nova-api and Placement ship only WSGI applications (Nova 34 has no
# nova-api command): gunicorn serves them, as it serves Keystone.
# Servers are booted with `--nic none`: no network, but Nova asks the
# Neutron API (tools/deploy/neutron.sh) about them on show, start and
# delete.
#
# kvm: volumes of the plugin's qcow2 driver reach Nova as NFS connections
# (qcow2_connection_type = nfs: the one connection Nova 34's libvirt driver
# attaches with the connection's format, qcow2). This kernel has no NFS
# client, so the share's mount is stood in for (nova_nfs_standin_up): Nova's
# privsep daemon finds a `mount` wrapper first on its PATH that turns
# `mount -t nfs 127.0.0.1:<the profile's qcow2 dir> <mount point>` into a
# bind mount of that directory; Nova's own `umount` at the last detach
# undoes it. Everything else is Nova's real NFS path.
#
# plugin: the VMDK driver's volumes reach Nova as `vmdk` connections (the
# volume's backing VM); Nova's VMware driver adds the backing's disk file
# to the server's VM, in the vCenter (vcsim) that Cinder uses, verified
# against the profile's CA as Cinder verifies it.
#
# Uses up.sh's variables and functions (dir, profile, infra ports and
# passwords, API_PORT, LIBVIRT_URI or the VCSIM_* settings, mariadb_client,
# rabbitmqctl, openstack_admin) and writes NOVA_API_PORT, PLACEMENT_PORT to
# $dir/nova.env.

nova_services=(nova-conductor nova-scheduler nova-compute)
NOVA_FLAVOR=cvb.tiny

nova_wanted() {
    case $profile in
        kvm|plugin) [ "${CVB_DEPLOY_NOVA:-0}" = 1 ] ;;
        *) return 1 ;;
    esac
}

nova_on_vmware() {
    # nova-compute drives vCenter (the profile's vcsim), not libvirt.
    [ "$profile" != kvm ]
}

# Nova's [libvirt] nfs_mount_point_base, the stand-in's directory and the
# export the qcow2 driver names: paths of the profile ($dir).
nova_mount_base() { echo "$dir/nova/mnt"; }
nova_nfs_standin_dir() { echo "$dir/nova/nfs-standin"; }
nova_nfs_export() { echo "127.0.0.1:$dir/qcow2"; }

qcow2_connection_lines() {
    # The qcow2 backend's connection lines (backend-qcow2.conf.in): nfs
    # with Nova (the kvm profile's libvirt driver), else os-brick's
    # LocalConnector (the tests' stand-in instances attach the file path
    # themselves).
    if nova_wanted && ! nova_on_vmware; then
        cat <<LINES
# Nova's NFS volume driver mounts the export (the NFS stand-in of
# tools/deploy/nova.sh) and attaches <base>/<md5 of the export>/<name> as
# qcow2.
qcow2_connection_type = nfs
qcow2_nfs_export = $(nova_nfs_export)
qcow2_nfs_mount_point_base = $(nova_mount_base)
LINES
    else
        cat <<LINES
# os-brick's LocalConnector: the connection info names the file
# (device_path) and its format (qcow2).
qcow2_connection_type = local
LINES
    fi
}

nova_nfs_standin_up() {
    # The mount point base: a tmpfs of its own, so that a bind mount under
    # it is a mount point to Python's os.path.ismount (Nova's test before
    # mounting and unmounting: a bind mount of a directory of the same
    # filesystem has its parent's st_dev), made shared so that the mounts
    # Nova makes later in this namespace reach the libvirtd's (a slave
    # of it: nova_libvirt_up). Then the `mount` wrapper for Nova's privsep
    # daemon ([nova_sys_admin] helper_command puts its directory first on
    # the daemon's PATH).
    local base standin rdir
    base=$(nova_mount_base)
    standin=$(nova_nfs_standin_dir)
    mkdir -p "$base" "$standin"
    base=$(realpath -e "$base")
    rdir=$(realpath -e "$dir")
    if ! mountpoint -q "$base"; then
        mount -t tmpfs -o size=1m,mode=0700 cvb-nova-mnt "$base" \
            || cvb_die "could not mount a tmpfs on $base"
    fi
    mount --make-shared "$base" \
        || cvb_die "could not make $base a shared mount"
    cat >"$standin/mount" <<WRAPPER
#!/bin/bash
# The NFS stand-in of the kvm profile (tools/deploy/nova.sh), first on the
# PATH of Nova's privsep daemon: this kernel has no NFS client.
#   mount -t nfs [-o OPTIONS]... 127.0.0.1:PATH MOUNTPOINT
# becomes 'mount --bind PATH MOUNTPOINT' for a PATH inside the profile
# ($rdir) and a MOUNTPOINT directly under Nova's nfs_mount_point_base
# ($base); any other NFS mount is refused; every other call is /bin/mount's.
profile_dir='$rdir'
base='$base'
log='$dir/log/nfs-standin.log'
WRAPPER
    cat >>"$standin/mount" <<'WRAPPER'
umask 077
say() {
    printf '%s mount[%d]: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S')" $$ "$*" \
        >>"$log"
}
refuse() {
    say "refused: $*"
    echo "mount (NFS stand-in): $*" >&2
    exit 32
}
nfs=0 prev=
for a in "$@"; do
    [ "$prev" = -t ] && [ "$a" = nfs ] && nfs=1
    prev=$a
done
[ "$nfs" = 1 ] || exec /bin/mount "$@"
say "called: mount $*"
opts=() pos=()
while [ $# -gt 0 ]; do
    case $1 in
        -t) shift 2 ;;
        -o) opts+=("${2:-}"); shift 2 ;;
        -*) refuse "option $1 (the stand-in takes -t nfs and -o)" ;;
        *) pos+=("$1"); shift ;;
    esac
done
[ ${#pos[@]} = 2 ] || refuse "expected EXPORT MOUNTPOINT, got: ${pos[*]}"
export_=${pos[0]} mp=${pos[1]}
host=${export_%%:*} path=${export_#*:}
[ "$host" = 127.0.0.1 ] || refuse "host $host is not 127.0.0.1"
real=$(realpath -e -- "$path" 2>/dev/null) || refuse "no directory $path"
case $real/ in
    "$profile_dir"/*) ;;
    *) refuse "$path is outside the profile ($profile_dir)" ;;
esac
[ -d "$real" ] || refuse "$path is not a directory"
mpreal=$(realpath -e -- "$mp" 2>/dev/null) || refuse "no mount point $mp"
[ "$(dirname -- "$mpreal")" = "$base" ] \
    || refuse "mount point $mp is not directly under $base"
ro=()
for o in "${opts[@]}"; do
    case ,$o, in *,ro,*) ro=(-o ro) ;; esac
done
if /bin/mount --bind "${ro[@]}" -- "$real" "$mpreal"; then
    say "did: mount --bind${ro[*]:+ ${ro[*]}} $real $mpreal (NFS options" \
        "ignored: ${opts[*]:-none})"
else
    rc=$?
    say "failed ($rc): mount --bind${ro[*]:+ ${ro[*]}} $real $mpreal"
    exit "$rc"
fi
WRAPPER
    chmod 0700 "$standin/mount"
}

nova_nfs_standin_down() {
    # nova_nfs_standin_down DIR: unmount whatever is left under the
    # profile's mount point base (by path, deepest first: Nova unmounts at
    # the last detach, a run that ended early may not have), the base's
    # tmpfs itself, and remove the stand-in.
    local base=$1/nova/mnt m
    [ -d "$base" ] || return 0
    for m in $(cvb_mounts_under "$base"); do
        if umount -- "$m"; then
            cvb_log "unmounted $m"
        else
            cvb_log "ERROR: could not unmount $m"
        fi
    done
    rm -rf "$1/nova/nfs-standin"
}

nova_prerequisites() {
    # Echoes what is missing for Nova (nothing: all there).
    local driver_module=libvirt driver_package=libvirt-python
    if nova_on_vmware; then
        driver_module=oslo_vmware driver_package=oslo.vmware
    fi
    [ -x "$NOVA_VENV/bin/nova-compute" ] \
        && [ -x "$NOVA_VENV/bin/placement-manage" ] \
        && [ -x "$NOVA_VENV/bin/gunicorn" ] \
        && "$NOVA_VENV/bin/python" -c "import $driver_module, pymysql" \
            2>/dev/null \
        || echo "Nova, Placement, gunicorn and $driver_package in $NOVA_VENV"
}

nova_running() {
    local s
    nova_wanted || return 0
    for s in nova-api placement "${nova_services[@]}"; do
        cvb_pid_alive "$dir/$s.pid" || return 1
    done
}

keystone_nova_services() {
    # The compute and placement services in the catalog, and the admin
    # role for Nova's service user (it validates tokens, talks to
    # Placement and sends service tokens to Cinder). Once per Keystone.
    local ks=$infra/keystone types
    [ -f "$ks/.nova-services" ] && return 0
    openstack_admin >>"$infra/keystone-setup.log" 2>&1 <<CMDS || true
role add --project service --user nova admin
service create --name nova compute
service create --name placement placement
CMDS
    types=$(openstack_admin service list -f value -c Type 2>/dev/null) \
        || true
    grep -qx compute <<<"$types" && grep -qx placement <<<"$types" \
        || cvb_die "no compute/placement service in Keystone:" \
            "$infra/keystone-setup.log"
    touch "$ks/.nova-services"
}

nova_endpoints() {
    # Nova's and Placement's endpoints in the profile's region (up.sh's
    # register_endpoint emptied the region before).
    local urls
    openstack_admin >>"$dir/log/keystone-endpoint.log" 2>&1 <<CMDS || true
endpoint create --region $profile compute public http://127.0.0.1:$NOVA_API_PORT/v2.1
endpoint create --region $profile placement public http://127.0.0.1:$PLACEMENT_PORT
CMDS
    urls=$(openstack_admin endpoint list --region "$profile" -f value \
           -c URL 2>/dev/null) || true
    grep -q ":$NOVA_API_PORT/" <<<"$urls" \
        && grep -q ":$PLACEMENT_PORT\$" <<<"$urls" \
        || cvb_die "no Nova endpoints in Keystone: $dir/log/keystone-endpoint.log"
}

nova_auth_section() {
    # nova_auth_section NAME: a [NAME] section authenticating as Nova's
    # service user.
    cat <<CONF
[$1]
auth_url = http://127.0.0.1:$KEYSTONE_PORT/v3
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = nova
password = $NOVA_SERVICE_PASSWORD
CONF
}

nova_compute_driver() {
    if nova_on_vmware; then
        echo vmwareapi.VMwareVCDriver
    else
        echo libvirt.LibvirtDriver
    fi
}

nova_hypervisor_conf() {
    # nova.conf's section of the compute driver.
    if nova_on_vmware; then
        cat <<CONF
[vmware]
# The profile's vcsim, the vCenter Cinder's VMDK driver uses (its cluster
# and datastore), verified against the profile's CA as Cinder verifies it.
host_ip = 127.0.0.1
host_port = $VCSIM_PORT
host_username = $VCSIM_USER
host_password = $VCSIM_PASSWORD
ca_file = $VCSIM_CA_FILE
cluster_name = $VCSIM_CLUSTER
datastore_regex = ^LocalDS_0\$
# vcsim's tasks end at once: poll them often.
task_poll_interval = 0.1
CONF
    else
        cat <<CONF
[libvirt]
virt_type = qemu
connection_uri = $LIBVIRT_URI
cpu_mode = none
# Where Nova mounts NFS volumes' shares: the qcow2 backend's
# qcow2_nfs_mount_point_base (a tmpfs of the profile: nova_nfs_standin_up).
nfs_mount_point_base = $(nova_mount_base)
CONF
    fi
}

nova_sys_admin_helper() {
    # nova_sys_admin_helper CONF: Nova's own privsep daemon. With libvirt it
    # mounts NFS shares: the NFS stand-in's mount first on its PATH
    # (nova_nfs_standin_up).
    local path=
    nova_on_vmware \
        || path="env PATH=$(nova_nfs_standin_dir):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
    echo "$path$NOVA_VENV/bin/privsep-helper --config-file $1"
}

nova_write_conf() {
    local db=mysql+pymysql://$DB_USER:$DB_PASSWORD@127.0.0.1:$DB_PORT
    local n=$dir/nova
    mkdir -p "$n/state" "$n/instances" "$n/lock" "$n/placement"
    {
        cat <<CONF
# Nova of the $profile profile (tools/deploy/nova.sh).
[DEFAULT]
host = cvb-$profile
my_ip = 127.0.0.1
state_path = $n/state
instances_path = $n/instances
transport_url = rabbit://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:$RABBIT_PORT/${NOVA_DB}
compute_driver = $(nova_compute_driver)
rootwrap_config = $NOVA_VENV/etc/nova/rootwrap.conf
# No server has a port: the periodic refresh of the instances' network
# information would ask Neutron every minute for nothing.
heal_instance_info_cache_interval = -1
# The test guests (a boot sector) do not answer ACPI: server stop would
# wait a minute for a clean shutdown before powering off.
shutdown_timeout = 2
report_interval = 5
# SIGTERM (down.sh) ends the services within seconds, not a minute.
graceful_shutdown_timeout = 5
instance_usage_audit = false
# The test guests are tiny; nothing is reserved for the host.
reserved_host_memory_mb = 0
ram_allocation_ratio = 4.0

[api]
auth_strategy = keystone

[wsgi]
api_paste_config = $n/api-paste.ini

[api_database]
connection = $db/${NOVA_DB}_api?charset=utf8

[database]
connection = $db/${NOVA_DB}?charset=utf8

[conductor]
workers = 1

[scheduler]
workers = 1

$(nova_hypervisor_conf)

[vnc]
enabled = false

[spice]
enabled = false

[cinder]
os_region_name = $profile
catalog_info = block-storage::publicURL

[glance]
# No Glance here (servers boot from volumes): this URL is only written
# into the legacy notifications' image URLs (else nova-compute looks for
# an image endpoint in the catalog and fails the build); nothing calls it.
api_servers = http://127.0.0.1:9292

[placement]
region_name = $profile
valid_interfaces = public

[neutron]
region_name = $profile
valid_interfaces = public

[service_user]
# Service tokens with Nova's calls to Cinder: Cinder lets only those
# delete the attachment of a volume connected to an instance.
send_service_user_token = true

[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:$KEYSTONE_PORT/v3
interface = public

[oslo_concurrency]
lock_path = $n/lock

[oslo_messaging_notifications]
driver = noop

# The services run as root here: the privilege separation daemons start
# directly (the default prefixes them with sudo).
[nova_sys_admin]
helper_command = $(nova_sys_admin_helper "$n/nova.conf")

[privsep_osbrick]
helper_command = $NOVA_VENV/bin/privsep-helper --config-file $n/nova.conf

CONF
        nova_auth_section keystone_authtoken
        echo
        nova_auth_section cinder
        echo
        nova_auth_section placement
        echo
        nova_auth_section neutron
        echo
        nova_auth_section service_user
    } >"$n/nova.conf.tmp"
    # Each [section] once: oslo.config merges repeated sections, but a
    # reader of the file should see one of each.
    "$NOVA_VENV/bin/python" - "$n/nova.conf.tmp" "$n/nova.conf" <<'PY'
import sys

sections, order, current = {}, [], None
header = []
with open(sys.argv[1]) as f:
    for line in f:
        stripped = line.strip()
        if stripped.startswith('[') and stripped.endswith(']'):
            current = stripped
            if current not in sections:
                sections[current] = []
                order.append(current)
            continue
        (sections[current] if current else header).append(line)
with open(sys.argv[2], 'w') as f:
    f.writelines(header)
    for name in order:
        body = [line for line in sections[name] if line.strip()]
        f.write('%s\n%s\n' % (name, ''.join(body)))
PY
    rm -f "$n/nova.conf.tmp"
    cp "$NOVA_VENV/etc/nova/api-paste.ini" "$n/api-paste.ini"
    {
        cat <<CONF
# Placement of the $profile profile (tools/deploy/nova.sh).
[DEFAULT]
use_stderr = true
[api]
auth_strategy = keystone
[placement_database]
connection = $db/${NOVA_DB}_placement?charset=utf8
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:$KEYSTONE_PORT/v3
interface = public
CONF
        nova_auth_section keystone_authtoken
    } >"$n/placement/placement.conf"
}

nova_gunicorn() {
    # nova_gunicorn NAME APP PORT CONFIG_ENV: serve a WSGI application
    # (settings in ./gunicorn.conf.py: the applications parse the
    # process's command line as their own options).
    local name=$1 app=$2 port=$3 envline=$4 wdir=$dir/nova/$1-wsgi
    mkdir -p "$wdir"
    cat >"$wdir/gunicorn.conf.py" <<CONF
wsgi_app = '$app'
bind = '127.0.0.1:$port'
workers = 1
worker_class = 'gthread'
threads = 8
timeout = 120
graceful_timeout = 5
raw_env = ['$envline']
CONF
    (cd "$wdir" && export "${envline?}" \
     && cvb_start "$dir/$name.pid" "$dir/log/$name.log" \
        "$NOVA_VENV/bin/gunicorn")
}

nova_manage() {
    "$NOVA_VENV/bin/nova-manage" --config-file "$dir/nova/nova.conf" "$@"
}

nova_vars() {
    NOVA_DB=cvb_${profile}_nova
    NOVA_API_PORT=$(cvb_free_port)
    PLACEMENT_PORT=$(cvb_free_port)
}

nova_prepare() {
    # Configuration, databases (schema migrations: most of Nova's start-up
    # time), message queue vhost and Keystone services; up.sh runs this
    # while Cinder starts (after nova_vars).
    cvb_log "Nova: databases, message queue vhost, Keystone"
    keystone_nova_services
    nova_write_conf
    mariadb_client <<SQL
DROP DATABASE IF EXISTS ${NOVA_DB};
DROP DATABASE IF EXISTS ${NOVA_DB}_api;
DROP DATABASE IF EXISTS ${NOVA_DB}_cell0;
DROP DATABASE IF EXISTS ${NOVA_DB}_placement;
CREATE DATABASE ${NOVA_DB} CHARACTER SET utf8;
CREATE DATABASE ${NOVA_DB}_api CHARACTER SET utf8;
CREATE DATABASE ${NOVA_DB}_cell0 CHARACTER SET utf8;
CREATE DATABASE ${NOVA_DB}_placement CHARACTER SET utf8;
GRANT ALL PRIVILEGES ON ${NOVA_DB}.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON ${NOVA_DB}_api.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON ${NOVA_DB}_cell0.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON ${NOVA_DB}_placement.* TO '$DB_USER'@'127.0.0.1';
SQL
    rabbitmqctl delete_vhost "$NOVA_DB" >/dev/null 2>&1 || true
    rabbitmqctl add_vhost "$NOVA_DB" >/dev/null
    rabbitmqctl set_permissions -p "$NOVA_DB" "$RABBIT_USER" '.*' '.*' '.*' \
        >/dev/null

    cvb_log "Nova: placement-manage db sync, nova-manage api_db sync," \
        "cells v2, db sync"
    (set -e
     "$NOVA_VENV/bin/placement-manage" \
         --config-file "$dir/nova/placement/placement.conf" db sync
     nova_manage api_db sync
     nova_manage cell_v2 map_cell0 --database_connection \
         "mysql+pymysql://$DB_USER:$DB_PASSWORD@127.0.0.1:$DB_PORT/${NOVA_DB}_cell0?charset=utf8"
     nova_manage cell_v2 create_cell --name cell1
     nova_manage db sync
    ) >"$dir/log/nova-db-sync.log" 2>&1 \
        || cvb_die "Nova's database set-up failed: $dir/log/nova-db-sync.log"
    cvb_log "Nova: databases ready"
}

nova_up() {
    # Start Nova's services (nova_prepare done) and wait until they are
    # ready.
    local s since n deadline
    # The endpoints first: a service that finds no Placement in the
    # catalog when it first needs it keeps it disabled until restarted.
    nova_endpoints
    nova_gunicorn placement placement.wsgi.api:application "$PLACEMENT_PORT" \
        "OS_PLACEMENT_CONFIG_DIR=$dir/nova/placement"
    nova_gunicorn nova-api nova.wsgi.osapi_compute:application \
        "$NOVA_API_PORT" "OS_NOVA_CONFIG_DIR=$dir/nova"
    since=$(date -u '+%Y-%m-%d %H:%M:%S')
    for s in "${nova_services[@]}"; do
        cvb_start "$dir/$s.pid" "$dir/log/$s.out" "$NOVA_VENV/bin/$s" \
            --config-file "$dir/nova/nova.conf" --log-file "$dir/log/$s.log"
    done
    cat >"$dir/nova.env" <<ENV
NOVA_API_PORT=$NOVA_API_PORT
PLACEMENT_PORT=$PLACEMENT_PORT
NOVA_FLAVOR=$NOVA_FLAVOR
ENV
    if ! nova_on_vmware; then
        cat >>"$dir/nova.env" <<ENV
NOVA_NFS_EXPORT=$(nova_nfs_export)
NOVA_MOUNT_BASE=$(nova_mount_base)
ENV
    fi
    cvb_wait_http "http://127.0.0.1:$PLACEMENT_PORT/" 120 \
        "$dir/placement.pid" \
        || cvb_die "Placement did not start: $dir/log/placement.log"
    cvb_wait_http "http://127.0.0.1:$NOVA_API_PORT/v2.1/" 120 \
        "$dir/nova-api.pid" \
        || cvb_die "nova-api did not start: $dir/log/nova-api.log"

    # Ready: conductor, scheduler and compute have reported since now,
    # the compute node is in Placement with its inventory, and the host
    # is mapped to cell1 (discover_hosts).
    cvb_log "Nova: waiting for nova-compute and its resource provider"
    deadline=$((SECONDS + ${CVB_SERVICE_WAIT:-600}))
    while :; do
        for s in placement nova-api "${nova_services[@]}"; do
            cvb_pid_alive "$dir/$s.pid" \
                || cvb_die "$s ended: $dir/log/$s.log"
        done
        n=$(mariadb_client -N "$NOVA_DB" -e "SELECT COUNT(DISTINCT \`binary\`)
              FROM services WHERE deleted = 0 AND updated_at >= '$since'
              AND \`binary\` IN ('nova-conductor', 'nova-scheduler',
                                 'nova-compute')" 2>/dev/null) || n=0
        if [ "$n" = 3 ]; then
            # VCPU inventory (a standard resource class: id 0).
            n=$(mariadb_client -N "${NOVA_DB}_placement" -e "SELECT COUNT(*)
                  FROM inventories WHERE resource_class_id = 0" \
                  2>/dev/null) || n=0
            [ "${n:-0}" -ge 1 ] && break
        fi
        [ "$SECONDS" -lt "$deadline" ] \
            || cvb_die "Nova not up after ${CVB_SERVICE_WAIT:-600} s" \
                "(logs in $dir/log)"
        sleep 0.5
    done
    nova_manage cell_v2 discover_hosts --verbose \
        >>"$dir/log/nova-db-sync.log" 2>&1 \
        || cvb_die "nova-manage cell_v2 discover_hosts failed:" \
            "$dir/log/nova-db-sync.log"
    n=$(mariadb_client -N "${NOVA_DB}_api" -e \
        "SELECT COUNT(*) FROM host_mappings" 2>/dev/null) || n=0
    [ "${n:-0}" -ge 1 ] || cvb_die "nova-compute's host is in no cell:" \
        "$dir/log/nova-db-sync.log"
    openstack_admin --os-region-name "$profile" flavor create --ram 32 \
        --vcpus 1 --disk 0 --public "$NOVA_FLAVOR" \
        >>"$dir/log/keystone-endpoint.log" 2>&1 \
        || cvb_die "could not create flavor $NOVA_FLAVOR:" \
            "$dir/log/keystone-endpoint.log"
    cvb_log "Nova is up (nova-api http://127.0.0.1:$NOVA_API_PORT," \
        "Placement http://127.0.0.1:$PLACEMENT_PORT)"
}

# --- a libvirtd of the profile's own ------------------------------------------

nova_libvirt_uri() {
    echo "qemu:///system?socket=$dir/libvirt-private/run/libvirt-sock"
}

nova_libvirt_up() {
    # With Nova the profile has a libvirtd of its own, in a mount
    # namespace of its own where /run/libvirt, /etc/libvirt/qemu, /var/lib/libvirt,
    # /var/cache/libvirt and /var/log/libvirt are directories of this
    # profile: nova-compute refuses to start as a new service on a
    # hypervisor that has domains already (_sanity_check_new_host), and the
    # shared libvirtd (qemu:///system) has the KVM tests' domains. Its
    # socket is reached from outside through the profile's directory;
    # cinder-volume (online freeze) and nova-compute use the same URI.
    local p=$dir/libvirt-private d i
    for d in run etc-qemu lib cache log; do
        mkdir -p "$p/$d"
    done
    mkdir -p "$p/log/qemu" "$p/lib/qemu" "$dir/log"
    LIBVIRT_URI=$(nova_libvirt_uri)
    # The NFS stand-in's shared mount point base first: libvirtd's
    # namespace is a slave of this one (--propagation slave: every mount
    # here is private but that base), so QEMU sees the shares Nova mounts
    # later.
    nova_nfs_standin_up
    # unshare execs the shell, which execs libvirtd (in the foreground):
    # the recorded PID is libvirtd's.
    cvb_start "$dir/libvirtd.pid" "$dir/log/libvirtd.log" \
        unshare --mount --propagation slave sh -c '
            set -e
            # (Made by the shared libvirtd at its first start: a fresh
            # machine may not have them yet.)
            mkdir -p /run/libvirt /etc/libvirt/qemu /var/lib/libvirt \
                /var/cache/libvirt /var/log/libvirt
            mount --bind "$1/run" /run/libvirt
            mount --bind "$1/etc-qemu" /etc/libvirt/qemu
            mount --bind "$1/lib" /var/lib/libvirt
            mount --bind "$1/cache" /var/cache/libvirt
            mount --bind "$1/log" /var/log/libvirt
            # Its PID file in its own /run/libvirt: the default
            # /run/libvirtd.pid is taken by any other libvirtd running
            # (the shared one, the profile of another deployment).
            exec libvirtd --pid-file /run/libvirt/libvirtd.pid' \
            cvb-libvirtd "$p"
    for ((i = 0; i < 300; i++)); do
        timeout 10 virsh -q -c "$LIBVIRT_URI" uri >/dev/null 2>&1 && break
        cvb_pid_alive "$dir/libvirtd.pid" \
            || cvb_die "libvirtd did not start: $dir/log/libvirtd.log"
        sleep 0.1
    done
    timeout 10 virsh -q -c "$LIBVIRT_URI" uri >/dev/null 2>&1 \
        || cvb_die "libvirtd does not answer: $dir/log/libvirtd.log"
    echo "$LIBVIRT_URI" >"$dir/libvirt.uri"
    mkdir -p "$dir/qcow2"
    cvb_log "started the profile's libvirtd ($(cat "$dir/libvirtd.pid"))"
}
