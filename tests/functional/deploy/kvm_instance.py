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

"""A stand-in for a Nova instance on the libvirt driver (kvm profile).

The kvm profile of tools/deploy/up.sh has no Nova yet. For an attached
volume the qcow2 driver works from the libvirt domain that uses the
volume's file (an online freeze while it runs, refusals while it runs).
:class:`KvmInstance` makes what Nova's libvirt driver would:

- Cinder attachments through Cinder's API as Nova's compute manager makes
  them (cinder_attachments.py: reserve, update with the volume connector,
  complete; delete on detach), every call with a service token of Nova's
  service user. The connector is the one os-brick's
  ``get_connector_properties`` gives Nova's libvirt driver, plus the
  ``mountpoint`` Nova adds (Cinder records it on the attachment).
- The connection info the qcow2 driver answers (``device_path`` of the
  qcow2 file, ``format`` qcow2) made into a libvirt disk as Nova's
  file-based volume drivers do: ``<disk type='file'>``, driver type from
  the ``format`` (a qcow2 file is never opened as raw: anything but
  ``format`` qcow2 is refused here), targets vda, vdb, vdc... in
  attachment order, serial = the volume id.
- A persistent domain named ``instance-<first 8 hex of the id>`` whose
  UUID is the instance id, booted (TCG, no KVM needed) from the first
  disk, into which :func:`install_guest` writes the tiny guest of the KVM
  tests (tests/functional/kvm/guest.py): it keeps writing records to every
  disk, so the instance really runs and writes.

Volumes are attached and detached while the instance is shut off (Nova's
cold attach/detach: the persistent definition changes); the instance is
started, stopped (shutdown, then destroy) and, on :meth:`cleanup`,
destroyed, undefined and its attachments deleted.
"""

import json
import os
import socket
import subprocess  # nosec B404: qemu-io
import tempfile
import time
import uuid
from xml.sax import saxutils

from tests.functional.kvm import guest

URI = 'qemu:///system'
#: The connection types whose data is a file path (the qcow2 driver's
#: qcow2_connection_type choices).
FILE_TYPES = ('local', 'gpfs')
MEMORY_MIB = 16


class InstanceError(Exception):
    pass


def install_guest(path, disks, ring=2048):
    """Write the writing guest's boot sector into sector 0 of a qcow2 file.

    What a boot image would hold; written with qemu-io into the file of
    the (not yet attached or shut off) boot volume.

    :param disks: how many disks (vda, vdb...) the guest writes to
    """
    sector = guest.boot_sector(disks=disks, ring=ring, paced=True)
    with tempfile.NamedTemporaryFile(suffix='.boot') as f:
        f.write(sector)
        f.flush()
        subprocess.run(  # nosec B603 B607
            ['qemu-io', '-f', 'qcow2', '-c',
             'write -s %s 0 %d' % (f.name, len(sector)), path],
            check=True, stdout=subprocess.DEVNULL)


def _quoted(value):
    return saxutils.quoteattr(str(value))


class Disk(object):
    def __init__(self, volume_id, attachment_id, mountpoint, path):
        self.volume_id = volume_id
        self.attachment_id = attachment_id
        self.mountpoint = mountpoint
        self.path = path

    @property
    def target(self):
        return os.path.basename(self.mountpoint)


