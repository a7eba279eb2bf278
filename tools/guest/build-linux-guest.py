#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Build a tiny Linux guest that runs the real QEMU guest agent.

Everything comes from Debian packages, fetched with ``apt-get download``
into a cache directory, of which only the files needed are unpacked
(``dpkg-deb --fsys-tarfile``); nothing is installed on the host, no
daemon is started here:

- the kernel of ``linux-image-cloud-amd64`` (its ``vmlinuz``, booted
  directly by QEMU) and the few modules the guest needs (virtio PCI,
  ``virtio_blk`` for its disks, ``virtio_console`` for the agent's
  virtio-serial port; ext4 is built into that kernel);
- ``busybox-static`` for the shell and tools of ``/init``;
- ``qemu-ga`` of ``qemu-guest-agent``, with the shared libraries ``ldd``
  lists for it (taken from the host, where the same Debian packages
  provide them), and its default fsfreeze hook.

The initramfs (newc cpio, gzip) is written by this script, byte for byte
the same for the same inputs. Its ``/init`` is :data:`INIT` below: it
mounts every ext4 disk, starts ``qemu-ga`` with the default fsfreeze hook
and keeps appending numbered records to a file on each disk, each
fsync'ed, so that a point-in-time copy of the disks can be checked.

The result is cached under ``$CVB_GUEST_CACHE`` (default
``/var/cache/cvb-linux-guest``), in a directory named after a digest of
this script and of the packages' versions; a ``manifest.json`` written
last is the stamp of a complete build. Running the script again with the
same inputs only prints that manifest's path. Run as root (apt-get).

