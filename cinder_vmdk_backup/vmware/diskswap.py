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

"""Put the disk of a temporary VM into a volume's backing VM.

The order keeps the volume's data safe at every step:

1. detach the new disk from the temporary VM (its file stays);
2. move the file into the backing's folder (a rename on one datastore), so
   that removing the temporary VM can never take it along;
3. one reconfiguration of the backing removes the old disk device (its
   file stays) and adds the new file on the same controller and unit: the
   backing is never without a disk, and either both happen or neither;
4. the new disk gets the old disk's UUID (the volume's id);
5. only then the old disk's file is deleted.

Up to step 4 a failure undoes what was done (the backing gets its old disk
back) and deletes the new file; a failure in step 5 leaves the old file
behind and logs its path. The backing must have no VM snapshots: its disk
is then a delta chain the snapshots share, and the caller refuses earlier.
"""

from oslo_log import log as logging
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

from cinder_vmdk_backup.vmware import errors

LOG = logging.getLogger(__name__)


def _devices(session, vm_ref):
    devices = session.invoke_api(vim_util, 'get_object_property',
                                 session.vim, vm_ref,
                                 'config.hardware.device')
    if devices.__class__.__name__ == 'ArrayOfVirtualDevice':
        devices = devices.VirtualDevice
    return devices or []


def disk_of(session, vm_ref):
    """Return the (first) ``VirtualDisk`` device of a VM.

    :raises: :class:`~.errors.DiskSwapError` when the VM has none
    """
    for device in _devices(session, vm_ref):
        if device.__class__.__name__ == 'VirtualDisk':
            return device
    raise errors.DiskSwapError(backing=vim_util.get_moref_value(vm_ref),
                               reason='the VM has no virtual disk')


def controller_of(session, vm_ref, disk):
    """Return the controller device ``disk`` hangs on (or None)."""
    for device in _devices(session, vm_ref):
        if device.key == disk.controllerKey:
            return device
    return None


def _reconfigure(session, vm_ref, changes):
    cf = session.vim.client.factory
    spec = cf.create('ns0:VirtualMachineConfigSpec')
    spec.deviceChange = changes
    task = session.invoke_api(session.vim, 'ReconfigVM_Task', vm_ref,
                              spec=spec)
    session.wait_for_task(task)


def _remove_spec(session, device):
    spec = session.vim.client.factory.create('ns0:VirtualDeviceConfigSpec')
    spec.operation = 'remove'
    spec.device = device
    return spec


def _add_existing_spec(session, template, file_path, controller_key,
                       unit_number, disk_uuid=None, profile_id=None):
    """Spec adding the existing disk file ``file_path`` to a VM."""
    cf = session.vim.client.factory
    backing = cf.create('ns0:VirtualDiskFlatVer2BackingInfo')
    backing.fileName = file_path
    backing.diskMode = 'persistent'
    backing.thinProvisioned = getattr(template.backing, 'thinProvisioned',
                                      None)
    backing.eagerlyScrub = getattr(template.backing, 'eagerlyScrub', None)
    if disk_uuid:
        backing.uuid = disk_uuid
    disk = cf.create('ns0:VirtualDisk')
    disk.key = -101
    disk.controllerKey = controller_key
    disk.unitNumber = unit_number
    disk.capacityInKB = template.capacityInKB
    disk.backing = backing
    spec = cf.create('ns0:VirtualDeviceConfigSpec')
    spec.operation = 'add'
    spec.device = disk
    if profile_id:
        profile = cf.create('ns0:VirtualMachineDefinedProfileSpec')
        profile.profileId = profile_id
        spec.profile = [profile]
    return spec


def _set_uuid(session, vm_ref, disk_uuid):
    disk = disk_of(session, vm_ref)
    if getattr(disk.backing, 'uuid', None) == disk_uuid:
        return
    disk.backing.uuid = disk_uuid
    spec = session.vim.client.factory.create('ns0:VirtualDeviceConfigSpec')
    spec.operation = 'edit'
    spec.device = disk
    _reconfigure(session, vm_ref, [spec])


def _disk_manager_task(session, method, **kwargs):
    manager = session.vim.service_content.virtualDiskManager
    task = session.invoke_api(session.vim, method, manager, **kwargs)
    session.wait_for_task(task)


def move_disk(session, datacenter, source, dest):
    """Move a virtual disk (descriptor and extents) on the datastore."""
    _disk_manager_task(session, 'MoveVirtualDisk_Task', sourceName=source,
                       sourceDatacenter=datacenter, destName=dest,
                       destDatacenter=datacenter, force=False)


def delete_disk(session, datacenter, path):
    """Delete a virtual disk (descriptor and extents)."""
    _disk_manager_task(session, 'DeleteVirtualDisk_Task', name=path,
                       datacenter=datacenter)


