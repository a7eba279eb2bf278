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

"""The vCenter side of a Nova instance with an attached Cinder volume.

The deployment has no Nova. For an attached volume Cinder's VMDK driver
works from the instance's VM in vCenter: ``create_cloned_volume`` (and so
``backup create --force``) finds that VM by the attachment's instance
UUID (``SearchIndex.FindAllByUuid`` with ``instanceUuid=True``), reads the
UUID of the volume's disk in it from the VM's extraConfig key
``volume-<volume id>`` and full-clones the VM keeping only that disk.
:class:`InstanceVM` makes that state in vcsim through the vSphere API the
way Nova's VMware driver does (nova/virt/vmwareapi): a VM whose instance
UUID is the instance's, with a SCSI controller and a root disk; on attach,
the volume backing's disk file added to it as an existing disk and the
``volume-<id>`` extraConfig entry; on detach, the disk removed (its file
kept) and the entry cleared.
"""

import uuid

from oslo_vmware import vim_util

#: SCSI unit 7 is the controller's own.
_SCSI_CONTROLLER_UNIT = 7
_ROOT_DISK_KB = 1024
_SCSI_CONTROLLERS = ('VirtualLsiLogicController', 'VirtualBusLogicController',
                     'VirtualLsiLogicSASController',
                     'ParaVirtualSCSIController')


class InstanceError(Exception):
    pass


def _devices(session, vm):
    devices = session.invoke_api(vim_util, 'get_object_property',
                                 session.vim, vm, 'config.hardware.device')
    return list(getattr(devices, 'VirtualDevice', None) or devices or [])


def _type_name(obj):
    return obj.__class__.__name__


def _first(session, vim_type, properties):
    """The first managed object of a type, with the named properties."""
    result = session.invoke_api(vim_util, 'get_objects', session.vim,
                                vim_type, 1, properties)
    try:
        obj = result.objects[0]
    finally:
        session.invoke_api(vim_util, 'cancel_retrieval', session.vim, result)
    return obj.obj, {p.name: p.val for p in getattr(obj, 'propSet', [])}


