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

"""One point in time of an instance's disks: a snapshot of its VM.

While a Cinder volume is attached to a Nova instance on vCenter, its disk
file is a disk of the instance's VM. :class:`FrozenVM` takes one snapshot
of that VM (memory not included; quiesced through VMware Tools when they
run in the guest), finds each volume's disk in the snapshot, and reads it
through ``ExportSnapshot``: the disks' data as of the snapshot, whatever
the guest writes meanwhile. One export lease serves every disk; it is
completed once each disk was read whole, and the snapshot is removed at
the end on every path.

The snapshot is named ``cvb-snap-<owner>-<token>`` (``<owner>``:
:func:`~cinder_vmdk_backup.ownership.name_part` of the process taking it):
:func:`~.leftovers.remove_snapshots` removes the snapshots a killed process
left, by the same ownership rule as temporary VMs.
"""

import contextlib
import re
import uuid

from oslo_log import log as logging
from oslo_utils import timeutils
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import export
from cinder_vmdk_backup.vmware import nfc

LOG = logging.getLogger(__name__)

SNAPSHOT_PREFIX = 'cvb-snap-'
_NAME_RE = re.compile(r'^%s%s-[0-9a-f]{8}$' % (re.escape(SNAPSHOT_PREFIX),
                                               ownership.NAME_PART_RE))

POWERED_ON = 'poweredOn'
TOOLS_RUNNING = 'guestToolsRunning'


def snapshot_name(owner=None):
    """A new snapshot name naming its owner (default: this process)."""
    return '%s%s-%s' % (SNAPSHOT_PREFIX, ownership.name_part(owner),
                        uuid.uuid4().hex[:8])


def parse_snapshot_name(name):
    """Return ``(place, pid, tag)`` of a snapshot name of ours, or None."""
    match = _NAME_RE.match(name or '')
    if not match:
        return None
    return match.group('place'), int(match.group('pid')), match.group('tag')


def _prop(session, ref, name):
    return session.invoke_api(vim_util, 'get_object_property', session.vim,
                              ref, name)


def _devices(config):
    hardware = getattr(config, 'hardware', None)
    devices = getattr(hardware, 'device', None) or []
    if devices.__class__.__name__ == 'ArrayOfVirtualDevice':
        devices = devices.VirtualDevice
    return list(devices or [])


def _extra_config(config):
    options = getattr(config, 'extraConfig', None) or []
    if options.__class__.__name__ == 'ArrayOfOptionValue':
        options = options.OptionValue
    return {o.key: getattr(o, 'value', None) for o in options or []}


def find_instance_vm(session, instance_uuid):
    """The VM of a Nova instance (its instance UUID), or None.

    ``SearchIndex.FindAllByUuid`` with ``instanceUuid=True``, as Cinder's
    driver finds it for a clone of an attached volume.
    """
    found = session.invoke_api(
        session.vim, 'FindAllByUuid', session.vim.service_content.searchIndex,
        uuid=instance_uuid, vmSearch=True, instanceUuid=True)
    return found[0] if found else None


def vm_state(session, vm_ref):
    """``(name, power state, tools running status)`` of a VM."""
    result = session.invoke_api(
        vim_util, 'get_object_properties_dict', session.vim, vm_ref,
        ['name', 'runtime.powerState', 'guest.toolsRunningStatus'])
    return (result.get('name'), result.get('runtime.powerState'),
            result.get('guest.toolsRunningStatus'))


