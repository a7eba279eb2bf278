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

"""vcsim's changed block tracking (patch 0015) through oslo.vmware.

What the plugin's CBT code relies on, over SOAP with the generated WSDL:
``changeTrackingEnabled`` starts tracking at the next stun cycle,
snapshots carry the changeId as of the snapshot, QueryChangedDiskAreas
answers exactly the 64 KiB blocks written through ``seed_disk`` (or, for
``"*"``, those holding data) in pieces of at most 4 GiB, and a changeId of
an earlier tracking epoch fails with a FileFault.
"""

import os
import re

from oslo_utils import units
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util
import testtools

from tests.functional import vcsim as vcsim_fixture

BLOCK = 64 * units.Ki
CHANGE_ID = re.compile(r'^52( [0-9a-f]{2}){15}/[0-9]+$')


def _blocks(offset, length):
    """The 64 KiB aligned area covering [offset, offset + length)."""
    start = offset - offset % BLOCK
    end = -(-(offset + length) // BLOCK) * BLOCK
    return start, end - start


def _nonzero_areas(raw):
    """The merged 64 KiB blocks of raw that are not all zeros."""
    areas = []
    for start in range(0, len(raw), BLOCK):
        if raw[start:start + BLOCK].count(0) == len(raw[start:start + BLOCK]):
            continue
        if areas and sum(areas[-1]) == start:
            areas[-1] = (areas[-1][0], areas[-1][1] + BLOCK)
        else:
            areas.append((start, BLOCK))
    return areas


class VcsimChangeTrackingTestCase(testtools.TestCase):
    """One vcsim (VMs powered off, 1 MiB disks); one VM per test."""

    @classmethod
    def setUpClass(cls):
        super(VcsimChangeTrackingTestCase, cls).setUpClass()
        vcsim = vcsim_fixture.VcsimFixture(vms=2,
                                           extra_args=['-autostart=false'])
        vcsim.setUp()
        cls.addClassCleanup(vcsim.cleanUp)
        cls.vcsim = vcsim
        cls.session = vcsim.session()

    def _vm(self, index):
        result = self.session.invoke_api(
            vim_util, 'get_objects', self.session.vim, 'VirtualMachine',
            100, ['name', 'config.hardware.device'])
        vms = sorted(result.objects, key=lambda o: o.propSet[0].val)
        vm = vms[index]
        devices = [p.val for p in vm.propSet
                   if p.name == 'config.hardware.device'][0]
        disk = [d for d in devices.VirtualDevice
                if d.__class__.__name__ == 'VirtualDisk'][0]
        return vm.obj, disk.key, disk.backing.fileName

    def _task(self, method, ref, **kwargs):
        task = self.session.invoke_api(self.session.vim, method, ref,
                                       **kwargs)
        return getattr(self.session.wait_for_task(task), 'result', None)

    def _enable(self, vm, enabled=True):
        spec = self.session.vim.client.factory.create(
            'ns0:VirtualMachineConfigSpec')
        spec.changeTrackingEnabled = enabled
        self._task('ReconfigVM_Task', vm, spec=spec)

    def _change_id(self, ref, key):
        """The changeId of disk ``key`` of a VM or a snapshot (or None)."""
        devices = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, ref,
            'config.hardware.device')
        disk = [d for d in devices.VirtualDevice if d.key == key][0]
        return getattr(disk.backing, 'changeId', None)

    def _snapshot(self, vm, key, name):
        snapshot = self._task('CreateSnapshot_Task', vm, name=name,
                              memory=False, quiesce=False)
        self.addCleanup(self._remove_snapshot, snapshot)
        return snapshot, self._change_id(snapshot, key)

    def _remove_snapshot(self, snapshot):
        try:
            self._task('RemoveSnapshot_Task', snapshot,
                       removeChildren=False)
        except vexc.VMwareDriverException:
            pass  # removed with its VM's other snapshots already

    def _areas(self, vm, key, snapshot, change_id):
        return vcsim_fixture.query_changed_disk_areas(
            self.session, vm, key, change_id, snapshot=snapshot)[0]

    def test_changed_areas_are_the_writes_since_the_change_id(self):
        vm, key, path = self._vm(0)
        self._enable(vm)
        # Tracking starts at the next stun cycle, not at the reconfigure.
        self.assertIsNone(self._change_id(vm, key))
        s0, c0 = self._snapshot(vm, key, 'cbt-0')
        self.assertRegex(c0, CHANGE_ID)
        self.assertNotIn(self._change_id(vm, key), (None, c0))

        writes = [(300 * units.Ki, os.urandom(100)),
                  (600 * units.Ki, os.urandom(70 * units.Ki))]
        for offset, data in writes:
            vcsim_fixture.seed_disk(self.vcsim, path, data, offset=offset)
        s1, c1 = self._snapshot(vm, key, 'cbt-1')
        expected = [_blocks(300 * units.Ki, 100),
                    _blocks(600 * units.Ki, 70 * units.Ki)]
        self.assertEqual([(256 * units.Ki, BLOCK),
                          (576 * units.Ki, 2 * BLOCK)], expected)
        self.assertEqual(expected, self._areas(vm, key, s1, c0))
        self.assertEqual([], self._areas(vm, key, s1, c1))
        # "*": the blocks holding data as of the snapshot.
        self.assertEqual(
            _nonzero_areas(vcsim_fixture.read_disk(self.vcsim, path)),
            self._areas(vm, key, s1, '*'))

        # Written after s1: s1's answers stay; s2 sees only the new block.
        vcsim_fixture.seed_disk(self.vcsim, path, os.urandom(10),
                                offset=300 * units.Ki)
        vcsim_fixture.seed_disk(self.vcsim, path, bytes(units.Mi),
                                zeros=True)
        s2, c2 = self._snapshot(vm, key, 'cbt-2')
        self.assertEqual(expected, self._areas(vm, key, s1, c0))
        self.assertEqual([(0, units.Mi)], self._areas(vm, key, s2, c1))
        self.assertEqual([], self._areas(vm, key, s2, '*'))
        self.assertEqual(units.Mi * b'\0',
                         vcsim_fixture.read_disk(self.vcsim, path))

    def test_extend_resets_tracking_and_answers_come_in_pieces(self):
        vm, key, path = self._vm(1)
        self._enable(vm)
        _s0, c0 = self._snapshot(vm, key, 'cbt-0')
        dc = self.session.invoke_api(vim_util, 'get_objects',
                                     self.session.vim, 'Datacenter',
                                     1).objects[0].obj
        self._task('ExtendVirtualDisk_Task',
                   self.session.vim.service_content.virtualDiskManager,
                   name=path, datacenter=dc,
                   newCapacityKb=6 * units.Gi // units.Ki)
        live = self._change_id(vm, key)
        self.assertNotEqual(c0.split('/')[0], live.split('/')[0])
        s1, c1 = self._snapshot(vm, key, 'cbt-1')
        # vSphere's answer to a changeId of before the reset.
        error = self.assertRaises(vexc.FileFaultException, self._areas,
                                  vm, key, s1, c0)
        self.assertIn('epoch', str(error))

        vcsim_fixture.seed_disk(self.vcsim, path, os.urandom(4096),
                                offset=5 * units.Gi + units.Mi)
        vcsim_fixture.seed_disk(self.vcsim, path, os.urandom(4096))
        s2, _c2 = self._snapshot(vm, key, 'cbt-2')
        areas, calls = vcsim_fixture.query_changed_disk_areas(
            self.session, vm, key, c1, snapshot=s2)
        self.assertEqual([(0, BLOCK), (5 * units.Gi + units.Mi, BLOCK)],
                         areas)
        self.assertEqual(2, calls)  # 4 GiB, then 2 GiB

    def test_power_on_is_a_stun_cycle_and_disabling_stops(self):
        vm, key, _path = self._vm(2)
        self._enable(vm)
        self.assertIsNone(self._change_id(vm, key))
        self._task('PowerOnVM_Task', vm)
        self.addCleanup(self._task, 'PowerOffVM_Task', vm)
        live = self._change_id(vm, key)
        self.assertRegex(live, CHANGE_ID)
        self._enable(vm, False)
        self.assertIsNone(self._change_id(vm, key))
        self.assertRaises(vexc.FileFaultException, self._areas, vm, key,
                          None, live)

    def test_no_tracking_no_answer(self):
        vm, key, _path = self._vm(3)
        s0, c0 = self._snapshot(vm, key, 'untracked')
        self.assertIsNone(c0)
        self.assertRaises(vexc.FileFaultException, self._areas, vm, key,
                          s0, '*')

    def test_seed_disk_refuses_unknown_disks_and_overflows(self):
        _vm, _key, path = self._vm(3)
        self.assertRaisesRegex(
            vcsim_fixture.VcsimError, 'HTTP 404', vcsim_fixture.seed_disk,
            self.vcsim, '[LocalDS_0] none/none.vmdk', b'x')
        self.assertRaisesRegex(
            vcsim_fixture.VcsimError, 'HTTP 400', vcsim_fixture.seed_disk,
            self.vcsim, path, b'x' * 10, offset=units.Mi - 5)
        self.assertEqual(units.Mi,
                         len(vcsim_fixture.read_disk(self.vcsim, path)))