Usage: ``build-linux-guest.py [--force] [--reuse]``; prints the
manifest's path. ``--reuse`` takes a build of this very script from the
cache without asking apt (the tests use it: apt-cache takes seconds).
"""

import argparse
import contextlib
import fcntl
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess  # nosec B404: apt-get, dpkg-deb, ldd
import sys
import tarfile
import tempfile
import time

CACHE = os.environ.get('CVB_GUEST_CACHE', '/var/cache/cvb-linux-guest')
KERNEL_META = 'linux-image-cloud-amd64'
BUSYBOX = 'busybox-static'
AGENT = 'qemu-guest-agent'
#: Modules /init loads, in this order after their dependencies.
MODULES = ('virtio_pci', 'virtio_blk', 'virtio_console')
#: The agent's port, and the port /init takes commands from (see INIT).
AGENT_PORT = 'org.qemu.guest_agent.0'
CONTROL_PORT = 'org.cvb.control.0'

#: The guest's /init (busybox ash). Kernel command line parameters:
#: ``cvb.pace=MICROSECONDS`` between two records (default 20000),
#: ``cvb.agent=0`` not to start the agent at boot.
INIT = r'''#!/bin/sh
# /init of the cinder-vmdk-backup test guest (tools/guest).
export PATH=/bin:/usr/sbin
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /mnt /var/log
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /dev/virtio-ports
log() { echo "cvb-guest: $*" > /dev/console; }

pace=20000
agent=1
for word in $(cat /proc/cmdline); do
    case "$word" in
        cvb.pace=*) pace=${word#cvb.pace=} ;;
        cvb.agent=*) agent=${word#cvb.agent=} ;;
    esac
done

while read -r module; do
    insmod "/lib/modules/$module.ko" || log "insmod $module failed"
done < /lib/modules/load-order

# What udev would do: /dev/virtio-ports/<name> for each named port. Each
# port's name arrives on its own: wait for both (a control port linked
# late left the control loop below without its port: every command the
# tests sent timed out).
ports_up() {
    for port in /sys/class/virtio-ports/*; do
        [ -r "$port/name" ] || continue
        name=$(cat "$port/name")
        [ -n "$name" ] && ln -sf "/dev/${port##*/}" "/dev/virtio-ports/$name"
    done
    [ -e /dev/virtio-ports/@AGENT_PORT@ ] \
        && [ -e /dev/virtio-ports/@CONTROL_PORT@ ]
}
tries=0
until ports_up || [ $tries -ge 100 ]; do
    usleep 50000
    tries=$((tries + 1))
done

# qemu-ga logs its commands (guest-fsfreeze called...) to syslog.
syslogd -O /dev/console

disks=
for block in /sys/block/vd*; do
    [ -e "$block" ] || continue
    dev=${block##*/}
    mkdir -p "/mnt/$dev"
    if mount -t ext4 "/dev/$dev" "/mnt/$dev" 2>/dev/null; then
        disks="$disks $dev"
    else
        log "no ext4 filesystem on $dev, not written"
    fi
done

# The agent, (re)started while /run/agent-on exists, with the options in
# /run/agent-args. The control port switches it: a line "agent-stop",
# "agent-start" (restarts it with its default options) or
# "agent-deny-freeze" (restarts it with guest-fsfreeze-freeze and
# guest-fsfreeze-freeze-list disabled, as a locked-down guest may), each
# answered with a line "done <command>" once the old agent is gone.
[ "$agent" = 1 ] && touch /run/agent-on
(
    while :; do
        if [ -e /run/agent-on ]; then
            args=$(cat /run/agent-args 2>/dev/null)
            /usr/sbin/qemu-ga -m virtio-serial \
                -p /dev/virtio-ports/@AGENT_PORT@ -F -t /run $args &
            echo $! > /run/agent.pid
            log "agent started (pid $!) $args"
            wait $!
            log "agent exited ($?)"
            rm -f /run/agent.pid
        fi
        usleep 200000
    done
) &
(
    end_agent() {
        [ -s /run/agent.pid ] && kill "$(cat /run/agent.pid)"
        while [ -e /run/agent.pid ]; do usleep 50000; done
    }
    # (A failed exec would end this loop: open the port once it exists.)
    until [ -e /dev/virtio-ports/@CONTROL_PORT@ ]; do
        ports_up
        usleep 100000
    done
    exec 3<> /dev/virtio-ports/@CONTROL_PORT@
    while :; do
        # Without a host connected the port reads as at its end.
        if read -r command <&3; then
            case "$command" in
                agent-stop)
                    rm -f /run/agent-on
                    end_agent ;;
                agent-start)
                    rm -f /run/agent-args
                    touch /run/agent-on
                    end_agent ;;
                agent-deny-freeze)
                    denied=guest-fsfreeze-freeze,guest-fsfreeze-freeze-list
                    echo "-b $denied" > /run/agent-args
                    touch /run/agent-on
                    end_agent ;;
                *) log "control: unknown command $command" ;;
            esac
            log "control: $command"
            echo "done $command" >&3
        else
            usleep 200000
        fi
    done
) 2>/dev/null &

# Records: one line per number, appended to /mnt/<disk>/records on every
# disk in turn, each fsync'ed before the next; /run/last is the last
# number written to all of them.
n=0
first=${disks# }; first=${first%% *}
if [ -n "$first" ] && [ -s "/mnt/$first/records" ]; then
    n=$(tail -n 1 "/mnt/$first/records")
fi
log "ready: disks$disks from record $((n + 1)), pace $pace us"
while [ -n "$disks" ]; do
    n=$((n + 1))
    for dev in $disks; do
        echo "$n" >> "/mnt/$dev/records"
        sync "/mnt/$dev/records"
    done
    echo "$n" > /run/last
    usleep "$pace"
done
log "no disk to write to"
while :; do sleep 3600; done
'''

#: Run by the agent's default fsfreeze hook (/etc/qemu/fsfreeze-hook)
#: before a freeze and after a thaw: says so on the console, with the
#: guest's clock and the last record written.
HOOK = r'''#!/bin/sh
read -r uptime _ < /proc/uptime
# /init rewrites /run/last after each record: empty for a moment.
for _ in 1 2 3 4 5; do
    read -r last < /run/last && [ -n "$last" ] && break
    usleep 1000
done
echo "cvb-guest: fsfreeze-hook $1 uptime $uptime last $last" > /dev/console
'''


def _run(args, **kwargs):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE,  # nosec
                          text=True, **kwargs).stdout


def candidates(packages):
    """``{package: version apt would fetch}`` (apt-get update if unknown)."""
    for attempt in (0, 1):
        out = _run(['apt-cache', 'policy'] + list(packages))
        found = dict(re.findall(r'^(\S+):\n\s+Installed:.*\n'
                                r'\s+Candidate:\s*(\S+)', out, re.M))
        if all(found.get(p, '(none)') != '(none)' for p in packages):
            return {p: found[p] for p in packages}
        if attempt == 0:
            subprocess.run(['apt-get', 'update', '-qq'], check=True)  # nosec
    raise SystemExit('Debian packages not available: %s' % ', '.join(
        p for p in packages if found.get(p, '(none)') == '(none)'))


def kernel_package():
    """The versioned kernel package the cloud metapackage depends on."""
    out = _run(['apt-cache', 'depends', '--important', KERNEL_META])
    for line in out.splitlines():
        match = re.match(r'\s*Depends:\s*(linux-image-\S+)', line)
        if match:
            return match.group(1)
    raise SystemExit('cannot tell which kernel %s depends on' % KERNEL_META)


def fetch(package, version, debs, into, keep):
    """apt-get download the package's .deb; unpack what ``keep`` wants.

    :param keep: ``keep(member name) -> bool`` (names like ``boot/x``)
    """
    os.makedirs(debs, exist_ok=True)
    want = '%s_%s_' % (package, version.replace(':', '%3a'))

    def downloaded():
        return [p for p in glob.glob(os.path.join(debs, '%s_*.deb' % package))
                if os.path.basename(p).startswith(want)]
    if not downloaded():
        subprocess.run(['apt-get', 'download', '-q', '-o',  # nosec
                        'APT::Sandbox::User=root',
                        '%s=%s' % (package, version)],
                       check=True, cwd=debs, stdout=subprocess.DEVNULL)
        if not downloaded():
            raise SystemExit('apt-get download %s gave no .deb' % package)
    os.makedirs(into)
    # dpkg-deb unpacks the package's data; only the wanted members of it
    # are written (the kernel's thousands of modules are not).
    with subprocess.Popen(['dpkg-deb', '--fsys-tarfile',  # nosec
                           downloaded()[0]], stdout=subprocess.PIPE) as deb:
        with tarfile.open(fileobj=deb.stdout, mode='r|') as tar:
            for member in tar:
                name = os.path.normpath(member.name)
                if (member.isfile() or member.issym()) and keep(name):
                    tar.extract(member, into, set_attrs=False,
                                **_SAFE)
        deb.stdout.read()
    if deb.returncode:
        raise SystemExit('dpkg-deb could not unpack %s' % downloaded()[0])


class Cpio(object):
    """A newc cpio archive (the initramfs format), written in memory."""

    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 1
        self.names = set()

    def _entry(self, name, mode, data=b'', nlink=1, rdev=(0, 0)):
        if name in self.names:
            return
        self.names.add(name)
        encoded = name.encode() + b'\0'
        header = '070701' + ''.join('%08X' % v for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0],
            rdev[1], len(encoded), 0))
        self.ino += 1
        self.out.write(header.encode() + encoded)
        self._pad()
        self.out.write(data)
        self._pad()

    def _pad(self):
        self.out.write(b'\0' * (-self.out.tell() % 4))

    def directory(self, name):
        parts = name.strip('/').split('/')
        for i in range(1, len(parts) + 1):
            self._entry('/'.join(parts[:i]), stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name, data, mode=0o644):
        name = name.strip('/')
        if '/' in name:
            self.directory(name.rsplit('/', 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        name = name.strip('/')
        if '/' in name:
            self.directory(name.rsplit('/', 1)[0])
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name, major, minor):
        self._entry(name.strip('/'), stat.S_IFCHR | 0o600,
                    rdev=(major, minor))

    def finish(self):
        self._entry('TRAILER!!!', 0, nlink=1)
        self._pad()
        return self.out.getvalue()


#: Python's own check of archive members where it has one (3.11.4+).
_SAFE = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}


def _kernel_member(name):
    """The kernel image and the virtio modules (all MODULES need)."""
    return (name.startswith('boot/vmlinuz-')
            or (name.startswith('lib/modules/') and name.endswith('.ko')
                and 'virtio' in os.path.basename(name)))


def module_dependencies(path):
    """The ``depends=`` of a kernel module's .modinfo."""
    with open(path, 'rb') as f:
        data = f.read()
    match = re.search(rb'\0depends=([^\0]*)\0', data)
    if not match or not match.group(1):
        return []
    return match.group(1).decode().split(',')


