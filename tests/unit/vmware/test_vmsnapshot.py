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

"""Snapshot of an instance's VM (vmware/vmsnapshot.py) and its janitor."""

import dataclasses
import os
import types
from unittest import mock

import ddt
import fixtures
from oslo_vmware import exceptions as vexc
import testtools

from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import export
from cinder_vmdk_backup.vmware import leftovers
from cinder_vmdk_backup.vmware import nfc
from cinder_vmdk_backup.vmware import vmsnapshot
from tests.unit import test_ownership
from tests.unit.vmware import fakes

SETTINGS = nfc.TransferSettings(host='vc', port=443, ca_file=None,
                                insecure=True, idle_timeout=5,
                                lease_ready_timeout=5, poll_interval=0.01,
                                state_dir=None)


def disk(key, unit, file_name, disk_uuid, controller=1000):
    return fakes.vobj('VirtualDisk', key=key, controllerKey=controller,
                      unitNumber=unit, backing=fakes.vobj(
                          'VirtualDiskFlatVer2BackingInfo',
                          fileName=file_name, uuid=disk_uuid))


def config(*devices, **extra):
    options = [types.SimpleNamespace(key=k, value=v)
               for k, v in extra.items()]
    controller = fakes.vobj('VirtualLsiLogicController', key=1000,
                            busNumber=0)
    return types.SimpleNamespace(
        hardware=types.SimpleNamespace(device=[controller] + list(devices)),
        extraConfig=options)


