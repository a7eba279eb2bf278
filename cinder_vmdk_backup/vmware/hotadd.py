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

"""The HotAdd transport: a disk added to this host's VM, read as a device.

When this cinder-backup (or cinder-volume) host is itself a VM of the
vCenter (the *proxy*), a disk file is added to the proxy VM
(``ReconfigVM_Task``, an existing file, no file operation) and appears in
its guest as a block device whose serial is the disk's UUID: udev's
``<device dir>/wwn-0x<uuid>`` link. The data is then read or written
locally, with random access, without NFC.

* A snapshot's disk is added as ``independent_nonpersistent`` (read-only
  for the snapshot: nothing written can reach it); a restore's new disk as
  ``independent_persistent``.
* The disk goes on a SCSI controller of the proxy with a free unit; a
  paravirtual one is added in the same reconfiguration when none has one.
* Each attachment is recorded in a private (0600, locked) file of the
  staging directory for as long as the disk is on the proxy
  (:class:`~cinder_vmdk_backup.ownership.Record`, kind
  :data:`RECORD_KIND`); :func:`remove_leftovers` removes from the proxy the
  disks a killed process left there (their snapshots are then removed by
  :func:`~.leftovers.remove_snapshots`, their temporary VMs by
  :func:`~.leftovers.remove_temp_vms`).
* The disk is removed from the proxy on every path, also when its device
  never appears (:class:`DeviceNotFound` after the timeout).

Reading bypasses the page cache (:data:`READ_MODE`, measured on a loop
device here, see the README): a backup reads each byte once, and filling
the cache with it only evicts what the host's services use.
"""

import contextlib
import mmap
import os
import threading
import time
import uuid

from oslo_log import log as logging
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

from cinder_vmdk_backup.backup import transfer
from cinder_vmdk_backup.backup import zero_hashing
from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import errors

LOG = logging.getLogger(__name__)

#: Kind of the ownership records of hot-added disks.
RECORD_KIND = 'hotadd-disk'

#: Where this host's BIOS UUID is (the proxy VM's ``config.uuid``).
PRODUCT_UUID = '/sys/class/dmi/id/product_uuid'

#: ``'direct'`` (O_DIRECT, aligned buffers) or ``'fadvise'`` (buffered
#: reads, POSIX_FADV_DONTNEED behind them). See the module's docstring.
READ_MODE = 'direct'

#: Bytes of one device read/write (and the alignment O_DIRECT needs).
IO_BYTES = 4 * 1024 * 1024
_ALIGN = 4096

#: SCSI units per controller; unit 7 is the controller's own.
_SCSI_UNITS = [u for u in range(16) if u != 7]
_SCSI_CONTROLLERS = ('VirtualLsiLogicController', 'VirtualBusLogicController',
                     'VirtualLsiLogicSASController',
                     'ParaVirtualSCSIController')

READ_ONLY = 'independent_nonpersistent'
WRITABLE = 'independent_persistent'


class DeviceNotFound(errors.TransferError):
    """The hot-added disk did not appear on this host in time."""


class DeviceTooSmall(errors.TransferError):
    """The device holds fewer bytes than the data to read from it.

    Not a set-up error that passes the operation on to NBD
    (:attr:`fallback`): the same disk would give the same short data, and
    a backup that read zeros for the missing tail would look complete.
    """

    #: :func:`~.transport.run` does not try the next transport.
    fallback = False


def _prop(session, ref, name):
    return session.invoke_api(vim_util, 'get_object_property', session.vim,
                              ref, name)


def _devices(session, vm_ref):
    devices = _prop(session, vm_ref, 'config.hardware.device')
    if devices.__class__.__name__ == 'ArrayOfVirtualDevice':
        devices = devices.VirtualDevice
    return list(devices or [])


def _array(value, attr):
    if value.__class__.__name__.startswith('ArrayOf'):
        value = getattr(value, attr, None)
    return list(value or [])


