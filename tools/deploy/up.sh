#!/usr/bin/env bash
# Start a one-machine Cinder deployment, everything on 127.0.0.1, no
# systemd: RabbitMQ, MariaDB and Keystone (shared by the profiles, private
# instances on free ports), then for the PROFILE a vcsim (a simulated
# vCenter), cinder-api, cinder-scheduler, cinder-volume (VMDK driver against
# that vcsim) and cinder-backup (posix backup driver); the kvm profile has
# libvirtd and the qcow2 driver instead of vcsim and the VMDK driver.
#
# Why Keystone and not Cinder's noauth mode: the OpenStack client finds the
# volume API's microversions by an unauthenticated version discovery GET on
# the endpoint, and Cinder's noauth middleware answers every request without
# a token with an empty 204, so every `openstack volume ...` command fails
# ("Unable to find a version discovery document").
#
#   tools/deploy/up.sh [plugin|stock|kvm]
#
# plugin (default): cinder.conf enables cinder-vmdk-backup the way its README
#   tells an operator: the backend's volume_driver is
#   VMwareVcVmdkBackupDriver and [DEFAULT] backup_manager is the plugin's.
# stock: the same deployment with Cinder's own VMwareVcVmdkDriver and backup
#   manager, for comparison.
# kvm: no vcsim; the backend is the plugin's companion driver
#   Qcow2VolumeDriver (volumes are qcow2 files in the profile's qcow2/
#   directory), libvirtd (qemu:///system, tools/libvirt/start.sh) runs for
#   it, the backup manager is the plugin's. Until the deployment has Nova,
#   tests/functional/deploy/kvm_instance.py stands in for Nova's libvirt
#   driver (attachments through Cinder's API, a libvirt domain per
#   instance). With CVB_DEPLOY_NOVA=1 the kvm profile runs Nova and
#   Placement as well (tools/deploy/nova.sh; nova-compute with the libvirt
#   driver on QEMU/TCG, on that libvirtd), and the Neutron API that Nova
#   asks about servers even without a network (tools/deploy/neutron.sh).
#   Nova mounts the qcow2 volumes' NFS export through the deployment's NFS
#   stand-in (a bind mount: nova.sh). CVB_DEPLOY_NOVA=1 gives the plugin
#   profile Nova too, nova-compute with Nova's VMware driver against the
#   profile's vcsim (servers boot from the VMDK driver's volumes).
#
# plugin and kvm also load the plugin's instance-group API extension
# (osapi_volume_extension) when the virtualenv has it (the log says which).
#
# The plugin profile (and kvm with CVB_DEPLOY_PLANS=1) runs an etcd for
# Cinder's coordination layer ([coordination] backend_url), which decides
# which cinder-backup runs a due backup plan; CVB_DEPLOY_PLANS=1 adds a
# second cinder-backup service with another host (tools/deploy/etcd.sh).
#
# CVB_DEPLOY_SECOND_BACKEND=1 (plugin profile): cinder-volume runs a second
# backend of the same vCenter, vmware-az2, in availability zone cvb-az2,
# and a volume type vmware-az2 selects it: a restore onto new volumes can
# change the placement (volume type, backend, zone).
#
# Backups go to Cinder's posix driver (a directory of the profile) or, with
# CVB_DEPLOY_BACKUP_STORE=swift, to Cinder's Swift driver on a one-replica
# Swift cluster of the deployment (tools/deploy/swift.sh), in every profile.
#
# A profile that is already running is left as it is. Otherwise it starts
# afresh (new database, message queue vhost, vcsim and backup directory).
# The last line printed is the path of an openrc file for the OpenStack
# client (source it, then run `openstack volume list`). Stop with
# tools/deploy/down.sh. Install the prerequisites with
# tools/deploy/install.sh; see tools/deploy/lib.sh for the environment.
#
# Secured as a production deployment must be: vcsim serves a certificate
# from a CA this script makes (tools/vcsim/tls.sh, keys in the profile's
# private tls/ directory) and Cinder verifies it (vmware_ca_file); the
# deployment directory is the owner's alone (0700) and every file written
# here or by the services started here is created 0600 (umask 077), so no
# password in a configuration file or log is readable by another user.
set -eu -o pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nova.sh"
source "$(dirname "$0")/neutron.sh"
source "$(dirname "$0")/swift.sh"
source "$(dirname "$0")/etcd.sh"
umask 077

profile=${1:-plugin}
case "$profile" in
    plugin|stock|kvm) ;;
    *) cvb_die "unknown profile '$profile' (plugin, stock or kvm)" ;;
esac
backup_store=${CVB_DEPLOY_BACKUP_STORE:-posix}
case "$backup_store" in
    posix|swift) ;;
    *) cvb_die "unknown CVB_DEPLOY_BACKUP_STORE '$backup_store' (posix or swift)" ;;
esac

infra=$CVB_DEPLOY_DIR/infra
dir=$CVB_DEPLOY_DIR/$profile
services=(cinder-api cinder-scheduler cinder-volume cinder-backup)