def module_order(module_dir, wanted):
    """``{name: path}`` in load order (dependencies first)."""
    paths = {}
    for root, _dirs, files in os.walk(module_dir):
        for name in files:
            if name.endswith('.ko'):
                paths[name[:-3].replace('-', '_')] = os.path.join(root, name)
    order = []

    def visit(name, trail=()):
        if name in order:
            return
        if name in trail or name not in paths:
            raise SystemExit('kernel module %s not found (or a cycle)'
                             % name)
        for dependency in module_dependencies(paths[name]):
            visit(dependency.replace('-', '_'), trail + (name,))
        order.append(name)
    for name in wanted:
        visit(name)
    return [(name, paths[name]) for name in order]


def shared_libraries(binary):
    """``[(path in the guest, file on the host)]`` of ``ldd binary``."""
    out = _run(['ldd', binary])
    found = []
    for line in out.splitlines():
        match = (re.match(r'\s*\S+ => (/\S+) \(', line)
                 or re.match(r'\s*(/\S+) \(', line))
        if match:
            found.append((match.group(1), os.path.realpath(match.group(1))))
    if not found:
        raise SystemExit('ldd found no shared library of %s' % binary)
    return found


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def build(unpacked, out_dir):
    """Write ``vmlinuz`` and ``initrd.img`` into ``out_dir``."""
    kernel = glob.glob(os.path.join(unpacked, 'kernel', 'boot',
                                    'vmlinuz-*'))
    modules = glob.glob(os.path.join(unpacked, 'kernel', 'lib', 'modules',
                                     '*'))
    if len(kernel) != 1 or len(modules) != 1:
        raise SystemExit('unexpected kernel package layout: %s %s'
                         % (kernel, modules))
    shutil.copyfile(kernel[0], os.path.join(out_dir, 'vmlinuz'))

    cpio = Cpio()
    for name in ('dev', 'proc', 'sys', 'run', 'tmp', 'mnt', 'var/log',
                 'etc/qemu/fsfreeze-hook.d', 'lib/modules'):
        cpio.directory(name)
    # The kernel opens it for /init's stdio before /init mounts devtmpfs.
    cpio.char_device('dev/console', 5, 1)
    cpio.symlink('var/run', '../run')
    cpio.symlink('sbin', 'bin')
    cpio.file('init', INIT.replace('@AGENT_PORT@', AGENT_PORT).replace(
        '@CONTROL_PORT@', CONTROL_PORT).encode(), 0o755)
    cpio.file('bin/busybox', read(os.path.join(unpacked, 'busybox', 'bin',
                                               'busybox')), 0o755)
    cpio.symlink('bin/sh', 'busybox')
    agent = os.path.join(unpacked, 'agent', 'usr', 'sbin', 'qemu-ga')
    cpio.file('usr/sbin/qemu-ga', read(agent), 0o755)
    cpio.symlink('usr/bin', '../bin')
    for guest_path, host_path in shared_libraries(agent):
        cpio.file(guest_path, read(host_path), 0o755)
    cpio.file('etc/qemu/fsfreeze-hook', read(os.path.join(
        unpacked, 'agent', 'etc', 'qemu', 'fsfreeze-hook')), 0o755)
    cpio.file('etc/qemu/fsfreeze-hook.d/cvb-console', HOOK.encode(), 0o755)
    cpio.file('etc/passwd', b'root:x:0:0:root:/:/bin/sh\n')
    cpio.file('etc/group', b'root:x:0:\n')
    order = module_order(modules[0], MODULES)
    for name, path in order:
        cpio.file('lib/modules/%s.ko' % name, read(path))
    cpio.file('lib/modules/load-order',
              ''.join('%s\n' % name for name, _p in order).encode())
    with open(os.path.join(out_dir, 'initrd.img'), 'wb') as f:
        with gzip.GzipFile(fileobj=f, mode='wb', compresslevel=9,
                           mtime=0) as z:
            z.write(cpio.finish())
    return [name for name, _p in order]