def host_uuid(path=None):
    """This host's BIOS UUID, lower case, or None when unreadable."""
    try:
        with open(path or PRODUCT_UUID) as f:
            return f.read().strip().lower() or None
    except OSError:
        return None


def find_proxy(session, wanted, max_objects=100):
    """The proxy VM: by name, BIOS or instance UUID; default this host's.

    :param wanted: ``vmware_backup_proxy_vm`` (None: the VM whose BIOS UUID
        is this host's)
    :returns: ``(vm_ref, None)`` or ``(None, reason)``
    """
    if not wanted:
        wanted = host_uuid()
        if not wanted:
            return None, ('no proxy VM is configured and this host has no '
                          'BIOS UUID (%s)' % PRODUCT_UUID)
        names = ()
    else:
        names = (wanted,)
    try:
        uuid.UUID(wanted)
        is_uuid = True
    except ValueError:
        is_uuid = False
    if is_uuid:
        index = session.vim.service_content.searchIndex
        for instance in (False, True):
            found = session.invoke_api(session.vim, 'FindByUuid', index,
                                       uuid=wanted, vmSearch=True,
                                       instanceUuid=instance)
            if found is not None:
                return found, None
    for name in names:
        ref = _vm_by_name(session, name, max_objects)
        if ref is not None:
            return ref, None
    return None, 'no VM of this vCenter is the proxy %s' % wanted


#: Seconds a proxy VM found by :class:`ProxyCache` is used without
#: looking it up again.
PROXY_CACHE_SECONDS = 300.0


class ProxyCache(object):
    """The proxy VM of :func:`find_proxy`, kept for a bounded time.

    Each HotAdd operation needs the proxy VM; looking it up takes one or
    two ``FindByUuid`` calls (or a walk over the VMs by name). A driver
    keeps what it found for ``ttl`` seconds, per ``wanted`` value; the
    caller forgets it (:meth:`forget`) when a call on the reference fails
    with ``ManagedObjectNotFound`` (the proxy VM was deleted; a re-created
    one has another reference), and the next lookup asks vCenter again.
    Only found proxies are kept: a host without one keeps asking, so a
    proxy VM created later is found at the next operation.

    :param ttl: seconds (default :data:`PROXY_CACHE_SECONDS`); 0 disables
    :param clock: a monotonic clock (tests)
    """

    def __init__(self, ttl=None, clock=time.monotonic):
        self._ttl = PROXY_CACHE_SECONDS if ttl is None else ttl
        self._clock = clock
        self._guard = threading.Lock()
        self._entry = None  # (wanted, vm_ref, expiry)

    def find(self, session, wanted):
        """:func:`find_proxy`, from the cache when it holds it.

        :returns: ``(vm_ref, None, cached)`` or ``(None, reason, False)``
        """
        with self._guard:
            entry = self._entry
        if entry is not None and entry[0] == wanted and (
                self._clock() < entry[2]):
            return entry[1], None, True
        proxy, why = find_proxy(session, wanted)
        with self._guard:
            self._entry = ((wanted, proxy, self._clock() + self._ttl)
                           if proxy is not None and self._ttl > 0 else None)
        return proxy, why, False

    def forget(self, vm_ref=None):
        """Drop the cached proxy (only if it is ``vm_ref``, when given)."""
        with self._guard:
            entry = self._entry
            if entry is not None and (
                    vm_ref is None or vim_util.get_moref_value(entry[1]) ==
                    vim_util.get_moref_value(vm_ref)):
                self._entry = None


def _vm_by_name(session, name, max_objects):
    result = session.invoke_api(vim_util, 'get_objects', session.vim,
                                'VirtualMachine', max_objects,
                                properties_to_collect=['name'])
    found = None
    while result:
        for obj in result.objects:
            for prop in getattr(obj, 'propSet', None) or []:
                if prop.name == 'name' and prop.val == name:
                    found = obj.obj
        if found is not None:
            session.invoke_api(vim_util, 'cancel_retrieval', session.vim,
                               result)
            return found
        result = session.invoke_api(vim_util, 'continue_retrieval',
                                    session.vim, result)
    return None


