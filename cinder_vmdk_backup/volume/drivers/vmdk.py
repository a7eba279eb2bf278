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

"""Cinder's VMware VMDK driver, owning its volumes' backups again.

``VMwareVcVmdkBackupDriver`` is Cinder's ``VMwareVcVmdkDriver`` plus the
driver-owned backup protocol (:mod:`cinder_vmdk_backup.backup.driver_owned`):

* backup: an export lease on the backing VM, decoded on the fly from
  stream-optimized VMDK to raw data that the backup service reads; nothing
  is staged on local disk. A volume whose backing was never created reads
  as zeros, and stays without a backing;
* changed-block tracking (``vmware_backup_change_tracking``): switched on
  for the backings this driver creates and restores into; a detached
  volume is then read from a snapshot of its backing, whose changeId of
  the disk is kept with the backup, and an incremental reads what vCenter
  says changed since its parent's (:mod:`~cinder_vmdk_backup.vmware.cbt`;
  any doubt: everything, with the reason in the log);
* restore: a backup of one of Cinder's chunked backup drivers (posix, NFS,
  Swift, S3, GCS...) is streamed: its chain (full backup, incrementals) is
  resolved from the backups' metadata and each object read once, in disk
  order, straight into a stream-optimized VMDK whose length the backup's
  digests give in advance (:mod:`~cinder_vmdk_backup.backup.chain_reader`,
  :mod:`~cinder_vmdk_backup.vmdk.piece_writer`); nothing is staged
  (``vmware_backup_restore_streaming``). Other backups are restored by the
  backup service into a sparse staging file first. Either way the VMDK is
  encoded on the fly into an ImportVApp upload on the volume's
  datastore: the new backing when the volume has none, else a temporary VM
  whose disk is then swapped into the backing (disk UUID = volume id, old
  disk deleted only once the new one is attached), extended when the volume
  is larger than the backup;
* a backing with VM snapshots (``vmware_snapshot_format = COW``) is never
  restored into: the snapshots share its disk chain and would be dropped or
  corrupted. Template snapshots are separate VMs and are not affected;
* the backup records the disk's shape (:meth:`get_disk_profile`: adapter
  type, provisioning type, virtual hardware version). A restore that
  creates a new backing gives its disk that adapter and provisioning type
  unless the new volume's type sets ``vmware:adapter_type`` or
  ``vmware:vmdk_type``; a restore into an existing backing keeps the
  backing's own.
"""

import contextlib
import errno
import functools
import os
import time

from cinder import context as cinder_context
from cinder import exception as cinder_exception
from cinder.i18n import _
from cinder.objects import fields
from cinder.volume.drivers.vmware import vmdk
from cinder.volume.drivers.vmware import volumeops
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import excutils
from oslo_utils import importutils
from oslo_utils import timeutils
from oslo_utils import units
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

from cinder_vmdk_backup.backup import chain_reader
from cinder_vmdk_backup.backup import driver_owned
from cinder_vmdk_backup.backup import restore_checks
from cinder_vmdk_backup.backup import throttle
from cinder_vmdk_backup.backup import transfer
from cinder_vmdk_backup import exception
from cinder_vmdk_backup import opts
from cinder_vmdk_backup.vmdk import errors as vmdk_errors
from cinder_vmdk_backup.vmdk import format as vmdk_format
from cinder_vmdk_backup.vmdk import piece_writer
from cinder_vmdk_backup.vmdk import reader as vmdk_reader
from cinder_vmdk_backup.vmdk import writer as vmdk_writer
from cinder_vmdk_backup.vmware import cbt
from cinder_vmdk_backup.vmware import diskswap
from cinder_vmdk_backup.vmware import errors as transfer_errors
from cinder_vmdk_backup.vmware import export
from cinder_vmdk_backup.vmware import hotadd
from cinder_vmdk_backup.vmware import leftovers
from cinder_vmdk_backup.vmware import nfc
from cinder_vmdk_backup.vmware import recovery_lock
from cinder_vmdk_backup.vmware import transport
from cinder_vmdk_backup.vmware import upload
from cinder_vmdk_backup.vmware import vmsnapshot

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

#: vSphere controller classes and the adapter type names of Cinder.
_CONTROLLER_ADAPTERS = {
    'VirtualLsiLogicController': volumeops.VirtualDiskAdapterType.LSI_LOGIC,
    'VirtualBusLogicController': volumeops.VirtualDiskAdapterType.BUS_LOGIC,
    'VirtualLsiLogicSASController':
        volumeops.VirtualDiskAdapterType.LSI_LOGIC_SAS,
    'ParaVirtualSCSIController':
        volumeops.VirtualDiskAdapterType.PARA_VIRTUAL,
    'VirtualIDEController': volumeops.VirtualDiskAdapterType.IDE,
}

#: Bytes of a VMDK grain (what the restore's map of data is kept in).
_GRAIN_BYTES = vmdk_format.DEFAULT_GRAIN_SECTORS * vmdk_format.SECTOR

#: Errors of the data movement that end a backup or restore with a message.
_TRANSFER_ERRORS = (transfer_errors.TransferError,
                    transfer_errors.DiskSwapError, vmdk_errors.VmdkError,
                    vexc.VimException)


def _hw_version_number(text, default=None):
    """'vmx-13' -> 13."""
    try:
        return int(str(text).rsplit('-', 1)[-1])
    except (TypeError, ValueError):
        return default


def _checked(chunks, check):
    """The chunks, ``check()`` called before each one (caller's thread)."""
    for chunk in chunks:
        check()
        yield chunk


@contextlib.contextmanager
def _checked_after_read(frozen, disk, opened):
    """The source ``opened`` gives; ``frozen`` checked after the read.

    What was read from a snapshot counts only if the VM still has that
    snapshot once the read is done (:meth:`.FrozenVM.check_kept`), over
    HotAdd as over NBD.
    """
    with opened as source:
        yield source
    frozen.check_kept(disk)


class _EncodedDisk(object):
    """A VMDK being encoded ahead, as :func:`.upload.import_disk` takes it.

    :param length: the VMDK's exact length (the writer's measuring pass)
    :param chunks: its chunks, in order (a :class:`~.transfer.Ahead`)
    """

    def __init__(self, length, chunks):
        self.length = length
        self._chunks = chunks

    def iter_chunks(self):
        return iter(self._chunks)