def delete_disk_quietly(session, datacenter, path):
    """Delete a virtual disk; log instead of raising. Returns success."""
    try:
        delete_disk(session, datacenter, path)
        return True
    except vexc.FileNotFoundException:
        return True
    except Exception as exc:
        LOG.error('Could not delete virtual disk %(path)s, delete it by '
                  'hand: %(exc)s', {'path': path, 'exc': exc})
        return False


def swap_disk(session, backing, temp_vm, datacenter, dest_path, disk_uuid,
              profile_id=None, fault_hook=None, repoint=None):
    """Make the temporary VM's disk the disk of ``backing``.

    :param session: ``oslo_vmware.api.VMwareAPISession``
    :param backing: the volume's backing VM (no VM snapshots)
    :param temp_vm: the VM holding the new disk (left diskless)
    :param datacenter: datacenter of both VMs
    :param dest_path: datastore path the new disk gets, in the backing's
        folder, e.g. ``[ds1] volume-1/volume-1-r1700000000.vmdk``
    :param disk_uuid: UUID the new disk gets (the volume's id)
    :param profile_id: storage policy of the disk, if any
    :param fault_hook: test hook called with the step's name before each
        step
    :param repoint: called with ``(old path, new path)`` once the backing
        has the new disk, before the old file is deleted: other VMs that
        have the disk file attached (an instance's VM) are pointed at the
        new file. Undone with the rest when it raises; it undoes its own
        partial work.
    :returns: the datastore path of the new disk
    :raises: :class:`~.errors.DiskSwapError`; the backing then still has
        its old disk and no new file is left behind
    """
    hook = fault_hook or (lambda step: None)
    name = vim_util.get_moref_value(backing)
    new_disk = disk_of(session, temp_vm)
    old_disk = disk_of(session, backing)
    old_path = old_disk.backing.fileName
    new_path = new_disk.backing.fileName
    detached = attached = False
    try:
        hook('detach')
        _reconfigure(session, temp_vm, [_remove_spec(session, new_disk)])
        detached = True
        hook('move')
        move_disk(session, datacenter, new_path, dest_path)
        new_path = dest_path
        hook('attach')
        _reconfigure(session, backing, [
            _remove_spec(session, old_disk),
            _add_existing_spec(session, new_disk, dest_path,
                               old_disk.controllerKey, old_disk.unitNumber,
                               disk_uuid, profile_id)])
        attached = True
        hook('uuid')
        _set_uuid(session, backing, disk_uuid)
        if repoint is not None:
            hook('repoint')
            repoint(old_path, dest_path)
    except Exception as exc:
        LOG.error('Swapping the restored disk into backing %(vm)s failed '
                  'at %(path)s: %(exc)s; undoing.',
                  {'vm': name, 'path': new_path, 'exc': exc})
        in_use = False
        if attached:
            try:
                _reattach_old(session, backing, old_disk)
            except Exception:
                in_use = True
        # A disk still attached to the temporary VM goes with that VM; one
        # the backing could not give back stays where it is.
        if detached and not in_use:
            delete_disk_quietly(session, datacenter, new_path)
        if isinstance(exc, errors.DiskSwapError):
            raise
        raise errors.DiskSwapError(backing=name, reason=str(exc)) from exc
    hook('delete_old')
    delete_disk_quietly(session, datacenter, old_path)
    LOG.info('Backing %(vm)s now has the restored disk %(path)s.',
             {'vm': name, 'path': dest_path})
    return dest_path


def _reattach_old(session, backing, old_disk):
    """Put the old disk back in place of the new one (undo of step 3)."""
    try:
        current = disk_of(session, backing)
        _reconfigure(session, backing, [
            _remove_spec(session, current),
            _add_existing_spec(session, old_disk, old_disk.backing.fileName,
                               old_disk.controllerKey, old_disk.unitNumber,
                               getattr(old_disk.backing, 'uuid', None))])
    except Exception as exc:
        LOG.error('Could not give backing %(vm)s its old disk %(path)s '
                  'back: %(exc)s', {'vm': vim_util.get_moref_value(backing),
                                    'path': old_disk.backing.fileName,
                                    'exc': exc})
        raise


def repoint_disk(session, vm_ref, old_path, new_path):
    """Point the VM's disk devices on ``old_path`` at ``new_path``.

    One reconfiguration removes each such device (its file stays) and adds
    the file ``new_path`` on the same controller and unit with the same
    disk UUID, as Nova's detach and attach of a volume would.

    :returns: whether the VM had such a disk
    """
    changes = []
    for device in _devices(session, vm_ref):
        if device.__class__.__name__ != 'VirtualDisk' or getattr(
                device.backing, 'fileName', None) != old_path:
            continue
        changes.append(_remove_spec(session, device))
        changes.append(_add_existing_spec(
            session, device, new_path, device.controllerKey,
            device.unitNumber, getattr(device.backing, 'uuid', None)))
    if not changes:
        return False
    _reconfigure(session, vm_ref, changes)
    LOG.info('VM %(vm)s now uses disk %(path)s.',
             {'vm': vim_util.get_moref_value(vm_ref), 'path': new_path})
    return True