class _Progress(object):
    """Lease progress over several disks: disk ``i`` of ``n`` at p %."""

    def __init__(self, lease, index, count):
        self._lease = lease
        self._index = index
        self._count = max(count, 1)

    def progress(self, percent):
        self._lease.progress((self._index * 100 + percent) // self._count)


class FrozenVM(object):
    """A snapshot of an instance's VM, its disks read from it.

    :param session: ``oslo_vmware.api.VMwareAPISession``
    :param settings: :class:`~.nfc.TransferSettings`
    :param vm_ref: the instance's VM
    :param label: words naming the instance in messages
    """

    def __init__(self, session, settings, vm_ref, label):
        self._session = session
        self._settings = settings
        self.vm_ref = vm_ref
        self.label = label
        self.name = None
        self.power_state = None
        self.quiesced = False
        self.frozen_at = None
        self.snapshot = None
        self._config = None
        self._lease = None
        self._urls = None
        self._read = set()
        self._failed = False

    @property
    def running(self):
        return self.power_state == POWERED_ON

    @property
    def consistency(self):
        if not self.running:
            return 'not-running'
        return 'quiesced' if self.quiesced else 'crash-consistent'

    def freeze(self, description='', always=False):
        """Take the snapshot (memory not included) of a running VM.

        A VM that is not powered on gets none (nothing writes to its
        disks), unless ``always``: a volume's backing is snapshotted for
        the changeId its snapshot holds (:mod:`.cbt`). A running VM with
        VMware Tools running is quiesced; when the quiesced snapshot fails
        (the guest could not quiesce in time), a crash-consistent one is
        taken instead, as backup products do.
        """
        session = self._session
        self.name, self.power_state, tools = vm_state(session, self.vm_ref)
        if not self.running and always:
            name = snapshot_name()
            self.snapshot = self._create(name, description, False)
            self._config = _prop(session, self.snapshot, 'config')
            LOG.info('Snapshot %(snap)s of VM %(vm)s (%(what)s, %(state)s) '
                     'taken.', {'snap': name, 'vm': self.name,
                                'what': self.label,
                                'state': self.power_state})
            return self
        if not self.running:
            # Nothing writes to its disks: they are read as they are.
            self.frozen_at = timeutils.utcnow()
            LOG.info('VM %(vm)s (%(what)s) is %(state)s: no snapshot '
                     'needed.', {'vm': self.name, 'what': self.label,
                                 'state': self.power_state})
            return self
        quiesce = tools == TOOLS_RUNNING
        name = snapshot_name()
        try:
            self.snapshot = self._create(name, description, quiesce)
            self.quiesced = quiesce
        except vexc.VimException as exc:
            if not quiesce:
                raise
            LOG.warning('Quiesced snapshot of VM %(vm)s failed (%(exc)s); '
                        'taking a crash-consistent one.',
                        {'vm': self.name, 'exc': exc})
            self.snapshot = self._create(name, description, False)
        self._config = _prop(session, self.snapshot, 'config')
        LOG.info('Snapshot %(snap)s of VM %(vm)s (%(what)s, %(state)s) '
                 'taken.', {'snap': name, 'vm': self.name,
                            'what': self.label, 'state': self.consistency})
        return self

    def _create(self, name, description, quiesce):
        session = self._session
        self.frozen_at = timeutils.utcnow()
        task = session.invoke_api(session.vim, 'CreateSnapshot_Task',
                                  self.vm_ref, name=name,
                                  description=description, memory=False,
                                  quiesce=quiesce)
        return session.wait_for_task(task).result

    # -- the disks ---------------------------------------------------------

    def disk_of(self, volume_id, vmdk_path=None):
        """The volume's disk in the snapshot's configuration.

        Found by the disk UUID Nova records in the VM's extraConfig
        ``volume-<id>`` key, else by the disk file (the volume backing's
        ``vmdk_path``).

        :raises: :class:`~.errors.TransferError` when the VM has no disk
            of the volume
        """
        disks = [d for d in _devices(self._config)
                 if d.__class__.__name__ == 'VirtualDisk']
        device_uuid = _extra_config(self._config).get(
            'volume-%s' % volume_id)
        for disk in disks:
            if device_uuid and getattr(disk.backing, 'uuid', None) == \
                    device_uuid:
                return disk
        for disk in disks:
            if vmdk_path and getattr(disk.backing, 'fileName', None) == \
                    vmdk_path:
                return disk
        raise errors.TransferError(
            reason='VM %s has no disk of volume %s' % (self.name, volume_id))

    def _device_key(self, disk):
        """vSphere's export device key of a disk, its tail.

        ``/<controller class><bus>:<unit>``, e.g.
        ``/VirtualLsiLogicController0:1``.
        """
        for device in _devices(self._config):
            if device.key == disk.controllerKey:
                return '/%s%d:%d' % (device.__class__.__name__,
                                     getattr(device, 'busNumber', 0),
                                     disk.unitNumber)
        return None

    def _open_lease(self):
        if self._lease is None:
            self._lease = nfc.NfcLease.export_snapshot(
                self._session, self._settings, self.snapshot, self.name)
            self._urls = self._lease.disk_urls()
        return self._lease

    @contextlib.contextmanager
    def read_disk(self, disk, size, reader_factory):
        """The snapshot's data of ``disk`` as a raw stream.

        :param disk: a ``VirtualDisk`` of :meth:`disk_of`
        :param size: bytes the stream delivers (the volume's size)
        """
        lease = self._open_lease()
        key = self._device_key(disk)
        disks = [d for d in _devices(self._config)
                 if d.__class__.__name__ == 'VirtualDisk']
        match = [u for u in self._urls if key and (u[0] or '').endswith(key)]
        if not match and len(self._urls) == len(disks):
            # A vCenter whose keys do not say the controller: the lease
            # lists the disks in device order.
            match = [self._urls[disks.index(disk)]]
        if not match:
            raise errors.TransferError(
                reason='the %s offers no URL for disk %s' % (lease.what,
                                                             key))
        device_key, url, thumbprint = match[0]
        progress = _Progress(lease, len(self._read), len(self._urls))
        try:
            with export.read_disk_url(self._session, self._settings, lease,
                                      url, thumbprint, size, reader_factory,
                                      progress=progress) as stream:
                yield stream
                if stream.at_end:
                    self._read.add(device_key)
                else:
                    self._failed = True
        except Exception:
            self._failed = True
            raise

    def _snapshots_of_vm(self):
        """Values of the VM's snapshot morefs; None when the VM is gone."""
        try:
            info = _prop(self._session, self.vm_ref, 'snapshot')
        except vexc.ManagedObjectNotFoundException:
            return None
        found = set()
        pending = list(getattr(info, 'rootSnapshotList', None) or [])
        while pending:
            node = pending.pop()
            found.add(vim_util.get_moref_value(node.snapshot))
            pending.extend(getattr(node, 'childSnapshotList', None) or [])
        return found

    def check_kept(self, disk):
        """The VM and its snapshot are still there after ``disk`` was read.

        A VM destroyed while its snapshot's disks are read (Nova deletes a
        server: it detaches the volumes' disks, then destroys the VM, and
        its snapshot's files with it) may leave the read with what is no
        longer the volume's data: vcsim completes an export with zeros.
        The read is trusted only when the snapshot is still the VM's
        afterwards; otherwise the backup fails, as for a disk that could
        not be read. Called after each disk's read, over every transport.

        :raises: :class:`~.errors.TransferError`
        """
        if self.snapshot is None:
            return
        snapshots = self._snapshots_of_vm()
        if snapshots is not None and \
                vim_util.get_moref_value(self.snapshot) in snapshots:
            return
        what = ('VM %s was deleted' % self.name if snapshots is None else
                'the snapshot of VM %s was removed' % self.name)
        raise errors.TransferError(
            reason='%s while disk %s of %s was read: the data read is not '
                   'trusted' % (what, self._device_key(disk), self.label))

    # -- the end -----------------------------------------------------------

    def release(self):
        """Close the lease and remove the snapshot; never raises.

        The lease is completed when every disk read was read whole, else
        aborted. A snapshot that cannot be removed is logged (the janitor
        removes it at this service's next start).
        """
        if self._lease is not None:
            if self._read and not self._failed:
                export._complete_quietly(self._lease)
            self._lease.abort()
            self._lease = None
        if self.snapshot is None:
            return
        try:
            snapshots = self._snapshots_of_vm()
            if snapshots is None or vim_util.get_moref_value(
                    self.snapshot) not in snapshots:
                # (Destroy_Task removes a VM's snapshots with it.)
                LOG.info('VM %(vm)s (%(what)s) or its snapshot is gone: '
                         'nothing to remove.',
                         {'vm': self.name, 'what': self.label})
                self.snapshot = None
                return
            remove_snapshot(self._session, self.snapshot)
            LOG.info('Snapshot of VM %(vm)s (%(what)s) removed.',
                     {'vm': self.name, 'what': self.label})
        except Exception as exc:
            LOG.error('Could not remove snapshot %(snap)s of VM %(vm)s; '
                      'it is removed when this service restarts: %(exc)s',
                      {'snap': vim_util.get_moref_value(self.snapshot),
                       'vm': self.name, 'exc': exc})
        self.snapshot = None


def remove_snapshot(session, snapshot_ref):
    """``RemoveSnapshot_Task`` (children kept, the data consolidated)."""
    task = session.invoke_api(session.vim, 'RemoveSnapshot_Task',
                              snapshot_ref, removeChildren=False)
    session.wait_for_task(task)
