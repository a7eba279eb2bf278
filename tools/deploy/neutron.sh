# Sourced by tools/deploy/up.sh (and down.sh) for a profile with
# Nova (CVB_DEPLOY_NOVA=1): the Neutron API (neutron 29, the release of
# Nova 34 and Cinder 29), from Neutron's own virtualenv (tools/deploy/
# install.sh: $NEUTRON_VENV), served by gunicorn on 127.0.0.1 and started by
# PID, with the deployment's Keystone, RabbitMQ and MariaDB.
#
# Why Neutron at all: servers are booted with `--nic none` (no port, no
# network), but Nova still asks Neutron on `server show`/`list` (the
# server's security groups), `server start`/`reboot` (the network info)
# and `server delete` (deallocation); no option turns that off. ML2 with no
# type networks in use, no mechanism driver and no agent answers those calls
# (no port exists); no RPC server, DHCP, L3 or metadata agent runs.
#
# Uses up.sh's variables and functions (dir, profile, infra ports and
# passwords, mariadb_client, rabbitmqctl, openstack_admin); writes
# NEUTRON_PORT to $dir/nova.env (nova_up).

neutron_prerequisites() {
    # Echoes what is missing for Neutron (nothing: all there).
    [ -x "$NEUTRON_VENV/bin/neutron-db-manage" ] \
        && [ -x "$NEUTRON_VENV/bin/gunicorn" ] \
        && "$NEUTRON_VENV/bin/python" -c 'import neutron, pymysql' \
            2>/dev/null \
        || echo "Neutron and gunicorn in $NEUTRON_VENV"
}

neutron_running() {
    nova_wanted || return 0
    cvb_pid_alive "$dir/neutron-api.pid"
}

keystone_neutron_service() {
    # Neutron's service user (admin in project service: it validates
    # tokens) and the network service in the catalog. Once per Keystone.
    local ks=$infra/keystone types roles
    [ -f "$ks/.neutron-service" ] && return 0
    openstack_admin >>"$infra/keystone-setup.log" 2>&1 <<CMDS || true
user create --domain default --or-show neutron
user set --password $NEUTRON_SERVICE_PASSWORD neutron
role add --project service --user neutron admin
role add --project service --user neutron service
service create --name neutron network
CMDS
    types=$(openstack_admin service list -f value -c Type 2>/dev/null) \
        || true
    roles=$(openstack_admin role assignment list --user neutron --project \
            service --names -f value -c Role 2>/dev/null) || true
    grep -qx network <<<"$types" && grep -qx admin <<<"$roles" \
        || cvb_die "no network service or neutron user in Keystone:" \
            "$infra/keystone-setup.log"
    touch "$ks/.neutron-service"
}

neutron_vars() {
    NEUTRON_DB=cvb_${profile}_neutron
    NEUTRON_PORT=$(cvb_free_port)
}