class InstanceVM(object):
    """A Nova instance's VM in vCenter, as Nova's VMware driver keeps it.

    :param session: an oslo.vmware session to the deployment's vCenter
    :param instance_uuid: the Nova instance's UUID
    :param datastore_name: where the VM's files go
    """

    def __init__(self, session, instance_uuid, datastore_name):
        self.session = session
        self.uuid = instance_uuid
        self.datastore_name = datastore_name
        self.ref = None

    @property
    def _factory(self):
        return self.session.vim.client.factory

    def _reconfigure(self, spec):
        task = self.session.invoke_api(self.session.vim, 'ReconfigVM_Task',
                                       self.ref, spec=spec)
        self.session.wait_for_task(task)

    def _option(self, key, value):
        option = self._factory.create('ns0:OptionValue')
        option.key = key
        option.value = value
        return option

    def _device_add(self, device, file_operation=None):
        spec = self._factory.create('ns0:VirtualDeviceConfigSpec')
        spec.operation = 'add'
        spec.device = device
        if file_operation:
            spec.fileOperation = file_operation
        return spec

    def _disk(self, controller_key, unit, capacity_kb, file_name='',
              disk_uuid=None, thin=True):
        backing = self._factory.create('ns0:VirtualDiskFlatVer2BackingInfo')
        backing.fileName = file_name
        backing.diskMode = 'persistent'
        backing.thinProvisioned = thin
        if disk_uuid:
            backing.uuid = disk_uuid
        disk = self._factory.create('ns0:VirtualDisk')
        disk.key = -100 - unit
        disk.controllerKey = controller_key
        disk.unitNumber = unit
        disk.capacityInKB = capacity_kb
        disk.backing = backing
        return disk

    def _controller(self, type_name, key, bus):
        controller = self._factory.create('ns0:%s' % type_name)
        controller.key = key
        controller.busNumber = bus
        controller.sharedBus = 'noSharing'
        return controller

    def create(self):
        """CreateVM_Task, as Nova's spawn makes the instance's VM."""
        cluster, props = _first(self.session, 'ClusterComputeResource',
                                ['resourcePool'])
        _dc, dc_props = _first(self.session, 'Datacenter', ['vmFolder'])
        spec = self._factory.create('ns0:VirtualMachineConfigSpec')
        spec.name = self.uuid
        spec.instanceUuid = self.uuid
        spec.guestId = 'otherGuest'
        spec.numCPUs = 1
        spec.memoryMB = 64
        files = self._factory.create('ns0:VirtualMachineFileInfo')
        files.vmPathName = '[%s]' % self.datastore_name
        spec.files = files
        spec.extraConfig = [self._option('nvp.vm-uuid', self.uuid)]
        controller = self._controller('VirtualLsiLogicController', -101, 0)
        # vSphere gives every disk a UUID; vcsim leaves a new disk's empty
        # (Cinder's clone of an attached volume then fails reading it), so
        # the spec names one.
        root = self._disk(-101, 0, _ROOT_DISK_KB,
                          disk_uuid=str(uuid.uuid4()))
        spec.deviceChange = [self._device_add(controller),
                             self._device_add(root, 'create')]
        task = self.session.invoke_api(
            self.session.vim, 'CreateVM_Task', dc_props['vmFolder'],
            config=spec, pool=props['resourcePool'])
        self.ref = self.session.wait_for_task(task).result
        return self.ref

    def connector(self, mountpoint=None):
        """The volume connector Nova's VMware driver sends to Cinder.

        :param mountpoint: the device name Nova adds to the connector on
            the attachment update (``/dev/sdb``); Cinder records it as the
            attachment's mountpoint
        """
        connector = {'ip': '127.0.0.1', 'host': '127.0.0.1',
                     'initiator': 'iqn.2026-01.org.openstack:e2e',
                     'instance': vim_util.get_moref_value(self.ref)}
        if mountpoint:
            connector['mountpoint'] = mountpoint
        return connector

    def _power(self, method):
        task = self.session.invoke_api(self.session.vim, method, self.ref)
        self.session.wait_for_task(task)

    def power_on(self):
        """PowerOnVM_Task, as Nova's power_on."""
        self._power('PowerOnVM_Task')

    def power_off(self):
        """PowerOffVM_Task, as Nova's power_off (a hard stop)."""
        self._power('PowerOffVM_Task')

    @property
    def power_state(self):
        """``poweredOn``, ``poweredOff`` or ``suspended``."""
        return self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, self.ref,
            'runtime.powerState')

    def disk_path(self, volume_id):
        """Datastore path of the disk file the VM has for the volume.

        Found as Nova finds the volume's disk: the device whose UUID the
        VM's extraConfig ``volume-<id>`` names.
        """
        option = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, self.ref,
            'config.extraConfig["volume-%s"]' % volume_id)
        device_uuid = getattr(option, 'value', None)
        paths = [d.backing.fileName for d in _devices(self.session, self.ref)
                 if _type_name(d) == 'VirtualDisk' and device_uuid and
                 getattr(d.backing, 'uuid', None) == device_uuid]
        if len(paths) != 1:
            raise InstanceError('instance %s: %d disks of volume %s'
                                % (self.uuid, len(paths), volume_id))
        return paths[0]

    def attach_volume(self, connection_info):
        """Attach the volume's disk file, as Nova's _attach_volume_vmdk.

        The disk keeps the UUID the volume's backing reports for it: on
        vSphere the UUID is the disk file's own (its ddb.uuid), the same in
        every VM the file is attached to; vcsim keeps whatever UUID the
        device spec names, so the spec names it.

        :returns: the UUID of the attached disk
        """
        if connection_info.get('driver_volume_type') != 'vmdk':
            raise InstanceError('not a VMDK volume: %s'
                                % connection_info.get('driver_volume_type'))
        data = connection_info['data']
        backing = vim_util.get_moref(data['volume'], 'VirtualMachine')
        volume_devices = _devices(self.session, backing)
        disks = [d for d in volume_devices if _type_name(d) == 'VirtualDisk']
        if len(disks) != 1:
            raise InstanceError('volume %s: backing %s has %d disks'
                                % (data['volume_id'], data['volume'],
                                   len(disks)))
        volume_disk = disks[0]
        adapter = next(_type_name(d) for d in volume_devices
                       if d.key == volume_disk.controllerKey)

        devices = _devices(self.session, self.ref)
        changes = []
        if adapter not in _SCSI_CONTROLLERS:
            # Nova refuses to hot-plug a disk on IDE.
            raise InstanceError('volume %s: no hot-plug on a %s'
                                % (data['volume_id'], adapter))
        controller = next((d for d in devices if _type_name(d) == adapter),
                          None)
        if controller is None:
            buses = [d.busNumber for d in devices
                     if _type_name(d) in _SCSI_CONTROLLERS]
            controller = self._controller(adapter, -201,
                                          max(buses or [-1]) + 1)
            changes.append(self._device_add(controller))
        used = {d.unitNumber for d in devices
                if getattr(d, 'controllerKey', None) == controller.key}
        unit = next(u for u in range(16)
                    if u not in used and u != _SCSI_CONTROLLER_UNIT)
        disk = self._disk(controller.key, unit, volume_disk.capacityInKB,
                          file_name=volume_disk.backing.fileName,
                          disk_uuid=volume_disk.backing.uuid,
                          thin=volume_disk.backing.thinProvisioned)
        changes.append(self._device_add(disk))
        spec = self._factory.create('ns0:VirtualMachineConfigSpec')
        spec.deviceChange = changes
        self._reconfigure(spec)
        self._set_volume_option(data['volume_id'], volume_disk.backing.uuid)
        return volume_disk.backing.uuid

    def _set_volume_option(self, volume_id, device_uuid):
        spec = self._factory.create('ns0:VirtualMachineConfigSpec')
        spec.extraConfig = [self._option('volume-%s' % volume_id,
                                         device_uuid)]
        self._reconfigure(spec)

    def detach_volume(self, volume_id):
        """Remove the volume's disk (its file stays), as Nova's detach."""
        option = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, self.ref,
            'config.extraConfig["volume-%s"]' % volume_id)
        device_uuid = getattr(option, 'value', None)
        disk = next((d for d in _devices(self.session, self.ref)
                     if _type_name(d) == 'VirtualDisk' and device_uuid
                     and getattr(d.backing, 'uuid', None) == device_uuid),
                    None)
        if disk is None:
            raise InstanceError('instance %s has no disk of volume %s'
                                % (self.uuid, volume_id))
        remove = self._factory.create('ns0:VirtualDeviceConfigSpec')
        remove.operation = 'remove'
        remove.device = disk
        spec = self._factory.create('ns0:VirtualMachineConfigSpec')
        spec.deviceChange = [remove]
        self._reconfigure(spec)
        self._set_volume_option(volume_id, '')

    def destroy(self):
        """Destroy_Task; detach every volume first (it deletes all disks).

        A powered-on VM is powered off first, as Nova's destroy does
        (vSphere refuses to destroy a running VM).
        """
        if self.ref is None:
            return
        if self.power_state != 'poweredOff':
            self.power_off()
        task = self.session.invoke_api(self.session.vim, 'Destroy_Task',
                                       self.ref)
        self.session.wait_for_task(task)
        self.ref = None