def datastore_reachable(session, proxy, datastore):
    """Why the proxy's host cannot reach ``datastore``, or None if it can.

    The datastore must be mounted (and accessible) on the ESXi host the
    proxy runs on.
    """
    host = _prop(session, proxy, 'runtime.host')
    if host is None:
        return 'the proxy VM runs on no host'
    host_id = vim_util.get_moref_value(host)
    for mount in _array(_prop(session, datastore, 'host'),
                        'DatastoreHostMount'):
        if vim_util.get_moref_value(mount.key) != host_id:
            continue
        info = getattr(mount, 'mountInfo', None)
        if info is not None and (getattr(info, 'mounted', True) is False or
                                 getattr(info, 'accessible', True) is False):
            break
        return None
    return ('datastore %s is not mounted on host %s of the proxy VM' %
            (vim_util.get_moref_value(datastore), host_id))


def _free_slot(devices):
    """``(controller key, unit, None)`` free on a SCSI controller, or None."""
    used = {}
    for device in devices:
        key = getattr(device, 'controllerKey', None)
        if key is not None:
            used.setdefault(key, set()).add(getattr(device, 'unitNumber',
                                                    None))
    for device in devices:
        if device.__class__.__name__ in _SCSI_CONTROLLERS:
            for unit in _SCSI_UNITS:
                if unit not in used.get(device.key, ()):
                    return device.key, unit
    return None


def _free_bus(devices):
    buses = {getattr(d, 'busNumber', None) for d in devices
             if d.__class__.__name__ in _SCSI_CONTROLLERS}
    for bus in range(4):
        if bus not in buses:
            return bus
    raise errors.TransferError(
        reason='the proxy VM has no free unit on its SCSI controllers and '
               'no room for another one')


def _disk_spec(session, devices, file_name, capacity_kb, mode):
    """Device changes adding ``file_name`` (and a controller if needed)."""
    cf = session.vim.client.factory
    changes = []
    slot = _free_slot(devices)
    if slot is None:
        controller = cf.create('ns0:ParaVirtualSCSIController')
        controller.key = -200
        controller.busNumber = _free_bus(devices)
        controller.sharedBus = 'noSharing'
        add = cf.create('ns0:VirtualDeviceConfigSpec')
        add.operation = 'add'
        add.device = controller
        changes.append(add)
        slot = (controller.key, 0)
    backing = cf.create('ns0:VirtualDiskFlatVer2BackingInfo')
    backing.fileName = file_name
    backing.diskMode = mode
    disk = cf.create('ns0:VirtualDisk')
    disk.key = -201
    disk.controllerKey, disk.unitNumber = slot
    disk.capacityInKB = capacity_kb
    disk.backing = backing
    add = cf.create('ns0:VirtualDeviceConfigSpec')
    add.operation = 'add'
    add.device = disk
    changes.append(add)
    return changes


def _reconfigure(session, vm_ref, changes):
    spec = session.vim.client.factory.create('ns0:VirtualMachineConfigSpec')
    spec.deviceChange = changes
    task = session.invoke_api(session.vim, 'ReconfigVM_Task', vm_ref,
                              spec=spec)
    session.wait_for_task(task)


def _attached(session, proxy, file_name):
    """The proxy's disk devices whose backing is ``file_name``."""
    return [d for d in _devices(session, proxy)
            if d.__class__.__name__ == 'VirtualDisk' and
            getattr(d.backing, 'fileName', None) == file_name]


def _remove_devices(session, proxy, devices):
    changes = []
    for device in devices:
        spec = session.vim.client.factory.create(
            'ns0:VirtualDeviceConfigSpec')
        spec.operation = 'remove'
        spec.device = device
        changes.append(spec)
    if changes:
        _reconfigure(session, proxy, changes)