@ddt.ddt
class FrozenVMTestCase(testtools.TestCase):

    def setUp(self):
        super(FrozenVMTestCase, self).setUp()
        self.logs = self.useFixture(fixtures.FakeLogger(level='DEBUG'))
        self.vm = fakes.moref('vm-1')
        self.snap = fakes.moref('snapshot-9', 'VirtualMachineSnapshot')
        self.disks = [disk(2000, 0, '[ds] i/root.vmdk', 'root'),
                      disk(2001, 1, '[ds] volume-a/volume-a.vmdk', 'a'),
                      disk(2002, 2, '[ds] volume-b/volume-b.vmdk', 'b')]
        # Our snapshot, the child of an older one.
        tree = types.SimpleNamespace
        self.snapshot_info = tree(rootSnapshotList=[tree(
            snapshot=fakes.moref('snapshot-1', 'VirtualMachineSnapshot'),
            childSnapshotList=[tree(snapshot=self.snap,
                                    childSnapshotList=[])])])
        self.session = fakes.FakeSession(properties={
            ('snapshot-9', 'config'): config(*self.disks,
                                             **{'volume-A': 'a'}),
            ('vm-1', 'snapshot'): self.snapshot_info})
        self.session.handlers['wait_for_task'] = (
            lambda task: types.SimpleNamespace(result=self.snap))
        self.state = {'name': 'inst', 'runtime.powerState': 'poweredOn',
                      'guest.toolsRunningStatus': 'guestToolsNotRunning'}
        self.session.handlers['get_object_properties_dict'] = (
            lambda *a, **k: dict(self.state))

    def frozen(self):
        return vmsnapshot.FrozenVM(self.session, SETTINGS, self.vm,
                                   'instance x')

    def snapshot_calls(self):
        return [c[2] for c in self.session.calls
                if c[0] == 'CreateSnapshot_Task']

    def test_names(self):
        name = vmsnapshot.snapshot_name()
        self.assertTrue(name.startswith('cvb-snap-'))
        self.assertEqual(ownership.current().pid,
                         vmsnapshot.parse_snapshot_name(name)[1])
        self.assertNotEqual(name, vmsnapshot.snapshot_name())
        for other in ('snap-1', None, 'cvb-snap-x', name + '0'):
            self.assertIsNone(vmsnapshot.parse_snapshot_name(other))

    @ddt.data(('guestToolsNotRunning', False, 'crash-consistent'),
              ('guestToolsRunning', True, 'quiesced'))
    @ddt.unpack
    def test_running_vm_snapshotted(self, tools, quiesce, consistency):
        self.state['guest.toolsRunningStatus'] = tools
        frozen = self.frozen().freeze()
        self.assertEqual(self.snap, frozen.snapshot)
        [call] = self.snapshot_calls()
        self.assertEqual((False, quiesce), (call['memory'],
                                            call['quiesce']))
        self.assertTrue(call['name'].startswith('cvb-snap-'))
        self.assertEqual(consistency, frozen.consistency)
        self.assertIsNotNone(frozen.frozen_at)

    def test_quiesce_failure_falls_back_to_crash_consistent(self):
        self.state['guest.toolsRunningStatus'] = 'guestToolsRunning'
        answers = [vexc.VimException('quiesce timed out'), None]

        def create(*args, **kwargs):
            answer = answers.pop(0)
            if answer is not None:
                raise answer
            return fakes.moref('task', 'Task')

        self.session.handlers['CreateSnapshot_Task'] = create
        frozen = self.frozen().freeze()
        self.assertEqual([True, False],
                         [c['quiesce'] for c in self.snapshot_calls()])
        self.assertEqual('crash-consistent', frozen.consistency)
        self.assertIn('quiesce timed out', self.logs.output)

    def test_snapshot_failure_without_quiesce_raises(self):
        self.session.handlers['CreateSnapshot_Task'] = vexc.VimException(
            'no')
        self.assertRaises(vexc.VimException, self.frozen().freeze)
        self.assertEqual(1, len(self.snapshot_calls()))

    @ddt.data('poweredOff', 'suspended')
    def test_vm_not_running_gets_no_snapshot(self, state):
        self.state['runtime.powerState'] = state
        frozen = self.frozen().freeze()
        self.assertIsNone(frozen.snapshot)
        self.assertEqual('not-running', frozen.consistency)
        self.assertEqual([], self.snapshot_calls())
        frozen.release()
        self.assertNotIn('RemoveSnapshot_Task', self.session.methods())

    def test_vm_not_running_snapshotted_when_asked(self):
        # A volume's backing: snapshotted for the changeId it holds.
        self.state['runtime.powerState'] = 'poweredOff'
        self.state['guest.toolsRunningStatus'] = 'guestToolsRunning'
        frozen = self.frozen().freeze(description='backup b', always=True)
        self.assertEqual(self.snap, frozen.snapshot)
        [call] = self.snapshot_calls()
        self.assertEqual((False, False, 'backup b'),
                         (call['memory'], call['quiesce'],
                          call['description']))
        self.assertIsNotNone(vmsnapshot.parse_snapshot_name(call['name']))
        self.assertIs(self.disks[2], frozen.disk_of(
            'B', '[ds] volume-b/volume-b.vmdk'))
        frozen.release()
        self.assertIn('RemoveSnapshot_Task', self.session.methods())

    def test_disk_of_by_extra_config_then_by_path(self):
        frozen = self.frozen().freeze()
        self.assertIs(self.disks[1], frozen.disk_of('A'))
        self.assertIs(self.disks[2], frozen.disk_of(
            'B', '[ds] volume-b/volume-b.vmdk'))
        self.assertRaisesRegex(errors.TransferError, 'no disk of volume C',
                               frozen.disk_of, 'C', '[ds] other.vmdk')

    def _lease(self, keys):
        lease = mock.create_autospec(nfc.NfcLease, instance=True)
        lease.what = 'export of snapshot-9'
        lease.disk_urls.return_value = [
            (key, 'https://vc/nfc/%d' % n, None) for n, key in
            enumerate(keys)]
        return lease

    def _read(self, frozen, lease, target, whole=True):
        stream = mock.Mock(at_end=whole)

        @mock.patch.object(nfc.NfcLease, 'export_snapshot', autospec=True,
                           return_value=lease)
        @mock.patch.object(export, 'read_disk_url', autospec=True)
        def run(read_disk_url, export_snapshot):
            read_disk_url.return_value.__enter__.return_value = stream
            with frozen.read_disk(target, 1024, object) as got:
                self.assertIs(stream, got)
            return read_disk_url.call_args[0][3]

        return run()

    def test_read_disk_by_device_key_then_release(self):
        frozen = self.frozen().freeze()
        lease = self._lease(['/vm-1/VirtualLsiLogicController0:%d' % u
                             for u in (0, 1, 2)])
        self.assertEqual('https://vc/nfc/2',
                         self._read(frozen, lease, self.disks[2]))
        self.assertEqual('https://vc/nfc/1',
                         self._read(frozen, lease, self.disks[1]))
        frozen.release()
        lease.complete.assert_called_once_with()
        lease.abort.assert_called_once_with()
        removes = [c for c in self.session.calls
                   if c[0] == 'RemoveSnapshot_Task']
        self.assertEqual([('RemoveSnapshot_Task', 'snapshot-9',
                           {'removeChildren': False})], removes)
        frozen.release()  # idempotent
        self.assertEqual(1, self.session.methods().count(
            'RemoveSnapshot_Task'))

    def test_keys_without_controller_fall_back_to_device_order(self):
        frozen = self.frozen().freeze()
        lease = self._lease(['disk-0', 'disk-1', 'disk-2'])
        self.assertEqual('https://vc/nfc/1',
                         self._read(frozen, lease, self.disks[1]))

    def test_partial_read_aborts_the_lease(self):
        frozen = self.frozen().freeze()
        lease = self._lease(['/vm-1/VirtualLsiLogicController0:%d' % u
                             for u in (0, 1, 2)])
        self._read(frozen, lease, self.disks[1], whole=False)
        frozen.release()
        lease.complete.assert_not_called()
        lease.abort.assert_called_once_with()
        self.assertIn('RemoveSnapshot_Task', self.session.methods())

    def test_vm_deleted_while_a_disk_is_read_is_not_kept(self):
        # Nova deleted the server during its group backup: what the read
        # delivered is not trusted, and nothing is left to remove.
        frozen = self.frozen().freeze()
        frozen.check_kept(self.disks[1])
        self.session.properties[('vm-1', 'snapshot')] = (
            vexc.ManagedObjectNotFoundException('gone'))
        exc = self.assertRaises(errors.TransferError, frozen.check_kept,
                                self.disks[1])
        self.assertIn('VM inst was deleted while disk '
                      '/VirtualLsiLogicController0:1 of instance x was '
                      'read: the data read is not trusted', str(exc))
        frozen.release()
        self.assertNotIn('RemoveSnapshot_Task', self.session.methods())
        self.assertIn('or its snapshot is gone: nothing to remove',
                      self.logs.output)

    def test_snapshot_removed_while_a_disk_is_read_is_not_kept(self):
        frozen = self.frozen().freeze()
        self.snapshot_info.rootSnapshotList[0].childSnapshotList = []
        self.assertRaisesRegex(
            errors.TransferError, 'the snapshot of VM inst was removed '
            'while disk /VirtualLsiLogicController0:2',
            frozen.check_kept, self.disks[2])
        frozen.release()
        self.assertNotIn('RemoveSnapshot_Task', self.session.methods())

    def test_vm_not_running_has_nothing_to_check(self):
        self.state['runtime.powerState'] = 'poweredOff'
        frozen = self.frozen().freeze()
        self.session.properties[('vm-1', 'snapshot')] = (
            vexc.ManagedObjectNotFoundException('gone'))
        frozen.check_kept(self.disks[1])

    def test_remove_failure_is_logged(self):
        frozen = self.frozen().freeze()
        self.session.handlers['RemoveSnapshot_Task'] = vexc.VimException(
            'busy')
        frozen.release()
        self.assertIn('removed when this service restarts',
                      self.logs.output)


