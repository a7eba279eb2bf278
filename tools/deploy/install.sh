#!/usr/bin/env bash
# Install what tools/deploy/up.sh needs on a Debian 12 machine (as root):
# RabbitMQ, MariaDB, Swift and etcd from Debian's packages, the OpenStack
# client (python-openstackclient + python-cinderclient), Keystone
# (+ gunicorn) and Nova + Placement (+ gunicorn, libvirt-python: the kvm
# profile's CVB_DEPLOY_NOVA=1) and Neutron (+ gunicorn: the same profile's
# network API), each in a virtualenv of its own.
# PyMySQL, through which Cinder's services reach MariaDB, and
# python-swiftclient, Cinder's Swift backup driver's client, come with the
# project's virtualenv (test-requirements.txt).
# Safe to run again: it only installs what is missing, in about a second when
# everything is there. The Debian packages' own services are not started
# (no systemd here; up.sh runs private instances on free ports).
#
# Environment:
#   CVB_OSC_VENV       the client's virtualenv (/opt/cvb-openstackclient)
#   CVB_KEYSTONE_VENV  Keystone's virtualenv (/opt/cvb-keystone)
#   CVB_NOVA_VENV      Nova's and Placement's virtualenv (/opt/cvb-nova)
#   CVB_NEUTRON_VENV   Neutron's virtualenv (/opt/cvb-neutron)
set -eu -o pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/tools/deploy/lib.sh"

packages=(rabbitmq-server mariadb-server mariadb-client python3-venv)
# Swift (CVB_DEPLOY_BACKUP_STORE=swift, tools/deploy/swift.sh): Debian's
# servers on the system Python, with keystonemiddleware for the proxy.
packages+=(swift swift-proxy swift-account swift-container swift-object
           python3-keystonemiddleware)
# etcd: the coordination backend of the plugin profile (tools/deploy/etcd.sh).
packages+=(etcd-server)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    # Keep the packages' init scripts from starting system-wide daemons
    # during the install (the usual policy-rc.d gate); ours run from up.sh.
    gate=/usr/sbin/policy-rc.d
    own_gate=0
    if [ ! -e "$gate" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$gate"
        chmod 0755 "$gate"
        own_gate=1
    fi
    apt-get update -qq
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    [ "$own_gate" = 1 ] && rm -f "$gate"
    [ "$rc" = 0 ] || exit "$rc"
fi

# The OpenStack client in its own virtualenv: its dependencies (openstacksdk,
# osc-lib, cliff) must not move the versions Cinder's services run with.
if [ ! -x "$CVB_OSC_VENV/bin/openstack" ] || [ ! -x "$CVB_OSC_VENV/bin/cinder" ] \
        || [ ! -f "$CVB_OSC_VENV/.cvb-complete" ]; then
    python3 -m venv "$CVB_OSC_VENV"
    "$CVB_OSC_VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    "$CVB_OSC_VENV/bin/pip" install -q python-openstackclient \
        python-cinderclient 2>&1 | grep -v '^WARNING: Location' || true
    "$CVB_OSC_VENV/bin/openstack" --version >/dev/null
    "$CVB_OSC_VENV/bin/cinder" --version >/dev/null
    touch "$CVB_OSC_VENV/.cvb-complete"
fi

# The plugin's `openstack volume instance group ...` commands in the
# client's virtualenv: this tree, editable, without its run-time
# requirements (Cinder and libvirt-python are the services', not the
# client's). Installed again when setup.cfg (its entry points) changes.
osc_stamp=$CVB_OSC_VENV/.cvb-plugin
osc_want=$(sha256sum "$CVB_TOP/setup.cfg" | cut -d' ' -f1):$CVB_TOP
if [ ! -f "$osc_stamp" ] || [ "$(cat "$osc_stamp")" != "$osc_want" ] \
        || ! "$CVB_OSC_VENV/bin/python" -c \
            'import cinder_vmdk_backup.osc.plugin' 2>/dev/null; then
    # (pip's build back-end warns about editable installs on every run:
    # its output goes to a log, shown only when the install fails.)
    "$CVB_OSC_VENV/bin/pip" install -q --no-deps -e "$CVB_TOP" \
        >"$CVB_OSC_VENV/cvb-plugin-install.log" 2>&1 \
        || { cat "$CVB_OSC_VENV/cvb-plugin-install.log" >&2; exit 1; }
    "$CVB_OSC_VENV/bin/openstack" volume instance group list --help \
        >/dev/null
    echo "$osc_want" >"$osc_stamp"
fi

# Keystone, in a virtualenv of its own for the same reason, served by
# gunicorn (Keystone ships only a WSGI application).
if [ ! -x "$KEYSTONE_VENV/bin/keystone-manage" ] \
        || [ ! -x "$KEYSTONE_VENV/bin/gunicorn" ] \
        || [ ! -f "$KEYSTONE_VENV/.cvb-complete" ]; then
    python3 -m venv "$KEYSTONE_VENV"
    "$KEYSTONE_VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    "$KEYSTONE_VENV/bin/pip" install -q keystone PyMySQL gunicorn 2>&1 \
        | grep -v '^WARNING: Location' || true
    "$KEYSTONE_VENV/bin/python" -c 'import keystone, pymysql'
    touch "$KEYSTONE_VENV/.cvb-complete"
fi
# Nova and Placement at the release that goes with Cinder 29, in a
# virtualenv of their own (their pins are not Cinder's), with gunicorn
# (they ship only WSGI applications) and libvirt-python (built against
# libvirt-dev: tools/libvirt/install.sh), and oslo.vmware (Nova's
# VMware driver, nova[vmware]: tests/functional/vmware/
# test_nova_vmware_driver.py runs it against vcsim). Installed again when
# the versions here change.
nova_want="nova==34.0.0 openstack-placement==16.0.0 PyMySQL gunicorn libvirt-python oslo.vmware"
if [ ! -f "$NOVA_VENV/.cvb-complete" ] \
        || [ "$(cat "$NOVA_VENV/.cvb-complete")" != "$nova_want" ] \
        || [ ! -x "$NOVA_VENV/bin/nova-compute" ]; then
    # (tools/install-peers.sh runs tools/libvirt/install.sh after this
    # one; it installs only what is missing.)
    bash "$CVB_TOP/tools/libvirt/install.sh" >/dev/null
    python3 -m venv "$NOVA_VENV"
    "$NOVA_VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    "$NOVA_VENV/bin/pip" install -q $nova_want 2>&1 \
        | grep -v '^WARNING: Location' || true
    "$NOVA_VENV/bin/python" -c \
        'import nova, placement, libvirt, pymysql, oslo_vmware'
    echo "$nova_want" >"$NOVA_VENV/.cvb-complete"
fi
# Neutron's API at the same release (Neutron 29), in a virtualenv of its
# own, with gunicorn (it ships a WSGI application). Installed again when
# the versions here change.
neutron_want="neutron==29.0.0 PyMySQL gunicorn"
if [ ! -f "$NEUTRON_VENV/.cvb-complete" ] \
        || [ "$(cat "$NEUTRON_VENV/.cvb-complete")" != "$neutron_want" ] \
        || [ ! -x "$NEUTRON_VENV/bin/neutron-db-manage" ]; then
    python3 -m venv "$NEUTRON_VENV"
    "$NEUTRON_VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    "$NEUTRON_VENV/bin/pip" install -q $neutron_want 2>&1 \
        | grep -v '^WARNING: Location' || true
    "$NEUTRON_VENV/bin/python" -W ignore -c 'import neutron, pymysql'
    echo "$neutron_want" >"$NEUTRON_VENV/.cvb-complete"
fi
exit 0
