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

"""A tiny Linux guest running the real QEMU guest agent, under libvirt.

The kernel and initramfs come from ``tools/guest/build-linux-guest.py``
(Debian's cloud kernel, busybox and ``qemu-ga``; cached). The guest boots
directly from them (``<kernel>``, ``<initrd>``, ``<cmdline>``) under TCG,
mounts the ext4 filesystem of each of its virtio disks, starts ``qemu-ga``
on its ``org.qemu.guest_agent.0`` port with the default fsfreeze hook, and
keeps appending numbered lines to ``/records`` on every disk in turn, each
fsync'ed before the next (record N on the first disk, then on the second,
then N+1...). So a point-in-time copy of the disks holds, on each, the
lines 1..n without a gap, and the first disk's n is the second's or one
more.

Its serial console goes to a file on the host: the guest's own messages
(``cvb-guest: ...``), the agent's (through busybox syslogd: ``qemu-ga:
info: guest-fsfreeze called``) and those of the fsfreeze hook, which says
``cvb-guest: fsfreeze-hook freeze|thaw uptime S last N`` before a freeze
and after a thaw (N: the last record written to every disk).

A second virtio-serial port, ``org.cvb.control.0``, takes commands from
the host: ``agent-stop`` stops the agent (and keeps it stopped),
``agent-start`` (re)starts it, ``agent-deny-freeze`` restarts it with its
freeze commands disabled.
"""

import json
import os
import re
import socket
import subprocess  # nosec B404: the builder, mkfs, e2fsck, debugfs
import sys
import time
import uuid
# Only XML written here is parsed.
from xml.sax import saxutils  # nosec B406

from tests.functional.kvm import guest

BUILDER = os.path.join(guest.TOP, 'tools', 'guest', 'build-linux-guest.py')
AGENT_PORT = 'org.qemu.guest_agent.0'
CONTROL_PORT = 'org.cvb.control.0'
_HOOK = re.compile(r'cvb-guest: fsfreeze-hook (freeze|thaw) uptime '
                   r'([0-9.]+) last ([0-9]*)')