@contextlib.contextmanager
def _locked(path):
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--force', action='store_true',
                        help='build again even if the cache has it')
    parser.add_argument('--reuse', action='store_true',
                        help='take a build of this script from the cache '
                        'without asking apt whether newer packages exist')
    args = parser.parse_args()
    os.makedirs(CACHE, mode=0o755, exist_ok=True)
    script = hashlib.sha256(read(os.path.abspath(__file__))).hexdigest()[:12]
    with _locked(os.path.join(CACHE, '.lock')):
        if args.reuse and not args.force:
            built = sorted(glob.glob(os.path.join(
                CACHE, 'guest-%s-*' % script, 'manifest.json')))
            if built:
                print(built[-1])
                return 0
        kernel = kernel_package()
        versions = candidates((kernel, BUSYBOX, AGENT))
        key = hashlib.sha256(json.dumps(
            versions, sort_keys=True).encode()).hexdigest()[:12]
        final = os.path.join(CACHE, 'guest-%s-%s' % (script, key))
        manifest = os.path.join(final, 'manifest.json')
        if os.path.exists(manifest) and not args.force:
            print(manifest)
            return 0
        started = time.monotonic()
        work = tempfile.mkdtemp(prefix='build-', dir=CACHE)
        try:
            unpacked = os.path.join(work, 'unpacked')
            debs = os.path.join(CACHE, 'debs')
            for package, into, keep in (
                    (kernel, 'kernel', _kernel_member),
                    (BUSYBOX, 'busybox', lambda name: name == 'bin/busybox'),
                    (AGENT, 'agent', lambda name: name in (
                        'usr/sbin/qemu-ga', 'etc/qemu/fsfreeze-hook'))):
                fetch(package, versions[package], debs,
                      os.path.join(unpacked, into), keep)
            out_dir = os.path.join(work, 'out')
            os.makedirs(out_dir)
            modules = build(unpacked, out_dir)
            sizes = {name: os.path.getsize(os.path.join(out_dir, name))
                     for name in ('vmlinuz', 'initrd.img')}
            with open(os.path.join(out_dir, 'manifest.json'), 'w') as f:
                json.dump({'kernel': os.path.join(final, 'vmlinuz'),
                           'initrd': os.path.join(final, 'initrd.img'),
                           'packages': versions, 'modules': modules,
                           'sizes': sizes, 'agent_port': AGENT_PORT,
                           'control_port': CONTROL_PORT,
                           'build_seconds': round(
                               time.monotonic() - started, 1)},
                          f, indent=1, sort_keys=True)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(out_dir, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # Older builds and their packages are no use any more.
        for old in glob.glob(os.path.join(CACHE, 'guest-*')):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        for deb in glob.glob(os.path.join(CACHE, 'debs', '*.deb')):
            if not any(os.path.basename(deb).startswith('%s_%s_' % (
                    p, v.replace(':', '%3a'))) for p, v in versions.items()):
                os.unlink(deb)
        print(manifest)
    return 0


if __name__ == '__main__':
    sys.exit(main())
