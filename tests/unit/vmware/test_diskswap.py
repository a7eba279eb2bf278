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

import types

import ddt
from oslo_vmware import exceptions as vexc
import testtools

from cinder_vmdk_backup.vmware import diskswap
from cinder_vmdk_backup.vmware import errors
from tests.unit.vmware import fakes


def disk(path, key=2000, controller_key=1000, unit=0, uuid=None,
         thin=True):
    return fakes.vobj(
        'VirtualDisk', key=key, controllerKey=controller_key,
        unitNumber=unit, capacityInKB=1024,
        backing=fakes.vobj('VirtualDiskFlatVer2BackingInfo', fileName=path,
                           uuid=uuid, thinProvisioned=thin,
                           eagerlyScrub=False))


@ddt.ddt
class SwapDiskTestCase(testtools.TestCase):

    def setUp(self):
        super(SwapDiskTestCase, self).setUp()
        self.old = disk('[ds] volume-1/volume-1.vmdk', uuid='vol-1')
        self.new = disk('[ds] cvb-tmp-x/cvb-tmp-x.vmdk', key=2001,
                        controller_key=1001, uuid='other')
        self.controller = fakes.vobj('VirtualLsiLogicController', key=1000)
        self.backing_devices = [self.controller, self.old]
        self.session = fakes.FakeSession(
            {('vm-b', 'config.hardware.device'): self.backing_devices,
             ('vm-t', 'config.hardware.device'): [self.new]})
        self.reconfigs = []
        self.file_uuids = {'[ds] volume-1/volume-1.vmdk': 'vol-1',
                           '[ds] volume-1/volume-1-r1.vmdk': 'other'}
        self.session.handlers['ReconfigVM_Task'] = self._reconfig

    def _reconfig(self, vm, spec):
        self.reconfigs.append((vm.value, spec.deviceChange))
        if vm.value == 'vm-b':
            devices = self.session.properties[('vm-b',
                                               'config.hardware.device')]
            for change in spec.deviceChange:
                if change.operation == 'remove':
                    devices.remove(change.device)
                elif change.operation == 'add':
                    # vSphere reads the UUID from the disk file
                    change.device.backing.uuid = self.file_uuids.get(
                        change.device.backing.fileName)
                    devices.append(change.device)
        return fakes.moref('task', 'Task')

    def swap(self):
        return diskswap.swap_disk(
            self.session, fakes.moref('vm-b'), fakes.moref('vm-t'),
            fakes.moref('dc-1', 'Datacenter'),
            '[ds] volume-1/volume-1-r1.vmdk', 'vol-1')

    def test_order_and_result(self):
        self.assertEqual('[ds] volume-1/volume-1-r1.vmdk', self.swap())
        self.assertEqual(['ReconfigVM_Task', 'MoveVirtualDisk_Task',
                          'ReconfigVM_Task', 'ReconfigVM_Task',
                          'DeleteVirtualDisk_Task'], self.session.methods())
        detach, attach, set_uuid = self.reconfigs
        self.assertEqual('vm-t', detach[0])
        self.assertEqual(['remove'], [c.operation for c in detach[1]])
        self.assertFalse(hasattr(detach[1][0], 'fileOperation'))
        self.assertEqual(['remove', 'add'],
                         [c.operation for c in attach[1]])
        added = attach[1][1].device
        self.assertEqual((1000, 0), (added.controllerKey, added.unitNumber))
        self.assertEqual('[ds] volume-1/volume-1-r1.vmdk',
                         added.backing.fileName)
        self.assertTrue(added.backing.thinProvisioned)
        self.assertEqual('edit', set_uuid[1][0].operation)
        self.assertEqual('vol-1', set_uuid[1][0].device.backing.uuid)
        delete = [c for c in self.session.calls
                  if c[0] == 'DeleteVirtualDisk_Task'][0]
        self.assertEqual('[ds] volume-1/volume-1.vmdk', delete[2]['name'])

    def test_move_failure_deletes_new_disk_keeps_backing(self):
        self.session.handlers['MoveVirtualDisk_Task'] = (
            vexc.VimException('no space'))
        self.assertRaises(errors.DiskSwapError, self.swap)
        self.assertEqual([self.controller, self.old], self.backing_devices)
        delete = [c for c in self.session.calls
                  if c[0] == 'DeleteVirtualDisk_Task']
        self.assertEqual(['[ds] cvb-tmp-x/cvb-tmp-x.vmdk'],
                         [c[2]['name'] for c in delete])

    def test_detach_failure_leaves_disk_to_the_temp_vm(self):
        self.session.handlers['ReconfigVM_Task'] = vexc.VimException('busy')
        self.assertRaises(errors.DiskSwapError, self.swap)
        self.assertNotIn('DeleteVirtualDisk_Task', self.session.methods())

    def test_uuid_failure_gives_the_old_disk_back(self):
        calls = []

        def reconfig(vm, spec):
            calls.append(spec)
            if spec.deviceChange[0].operation == 'edit':
                raise vexc.VimException('uuid refused')
            return self._reconfig(vm, spec)

        self.session.handlers['ReconfigVM_Task'] = reconfig
        self.assertRaises(errors.DiskSwapError, self.swap)
        devices = self.session.properties[('vm-b', 'config.hardware.device')]
        disks = [d for d in devices if d.__class__.__name__ == 'VirtualDisk']
        self.assertEqual(['[ds] volume-1/volume-1.vmdk'],
                         [d.backing.fileName for d in disks])
        self.assertEqual('vol-1', disks[0].backing.uuid)
        delete = [c[2]['name'] for c in self.session.calls
                  if c[0] == 'DeleteVirtualDisk_Task']
        self.assertEqual(['[ds] volume-1/volume-1-r1.vmdk'], delete)

    def test_old_disk_delete_failure_is_not_fatal(self):
        self.session.handlers['DeleteVirtualDisk_Task'] = (
            vexc.VimException('locked'))
        self.assertEqual('[ds] volume-1/volume-1-r1.vmdk', self.swap())

    def test_vm_without_disk(self):
        self.session.properties[('vm-t', 'config.hardware.device')] = []
        exc = self.assertRaises(errors.DiskSwapError, self.swap)
        self.assertIn('no virtual disk', str(exc))

    def test_array_of_virtual_device_is_unwrapped(self):
        self.session.properties[('vm-t', 'config.hardware.device')] = (
            fakes.vobj('ArrayOfVirtualDevice', VirtualDevice=[self.new]))
        self.assertIs(self.new, diskswap.disk_of(self.session,
                                                 fakes.moref('vm-t')))
        self.assertIsNone(diskswap.controller_of(
            self.session, fakes.moref('vm-t'),
            types.SimpleNamespace(controllerKey=5)))
