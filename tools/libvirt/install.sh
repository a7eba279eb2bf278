#!/usr/bin/env bash
# Install QEMU and libvirt for the KVM/qcow2 driver's functional tests on a
# Debian 12 machine (as root), without systemd: libvirt-daemon-system is
# deliberately NOT installed (it pulls in systemd as init); libvirtd is run
# by tools/libvirt/start.sh instead. Also installs what building
# libvirt-python from PyPI needs (libvirt-dev, pkg-config, gcc, python3-dev).
# Safe to run again: it only installs or writes what is missing.
set -eu -o pipefail

packages=(qemu-utils qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu
          libvirt-clients libvirt-dev pkg-config gcc python3-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirtd refuses to start when the user named in its defaults is missing.
if ! getent passwd libvirt-qemu >/dev/null; then
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    useradd --system --no-create-home --home-dir /var/lib/libvirt \
        --shell /usr/sbin/nologin -g libvirt-qemu libvirt-qemu
fi

# No qemu.conf ships without libvirt-daemon-system. Ours runs QEMU as root
# with no security driver, cgroups, namespaces or virtlogd: none of them
# works without systemd here. A qemu.conf that is not ours is left alone.
marker='# written by cinder-vmdk-backup tools/libvirt/install.sh'
conf=/etc/libvirt/qemu.conf
if [ ! -e "$conf" ] || grep -qF "$marker" "$conf"; then
    mkdir -p /etc/libvirt
    tmp=$(mktemp "$conf.XXXXXX")
    cat > "$tmp" <<CONF
$marker
user = "root"
group = "root"
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
CONF
    chmod 0644 "$tmp"
    if cmp -s "$tmp" "$conf"; then rm -f "$tmp"; else mv -f "$tmp" "$conf"; fi
else
    echo "tools/libvirt/install.sh: $conf is not ours, left as it is" >&2
fi
mkdir -p /var/log/libvirt /var/lib/libvirt/qemu /run/libvirt
exit 0