class _HotAddTarget(object):
    """A restore's new disk on the proxy: ``writer``, its VM ``backing``."""

    def __init__(self, writer, backing):
        self.writer = writer
        self.backing = backing


def _file_pieces(path, size, piece_bytes=hotadd.IO_BYTES):
    """The data of a sparse file's first ``size`` bytes, ascending pieces.

    Holes are skipped (``SEEK_DATA``): they read as zeros, as the new disk
    the pieces are written into does.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return  # only a hole up to the end
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if end <= offset:
                return  # the data is beyond size
            while start < end:
                data = os.pread(fd, min(piece_bytes, end - start), start)
                if not data:
                    raise transfer_errors.TransferError(
                        reason='%s ended at %d of %d bytes' % (path, start,
                                                               size))
                yield chain_reader.Piece(start, len(data), data)
                start += len(data)
            offset = end
    finally:
        os.close(fd)


class VMwareVcVmdkBackupDriver(driver_owned.DriverOwnedBackupMixin,
                               vmdk.VMwareVcVmdkDriver):
    """VMDK volumes on vCenter; the driver owns their backups."""

    def __init__(self, *args, **kwargs):
        super(VMwareVcVmdkBackupDriver, self).__init__(*args, **kwargs)
        self.configuration.append_config_values(opts.vmdk_backup_opts)
        # Volume id -> the FrozenVM (snapshot of its instance's VM) that
        # backup_volumes took for it: open_backup_source reads from it.
        self._snapshot_sources = {}
        # Volume id -> the RecoveryLock its restore holds.
        self._restore_locks = {}
        # Enables again what a restore could not (vCenter unreachable at
        # its end); made at its first use.
        self._lock_reenabler = None
        # The HotAdd proxy VM, looked up at most once per ttl.
        self._proxy_cache = hotadd.ProxyCache()

    @staticmethod
    def get_driver_options():
        return vmdk.vmdk_opts + opts.vmdk_backup_opts

    # -- leftovers ---------------------------------------------------------

    def remove_leftovers(self):
        """Remove what killed processes left: leases, locks, temp VMs...

        Run by ``do_setup`` (:class:`~.driver_owned.DriverOwnedBackupMixin`),
        in cinder-volume and in cinder-backup. Only what provably belongs
        to a process that is gone is removed
        (:mod:`cinder_vmdk_backup.vmware.leftovers`), never another live
        process's, never another host's. Leases first: a VM under an
        import lease cannot be destroyed; and before those, disks left on
        the HotAdd proxy VM: a snapshot or temporary VM whose disk is
        hot-added cannot be removed. Failures are logged: they must not
        stop the service from starting.
        """
        try:
            hotadd.remove_leftovers(self.session, self.backup_staging_dir())
        except Exception as exc:
            LOG.warning('Could not look for disks left on the HotAdd proxy '
                        'VM by interrupted transfers: %s', exc)
        try:
            leftovers.abort_leases(self.session, self.backup_staging_dir())
        except Exception as exc:
            LOG.warning('Could not look for NFC leases of interrupted '
                        'transfers: %s', exc)
        try:
            recovery_lock.enable_leftovers(self.session,
                                           self.backup_staging_dir())
        except Exception as exc:
            LOG.warning('Could not look for VMs left locked by interrupted '
                        'restores: %s', exc)
        try:
            if recovery_lock.pending(self.backup_staging_dir()):
                # vCenter did not answer for some: retried from now on.
                self._reenabler().kick()
        except OSError as exc:
            LOG.warning('Could not read the records of VMs left locked by '
                        'restores: %s', exc)
        try:
            leftovers.remove_temp_vms(
                self.session,
                self.configuration.vmware_max_objects_retrieval)
        except Exception as exc:
            LOG.warning('Could not look for leftover temporary VMs: %s', exc)
        try:
            leftovers.remove_snapshots(
                self.session,
                self.configuration.vmware_max_objects_retrieval)
        except Exception as exc:
            LOG.warning('Could not look for leftover snapshots of group '
                        'backups: %s', exc)
        super(VMwareVcVmdkBackupDriver, self).remove_leftovers()

    # -- protocol hooks ----------------------------------------------------

    def backup_staging_dir(self):
        return (self.configuration.safe_get('vmware_backup_staging_dir') or
                self.configuration.vmware_tmp_dir)

    def _transfer_settings(self):
        conf = self.configuration
        return nfc.TransferSettings(
            host=conf.vmware_host_ip,
            port=conf.vmware_host_port,
            ca_file=conf.vmware_ca_file,
            insecure=conf.vmware_insecure,
            idle_timeout=conf.vmware_backup_transfer_idle_timeout,
            lease_ready_timeout=conf.vmware_backup_lease_ready_timeout,
            poll_interval=min(conf.vmware_task_poll_interval, 1.0),
            state_dir=self.backup_staging_dir())

    @staticmethod
    def _device_volume(device):
        if not hasattr(device, 'volume_type_id'):
            # Cinder gives the VMDK driver a temporary volume for a backup
            # of a snapshot; a snapshot object itself cannot be read.
            raise exception.VmdkBackupError(reason=_(
                'a VMDK snapshot cannot be backed up directly (%s)') %
                device.id)
        return device

    def get_disk_profile(self, context, device):
        """The disk's shape, recorded with the backup for its restores.

        ``adapter_type`` and ``disk_type`` (what the backing's disk has, or
        what its volume type would give it when it has no backing yet) shape
        the disk of a new backing a restore creates (see
        :meth:`_new_disk_shape`); ``hw_version`` (the backing VM's, e.g.
        ``vmx-13``) goes into the uploaded VMDK's descriptor.
        """
        volume = self._device_volume(device)
        profile = {
            'adapter_type': self._get_adapter_type(volume),
            'disk_type': self._get_disk_type(volume),
            'hw_version': '',
        }
        backing = self.volumeops.get_backing(volume.name, volume.id)
        if backing is None:
            return profile
        disk = diskswap.disk_of(self.session, backing)
        controller = diskswap.controller_of(self.session, backing, disk)
        disk_backing = disk.backing
        if getattr(disk_backing, 'thinProvisioned', False):
            disk_type = vmdk.THIN_VMDK_TYPE
        elif getattr(disk_backing, 'eagerlyScrub', False):
            disk_type = vmdk.EAGER_ZEROED_THICK_VMDK_TYPE
        else:
            disk_type = vmdk.THICK_VMDK_TYPE
        profile.update({
            'disk_type': disk_type,
            'hw_version': self.session.invoke_api(
                vim_util, 'get_object_property', self.session.vim, backing,
                'config.version') or '',
        })
        if controller is not None:
            profile['adapter_type'] = _CONTROLLER_ADAPTERS.get(
                controller.__class__.__name__, profile['adapter_type'])
        return profile

    def _new_disk_shape(self, volume, profile):
        """Adapter and disk type of a new backing's disk on restore.

        The new volume's type decides where it sets ``vmware:adapter_type``
        or ``vmware:vmdk_type``, as for any volume of that type; otherwise
        the backed-up disk's, from the backup's disk profile (a paravirtual,
        eager-zeroed disk comes back as one, not as the backend's default
        ``vmware_adapter_type`` and thin). A backup without a profile (of
        another backend, or by Cinder's own path) or with a value Cinder
        does not know gets the defaults.

        :returns: ``(adapter_type, disk_type)``
        """
        type_id = volume.volume_type_id
        adapter_type = vmdk._get_volume_type_extra_spec(type_id,
                                                        'adapter_type')
        if not adapter_type:
            recorded = profile.get('adapter_type')
            adapter_type = (
                recorded if volumeops.VirtualDiskAdapterType.is_valid(
                    recorded or '') else self._get_adapter_type(volume))
        disk_type = vmdk._get_volume_type_extra_spec(type_id, 'vmdk_type')
        if not disk_type:
            recorded = profile.get('disk_type')
            disk_type = (recorded if volumeops.VirtualDiskType.is_valid(
                recorded or '') else self._get_disk_type(volume))
        return adapter_type, disk_type

    @contextlib.contextmanager
    def open_backup_source(self, context, backup, device):
        """The device's disk as raw data, from a snapshot or an export.

        A detached volume's backing is read from a snapshot of it when
        change tracking is on (``vmware_backup_change_tracking``): the
        snapshot's changeId of the disk is recorded with the backup, and
        the source's ``changed_ranges(parent)`` asks vCenter what changed
        since the parent's (:mod:`~cinder_vmdk_backup.vmware.cbt`). Over
        NFC the export still streams the whole disk: an incremental then
        hashes, compresses and stores only the changed blocks; a transport
        with random access (HotAdd, through :meth:`_read_frozen_disk`)
        reads only the changed areas.
        """
        volume = self._device_volume(device)
        size = int(volume.size) * units.Gi
        backing = self.volumeops.get_backing(volume.name, volume.id)
        frozen = self._snapshot_sources.get(volume.id)
        if frozen is not None:
            vmdk_path = (self.volumeops.get_vmdk_path(backing)
                         if backing is not None else None)
            untracked = cbt.Tracker.off(
                backup, size, 'it reads the snapshot of the instance\'s VM, '
                'whose changes are not tracked')
            try:
                disk = frozen.disk_of(volume.id, vmdk_path)
                with self._read_frozen_disk(frozen, disk, size) as src:
                    yield cbt.TrackedSource(src, untracked)
            except _TRANSFER_ERRORS as exc:
                raise exception.VmdkBackupError(reason=_(
                    'reading the disk of volume %(vol)s from the snapshot '
                    'of %(vm)s failed: %(err)s') % {
                        'vol': volume.id, 'vm': frozen.label, 'err': exc}
                ) from exc
            return
        if backing is None:
            LOG.info('Volume %s has no backing yet: backed up as %d bytes '
                     'of zeros, no backing created.', volume.id, size)
            yield export.ZeroStream(size)
            return
        why_untracked = self._untracked_because(backup, volume)
        if why_untracked is None:
            with self._tracked_source(backup, volume, backing, size) as src:
                yield src
            return
        try:
            with export.export_disk(
                    self.session, self._transfer_settings(), backing, size,
                    vmdk_reader.StreamOptimizedReader) as src:
                yield cbt.TrackedSource(
                    src, cbt.Tracker.off(backup, size, why_untracked))
        except _TRANSFER_ERRORS as exc:
            raise exception.VmdkBackupError(reason=_(
                'reading the disk of volume %(vol)s from vCenter failed: '
                '%(err)s') % {'vol': volume.id, 'err': exc}) from exc

    def _untracked_because(self, backup, volume):
        """Why the backup of ``volume`` does not use change tracking."""
        if not self.configuration.safe_get('vmware_backup_change_tracking'):
            return 'change tracking is off (vmware_backup_change_tracking)'
        if volume.id != backup.volume_id:
            return ('it reads a temporary copy of the volume (Cinder\'s '
                    'clone of an in-use volume), whose changes are not '
                    'tracked')
        if self._attached_instances(volume):
            # Its disk is also the instance VM's: a snapshot of the backing
            # would hold the file the instance needs.
            return ('the volume is attached to an instance, whose VM '
                    'writes its disk')
        return None

    @contextlib.contextmanager
    def _tracked_source(self, backup, volume, backing, size):
        """The backing's disk read from a snapshot; changes known.

        Tracking is switched on first when the backing lacks it (a volume
        made before, or by another driver: one stun cycle); when that
        fails, the disk is still read from the snapshot, and everything
        will be read for this backup and the next.
        """
        session = self.session
        tracking = True
        try:
            if cbt.enable(session, backing):
                LOG.info('Change tracking started on the backing of volume '
                         '%s.', volume.id)
        except vexc.VMwareDriverException as exc:
            tracking = False
            LOG.warning('Could not switch change tracking on for the '
                        'backing of volume %(vol)s: %(exc)s',
                        {'vol': volume.id, 'exc': exc})
        vmdk_path = self.volumeops.get_vmdk_path(backing)
        frozen = vmsnapshot.FrozenVM(session, self._transfer_settings(),
                                     backing, 'volume %s' % volume.id)
        try:
            frozen.freeze(description='backup %s' % backup.id, always=True)
            disk = frozen.disk_of(volume.id, vmdk_path)
            if tracking:
                tracker = cbt.Tracker(backup, size, session, backing,
                                      frozen.snapshot, disk)
            else:
                tracker = cbt.Tracker.off(
                    backup, size, 'change tracking could not be switched on '
                    'for the backing')
            with self._read_frozen_disk(frozen, disk, size) as src:
                yield cbt.TrackedSource(src, tracker)
            if tracker.change_id:
                cbt.record(backup, tracker.change_id)
        except _TRANSFER_ERRORS as exc:
            raise exception.VmdkBackupError(reason=_(
                'reading the disk of volume %(vol)s from a snapshot of its '
                'backing failed: %(err)s') % {'vol': volume.id, 'err': exc}
            ) from exc
        finally:
            frozen.release()

    def _track_changes(self, volume, backing):
        """Switch change tracking on for a backing; never raises."""
        if not self.configuration.safe_get('vmware_backup_change_tracking'):
            return
        try:
            cbt.enable(self.session, backing)
        except Exception as exc:  # best effort: the next backup retries
            LOG.warning('Could not switch change tracking on for the '
                        'backing of volume %(vol)s (its next backup does): '
                        '%(exc)s', {'vol': volume.id, 'exc': exc})

    def _create_backing(self, volume, host=None, create_params=None):
        """Cinder's backing creation, change tracking switched on."""
        backing = super(VMwareVcVmdkBackupDriver, self)._create_backing(
            volume, host=host, create_params=create_params)
        if backing is not None and not (create_params or {}).get(
                vmdk.CREATE_PARAM_TEMP_BACKING):
            self._track_changes(volume, backing)
        return backing

    def _read_frozen_disk(self, frozen, disk, size):
        """A disk of a snapshot (:class:`~.vmsnapshot.FrozenVM`), raw.

        Through the first transport of ``vmware_backup_transports`` that
        serves (:mod:`~cinder_vmdk_backup.vmware.transport`): over HotAdd
        the snapshot's disk (as the snapshot's configuration names it) is
        added read-only to the proxy VM and read as a local device, with
        random access (``read_at``: the extent hand-off reads only what
        it needs); over NBD it is streamed from an ``ExportSnapshot``
        lease.

        :returns: a context manager giving a transfer source of ``size``
            bytes (see :meth:`open_backup_source`)
        """
        conf = self.configuration
        backing = disk.backing
        capacity = (getattr(disk, 'capacityInBytes', None) or
                    int(disk.capacityInKB) * units.Ki)

        def hotadd_open(proxy):
            if capacity > size:
                raise transfer_errors.TransferError(
                    reason='the disk holds %d bytes, more than the %d bytes '
                           'of the volume' % (capacity, size))
            return hotadd.reading(
                self.session, proxy, backing.fileName, size, capacity,
                conf.vmware_backup_hotadd_device_dir,
                conf.vmware_backup_hotadd_device_timeout,
                self.backup_staging_dir(), snapshot=frozen.snapshot)

        def nbd_open():
            return frozen.read_disk(disk, size,
                                    vmdk_reader.StreamOptimizedReader)

        return _checked_after_read(frozen, disk, transport.run(
            self.session, conf, getattr(backing, 'datastore', None),
            'Backup read of disk %s (%s)' % (backing.fileName, frozen.label),
            hotadd_open, nbd_open, proxies=self._proxy_cache))

    # -- instance groups ---------------------------------------------------

    @staticmethod
    def _attached_instances(volume):
        """Instance UUIDs the volume is attached to (attachment order)."""
        found = []
        for attachment in volume.volume_attachment or []:
            uuid = attachment.instance_uuid
            if (uuid and attachment.attach_status ==
                    fields.VolumeAttachStatus.ATTACHED and
                    uuid not in found):
                found.append(uuid)
        return found

    def _instance_vms(self, volume):
        """``[(instance uuid, VM ref)]`` of the volume's instances' VMs."""
        found = []
        for instance in self._attached_instances(volume):
            vm_ref = vmsnapshot.find_instance_vm(self.session, instance)
            if vm_ref is not None:
                found.append((instance, vm_ref))
        return found

    def instance_power_state(self, context, instance_id, volumes):
        """Whether the instance's VM runs, as vCenter says.

        :returns: ``(state, who)``: ``running`` (powered on, or suspended:
            its memory holds the guest's state of the disks), ``shutoff``
            (powered off) or ``unknown`` (no VM of that instance UUID,
            vCenter not answering); ``who`` names the VM for the log
        """
        try:
            vm_ref = vmsnapshot.find_instance_vm(self.session, instance_id)
            if vm_ref is None:
                return 'unknown', 'vCenter (no VM of instance %s)' % (
                    instance_id)
            name, state, _tools = vmsnapshot.vm_state(self.session, vm_ref)
        except vexc.VimException as exc:
            return 'unknown', 'vCenter (%s)' % type(exc).__name__
        who = 'vCenter VM %s' % name
        if state == 'suspended':
            return 'running', who + ' (suspended)'
        return {'poweredOn': 'running',
                'poweredOff': 'shutoff'}.get(state, 'unknown'), who

    def backup_volumes(self, context, requests, all_or_nothing=False,
                       facts=None):
        """Back up several volumes from one point in time.

        The volumes are grouped by the instance they are attached to; the
        VM of each running instance is snapshotted once (memory not
        included, quiesced when VMware Tools run in the guest), all
        snapshots first, then each volume's disk is read from its VM's
        snapshot (``ExportSnapshot``) and the snapshots are removed, on
        every path. Volumes not attached to a running instance are read
        as by :meth:`backup_volume` (their data does not change).

        :param requests: ``[(backup, backup_service, backup_device)]``,
            ``backup_device`` may be None (the backup's volume)
        :param all_or_nothing: when a snapshot fails, remove the others
            and raise :class:`~cinder_vmdk_backup.exception.GroupFreezeError`
            before any data is read
        :param facts: dict filled with ``consistency`` and ``frozen_at``
        :returns: ``{backup.id: the backup service's result, or the
            exception that failed that backup}``
        """
        facts = {} if facts is None else facts
        entries = []
        for backup, service, dev, device in self._resolve_requests(
                context, requests):
            instances = []
            if (device.obj_name() == 'Volume' and
                    device.id == backup.volume_id):
                # The volume itself (not Cinder's temporary clone of it).
                instances = self._attached_instances(device)
            entries.append((backup, service, dev, device,
                            instances[0] if instances else None))
        frozen, failed = self._freeze_instances(entries)
        if failed and all_or_nothing:
            for vm in frozen.values():
                vm.release()
            raise exception.GroupFreezeError(reason='; '.join(
                '%s (volumes %s)' % (exc, ', '.join(
                    d.id for _b, _s, _v, d, i in entries if i == instance))
                for instance, exc in failed.items()))
        self._group_facts(facts, frozen.values())
        results = {}
        try:
            for backup, service, dev, device, instance in entries:
                if instance in failed:
                    results[backup.id] = failed[instance]
                    continue
                vm = frozen.get(instance)
                if vm is not None and vm.snapshot is not None:
                    self._snapshot_sources[device.id] = vm
                try:
                    results[backup.id] = self.backup_volume(
                        context, backup, service, backup_device=dev)
                except Exception as exc:
                    LOG.error('Backup %(backup)s of volume %(vol)s failed: '
                              '%(exc)s', {'backup': backup.id,
                                          'vol': device.id, 'exc': exc})
                    results[backup.id] = exc
                finally:
                    self._snapshot_sources.pop(device.id, None)
        finally:
            for vm in frozen.values():
                vm.release()
        return results

    def _freeze_instances(self, entries):
        """Snapshot the VM of each running instance of the entries.

        :returns: ``({instance: FrozenVM}, {instance: exception})``; a
            powered-off VM is not snapshotted (its FrozenVM has none)
        """
        frozen, failed = {}, {}
        for _b, _s, _d, device, instance in entries:
            if instance is None or instance in frozen or instance in failed:
                continue
            label = 'instance %s' % instance
            try:
                vm_ref = vmsnapshot.find_instance_vm(self.session, instance)
                if vm_ref is None:
                    raise exception.VmdkBackupError(reason=_(
                        'no VM of instance %s in vCenter') % instance)
                vm = vmsnapshot.FrozenVM(self.session,
                                         self._transfer_settings(), vm_ref,
                                         label)
                vm.freeze(description='cinder-vmdk-backup: point in time '
                          'of a group backup of %s' % label)
                frozen[instance] = vm
            except exception.VmdkBackupError as exc:
                failed[instance] = exc
            except Exception as exc:
                LOG.error('Could not snapshot the VM of %(what)s: %(exc)s',
                          {'what': label, 'exc': exc})
                failed[instance] = exception.VmdkBackupError(reason=_(
                    'could not snapshot the VM of %(what)s: %(err)s') % {
                        'what': label, 'err': exc})
        return frozen, failed

    @staticmethod
    def _group_facts(facts, frozen):
        running = [vm for vm in frozen if vm.running]
        if not running:
            facts['consistency'] = 'not-running'
        elif all(vm.quiesced for vm in running):
            facts['consistency'] = 'quiesced'
        else:
            facts['consistency'] = 'crash-consistent'
        times = [vm.frozen_at for vm in frozen if vm.frozen_at]
        facts['frozen_at'] = min(times) if times else timeutils.utcnow()

    # -- restore -----------------------------------------------------------

    def restore_backup(self, context, backup, volume, backup_service,
                       volume_is_new=False):
        """Lock the backing, refuse unsafe restores, then restore.

        The backing (and the VMs of the volume's instances) are locked
        first (:meth:`_restore_lock`), so that the checks that its
        instances are powered off and that it has no snapshots still hold
        when the data moves.
        """
        backing = self.volumeops.get_backing(volume.name, volume.id)
        with self._restore_lock(volume, backing):
            if backing is not None:
                self._check_restorable(volume, backing)
                self._check_instances_stopped(volume)
            chain = self._backup_chain(backup, volume, backup_service)
            if chain is not None:
                return self._restore_chain(backup, volume, chain)
            return super(VMwareVcVmdkBackupDriver, self).restore_backup(
                context, backup, volume, backup_service,
                volume_is_new=volume_is_new)

    @contextlib.contextmanager
    def _restore_lock(self, volume, backing, vms=None):
        """The volume's VMs locked against other operations (a ``with``).

        ``vmware_backup_restore_lock``: the backing and the VMs of the
        volume's instances (which have its disk file attached) get their
        power on, snapshot, reconfigure, relocate and destroy methods
        disabled with Cinder's extension as the source
        (:mod:`~cinder_vmdk_backup.vmware.recovery_lock`) until the
        restore ends, on every path. The restore's own reconfigurations
        of them (the disk swap) open ReconfigVM_Task for their duration
        (:meth:`_restore_step`). A volume without a backing has nothing
        to lock here: its new backing is made by the restore's import and
        locked from then on (:meth:`_import_image`).

        :param vms: VM refs to lock instead of the backing and instances
        """
        if vms is None:
            vms = [] if backing is None else [backing] + [
                vm for _instance, vm in self._instance_vms(volume)]
        if not vms or not self.configuration.safe_get(
                'vmware_backup_restore_lock'):
            yield None
            return
        lock = recovery_lock.RecoveryLock(
            self.session, vms, self.backup_staging_dir(),
            'restore into volume %s' % volume.id)
        try:
            with lock:
                self._restore_locks[volume.id] = lock
                try:
                    yield lock
                finally:
                    self._restore_locks.pop(volume.id, None)
        finally:
            if lock.left_behind:
                # vCenter did not answer at the end: retried from now on.
                self._reenabler().kick()

    def _reenabler(self):
        """This driver's :class:`~.recovery_lock.Reenabler`."""
        if self._lock_reenabler is None:
            self._lock_reenabler = recovery_lock.Reenabler(
                lambda: self.session, self.backup_staging_dir())
        return self._lock_reenabler

    def _restore_step(self, volume, *methods):
        """A ``with`` in which the restore itself may call ``methods``.

        Enables them on the VMs the volume's restore locked, disables them
        again at its end; without a lock, nothing.
        """
        lock = self._restore_locks.get(volume.id)
        if lock is None:
            return contextlib.nullcontext()
        return lock.opened(*methods)

    def _check_instances_stopped(self, volume):
        """Refuse a restore under a running (or snapshotted) instance VM.

        The instance's VM has the volume's disk file attached: its guest
        would see the disk change under it, and a VM with snapshots uses a
        delta chain over the file that a new file would break.
        """
        for instance, vm_ref in self._instance_vms(volume):
            name, state, _tools = vmsnapshot.vm_state(self.session, vm_ref)
            if state != 'poweredOff':
                raise exception.VmdkBackupError(reason=_(
                    'volume %(vol)s is attached to instance %(inst)s whose '
                    'VM %(vm)s is %(state)s; shut the instance down before '
                    'restoring into the volume') % {
                        'vol': volume.id, 'inst': instance, 'vm': name,
                        'state': state})
            if self.volumeops.snapshot_exists(vm_ref):
                raise exception.VmdkBackupError(reason=_(
                    'volume %(vol)s is attached to instance %(inst)s whose '
                    'VM %(vm)s has snapshots sharing the volume\'s disk; '
                    'delete them before restoring into the volume') % {
                        'vol': volume.id, 'inst': instance, 'vm': name})

    def _repoint_instances(self, instances, old_path, new_path):
        """Point the instances' VMs at the restored disk file."""
        done = []
        try:
            for _instance, vm_ref in instances:
                if diskswap.repoint_disk(self.session, vm_ref, old_path,
                                         new_path):
                    done.append(vm_ref)
        except Exception:
            with excutils.save_and_reraise_exception():
                for vm_ref in done:
                    try:
                        diskswap.repoint_disk(self.session, vm_ref,
                                              new_path, old_path)
                    except Exception as exc:
                        LOG.error('Could not point VM %(vm)s back at disk '
                                  '%(path)s: %(exc)s',
                                  {'vm': vim_util.get_moref_value(vm_ref),
                                   'path': old_path, 'exc': exc})

    def _check_restorable(self, volume, backing):
        if self.volumeops.snapshot_exists(backing):
            raise exception.VmdkBackupError(reason=_(
                'volume %s has snapshots in vCenter (COW format) that share '
                'its disk; restoring over it would drop or corrupt them. '
                'Delete the snapshots or restore to a new volume.') %
                volume.id)

    def restore_raw_image(self, context, backup, volume, image_path):
        """Import the raw image as the volume's disk."""
        size = os.path.getsize(image_path)
        conf = self.configuration

        @contextlib.contextmanager
        def encoded(adapter_type, hw_version):
            with open(image_path, 'rb') as image, \
                    self._encoder_pool() as pool:
                writer = vmdk_writer.StreamOptimizedWriter(
                    image, size, adapter_type=adapter_type,
                    hw_version=hw_version,
                    compression_level=conf.vmware_backup_compression_level,
                    executor=pool)
                # The measuring pass reads the whole image: off the hub.
                length = transfer.run(lambda: writer.length)
                with transfer.Ahead(writer.iter_chunks(), depth=8,
                                    name='cvb-encode-%s' % volume.id[:8]
                                    ) as chunks:
                    yield _EncodedDisk(length, chunks)

        @contextlib.contextmanager
        def raw():
            yield _file_pieces(image_path, size), None

        self._import_image(backup, volume, size, encoded, raw)

    def _import_image(self, backup, volume, size, encoded, raw=None):
        """Write the backup as the volume's disk (new backing or disk swap).

        Through the first transport of ``vmware_backup_transports`` that
        serves (:mod:`~cinder_vmdk_backup.vmware.transport`): HotAdd writes
        the raw data into a new disk (of a new backing, or of a temporary
        VM whose disk is then swapped in) added to the proxy VM; NBD
        imports the VMDK through an ImportVApp lease. Either way the
        volume's disk is replaced only once the new one is complete.

        :param size: bytes of the backed-up disk
        :param encoded: ``encoded(adapter_type, hw_version)``, a context
            manager giving the VMDK (``length``, ``iter_chunks()``); an
            error while it is read aborts the import and leaves the volume
            as it was
        :param raw: ``raw()``, a context manager giving ``(pieces,
            check)``: the same data as ascending
            :class:`~.chain_reader.Piece` s (read on a native thread) and
            a function to call between pieces on the caller's thread, or
            None (None: NBD only)
        """
        profile = self.disk_profile_of(backup)
        hw_version = _hw_version_number(profile.get('hw_version'), 14)
        try:
            backing = self.volumeops.get_backing(volume.name, volume.id)
            if backing is None:
                adapter_type, disk_type = self._new_disk_shape(volume,
                                                               profile)
                placement = self._select_ds_for_volume(volume)
                datastore = getattr(placement[3], 'datastore', None)
            else:
                adapter_type = self._get_adapter_type(volume)
                disk_type = self._get_disk_type(volume)
                placement = None
                datastore = self.volumeops.get_datastore(backing)
                self._check_restorable(volume, backing)

            def hotadd_open(proxy):
                if raw is None:
                    raise transfer_errors.TransferError(
                        reason='this restore path moves a VMDK stream only')
                return self._hotadd_target(proxy, volume, backing,
                                           placement, size, adapter_type,
                                           disk_type)

            with transport.run(
                    self.session, self.configuration, datastore,
                    'Restore of backup %s into volume %s' % (backup.id,
                                                             volume.id),
                    hotadd_open,
                    lambda: contextlib.nullcontext(None),
                    proxies=self._proxy_cache) as target:
                if target is not None:
                    self._write_pieces(raw, target.writer, volume)
                else:
                    with encoded(adapter_type, hw_version) as vmdk:
                        if backing is None:
                            new_backing = self._import_new_backing(
                                volume, vmdk, size, adapter_type, disk_type,
                                placement)
                        else:
                            self._import_and_swap(volume, backing, vmdk,
                                                  size, adapter_type)
            created = backing is None
            if created:
                backing = (target.backing if target is not None
                           else new_backing)
            # A new backing is locked once it exists, for the rest of the
            # restore (an existing one is locked by restore_backup).
            with (self._restore_lock(volume, backing) if created
                  else contextlib.nullcontext()):
                self._extend_if_needed(volume, backing)
        except _TRANSFER_ERRORS as exc:
            raise exception.VmdkBackupError(reason=_(
                'writing backup %(backup)s into volume %(vol)s failed: '
                '%(err)s') % {'backup': backup.id, 'vol': volume.id,
                              'err': exc}) from exc
        LOG.info('Restored backup %(backup)s into volume %(vol)s '
                 '(%(size)d bytes).', {'backup': backup.id, 'vol': volume.id,
                                       'size': size})

    # -- restore without staging -------------------------------------------

    def _backup_chain(self, backup, volume, backup_service):
        """The backup's chain, to be streamed; None: stage it instead.

        :raises InvalidBackup: for a chain whose objects are missing
            (before anything is imported)
        """
        if not self.configuration.safe_get(
                'vmware_backup_restore_streaming'):
            return None
        why = chain_reader.unusable_because(backup_service)
        if why is not None:
            LOG.info('Backup %(backup)s is restored through a staging '
                     'file: %(why)s', {'backup': backup.id, 'why': why})
            return None
        size = self._backup_size_bytes(backup, volume)
        try:
            chain = chain_reader.ChainReader(backup_service, backup, size)
            # The digest list can be long: read off the hub.
            transfer.run(chain.nonzero_grains, _GRAIN_BYTES)
        except chain_reader.ChainUnsupported as exc:
            LOG.info('Backup %(backup)s is restored through a staging '
                     'file: %(why)s', {'backup': backup.id, 'why': exc})
            return None
        return chain

    def _restore_chain(self, backup, volume, chain):
        """Encode the chain's pieces straight into the import (no file)."""

        checked = restore_checks.enabled()
        pieces = chain.pieces(digests_checked=checked)
        if checked:
            pieces = restore_checks.checked_pieces(
                pieces, restore_checks.BlockChecker(
                    chain.service, backup, chain.size,
                    describe=chain.describe))

        @contextlib.contextmanager
        def encoded(adapter_type, hw_version):
            writer = piece_writer.PlannedStreamWriter(
                throttle.throttled_pieces(pieces, backup), chain.size,
                chain.nonzero_grains(_GRAIN_BYTES),
                adapter_type=adapter_type, hw_version=hw_version)
            length = writer.length
            try:
                with transfer.Ahead(writer.iter_chunks(), depth=8,
                                    name='cvb-chain-%s' % volume.id[:8]
                                    ) as chunks:
                    yield _EncodedDisk(length, _checked(
                        chunks, chain.check_cancelled))
            finally:
                # Ends the readers and the checks of an aborted import now.
                pieces.close()

        @contextlib.contextmanager
        def raw():
            try:
                yield (throttle.throttled_pieces(pieces, backup),
                       chain.check_cancelled)
            finally:
                pieces.close()

        LOG.info('Restoring backup %(backup)s (a chain of %(n)d) into '
                 'volume %(vol)s without staging.',
                 {'backup': backup.id, 'n': len(chain.chain),
                  'vol': volume.id})
        self._import_image(backup, volume, chain.size, encoded, raw)
        chain.restore_volume_metadata(volume.id)

    def backup_read_niceness(self):
        return self.configuration.vmware_backup_export_niceness

    def _encoder_pool(self):
        """Threads deflating grains on restore, or none (inline)."""
        conf = self.configuration
        threads = conf.vmware_backup_compression_threads or os.cpu_count()
        if not conf.vmware_backup_compression_level or threads <= 1:
            return contextlib.nullcontext(None)
        return transfer.NativeExecutor(threads, 'cvb-deflate')

    # -- restore steps -----------------------------------------------------

    def _import_spec(self, name, size, disk_type, ds_name, profile_id,
                     adapter_type, extra_config):
        create_spec = self.volumeops.get_create_spec(
            name, size // units.Ki, disk_type, ds_name,
            profile_id=profile_id, adapter_type=adapter_type,
            extra_config=extra_config)
        import_spec = self.session.vim.client.factory.create(
            'ns0:VirtualMachineImportSpec')
        import_spec.configSpec = create_spec
        return import_spec

    def _import_new_backing(self, volume, writer, size, adapter_type,
                            disk_type, placement=None):
        """Import the disk as the volume's new backing VM."""
        host, resource_pool, folder, summary = (
            placement or self._select_ds_for_volume(volume))
        import_spec = self._import_spec(
            volume.name, size, disk_type, summary.name,
            self._get_storage_profile_id(volume), adapter_type,
            self._get_extra_config(volume))
        backing = upload.import_disk(self.session, self._transfer_settings(),
                                     resource_pool, folder, import_spec,
                                     writer, host=host)
        try:
            self.volumeops.update_backing_disk_uuid(backing, volume.id)
        except Exception:
            with excutils.save_and_reraise_exception():
                self.volumeops.delete_backing(backing)
        # Tracked from its first data on, as a backing created empty. (A
        # disk swapped into an existing backing, or extended, has its
        # tracking reset by vSphere: the next backup starts it again, see
        # cbt.enable, and reads the whole disk, its parent's changeId being
        # of the disk before.)
        self._track_changes(volume, backing)
        return backing

    def _import_and_swap(self, volume, backing, writer, size, adapter_type):
        """Import into a temporary VM, then swap its disk into backing."""
        session = self.session
        datastore = self.volumeops.get_datastore(backing)
        ds_name = self.volumeops.get_summary(datastore).name
        resource_pool = session.invoke_api(
            vim_util, 'get_object_property', session.vim, backing,
            'resourcePool')
        host = self.volumeops.get_host(backing)
        folder = session.invoke_api(vim_util, 'get_object_property',
                                    session.vim, backing, 'parent')
        profile_id = self._get_storage_profile_id(volume)
        temp_name = leftovers.temp_vm_name(volume.id)
        import_spec = self._import_spec(
            temp_name, size, self._get_disk_type(volume), ds_name,
            profile_id, adapter_type, None)
        temp_vm = upload.import_disk(session, self._transfer_settings(),
                                     resource_pool, folder, import_spec,
                                     writer, host=host)
        try:
            self._swap_into(volume, backing, temp_vm)
        finally:
            self._destroy_temp_vm(temp_vm, temp_name)

    @staticmethod
    def _write_pieces(raw, writer, volume):
        """Write the restore's pieces into a hot-added disk, off the hub.

        The pieces are read and written on a native thread; the caller's
        thread runs the cancellation check between them.
        """
        def written(pieces):
            for piece in pieces:
                if piece.data is not None:
                    writer.write_at(piece.offset, piece.data)
                yield piece.length

        with raw() as (pieces, check), transfer.Ahead(
                written(pieces), depth=2,
                name='cvb-hotadd-%s' % volume.id[:8]) as done:
            for _length in done:
                if check is not None:
                    check()

    def _swap_into(self, volume, backing, temp_vm):
        """Swap the (complete) disk of ``temp_vm`` into the backing."""
        datacenter = self.volumeops.get_dc(backing)
        datastore = self.volumeops.get_datastore(backing)
        ds_name = self.volumeops.get_summary(datastore).name
        old_path = self.volumeops.get_vmdk_path(backing)
        _ds, folder_path, _file = volumeops.split_datastore_path(old_path)
        dest = volumeops.VirtualDiskPath(
            ds_name, folder_path, '%s-r%d' % (volume.name, int(time.time())))
        # An attached volume's instance VM (powered off: checked before
        # the data moved, and again here) follows the new disk file.
        self._check_instances_stopped(volume)
        instances = self._instance_vms(volume)
        # The backing is locked for the restore (restore_backup): the swap
        # is the plugin's own reconfigure of it.
        with self._restore_step(volume, recovery_lock.RECONFIGURE):
            diskswap.swap_disk(
                self.session, backing, temp_vm, datacenter,
                dest.get_descriptor_ds_file_path(), volume.id,
                profile_id=self._get_storage_profile_id(volume),
                repoint=(functools.partial(self._repoint_instances,
                                           instances)
                         if instances else None))

    @contextlib.contextmanager
    def _hotadd_target(self, proxy, volume, backing, placement, size,
                       adapter_type, disk_type):
        """A new disk for the restore, hot-added to the proxy VM.

        With no backing: the volume's new backing (created with an empty
        disk, deleted again on failure). Else: a temporary VM's new disk,
        swapped into the backing once it was written and removed from the
        proxy; the backing's own disk is never written. The temporary VM
        goes on every path. An error before the disk's device is found
        passes the restore on to the next transport (nothing was written).
        """
        vops = self.volumeops
        conf = self.configuration
        if backing is None:
            host, resource_pool, folder, summary = placement
            name = volume.name
            new = vops.create_backing(
                name, size // units.Ki, disk_type, folder, resource_pool,
                host, summary.name, self._get_storage_profile_id(volume),
                adapter_type, self._get_extra_config(volume))
        else:
            name = leftovers.temp_vm_name(volume.id)
            new = vops.create_backing(
                name, size // units.Ki, disk_type,
                self.session.invoke_api(vim_util, 'get_object_property',
                                        self.session.vim, backing, 'parent'),
                self.session.invoke_api(vim_util, 'get_object_property',
                                        self.session.vim, backing,
                                        'resourcePool'),
                vops.get_host(backing),
                vops.get_summary(vops.get_datastore(backing)).name,
                self._get_storage_profile_id(volume), adapter_type)
        keep = False
        try:
            with hotadd.writing(self.session, proxy,
                                vops.get_vmdk_path(new), size,
                                conf.vmware_backup_hotadd_device_dir,
                                conf.vmware_backup_hotadd_device_timeout,
                                self.backup_staging_dir()) as writer:
                yield _HotAddTarget(writer, new)
            if backing is None:
                vops.update_backing_disk_uuid(new, volume.id)
                keep = True
            else:
                self._swap_into(volume, backing, new)
        finally:
            if not keep:
                self._destroy_temp_vm(new, name)

    def _destroy_temp_vm(self, vm_ref, name):
        try:
            self.volumeops.delete_backing(vm_ref)
        except Exception as exc:
            LOG.warning('Could not remove temporary VM %(name)s; it is '
                        'removed when this service restarts: %(exc)s',
                        {'name': name, 'exc': exc})

    # -- create volume from backup (cinder-volume) -------------------------

    def create_volume_from_backup(self, volume, backup):
        """Restore a backup straight into a new volume's backing.

        Works where this node can use the backup service that made the
        backup (same ``backup_driver``, set up fine); otherwise, and on any
        failure, raises NotImplementedError so that Cinder creates an empty
        volume and restores through cinder-backup instead.
        """
        if not self.configuration.vmware_backup_restore_in_volume_service:
            raise NotImplementedError()
        context = cinder_context.get_admin_context()
        if backup.status != fields.BackupStatus.AVAILABLE:
            raise NotImplementedError()
        service = self._local_backup_service(context, backup)
        if service is None:
            raise NotImplementedError()
        # The backup service restores only a backup marked as restoring
        # (else it takes the restore for cancelled), as Cinder's own path
        # marks it; it is available again afterwards, also for that path.
        backup.status = fields.BackupStatus.RESTORING
        backup.restore_volume_id = volume.id
        backup.save()
        try:
            self.restore_backup(context, backup, volume, service,
                                volume_is_new=True)
        except Exception as exc:
            LOG.warning('Direct restore of backup %(backup)s into volume '
                        '%(vol)s failed (%(exc)s); falling back to a '
                        'restore through cinder-backup.',
                        {'backup': backup.id, 'vol': volume.id, 'exc': exc})
            try:
                self._delete_volume(volume)
            except Exception:
                LOG.exception('Could not remove the partial backing of '
                              'volume %s.', volume.id)
                raise cinder_exception.VolumeBackendAPIException(
                    data=str(exc)) from exc
            raise NotImplementedError() from exc
        finally:
            backup.status = fields.BackupStatus.AVAILABLE
            backup.restore_volume_id = None
            backup.save()

    @staticmethod
    def _local_backup_service(context, backup):
        """The backup service of ``backup``, if it can be used here."""
        try:
            from cinder.backup import manager as backup_manager
            name = CONF.backup_driver
            name = backup_manager.MAPPING.get(name, name)
            if backup.service and backup.service != name:
                LOG.debug('Backup %(backup)s was made by %(svc)s, this node '
                          'uses %(name)s.', {'backup': backup.id,
                                             'svc': backup.service,
                                             'name': name})
                return None
            service = importutils.import_class(name)(context=context)
            service.check_for_setup_error()
            return service
        except Exception as exc:
            LOG.info('Backup service of backup %(backup)s not usable on '
                     'this node (%(exc)s).', {'backup': backup.id,
                                              'exc': exc})
            return None