class KvmInstance(object):
    """One instance: its Cinder attachments and its libvirt domain.

    :param deployment: a :class:`tests.functional.deploy.deployment.
        Deployment` of the kvm profile (its ``attachments`` runs Nova's
        attachment calls)
    :param conn: an open libvirt connection to :data:`URI`
    """

    def __init__(self, deployment, conn, instance_id=None):
        self.dep = deployment
        self.conn = conn
        self.id = instance_id or str(uuid.uuid4())
        self.name = 'instance-%s' % self.id.replace('-', '')[:8]
        self.disks = []
        self.domain = None

    # -- Cinder ------------------------------------------------------------

    def connector(self, mountpoint):
        """The connector Nova's libvirt driver hands Cinder, + mountpoint."""
        return {'platform': 'x86_64', 'os_type': 'linux',
                'ip': '127.0.0.1', 'host': socket.gethostname(),
                'multipath': False, 'enforce_multipath': False,
                'initiator': 'iqn.2026-01.org.openstack:%s' % self.name,
                'do_local_attach': False, 'mountpoint': mountpoint}

    @staticmethod
    def disk_path(connection_info):
        """The qcow2 file of a connection info; refuses anything else."""
        kind = connection_info.get('driver_volume_type')
        data = connection_info.get('data') or {}
        if kind not in FILE_TYPES:
            raise InstanceError('not a file volume: %s' % kind)
        if data.get('format') != 'qcow2':
            # Nova would open it as raw (its default): a qcow2 file the
            # guest could then rewrite as it likes.
            raise InstanceError('volume %s: format %r, not qcow2'
                                % (data.get('name'), data.get('format')))
        path = data.get('device_path')
        if not path or not os.path.isfile(path):
            raise InstanceError('no file at device_path %r' % path)
        return path

    def attach(self, volume_id):
        """Attach a volume at the next free vdX (instance shut off).

        :returns: the :class:`Disk`
        """
        if self.running:
            raise InstanceError('%s runs: this stand-in attaches only to a '
                                'shut off instance' % self.name)
        used = {d.target for d in self.disks}
        target = next('vd%s' % chr(ord('a') + i) for i in range(26)
                      if 'vd%s' % chr(ord('a') + i) not in used)
        mountpoint = '/dev/%s' % target
        attachment = self.dep.attachments('reserve', volume_id,
                                          self.id)['id']
        try:
            answer = self.dep.attachments(
                'update', attachment, json.dumps(self.connector(mountpoint)))
            path = self.disk_path(answer['connection_info'])
            disk = Disk(volume_id, attachment, mountpoint, path)
            self.disks.append(disk)
            try:
                if self.domain is not None:
                    self.define()
                self.dep.attachments('complete', attachment)
            except Exception:
                self.disks.remove(disk)
                raise
        except Exception:
            self._quietly(self.dep.attachments, 'delete', attachment)
            raise
        return disk

    def detach(self, volume_id):
        """Detach a volume (instance shut off), then delete the attachment."""
        if self.running:
            raise InstanceError('%s runs: this stand-in detaches only from '
                                'a shut off instance' % self.name)
        disk = next((d for d in self.disks if d.volume_id == volume_id),
                    None)
        if disk is None:
            raise InstanceError('volume %s is not attached to %s'
                                % (volume_id, self.name))
        self.disks.remove(disk)
        try:
            if self.domain is not None and self.disks:
                self.define()
            elif self.domain is not None:
                # No boot volume left: nothing to define.
                self.domain.undefine()
                self.domain = None
        except Exception:
            self.disks.append(disk)
            raise
        self.dep.attachments('delete', disk.attachment_id)

    # -- libvirt -----------------------------------------------------------

    @staticmethod
    def _cache_mode(path):
        """Nova's choice: 'none' where O_DIRECT works, else writeback."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError:
            return 'writeback'
        os.close(fd)
        return 'none'

    def domain_xml(self):
        disks = ''.join(
            "<disk type='file' device='disk'>"
            "<driver name='qemu' type='qcow2' cache=%s/>"
            "<source file=%s/><target dev=%s bus='virtio'/>"
            "<serial>%s</serial><boot order='%d'/></disk>"
            # Every disk has a boot order: SeaBIOS then gives each one a
            # BIOS drive number, in this order (0x80 = vda, the guest's
            # int13h writes reach vdb as 0x81...).
            % (_quoted(self._cache_mode(d.path)), _quoted(d.path),
               _quoted(d.target), saxutils.escape(d.volume_id), i + 1)
            for i, d in enumerate(self.disks))
        return ("<domain type='qemu'><name>%s</name><uuid>%s</uuid>"
                "<memory unit='MiB'>%d</memory><vcpu>1</vcpu>"
                "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
                "<on_poweroff>destroy</on_poweroff>"
                "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
                "%s<video><model type='none'/></video>"
                "<memballoon model='none'/></devices></domain>"
                % (saxutils.escape(self.name), self.id, MEMORY_MIB, disks))

    def define(self):
        """Define (or redefine) the persistent domain from the disks."""
        if not self.disks:
            raise InstanceError('%s has no boot volume' % self.name)
        self.domain = self.conn.defineXML(self.domain_xml())
        return self.domain

    @property
    def running(self):
        if self.domain is None:
            return False
        return bool(self.domain.isActive())

    def start(self):
        if self.domain is None:
            self.define()
        self.domain.create()

    def stop(self, timeout=2.0):
        """Shut down (ACPI), and destroy what is still running after."""
        if not self.running:
            return
        import libvirt
        try:
            self.domain.shutdown()
        except libvirt.libvirtError:
            pass
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running:
            # The tiny guest has no ACPI: Nova's power-off ends it too.
            self.domain.destroy()

    def records(self, volume_id):
        """The guest's ring counters on a volume's disk (read with -U)."""
        disk = next(d for d in self.disks if d.volume_id == volume_id)
        return read_records(disk.path)

    def cleanup(self):
        """Destroy and undefine the domain, delete the attachments.

        :raises InstanceError: naming what could not be undone (after
            trying everything)
        """
        failed = []
        if self.domain is not None:
            for what, func in (('stop', lambda: self.stop(0)),
                               ('undefine', self.domain.undefine)):
                try:
                    func()
                except Exception as e:
                    failed.append('%s: %s' % (what, e))
            self.domain = None
        for disk in list(self.disks):
            try:
                self.dep.attachments('delete', disk.attachment_id)
                self.disks.remove(disk)
            except Exception as e:
                failed.append('attachment %s: %s' % (disk.attachment_id, e))
        if failed:
            raise InstanceError('%s: cleanup failed: %s'
                                % (self.name, '; '.join(failed)))

    @staticmethod
    def _quietly(func, *args):
        try:
            func(*args)
        except Exception:  # nosec B110: undoing after a failure
            pass


def to_raw(path, raw):
    """Convert an image's guest data to a raw file (-U: it may run)."""
    subprocess.run(['qemu-img', 'convert', '-U', '-O', 'raw',  # nosec
                    path, raw], check=True)


def read_records(path, ring=2048):
    """The guest's ring counters of a qcow2 file."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, 'raw')
        # Only the ring's head: qemu-img reads the whole image otherwise.
        subprocess.run(['qemu-img', 'dd', '-U', '-f', 'qcow2', '-O',  # nosec
                        'raw', 'bs=512', 'count=%d' % (ring + 1),
                        'if=%s' % path, 'of=%s' % raw],
                       check=True, stdout=subprocess.DEVNULL)
        return guest.records(raw, ring=ring)