def device_link(device_dir, disk_uuid):
    """The udev link of a disk UUID: ``<dir>/wwn-0x<hex, lower case>``."""
    digits = ''.join(c for c in disk_uuid.lower() if c not in '- ')
    return os.path.join(device_dir, 'wwn-0x%s' % digits)


def wait_for_device(link, timeout, interval=0.2):
    """The block device ``link`` names, once it exists.

    :raises DeviceNotFound: after ``timeout`` seconds
    """
    deadline = time.monotonic() + timeout
    while True:
        if os.path.exists(link):
            return os.path.realpath(link)
        if time.monotonic() >= deadline:
            raise DeviceNotFound(
                reason='no device %s appeared within %s s' % (link, timeout))
        time.sleep(interval)


class HotAddedDisk(object):
    """A disk file on the proxy VM, its device found on this host.

    Use as a context manager: attached on entry, removed from the proxy
    on exit on every path (a failure of the removal is logged; the
    record stays for the janitor).

    :param session: ``oslo_vmware.api.VMwareAPISession``
    :param proxy: the proxy VM
    :param file_name: the datastore path of the disk
        (``[ds] dir/name.vmdk``; a snapshot's disk as its config names it)
    :param capacity: bytes of the disk
    :param writable: add it persistent (a restore) instead of read-only
    :param device_dir: ``vmware_backup_hotadd_device_dir``
    :param timeout: ``vmware_backup_hotadd_device_timeout``
    :param state_dir: where the attachment is recorded (or None)
    :param snapshot: the snapshot whose disk this is (recorded for the
        janitor's message), or None
    """

    def __init__(self, session, proxy, file_name, capacity, writable=False,
                 device_dir='/dev/disk/by-id', timeout=60, state_dir=None,
                 snapshot=None):
        self._session = session
        self.proxy = proxy
        self.file_name = file_name
        self.capacity = capacity
        self.mode = WRITABLE if writable else READ_ONLY
        self._device_dir = device_dir
        self._timeout = timeout
        self._state_dir = state_dir
        self._snapshot = snapshot
        self._record = None
        # Keys of the proxy's devices of that file before the attach: a
        # concurrent operation may have the same file on the proxy.
        self._others = None
        self.device = None
        self.path = None

    def __enter__(self):
        self._record_attachment()
        try:
            self._attach()
        except BaseException:
            self.detach()
            raise
        return self

    def __exit__(self, *exc_info):
        self.detach()

    def _record_attachment(self):
        if not self._state_dir:
            return
        self._record = ownership.Record(self._state_dir, RECORD_KIND, {
            'proxy': vim_util.get_moref_value(self.proxy),
            'file': self.file_name,
            'snapshot': (vim_util.get_moref_value(self._snapshot)
                         if self._snapshot is not None else None)})

    def _attach(self):
        session = self._session
        devices = _devices(session, self.proxy)
        self._others = {d.key for d in devices
                        if d.__class__.__name__ == 'VirtualDisk' and
                        getattr(d.backing, 'fileName', None) ==
                        self.file_name}
        _reconfigure(session, self.proxy, _disk_spec(
            session, devices, self.file_name,
            (self.capacity + 1023) // 1024, self.mode))
        found = self._ours()
        if not found:
            raise errors.TransferError(
                reason='disk %s is not on the proxy VM after it was added' %
                self.file_name)
        self.device = found[-1]
        disk_uuid = getattr(self.device.backing, 'uuid', None)
        if not disk_uuid:
            raise DeviceNotFound(
                reason='the hot-added disk %s has no UUID (serial) to find '
                       'it by' % self.file_name)
        self.path = wait_for_device(
            device_link(self._device_dir, disk_uuid), self._timeout)
        LOG.debug('Disk %(file)s hot-added to the proxy VM as %(dev)s.',
                  {'file': self.file_name, 'dev': self.path})

    def _ours(self):
        return [d for d in _attached(self._session, self.proxy,
                                     self.file_name)
                if d.key not in (self._others or ())]

    def detach(self):
        """Remove the disk from the proxy (its file stays); idempotent."""
        if self._others is None:
            # Never reconfigured: nothing of ours is on the proxy.
            if self._record is not None:
                self._record.release()
                self._record = None
            return
        try:
            _remove_devices(self._session, self.proxy, self._ours())
        except Exception as exc:
            LOG.error('Could not remove disk %(file)s from the proxy VM; '
                      'it is removed when this service restarts: %(exc)s',
                      {'file': self.file_name, 'exc': exc})
            if self._record is not None:
                # Let go of it without removing it: the janitor's now.
                self._record = None
            return
        self.device = None
        if self._record is not None:
            self._record.release()
            self._record = None


def _aligned_buffer(size):
    return mmap.mmap(-1, size)


class DeviceSource(object):
    """A block device's first ``size`` bytes as a transfer source.

    ``read_at(offset, view)`` reads at any offset (the extent hand-off
    reads only changed or non-zero areas); ``fill(view)`` reads on from
    where the last read ended (the stream path). Reads bypass the page
    cache (:data:`READ_MODE`).

    A device that holds fewer than ``size`` bytes is refused when the
    source is made (:class:`DeviceTooSmall`): the backup fails as the NBD
    path fails with a stream that ends before the volume's size, rather
    than storing zeros for the missing tail (the extent hand-off might not
    even read there: the allocated areas vCenter gives end at the disk's
    end too).
    """

    def __init__(self, path, size, mode=None):
        self.size = size
        self._mode = mode or READ_MODE
        flags = os.O_RDONLY | os.O_CLOEXEC
        if self._mode == 'direct':
            flags |= os.O_DIRECT
        self._fd = os.open(path, flags)
        try:
            self.capacity = os.lseek(self._fd, 0, os.SEEK_END)
            if self.capacity < size:
                raise DeviceTooSmall(
                    reason='the device %s ended before its size: it holds '
                           '%d bytes of the %d to read' % (
                               path, self.capacity, size))
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        self._buffer = (_aligned_buffer(IO_BYTES)
                        if self._mode == 'direct' else None)
        self._pos = 0
        self.bytes_read = 0

    def read_at(self, offset, view):
        """Fill ``view`` with the bytes at ``offset``.

        :raises DeviceTooSmall: the range goes past the device's end
        """
        view = memoryview(view).cast('B')
        n = len(view)
        end = offset + n
        if end > self.capacity:
            raise DeviceTooSmall(
                reason='the device ended before its size: %d bytes at %d '
                       'asked of a device of %d bytes' % (
                           n, offset, self.capacity))
        done = 0
        while offset + done < end:
            want = min(end - offset - done, IO_BYTES)
            done += self._read(offset + done, view[done:done + want])

    def _read(self, offset, view):
        if self._mode == 'direct':
            start = offset - offset % _ALIGN
            span = min(-(-(offset + len(view) - start) // _ALIGN) * _ALIGN,
                       IO_BYTES)
            got = os.preadv(self._fd, [memoryview(self._buffer)[:span]],
                            start)
            count = min(len(view), got - (offset - start))
            if count <= 0:
                raise errors.TransferError(
                    reason='device ended at %d' % offset)
            view[:count] = self._buffer[offset - start:offset - start +
                                        count]
        else:
            count = os.preadv(self._fd, [view], offset)
            if count <= 0:
                raise errors.TransferError(
                    reason='device ended at %d' % offset)
            os.posix_fadvise(self._fd, offset, count,
                             os.POSIX_FADV_DONTNEED)
        self.bytes_read += count
        return count

    def fill(self, view):
        self.read_at(self._pos, view)
        self._pos += len(view)

    def readinto(self, view):
        n = min(len(view), self.size - self._pos)
        if n <= 0:
            return 0
        self.fill(memoryview(view)[:n])
        return n

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None


class DeviceWriter(object):
    """Writes a restore's data into a hot-added (new, zeroed) disk.

    Blocks of zeros are skipped: the disk is new and reads as zeros.
    Data goes through the page cache and is flushed (``fsync``) by
    :meth:`finish`; the device's contents are complete only then.
    """

    def __init__(self, path):
        self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self.capacity = os.lseek(self._fd, 0, os.SEEK_END)
        self.bytes_written = 0

    def write_at(self, offset, data):
        view = memoryview(data).cast('B')
        if offset + len(view) > self.capacity:
            raise errors.TransferError(
                reason='%d bytes at %d do not fit the disk of %d bytes' % (
                    len(view), offset, self.capacity))
        done = 0
        while done < len(view):
            chunk = view[done:done + IO_BYTES]
            if not zero_hashing.is_all_zero(chunk):
                os.pwrite(self._fd, chunk, offset + done)
                self.bytes_written += len(chunk)
            done += len(chunk)

    def finish(self):
        os.fsync(self._fd)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def reading(session, proxy, file_name, size, capacity, device_dir, timeout,
            state_dir, snapshot=None):
    """A snapshot's disk hot-added read-only, as a :class:`DeviceSource`."""
    with HotAddedDisk(session, proxy, file_name, capacity, writable=False,
                      device_dir=device_dir, timeout=timeout,
                      state_dir=state_dir, snapshot=snapshot) as disk:
        source = DeviceSource(disk.path, size)
        try:
            yield source
        finally:
            source.close()
        LOG.info('HotAdd read of %(file)s: %(n)d bytes read for %(size)d '
                 'bytes of disk.', {'file': file_name,
                                    'n': source.bytes_read, 'size': size})


@contextlib.contextmanager
def writing(session, proxy, file_name, capacity, device_dir, timeout,
            state_dir):
    """A new disk hot-added writable, as a :class:`DeviceWriter`.

    The data is flushed before the disk is removed from the proxy; on an
    error the disk is removed all the same (its content is then partial:
    the caller deletes it).
    """
    with HotAddedDisk(session, proxy, file_name, capacity, writable=True,
                      device_dir=device_dir, timeout=timeout,
                      state_dir=state_dir) as disk:
        writer = DeviceWriter(disk.path)
        try:
            yield writer
            # fsync can take a while: not on the caller's hub.
            transfer.run(writer.finish, name='cvb-hotadd-flush')
        finally:
            writer.close()


def remove_leftovers(session, directory, here=None):
    """Remove from the proxy the disks that gone processes hot-added.

    Run first by the driver's janitor: a snapshot whose disk is on the
    proxy, or a temporary VM whose disk is, cannot be removed before.

    :returns: the datastore paths of the disks removed
    """
    removed = []
    for record in ownership.stale_records(directory, RECORD_KIND, here):
        data = record.data
        proxy = vim_util.get_moref(data.get('proxy'), 'VirtualMachine')
        file_name = data.get('file')
        try:
            found = _attached(session, proxy, file_name)
            _remove_devices(session, proxy, found)
        except vexc.ManagedObjectNotFoundException:
            found = []
        except vexc.VimException as exc:
            LOG.warning('Could not remove disk %(file)s, hot-added by a '
                        'process that ended, from the proxy VM: %(exc)s',
                        {'file': file_name, 'exc': exc})
            record.close()
            continue
        if found:
            LOG.warning('Removed disk %(file)s from the proxy VM %(proxy)s, '
                        'hot-added by a process that ended during a '
                        'transfer%(snap)s.',
                        {'file': file_name, 'proxy': data.get('proxy'),
                         'snap': (' (a disk of snapshot %s)' %
                                  data['snapshot'] if data.get('snapshot')
                                  else '')})
            removed.append(file_name)
        record.remove()
    return removed