def build(reuse=True):
    """Build (or find in its cache) the guest; return its manifest.

    The manifest says ``kernel``, ``initrd`` (paths), ``sizes``,
    ``packages`` (Debian versions) and ``modules``.

    :param reuse: take a build of the same builder from the cache without
        asking apt about newer packages (``tools/guest/install.sh``, run
        by ``tools/install-peers.sh``, does that)
    """
    out = subprocess.run([sys.executable, BUILDER]  # nosec
                         + (['--reuse'] if reuse else []), check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    with open(out.strip().splitlines()[-1]) as f:
        return json.load(f)


def make_ext4(path, size, qcow2=True):
    """Write an image of ``size`` bytes holding an empty ext4 filesystem.

    :param qcow2: write it as qcow2 (what the driver's volumes are)
    """
    raw = path + '.mkfs-raw'
    with open(raw, 'wb') as f:
        f.truncate(size)
    try:
        subprocess.run(['mkfs.ext4', '-q', '-F', '-L', 'cvb',  # nosec
                        raw], check=True)
        if qcow2:
            subprocess.run(['qemu-img', 'convert', '-q', '-f', 'raw',  # nosec
                            '-O', 'qcow2', raw, path], check=True)
        else:
            os.rename(raw, path)
    finally:
        if os.path.exists(raw):
            os.unlink(raw)


def domain_xml(name, disks, manifest, console, control, pace_us=20000,
               memory_mib=192, agent=True):
    """The domain of a Linux guest on ``disks`` (qcow2 files, vda...).

    :param console: file the serial console is written to
    :param control: path of the control port's unix socket (libvirt binds)
    :param agent: start the agent at boot
    """
    q = saxutils.quoteattr
    disk_xml = ''.join(
        "<disk type='file' device='disk'>"
        "<driver name='qemu' type='qcow2' cache='writeback'/>"
        "<source file=%s/><target dev='vd%s' bus='virtio'/></disk>"
        % (q(path), chr(ord('a') + i)) for i, path in enumerate(disks))
    cmdline = 'console=ttyS0 quiet cvb.pace=%d cvb.agent=%d' % (
        pace_us, 1 if agent else 0)
    return (
        "<domain type='qemu'><name>%s</name><uuid>%s</uuid>"
        "<memory unit='MiB'>%d</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type>"
        "<kernel>%s</kernel><initrd>%s</initrd><cmdline>%s</cmdline></os>"
        # ACPI: its PM timer lets the kernel calibrate the TSC; without
        # it the guest's clock is jiffies, far off under TCG.
        "<features><acpi/></features>"
        "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>%s"
        "<serial type='file'><source path=%s/><target port='0'/></serial>"
        "<channel type='unix'><source mode='bind'/>"
        "<target type='virtio' name='%s'/></channel>"
        "<channel type='unix'><source mode='bind' path=%s/>"
        "<target type='virtio' name='%s'/></channel>"
        "<video><model type='none'/></video>"
        "<memballoon model='none'/></devices></domain>"
        % (saxutils.escape(name), uuid.uuid4(), memory_mib,
           saxutils.escape(manifest['kernel']),
           saxutils.escape(manifest['initrd']), saxutils.escape(cmdline),
           disk_xml, q(console), AGENT_PORT, q(control), CONTROL_PORT))


class LinuxGuest(object):
    """A running Linux guest (see the module's docstring).

    :ivar domain: its ``virDomain``
    :ivar boot_seconds: from the domain's start until it wrote its first
        records with the agent connected
    """

    def __init__(self, conn, disks, workdir, manifest=None, pace_us=20000,
                 timeout=180):
        import libvirt
        self._libvirt = libvirt
        self.manifest = manifest or build()
        self.console_path = os.path.join(workdir, 'console.log')
        self.control_path = os.path.join(workdir, 'control.sock')
        name = 'cvb-linux-%s' % uuid.uuid4().hex[:8]
        xml = domain_xml(name, disks, self.manifest, self.console_path,
                         self.control_path, pace_us=pace_us)
        started = time.monotonic()
        self.domain = conn.createXML(xml, 0)
        try:
            self.wait_for('cvb-guest: ready', timeout)
            self.wait_agent('connected', timeout)
        except Exception:
            self.destroy()
            raise
        self.boot_seconds = time.monotonic() - started
        #: What the tests set the agent to (stop_agent, start_agent...).
        self.agent_mode = 'default'

    def console(self):
        """The guest's serial console so far."""
        try:
            with open(self.console_path, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def wait_for(self, text, timeout=60, after=0):
        """Wait until the console shows ``text`` (past offset ``after``)."""
        deadline = time.monotonic() + timeout
        while text not in self.console()[after:]:
            if time.monotonic() > deadline or not self.domain.isActive():
                raise AssertionError(
                    'the guest did not say %r in %s s; its console:\n%s'
                    % (text, timeout, self.console()[-4000:]))
            time.sleep(0.2)

    def agent_state(self):
        """libvirt's state of the agent channel (connected/disconnected)."""
        from cinder_vmdk_backup.kvm import domains
        return domains.agent_channel_state(self.domain.XMLDesc(0))

    def wait_agent(self, state, timeout=60):
        deadline = time.monotonic() + timeout
        while self.agent_state() != state:
            if time.monotonic() > deadline:
                raise AssertionError(
                    'the agent channel is %s, not %s, after %s s; the '
                    'console:\n%s' % (self.agent_state(), state, timeout,
                                      self.console()[-4000:]))
            time.sleep(0.1)

    def control(self, command, timeout=30):
        """Send a command on the control port; wait for it to be done."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.control_path)
            sock.sendall(command.encode() + b'\n')
            answer = b''
            while not answer.endswith(b'\n'):
                try:
                    data = sock.recv(256)
                except socket.timeout:
                    raise AssertionError(
                        'the guest did not answer %s in %s s; its '
                        'console:\n%s'
                        % (command, timeout, self.console()[-4000:]))
                if not data:
                    break
                answer += data
        if answer.decode().strip() != 'done %s' % command:
            raise AssertionError('the guest answered %r to %s'
                                 % (answer, command))

    def stop_agent(self):
        """Stop qemu-ga in the guest; libvirt sees it disconnected."""
        self.control('agent-stop')
        self.wait_agent('disconnected')
        self.agent_mode = 'stopped'

    def start_agent(self):
        """(Re)start qemu-ga with its default options; wait for it."""
        self.control('agent-start')
        self._wait_freeze_enabled(True)
        self.agent_mode = 'default'

    def deny_freeze(self):
        """Restart qemu-ga with its freeze commands disabled (``-b``)."""
        self.control('agent-deny-freeze')
        self._wait_freeze_enabled(False)
        self.agent_mode = 'freeze-denied'

    def _wait_freeze_enabled(self, enabled, timeout=60):
        """Wait until the new agent answers and says so of its freeze.

        libvirt's view of the channel may still be the old agent's for a
        moment: the agent's own answer tells.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = self.agent_command('guest-info', timeout=5)
            except self._libvirt.libvirtError:
                info = {}
            commands = {c['name']: c['enabled']
                        for c in info.get('supported_commands', ())}
            if commands.get('guest-fsfreeze-freeze') is enabled:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    'the agent did not come back with its freeze %s in %s '
                    's; the console:\n%s' % (
                        'enabled' if enabled else 'disabled', timeout,
                        self.console()[-4000:]))
            time.sleep(0.2)

    def agent_command(self, execute, timeout=10, **arguments):
        """Run a guest agent command through libvirt; its ``return``."""
        import libvirt_qemu
        command = {'execute': execute}
        if arguments:
            command['arguments'] = arguments
        answer = libvirt_qemu.qemuAgentCommand(
            self.domain, json.dumps(command), timeout, 0)
        return json.loads(answer)['return']

    def hook_events(self, after=0):
        """``[(action, guest uptime, last record)]`` of the freeze hook."""
        return [(m.group(1), float(m.group(2)),
                 int(m.group(3)) if m.group(3) else None)
                for m in _HOOK.finditer(self.console()[after:])]

    def destroy(self):
        try:
            self.domain.destroy()
        except self._libvirt.libvirtError:
            pass


def fsck(raw):
    """``(exit status, output)`` of ``e2fsck -fn`` on a raw image."""
    done = subprocess.run(['e2fsck', '-fn', raw],  # nosec
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    return done.returncode, done.stdout


def recover_journal(raw):
    """Replay an ext4 image's journal as a mount would (``e2fsck -fy``).

    :returns: e2fsck's exit status (0 nothing to do, 1 fixed)
    """
    return subprocess.run(['e2fsck', '-fy', raw],  # nosec
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode


def features(raw):
    """The filesystem features of an ext4 image (``dumpe2fs -h``)."""
    out = subprocess.run(['dumpe2fs', '-h', raw], check=True,  # nosec
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True).stdout
    for line in out.splitlines():
        if line.startswith('Filesystem features:'):
            return line.split(':', 1)[1].split()
    return []


def records(raw):
    """The numbers in ``/records`` of an ext4 image (read with debugfs).

    :raises AssertionError: a line is not a number (a torn record)
    """
    out = subprocess.run(['debugfs', '-R', 'cat /records', raw],  # nosec
                         check=True, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL).stdout
    numbers = []
    for line in out.decode(errors='replace').splitlines():
        if not line.isdigit():
            raise AssertionError('torn record %r after %s in %s'
                                 % (line, numbers[-1:], raw))
        numbers.append(int(line))
    return numbers


def gap_free(numbers):
    """The last record if ``numbers`` is 1, 2, ... n; else raise."""
    for i, number in enumerate(numbers):
        if number != i + 1:
            raise AssertionError('records not gap-free: line %d holds %d'
                                 % (i + 1, number))
    return len(numbers)