check_prerequisites() {
    local missing=()
    [ -x "$VENV/bin/cinder-api" ] || missing+=("Cinder in $VENV")
    "$VENV/bin/python" -c 'import pymysql, cinder_vmdk_backup' 2>/dev/null \
        || missing+=("PyMySQL and the plugin in $VENV")
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    [ -x "$CVB_OSC_VENV/bin/openstack" ] \
        || missing+=("python-openstackclient in $CVB_OSC_VENV")
    [ -x "$KEYSTONE_VENV/bin/keystone-manage" ] \
        && [ -x "$KEYSTONE_VENV/bin/gunicorn" ] \
        || missing+=("Keystone and gunicorn in $KEYSTONE_VENV")
    if [ "$profile" = kvm ]; then
        command -v qemu-img >/dev/null || missing+=(qemu-utils)
        command -v libvirtd >/dev/null && command -v virsh >/dev/null \
            || missing+=("libvirt (tools/libvirt/install.sh)")
        "$VENV/bin/python" -c 'import libvirt' 2>/dev/null \
            || missing+=("libvirt-python in $VENV")
    fi
    if nova_wanted; then
        local nova_missing
        nova_missing=$(nova_prerequisites)
        [ -z "$nova_missing" ] || missing+=("$nova_missing")
        nova_missing=$(neutron_prerequisites)
        [ -z "$nova_missing" ] || missing+=("$nova_missing")
    fi
    if swift_wanted; then
        local swift_missing
        swift_missing=$(swift_prerequisites)
        [ -z "$swift_missing" ] || missing+=("$swift_missing")
    fi
    if coordination_wanted; then
        local etcd_missing
        etcd_missing=$(etcd_prerequisites)
        [ -z "$etcd_missing" ] || missing+=("$etcd_missing")
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        cvb_die "missing: ${missing[*]} (run tools/deploy/install.sh;" \
            "CVB_VENV, CVB_OSC_VENV, CVB_KEYSTONE_VENV name the virtualenvs)"
    fi
}

# --- RabbitMQ, MariaDB and Keystone, shared by the profiles --------------