class SnapshotJanitorTestCase(testtools.TestCase):

    def setUp(self):
        super(SnapshotJanitorTestCase, self).setUp()
        self.proc = self.useFixture(test_ownership.FakeProc())
        self.here = ownership.Owner('host-a', 'boot-1', 'pid:[4026531836]',
                                    os.getpid(), 500)
        self.proc.add(4242, 1000)
        self.live = dataclasses.replace(self.here, pid=4242, start_time=1000)
        self.dead = dataclasses.replace(self.here, pid=4343, start_time=7)
        self.other_host = dataclasses.replace(self.dead, host='host-b')
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.ownership.PROC', self.proc.path))

    @staticmethod
    def node(name, *children):
        return types.SimpleNamespace(
            name=name, snapshot=fakes.moref(name, 'VirtualMachineSnapshot'),
            childSnapshotList=list(children))

    def test_removes_only_snapshots_of_gone_processes(self):
        dead = [vmsnapshot.snapshot_name(self.dead) for _i in range(2)]
        live = vmsnapshot.snapshot_name(self.live)
        foreign = vmsnapshot.snapshot_name(self.other_host)
        tree = types.SimpleNamespace(rootSnapshotList=[
            self.node('user-snap', self.node(dead[0], self.node(live))),
            self.node(foreign)])
        vms = types.SimpleNamespace(objects=[
            types.SimpleNamespace(obj=fakes.moref('vm-1'), propSet=[
                types.SimpleNamespace(name='name', val='inst-1'),
                types.SimpleNamespace(name='snapshot', val=tree)]),
            types.SimpleNamespace(obj=fakes.moref('vm-2'), propSet=[
                types.SimpleNamespace(name='name', val='inst-2')])])
        other = types.SimpleNamespace(objects=[
            types.SimpleNamespace(obj=fakes.moref('vm-3'), propSet=[
                types.SimpleNamespace(name='name', val='inst-3'),
                types.SimpleNamespace(
                    name='snapshot', val=types.SimpleNamespace(
                        rootSnapshotList=[self.node(dead[1])]))])])
        results = [vms, other, None]
        session = fakes.FakeSession(handlers={
            'get_objects': lambda *a, **k: results.pop(0),
            'continue_retrieval': lambda *a, **k: results.pop(0)})

        def remove(ref, **kwargs):
            if ref.value == dead[1]:
                raise vexc.VimException('busy')
            return fakes.moref('task', 'Task')

        session.handlers['RemoveSnapshot_Task'] = remove
        logs = self.useFixture(fixtures.FakeLogger())
        removed = leftovers.remove_snapshots(session, 100, self.here)
        self.assertEqual([('inst-1', dead[0])], removed)
        self.assertEqual(
            sorted(dead), sorted(c[1] for c in session.calls
                                 if c[0] == 'RemoveSnapshot_Task'))
        self.assertIn('Could not remove leftover snapshot', logs.output)