neutron_write_conf() {
    local db=mysql+pymysql://$DB_USER:$DB_PASSWORD@127.0.0.1:$DB_PORT
    local n=$dir/neutron
    mkdir -p "$n/state" "$n/lock" "$n/wsgi"
    cat >"$n/neutron.conf" <<CONF
# Neutron of the $profile profile (tools/deploy/neutron.sh): the API only.
[DEFAULT]
use_stderr = true
core_plugin = ml2
# The router and port-forwarding plugins only for their database models:
# ML2's port listing reads Port.port_forwardings, a relation that exists
# only once the port-forwarding model is loaded (neutron_wait).
service_plugins = router,port_forwarding
auth_strategy = keystone
state_path = $n/state
api_paste_config = $n/api-paste.ini
transport_url = rabbit://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:$RABBIT_PORT/$NEUTRON_DB
# No ports are ever bound here: nothing to tell Nova.
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false

[database]
connection = $db/$NEUTRON_DB?charset=utf8

[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:$KEYSTONE_PORT/v3
interface = public
auth_url = http://127.0.0.1:$KEYSTONE_PORT/v3
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = neutron
password = $NEUTRON_SERVICE_PASSWORD

[oslo_concurrency]
lock_path = $n/lock

[oslo_messaging_notifications]
driver = noop
CONF
    cat >"$n/ml2_conf.ini" <<CONF
# ML2 with no mechanism driver and no agent: servers of this deployment
# have no network (--nic none); Nova only lists their (absent) ports.
[ml2]
type_drivers = flat
tenant_network_types =
mechanism_drivers =
extension_drivers =

[ml2_type_flat]
flat_networks =
CONF
    cp "$NEUTRON_VENV/etc/neutron/api-paste.ini" "$n/api-paste.ini"
}

neutron_prepare() {
    # Keystone user and service, configuration, database (migrations) and
    # message queue vhost; up.sh runs this while Cinder starts (after
    # neutron_vars).
    cvb_log "Neutron: database, message queue vhost, Keystone"
    keystone_neutron_service
    neutron_write_conf
    mariadb_client <<SQL
DROP DATABASE IF EXISTS $NEUTRON_DB;
CREATE DATABASE $NEUTRON_DB CHARACTER SET utf8;
GRANT ALL PRIVILEGES ON $NEUTRON_DB.* TO '$DB_USER'@'127.0.0.1';
SQL
    rabbitmqctl delete_vhost "$NEUTRON_DB" >/dev/null 2>&1 || true
    rabbitmqctl add_vhost "$NEUTRON_DB" >/dev/null
    rabbitmqctl set_permissions -p "$NEUTRON_DB" "$RABBIT_USER" \
        '.*' '.*' '.*' >/dev/null
    cvb_log "Neutron: neutron-db-manage upgrade heads"
    "$NEUTRON_VENV/bin/neutron-db-manage" \
        --config-file "$dir/neutron/neutron.conf" \
        --config-file "$dir/neutron/ml2_conf.ini" upgrade heads \
        >"$dir/log/neutron-db-sync.log" 2>&1 \
        || cvb_die "Neutron's database set-up failed:" \
            "$dir/log/neutron-db-sync.log"
    cvb_log "Neutron: database ready"
}

neutron_up() {
    # The network endpoint, then neutron-api under gunicorn (Neutron's
    # WSGI application, neutron.wsgi.api), ready when it answers.
    local urls wdir=$dir/neutron/wsgi
    openstack_admin endpoint create --region "$profile" network public \
        "http://127.0.0.1:$NEUTRON_PORT" \
        >>"$dir/log/keystone-endpoint.log" 2>&1 || true
    urls=$(openstack_admin endpoint list --region "$profile" -f value \
           -c URL 2>/dev/null) || true
    grep -q ":$NEUTRON_PORT\$" <<<"$urls" \
        || cvb_die "no Neutron endpoint in Keystone:" \
            "$dir/log/keystone-endpoint.log"
    # Settings in ./gunicorn.conf.py: the application parses the process's
    # command line as its own options; its files come from the
    # environment.
    cat >"$wdir/gunicorn.conf.py" <<CONF
wsgi_app = 'neutron.wsgi.api:application'
bind = '127.0.0.1:$NEUTRON_PORT'
workers = 1
worker_class = 'gthread'
threads = 8
timeout = 120
graceful_timeout = 5
raw_env = ['OS_NEUTRON_CONFIG_DIR=$dir/neutron',
           'OS_NEUTRON_CONFIG_FILES=neutron.conf;ml2_conf.ini']
CONF
    (cd "$wdir" && export OS_NEUTRON_CONFIG_DIR="$dir/neutron" \
        "OS_NEUTRON_CONFIG_FILES=neutron.conf;ml2_conf.ini" \
     && cvb_start "$dir/neutron-api.pid" "$dir/log/neutron-api.log" \
        "$NEUTRON_VENV/bin/gunicorn")
}

neutron_wait() {
    cvb_wait_http "http://127.0.0.1:$NEUTRON_PORT/" 180 \
        "$dir/neutron-api.pid" \
        || cvb_die "neutron-api did not start: $dir/log/neutron-api.log"
    # Ready: a network listing and a port listing answer, as the admin.
    # The network listing comes first on purpose: Neutron 29's port listing
    # reads the Port.port_forwardings relation (a backref of the
    # port-forwarding model) as a class attribute, which exists only once
    # SQLAlchemy has configured the mappers, i.e. after the worker's first
    # query; as the first request of the process it fails (AttributeError,
    # HTTP 500), and so would Nova's first `server show`.
    openstack_admin --os-region-name "$profile" network list \
        >>"$dir/log/neutron-ready.log" 2>&1 \
        && openstack_admin --os-region-name "$profile" port list \
            >>"$dir/log/neutron-ready.log" 2>&1 \
        || cvb_die "Neutron does not answer network/port listings:" \
            "$dir/log/neutron-ready.log, $dir/log/neutron-api.log"
    echo "NEUTRON_PORT=$NEUTRON_PORT" >>"$dir/nova.env"
    cvb_log "Neutron is up (http://127.0.0.1:$NEUTRON_PORT)"
}