rabbit_env() {
    # The environment of every RabbitMQ command: a private node, home
    # (Erlang cookie), data and log directories, bound to 127.0.0.1.
    export HOME=$infra/rabbitmq RABBITMQ_CONF_ENV_FILE=/dev/null \
        RABBITMQ_NODENAME=cvb@localhost \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$RABBIT_PORT \
        RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT \
        ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$EPMD_PORT \
        RABBITMQ_MNESIA_BASE=$infra/rabbitmq/mnesia \
        RABBITMQ_LOG_BASE=$infra/rabbitmq/log \
        RABBITMQ_PID_FILE=$infra/rabbitmq.pid \
        RABBITMQ_ENABLED_PLUGINS_FILE=$infra/rabbitmq/enabled_plugins \
        RABBITMQ_CONFIG_FILE=$infra/rabbitmq/rabbitmq \
        RABBITMQ_ADVANCED_CONFIG_FILE=$infra/rabbitmq/advanced.config \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

rabbitmqctl() {
    (rabbit_env; /usr/lib/rabbitmq/bin/rabbitmqctl -q "$@")
}

mariadb_client() {
    mariadb --no-defaults --socket="$infra/mysql.sock" -uroot "$@"
}

openstack_admin() {
    # The OpenStack client as Keystone's admin (identity calls).
    (export OS_AUTH_URL=http://127.0.0.1:$KEYSTONE_PORT/v3 \
         OS_IDENTITY_API_VERSION=3 OS_USERNAME=admin \
         OS_PASSWORD=$ADMIN_PASSWORD OS_PROJECT_NAME=admin \
         OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default
     timeout 120 "$CVB_OSC_VENV/bin/openstack" "$@")
}

infra_env() {
    mkdir -p "$infra"
    chmod 0700 "$infra"
    if [ ! -f "$infra/env" ]; then
        cat >"$infra/env" <<ENV
EPMD_PORT=$(cvb_free_port)
RABBIT_PORT=$(cvb_free_port)
RABBIT_DIST_PORT=$(cvb_free_port)
DB_PORT=$(cvb_free_port)
KEYSTONE_PORT=$(cvb_free_port)
RABBIT_USER=cinder
RABBIT_PASSWORD=$(cvb_secret)
DB_USER=cinder
DB_PASSWORD=$(cvb_secret)
KEYSTONE_DB_PASSWORD=$(cvb_secret)
ADMIN_PASSWORD=$(cvb_secret)
CINDER_SERVICE_PASSWORD=$(cvb_secret)
ENV
    fi
    # Added later than the others: an older env file gets it appended.
    if ! grep -q '^NOVA_SERVICE_PASSWORD=' "$infra/env"; then
        echo "NOVA_SERVICE_PASSWORD=$(cvb_secret)" >>"$infra/env"
    fi
    if ! grep -q '^NEUTRON_SERVICE_PASSWORD=' "$infra/env"; then
        echo "NEUTRON_SERVICE_PASSWORD=$(cvb_secret)" >>"$infra/env"
    fi
    cvb_load_env "$infra/env"
}

mariadb_up() {
    cvb_pid_alive "$infra/mariadb.pid" && return 0
    cvb_log "starting MariaDB on 127.0.0.1:$DB_PORT"
    # The data files are the owner's alone (MariaDB's default is 0660):
    # Nova keeps its cells' message queue and database URLs, passwords
    # included, in its API database (cell_mappings), and so in the data
    # and redo log files. UMASK is the mode of the files MariaDB creates
    # (not a mask); a data directory of an earlier version of this script
    # is made private too.
    export UMASK=0600 UMASK_DIR=0700
    if [ ! -d "$infra/mysql/mysql" ]; then
        mariadb-install-db --no-defaults --datadir="$infra/mysql" \
            --user=root --auth-root-authentication-method=socket \
            --skip-test-db >"$infra/mariadb-install.log" 2>&1 \
            || cvb_die "mariadb-install-db failed: $infra/mariadb-install.log"
    fi
    chmod -R go= "$infra/mysql"
    cvb_start "$infra/mariadb.pid" "$infra/mariadb.log" \
        mariadbd --no-defaults --datadir="$infra/mysql" --user=root \
        --socket="$infra/mysql.sock" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$infra/mysql/mariadbd.pid" \
        --innodb-buffer-pool-size=64M --max-connections=500
    cvb_wait_port "$DB_PORT" 60 "$infra/mariadb.pid" \
        || cvb_die "MariaDB did not start: $infra/mariadb.log"
    mariadb_client <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS 'keystone'@'127.0.0.1'
    IDENTIFIED BY '$KEYSTONE_DB_PASSWORD';
CREATE DATABASE IF NOT EXISTS keystone CHARACTER SET utf8;
GRANT ALL PRIVILEGES ON keystone.* TO 'keystone'@'127.0.0.1';
SQL
}

rabbitmq_up() {
    local users
    cvb_pid_alive "$infra/rabbitmq.pid" && return 0
    cvb_log "starting RabbitMQ on 127.0.0.1:$RABBIT_PORT"
    mkdir -p "$infra/rabbitmq"
    echo '[].' >"$infra/rabbitmq/enabled_plugins"
    : >"$infra/rabbitmq/rabbitmq.conf"
    echo '[].' >"$infra/rabbitmq/advanced.config"
    (rabbit_env
     cvb_stop "$infra/epmd.pid" 5
     cvb_start "$infra/epmd.pid" "$infra/epmd.log" \
         epmd -address 127.0.0.1 -port "$EPMD_PORT"
     # rabbitmq-server writes the PID of the Erlang VM into
     # RABBITMQ_PID_FILE; $! would only be its start script.
     rm -f "$infra/rabbitmq.pid"
     /usr/lib/rabbitmq/bin/rabbitmq-server \
         >>"$infra/rabbitmq.log" 2>&1 </dev/null 7>&- &
     /usr/lib/rabbitmq/bin/rabbitmqctl -q wait --timeout 120 \
         "$infra/rabbitmq.pid" >/dev/null) \
        || cvb_die "RabbitMQ did not start: $infra/rabbitmq.log"
    users=$(rabbitmqctl list_users 2>/dev/null) || true
    grep -q "^$RABBIT_USER\b" <<<"$users" \
        || rabbitmqctl add_user "$RABBIT_USER" "$RABBIT_PASSWORD" >/dev/null
}

keystone_up() {
    local ks=$infra/keystone conf=$infra/keystone/keystone.conf
    cvb_pid_alive "$infra/keystone.pid" && return 0
    cvb_log "starting Keystone on 127.0.0.1:$KEYSTONE_PORT"
    mkdir -p "$ks"
    cat >"$conf" <<CONF
[DEFAULT]
use_stderr = true
[database]
connection = mysql+pymysql://keystone:$KEYSTONE_DB_PASSWORD@127.0.0.1:$DB_PORT/keystone?charset=utf8
[identity]
# bcrypt's default cost makes every password check take seconds on a small
# test machine; this deployment's passwords are random and local.
password_hash_rounds = 4
[token]
provider = fernet
[fernet_tokens]
key_repository = $ks/fernet-keys
[fernet_receipts]
key_repository = $ks/fernet-keys
[credential]
key_repository = $ks/credential-keys
CONF
    if [ ! -f "$ks/.bootstrapped" ]; then
        (set -e
         "$KEYSTONE_VENV/bin/keystone-manage" --config-file "$conf" db_sync
         "$KEYSTONE_VENV/bin/keystone-manage" --config-file "$conf" \
             fernet_setup --keystone-user root --keystone-group root
         "$KEYSTONE_VENV/bin/keystone-manage" --config-file "$conf" \
             credential_setup --keystone-user root --keystone-group root
         # The password in the environment, not in the command line.
         OS_BOOTSTRAP_PASSWORD=$ADMIN_PASSWORD \
         "$KEYSTONE_VENV/bin/keystone-manage" --config-file "$conf" \
             bootstrap --bootstrap-region-id RegionOne \
             --bootstrap-public-url "http://127.0.0.1:$KEYSTONE_PORT/v3"
        ) >"$infra/keystone-setup.log" 2>&1 \
            || cvb_die "Keystone set-up failed: $infra/keystone-setup.log"
    fi
    # gunicorn takes its settings from ./gunicorn.conf.py: Keystone parses
    # the process's command line as its own options.
    cat >"$ks/gunicorn.conf.py" <<CONF
wsgi_app = 'keystone.wsgi.api:application'
bind = '127.0.0.1:$KEYSTONE_PORT'
workers = 1
worker_class = 'gthread'
threads = 8
timeout = 120
graceful_timeout = 5
raw_env = ['OS_KEYSTONE_CONFIG_FILES=$conf']
CONF
    (cd "$ks" && OS_KEYSTONE_CONFIG_FILES=$conf cvb_start \
        "$infra/keystone.pid" "$infra/keystone.log" \
        "$KEYSTONE_VENV/bin/gunicorn")
    cvb_wait_http "http://127.0.0.1:$KEYSTONE_PORT/v3" 60 \
        "$infra/keystone.pid" \
        || cvb_die "Keystone did not start: $infra/keystone.log"
    if [ ! -f "$ks/.bootstrapped" ]; then
        # Cinder's and Nova's service users and the block-storage service;
        # each profile adds its endpoint, in a region named after the
        # profile.
        # (The client's interactive mode, one process for all commands,
        # exits 1 at the end of its input: the result is checked below.)
        openstack_admin >>"$infra/keystone-setup.log" 2>&1 <<CMDS || true
project create --domain default service
user create --domain default --password $CINDER_SERVICE_PASSWORD cinder
role add --project service --user cinder admin
role add --project service --user cinder service
user create --domain default --password $NOVA_SERVICE_PASSWORD nova
role add --project service --user nova service
service create --name cinderv3 block-storage
CMDS
        openstack_admin service show block-storage >/dev/null 2>&1 \
            || cvb_die "Keystone set-up failed: $infra/keystone-setup.log"
        touch "$ks/.bootstrapped" "$ks/.nova-user"
    fi
}

keystone_nova_user() {
    # A 'nova' service user (role 'service' in project 'service'), as a
    # deployment with Nova has: what Nova does to a volume's attachments
    # carries a service token of this user, and Cinder lets only such a
    # request delete the attachment of a volume connected to an instance
    # (Bug #2004555). The end-to-end tests attach volumes as Nova does.
    # (Made with the other users when Keystone is set up; this adds it to
    # a Keystone set up before.)
    local ks=$infra/keystone roles
    [ -f "$ks/.nova-user" ] && return 0
    openstack_admin >>"$infra/keystone-setup.log" 2>&1 <<CMDS || true
user create --domain default --or-show nova
user set --password $NOVA_SERVICE_PASSWORD nova
role add --project service --user nova service
CMDS
    roles=$(openstack_admin role assignment list --user nova --project \
            service --names -f value -c Role 2>/dev/null) || true
    grep -qx service <<<"$roles" \
        || cvb_die "no nova service user in Keystone: $infra/keystone-setup.log"
    touch "$ks/.nova-user"
}

infra_up() {
    local rabbit
    infra_env
    mariadb_up
    # RabbitMQ takes about ten seconds to boot: it does while Keystone
    # starts (which needs MariaDB only).
    rabbitmq_up 2>"$infra/rabbitmq-up.log" &
    rabbit=$!
    keystone_up
    keystone_nova_user
    if ! wait "$rabbit"; then
        cat "$infra/rabbitmq-up.log" >&2
        cvb_die "RabbitMQ did not start: $infra/rabbitmq.log"
    fi
    cat "$infra/rabbitmq-up.log" >&2
}

# --- vcsim -------------------------------------------------------------------

vcsim_up() {
    local bin wsdl tls
    bin=${CVB_VCSIM:-}
    if [ -z "$bin" ]; then
        [ -f "$CVB_TOP/tools/vcsim/build.sh" ] \
            || cvb_die "no tools/vcsim/build.sh to build vcsim (set CVB_VCSIM)"
        bin=$(bash "$CVB_TOP/tools/vcsim/build.sh" | tail -n 1)
    fi
    [ -x "$bin" ] || cvb_die "no vcsim binary at '$bin'"
    wsdl=${CVB_VCSIM_WSDL:-}
    [ -n "$wsdl" ] || wsdl=$(bash "$CVB_TOP/tools/vcsim/wsdl.sh" | tail -n 1)
    [ -f "$wsdl" ] || cvb_die "no vSphere WSDL at '$wsdl'"
    VCSIM_WSDL=file://$wsdl
    VCSIM_PORT=$(cvb_free_port)
    VCSIM_USER=cinder
    VCSIM_PASSWORD=$(cvb_secret)
    VCSIM_CLUSTER=DC0_C0
    mkdir -p "$dir/vcsim"
    # A CA of this profile's own and vcsim's certificate signed by it
    # (127.0.0.1 and localhost): Cinder verifies vcsim with vmware_ca_file.
    tls=$(bash "$CVB_TOP/tools/vcsim/tls.sh" "$dir/tls" | tail -n 1) \
        || cvb_die "could not make vcsim's certificate in $dir/tls"
    VCSIM_CA_FILE=$tls/ca.pem
    # vcsim reads its password from the file -password names: it stays
    # out of the command line, which every user can read (ps).
    echo "$VCSIM_PASSWORD" >"$dir/vcsim.password"
    # The simulated datastore LocalDS_0 is a directory under $TMPDIR.
    # VCSIM_WSDL_DIR: vcsim serves the WSDL under /sdk, as vCenter does.
    # Cinder's services load it from vmware_wsdl_location, but os-brick's
    # VmdkConnector (the stock backup path) opens its vSphere session
    # without a WSDL location: oslo.vmware then fetches
    # https://<vcenter>/sdk/vimService.wsdl.
    # -E /dev/null: vcsim's "export GOVC_URL=https://user:password@..."
    # line is not written to its log. Started in its own directory: vcsim
    # takes a -username naming a file there for a file holding the name.
    (cd "$dir/vcsim" && TMPDIR=$dir/vcsim VCSIM_WSDL_DIR=$(dirname "$wsdl") \
        cvb_start "$dir/vcsim.pid" "$dir/vcsim.log" \
        "$bin" -l "127.0.0.1:$VCSIM_PORT" -username "$VCSIM_USER" \
        -password "$dir/vcsim.password" -tlscert "$tls/vcsim.pem" \
        -tlskey "$tls/vcsim-key.pem" -E /dev/null -vm 0)
    cvb_wait_port "$VCSIM_PORT" 30 "$dir/vcsim.pid" \
        || cvb_die "vcsim did not start: $dir/vcsim.log"
    python3 - "https://127.0.0.1:$VCSIM_PORT/sdk/vimService.wsdl" \
        "$VCSIM_CA_FILE" <<'PY' \
        || cvb_die "vcsim serves no WSDL under /sdk: $dir/vcsim.log"
import ssl
import sys
import urllib.request

# Verified as Cinder verifies it: against the deployment's CA.
context = ssl.create_default_context(cafile=sys.argv[2])
with urllib.request.urlopen(sys.argv[1], timeout=10,  # nosec B310
                            context=context) as answer:
    if b'<definitions' not in answer.read(4096):
        sys.exit('not a WSDL')
PY
    cat >"$dir/vcsim.env" <<ENV
VCSIM_PORT=$VCSIM_PORT
VCSIM_USER=$VCSIM_USER
VCSIM_PASSWORD=$VCSIM_PASSWORD
VCSIM_WSDL=$VCSIM_WSDL
VCSIM_CLUSTER=$VCSIM_CLUSTER
VCSIM_CA_FILE=$VCSIM_CA_FILE
ENV
}

# --- libvirtd (kvm profile) -------------------------------------------------

libvirt_up() {
    if nova_wanted; then
        nova_libvirt_up
        return 0
    fi
    # libvirtd through tools/libvirt/start.sh, its pid file in this
    # profile's directory: down.sh stops it only if this profile started it
    # (a libvirtd that answers already, another's, is used as it is).
    local pidfile
    LIBVIRT_URI=qemu:///system
    pidfile=$(CVB_LIBVIRT_PIDDIR=$dir/libvirt \
              bash "$CVB_TOP/tools/libvirt/start.sh" | tail -n 1) \
        || cvb_die "libvirtd did not start (/var/log/libvirt/cvb-libvirtd.log)"
    if cvb_pid_alive "$pidfile"; then
        cvb_log "started libvirtd ($(cat "$pidfile")) for $LIBVIRT_URI"
    else
        cvb_log "using the libvirtd that answers on $LIBVIRT_URI already"
    fi
    mkdir -p "$dir/qcow2"
}

libvirt_answers() {
    local uri=qemu:///system
    [ -f "$dir/libvirt.uri" ] && uri=$(cat "$dir/libvirt.uri")
    timeout 10 virsh -q -c "$uri" uri >/dev/null 2>&1
}

# --- Cinder --------------------------------------------------------------------

render_conf() {
    # render_conf TEMPLATE OUTPUT KEY=VALUE...: fill in @KEY@ placeholders.
    # The values (passwords among them) reach Python in its environment,
    # not on its command line, which every user can read (ps).
    local template=$1 output=$2 pair
    shift 2
    (for pair in "$@"; do export "CVB_CONF_${pair%%=*}=${pair#*=}"; done
     "$VENV/bin/python" - "$template" "$output" <<'PY'
import os
import re
import sys

template, output = sys.argv[1], sys.argv[2]
values = {key[len('CVB_CONF_'):]: value
          for key, value in os.environ.items()
          if key.startswith('CVB_CONF_')}
with open(template) as f:
    text = f.read()
missing = set(re.findall(r'@([A-Z_]+)@', text)) - set(values)
if missing:
    sys.exit('%s: no value for %s' % (template, ', '.join(sorted(missing))))
text = re.sub(r'@([A-Z_]+)@', lambda m: values[m.group(1)], text)
with open(output, 'w') as f:
    f.write(text)
PY
    )
}

profile_running() {
    local s
    for s in "${services[@]}"; do
        cvb_pid_alive "$dir/$s.pid" || return 1
    done
    if [ "$profile" = kvm ]; then
        libvirt_answers || return 1
    else
        cvb_pid_alive "$dir/vcsim.pid" || return 1
    fi
    nova_running || return 1
    neutron_running || return 1
    # Running with the backup store asked for (else started afresh).
    [ "$(cat "$dir/backup-store" 2>/dev/null)" = "$backup_store" ] || return 1
    if swift_wanted; then
        swift_running || return 1
    fi
    if coordination_wanted; then
        etcd_running || return 1
    fi
    # With a second cinder-backup exactly when asked for.
    if plans_two_nodes; then
        cvb_pid_alive "$dir/cinder-backup2.pid" || return 1
    else
        [ ! -f "$dir/cinder-backup2.pid" ] || return 1
    fi
    [ -f "$dir/openrc" ]
}

register_endpoint() {
    # This profile's cinder-api in Keystone's catalog, in a region named
    # after the profile (with Keystone's own endpoint, for the client).
    local ids urls
    ids=$(openstack_admin endpoint list --region "$profile" -f value -c ID \
          2>/dev/null) || true
    {
        for id in $ids; do echo "endpoint delete $id"; done
        [ -n "$ids" ] || echo "region create $profile"
        echo "endpoint create --region $profile block-storage public" \
             "http://127.0.0.1:$API_PORT/v3/%(project_id)s"
        echo "endpoint create --region $profile identity public" \
             "http://127.0.0.1:$KEYSTONE_PORT/v3"
    } | openstack_admin >"$dir/log/keystone-endpoint.log" 2>&1 || true
    urls=$(openstack_admin endpoint list --region "$profile" -f value \
           -c URL 2>/dev/null) || true
    grep -q ":$API_PORT/" <<<"$urls" \
        || cvb_die "no endpoint in Keystone: $dir/log/keystone-endpoint.log"
}

api_extension_lines() {
    # The osapi_volume_extension lines of the plugin and kvm profiles:
    # Cinder's standard extensions and, when the virtualenv has it, the
    # plugin's instance-group extension (cinder-api does not start when an
    # extension named here cannot be loaded).
    local ext=cinder_vmdk_backup.api.contrib.instance_groups
    if [ "$profile" = stock ]; then
        echo '# osapi_volume_extension: Cinder'"'"'s default'
        return 0
    fi
    echo 'osapi_volume_extension = cinder.api.contrib.standard_extensions'
    # -P: not from the current directory (python -c would import the
    # package from there first; the services do not).
    if "$VENV/bin/python" -P -c "from $ext import Instance_groups" \
            >/dev/null 2>&1; then
        cvb_log "cinder-api loads the instance-group extension ($ext)"
        echo "osapi_volume_extension = $ext.Instance_groups"
    else
        cvb_log "no instance-group extension in $VENV ($ext does not" \
            "import): cinder-api runs without it"
        echo "# osapi_volume_extension = $ext.Instance_groups: not installed"
    fi
    # The backup-verification extension (the same test).
    ext=cinder_vmdk_backup.api.contrib.backup_verifications
    if "$VENV/bin/python" -P -c "from $ext import Backup_verifications" \
            >/dev/null 2>&1; then
        echo "osapi_volume_extension = $ext.Backup_verifications"
    else
        echo "# osapi_volume_extension = $ext.Backup_verifications: not" \
            "installed"
    fi
    # The backup-plan extension (issue 18), the same way.
    local plans=cinder_vmdk_backup.api.contrib.backup_plans
    if "$VENV/bin/python" -P -c "from $plans import Backup_plans" \
            >/dev/null 2>&1; then
        cvb_log "cinder-api loads the backup-plan extension ($plans)"
        echo "osapi_volume_extension = $plans.Backup_plans"
    else
        echo "# osapi_volume_extension = $plans.Backup_plans: not installed"
    fi
}

plans_db_sync() {
    # The plugin's tables (backup plans, issue 18) in the profile's
    # database, after Cinder's: "cinder-vmdk-backup-manage db sync" (as
    # python -m when the console script is not installed in the
    # virtualenv, e.g. a tree newer than its installation). Not for the
    # stock profile, nor a tree without the command.
    [ "$profile" = stock ] && return 0
    local manage=("$VENV/bin/cinder-vmdk-backup-manage")
    if [ ! -x "${manage[0]}" ]; then
        "$VENV/bin/python" -P -c 'import cinder_vmdk_backup.cmd.manage' \
            >/dev/null 2>&1 || {
            cvb_log "no cinder-vmdk-backup-manage in $VENV: no backup-plan" \
                "tables"
            return 0
        }
        manage=("$VENV/bin/python" -P -m cinder_vmdk_backup.cmd.manage)
    fi
    cvb_log "cinder-vmdk-backup-manage db sync ($db)"
    "${manage[@]}" --config-file "$dir/cinder.conf" db sync \
        >"$dir/log/plans-db-sync.log" 2>&1 \
        || cvb_die "cinder-vmdk-backup-manage db sync failed:" \
            "$dir/log/plans-db-sync.log"
}

backup_store_lines() {
    # cinder.conf's backup driver lines for the chosen backup store.
    if ! swift_wanted; then
        echo 'backup_driver = cinder.backup.drivers.posix.PosixBackupDriver'
        echo "backup_posix_path = $dir/backups"
        return 0
    fi
    # single_user: Cinder's own Keystone user writes every backup, so
    # backups that run without a user's token (the plugin's backup plans,
    # verification) work and a long backup does not outlive the token it
    # started with; per_user would use the token of the request.
    cat <<LINES
backup_driver = cinder.backup.drivers.swift.SwiftBackupDriver
backup_swift_auth = single_user
backup_swift_auth_version = 3
backup_swift_auth_url = http://127.0.0.1:$KEYSTONE_PORT/v3
backup_swift_user = cinder
backup_swift_key = $CINDER_SERVICE_PASSWORD
backup_swift_project = service
backup_swift_user_domain = Default
backup_swift_project_domain = Default
backup_swift_container = cvb-$profile
LINES
}

second_backend_wanted() {
    [ "$profile" = plugin ] && [ "${CVB_DEPLOY_SECOND_BACKEND:-0}" = 1 ]
}

# The second backend's name, zone and volume type (CVB_DEPLOY_SECOND_BACKEND).
SECOND_BACKEND=vmware-az2
SECOND_ZONE=cvb-az2

second_backend_conf() {
    # The vmware section again, as another backend in another zone.
    sed -e "s/^\[vmware\]\$/[$SECOND_BACKEND]/" \
        -e "s/^volume_backend_name = vmware\$/volume_backend_name = $SECOND_BACKEND/" \
        "$1"
    echo "backend_availability_zone = $SECOND_ZONE"
}

second_backend_type() {
    openstack_admin --os-region-name "$profile" volume type create \
        --property volume_backend_name="$SECOND_BACKEND" "$SECOND_BACKEND" \
        >>"$dir/log/volume-types.log" 2>&1 \
        || cvb_die "could not create volume type $SECOND_BACKEND:" \
            "$dir/log/volume-types.log"
    cvb_log "backend $SECOND_BACKEND in zone $SECOND_ZONE, volume type" \
        "$SECOND_BACKEND"
}

cinder_up() {
    local backup_manager_line volume_driver_line db=cvb_$profile s py
    local backend_args backend backends extension_lines store_lines
    if [ "$profile" = stock ]; then
        backup_manager_line='# backup_manager: Cinder'"'"'s default'
        volume_driver_line='volume_driver = cinder.volume.drivers.vmware.vmdk.VMwareVcVmdkDriver'
    else
        backup_manager_line='backup_manager = cinder_vmdk_backup.backup.manager.BackupManager'
        volume_driver_line='volume_driver = cinder_vmdk_backup.volume.drivers.vmdk.VMwareVcVmdkBackupDriver'
    fi
    if [ "$profile" = kvm ]; then
        backend=qcow2
        backend_args=(LIBVIRT_URI="$LIBVIRT_URI"
                      CONNECTION_LINES="$(qcow2_connection_lines)")
    else
        backend=vmware
        backend_args=(VOLUME_DRIVER_LINE="$volume_driver_line"
                      VCSIM_PORT="$VCSIM_PORT" VCSIM_USER="$VCSIM_USER"
                      VCSIM_PASSWORD="$VCSIM_PASSWORD"
                      VCSIM_CLUSTER="$VCSIM_CLUSTER" VCSIM_WSDL="$VCSIM_WSDL"
                      VCSIM_CA_FILE="$VCSIM_CA_FILE")
    fi
    backends=$backend
    second_backend_wanted && backends="$backend,$SECOND_BACKEND"
    extension_lines=$(api_extension_lines)
    store_lines=$(backup_store_lines)
    API_PORT=$(cvb_free_port)
    mkdir -p "$dir/state" "$dir/lock" "$dir/backups" "$dir/vmware-tmp" \
        "$dir/log"
    py=$("$VENV/bin/python" -c 'import sys; print(sys.prefix)')
    cp "$py/etc/cinder/api-paste.ini" "$dir/api-paste.ini"
    # cinder.conf.in, then the backend's section.
    render_conf "$CVB_TOP/tools/deploy/cinder.conf.in" "$dir/cinder.conf" \
        HOST="cvb-$profile" STATE_DIR="$dir" VENV="$py" API_PORT="$API_PORT" \
        RABBIT_USER="$RABBIT_USER" RABBIT_PASSWORD="$RABBIT_PASSWORD" \
        RABBIT_PORT="$RABBIT_PORT" RABBIT_VHOST="$db" \
        DB_USER="$DB_USER" DB_PASSWORD="$DB_PASSWORD" DB_PORT="$DB_PORT" \
        DB_NAME="$db" KEYSTONE_PORT="$KEYSTONE_PORT" \
        CINDER_SERVICE_PASSWORD="$CINDER_SERVICE_PASSWORD" \
        BACKUP_MANAGER_LINE="$backup_manager_line" BACKEND="$backends" \
        API_EXTENSION_LINES="$extension_lines" \
        BACKUP_STORE_LINES="$store_lines" \
        COORDINATION_LINES="$(coordination_lines)"
    render_conf "$CVB_TOP/tools/deploy/backend-$backend.conf.in" \
        "$dir/cinder.conf.$backend" STATE_DIR="$dir" "${backend_args[@]}"
    cat "$dir/cinder.conf.$backend" >>"$dir/cinder.conf"
    if second_backend_wanted; then
        { echo; second_backend_conf "$dir/cinder.conf.$backend"; } \
            >>"$dir/cinder.conf"
    fi
    rm -f "$dir/cinder.conf.$backend"

    # A fresh database and message queue vhost for this profile.
    mariadb_client <<SQL
DROP DATABASE IF EXISTS $db;
CREATE DATABASE $db CHARACTER SET utf8;
GRANT ALL PRIVILEGES ON $db.* TO '$DB_USER'@'127.0.0.1';
SQL
    rabbitmqctl delete_vhost "$db" >/dev/null 2>&1 || true
    rabbitmqctl add_vhost "$db" >/dev/null
    rabbitmqctl set_permissions -p "$db" "$RABBIT_USER" '.*' '.*' '.*' \
        >/dev/null

    cvb_log "cinder-manage db sync ($db)"
    "$VENV/bin/cinder-manage" --config-file "$dir/cinder.conf" db sync \
        >"$dir/log/db-sync.log" 2>&1 \
        || cvb_die "cinder-manage db sync failed: $dir/log/db-sync.log"
    plans_db_sync

    local debug
    for s in "${services[@]}"; do
        # The scheduler logs at DEBUG when it learns of a backup service:
        # wait_services waits for that line.
        debug=()
        [ "$s" = cinder-scheduler ] && debug=(--debug)
        # OS_CINDER_DISABLE_EVENTLET_PATCHING=1 in the environment runs the
        # services with native threads, except cinder-api: Cinder 29's
        # built-in API server (oslo.service's wsgi.Server) refuses the
        # threading backend; a production one runs under a WSGI server.
        mode=()
        [ "$s" = cinder-api ] && mode=(env -u OS_CINDER_DISABLE_EVENTLET_PATCHING)
        cvb_start "$dir/$s.pid" "$dir/log/$s.out" "${mode[@]}" \
            "$VENV/bin/$s" \
            --config-file "$dir/cinder.conf" --log-file "$dir/log/$s.log" \
            "${debug[@]}"
    done
    if plans_two_nodes; then
        backup2_up
    fi
    register_endpoint
    cat >"$dir/openrc" <<RC
# The OpenStack client against the '$profile' deployment of
# tools/deploy/up.sh: source this file, then run e.g. openstack volume list.
export PATH=$CVB_OSC_VENV/bin:\$PATH
export OS_AUTH_URL=http://127.0.0.1:$KEYSTONE_PORT/v3
export OS_IDENTITY_API_VERSION=3
export OS_USERNAME=admin
export OS_PASSWORD=$ADMIN_PASSWORD
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=$profile
export OS_VOLUME_API_VERSION=3.70
RC
    if nova_wanted; then
        # `server create --nic none` needs compute API 2.37 or later; the
        # client asks for 2.1 unless told.
        echo "export OS_COMPUTE_API_VERSION=2.79" >>"$dir/openrc"
    fi
    cvb_wait_port "$API_PORT" 60 "$dir/cinder-api.pid" \
        || cvb_die "cinder-api did not start: $dir/log/cinder-api.log"
    wait_services
    if second_backend_wanted; then
        second_backend_type
    fi
}

volume_heard() {
    # kvm: the scheduler has the volume service's capabilities (else a
    # volume create right after up.sh fails with "No weighed backend": the
    # qcow2 driver starts within a second and its first report can reach
    # the scheduler before it listens; the next comes a minute later).
    [ "$profile" != kvm ] && return 0
    grep -q "Received volume service update from .*cvb-$profile@" \
        "$dir/log/cinder-scheduler.log" 2>/dev/null
}

backup2_heard() {
    # The scheduler has the second cinder-backup's report too.
    plans_two_nodes || return 0
    grep -q "Received backup service update from cvb-$profile-backup2" \
        "$dir/log/cinder-scheduler.log" 2>/dev/null
}

drivers_ready() {
    # Every backend of cinder-volume has initialised its driver.
    local want=1 n
    second_backend_wanted && want=2
    n=$(grep -c 'Driver initialization completed' \
        "$dir/log/cinder-volume.log" 2>/dev/null) || n=0
    [ "$n" -ge "$want" ]
}

wait_services() {
    # Until cinder-scheduler, cinder-volume and cinder-backup have reported
    # to the database since now (rows of an earlier run of this profile
    # stay in its database and must not count: cinder-api would find no
    # backup service up), the volume driver is initialised and the
    # scheduler has heard from a working cinder-backup (it picks the
    # backup host from those reports, not from the database).
    local n s deadline=$((SECONDS + ${CVB_SERVICE_WAIT:-600}))
    local since
    since=$(date -u '+%Y-%m-%d %H:%M:%S')
    while [ "$SECONDS" -lt "$deadline" ]; do
        for s in "${services[@]}"; do
            cvb_pid_alive "$dir/$s.pid" \
                || cvb_die "$s ended: $dir/log/$s.log"
        done
        if plans_two_nodes; then
            cvb_pid_alive "$dir/cinder-backup2.pid" \
                || cvb_die "cinder-backup2 ended: $dir/log/cinder-backup2.log"
        fi
        if grep -q 'Failed to initialize driver' \
                "$dir/log/cinder-volume.log" 2>/dev/null; then
            cvb_die "the volume driver failed: $dir/log/cinder-volume.log"
        fi
        n=$(mariadb_client -N "cvb_$profile" -e "SELECT COUNT(DISTINCT \`binary\`)
              FROM services WHERE deleted = 0 AND updated_at >= '$since'
              AND \`binary\` IN ('cinder-scheduler', 'cinder-volume',
                                 'cinder-backup')" 2>/dev/null) || n=0
        if [ "$n" = 3 ] && drivers_ready \
            && grep -q "Received backup service update from .*'backend_state': True" \
                "$dir/log/cinder-scheduler.log" 2>/dev/null \
            && volume_heard && backup2_heard; then
            return 0
        fi
        sleep 0.2
    done
    cvb_die "services not up after ${CVB_SERVICE_WAIT:-600} s (logs in $dir/log)"
}

main() {
    check_prerequisites
    # The shared part (RabbitMQ, MariaDB, Keystone) is started under a lock
    # on the deployment directory, which down.sh takes too; the profile
    # then starts outside it, announced by its up.pid (down.sh leaves the
    # shared part running while a profile starts or runs).
    mkdir -p "$CVB_DEPLOY_DIR"
    # (A directory made by an older version of this script may be 0755.)
    chmod 0700 "$CVB_DEPLOY_DIR"
    exec 7>"$CVB_DEPLOY_DIR/.lock"
    flock 7
    if profile_running; then
        cvb_log "profile '$profile' is already running"
        echo "$dir/openrc"
        return 0
    fi
    CVB_DEPLOY_LOCKED=1 bash "$CVB_TOP/tools/deploy/down.sh" "$profile" \
        --keep-infra >/dev/null 7>&-
    # Never remove a directory through a mount (down.sh unmounts the NFS
    # stand-in's; what is left is someone else's, or a failed unmount).
    if [ -n "$(cvb_mounts_under "$dir")" ]; then
        cvb_die "still mounted under $dir:" $(cvb_mounts_under "$dir")
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    echo $$ >"$dir/up.pid"
    trap 'rm -f "$dir/up.pid"' EXIT
    infra_up
    if swift_wanted; then
        swift_up
    fi
    exec 7>&-
    if [ "$profile" = kvm ]; then
        libvirt_up
    else
        vcsim_up
    fi
    if coordination_wanted; then
        etcd_up
    fi
    if nova_wanted; then
        # Nova's and Neutron's database migrations while Cinder starts
        # (their logs in log/, which cinder_up may not have made yet).
        mkdir -p "$dir/log"
        nova_vars
        neutron_vars
        nova_prepare &
        nova_prep=$!
        neutron_prepare &
        neutron_prep=$!
    fi
    cinder_up
    if nova_wanted; then
        wait "$nova_prep" || cvb_die "Nova's set-up failed (see above)"
        wait "$neutron_prep" \
            || cvb_die "Neutron's set-up failed (see above)"
        neutron_up
        nova_up
        neutron_wait
    fi
    echo "$backup_store" >"$dir/backup-store"
    cvb_log "profile '$profile' is up (cinder-api http://127.0.0.1:$API_PORT," \
        "backups to $backup_store)"
    echo "$dir/openrc"
}

main
