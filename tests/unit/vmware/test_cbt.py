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

from oslo_utils import units
from oslo_vmware import exceptions as vexc
import testtools

from cinder_vmdk_backup.vmware import cbt
from cinder_vmdk_backup.vmware import vmsnapshot
from tests.unit.vmware import fakes

GIB = units.Gi
CHANGE_ID = '52 aa bb cc dd ee ff 00-11 22 33 44 55 66 77 88/7'


def backup(volume_id='vol-1', size=1, metadata=None, backup_id='b-new'):
    return types.SimpleNamespace(id=backup_id, volume_id=volume_id,
                                 size=size, metadata=metadata or {})


def disk(change_id=CHANGE_ID, capacity=GIB, key=2000):
    return fakes.vobj('VirtualDisk', key=key, capacityInBytes=capacity,
                      backing=types.SimpleNamespace(changeId=change_id))


def answer(start, length, areas):
    return types.SimpleNamespace(
        startOffset=start, length=length,
        changedArea=[types.SimpleNamespace(start=s, length=n)
                     for s, n in areas])


class QueryTestCase(testtools.TestCase):

    def _session(self, answers):
        answers = list(answers)

        def query(vm, snapshot=None, deviceKey=None, startOffset=None,
                  changeId=None):
            result = answers.pop(0)
            if isinstance(result, Exception):
                raise result
            return result

        return fakes.FakeSession(handlers={'QueryChangedDiskAreas': query})

    def _query(self, session, capacity=GIB, change_id=CHANGE_ID):
        snapshot = fakes.moref('snap-1', 'VirtualMachineSnapshot')
        return cbt.changed_areas(session, fakes.moref('vm-1'), snapshot,
                                 2000, capacity, change_id)

    def test_loops_until_capacity_and_merges(self):
        half = GIB // 2
        session = self._session([
            answer(0, half, [(0, 65536), (65536, 65536), (half - 65536,
                                                          65536)]),
            answer(half, half, [(half, 65536), (GIB - 65536, 65536)]),
        ])
        ranges = self._query(session)
        # Adjacent areas, also across two answers, merged.
        self.assertEqual([(0, 131072), (half - 65536, 131072),
                          (GIB - 65536, 65536)], ranges)
        queries = [c for c in session.calls
                   if c[0] == 'QueryChangedDiskAreas']
        self.assertEqual([0, half],
                         [c[2]['startOffset'] for c in queries])
        self.assertEqual({CHANGE_ID}, {c[2]['changeId'] for c in queries})
        self.assertEqual({2000}, {c[2]['deviceKey'] for c in queries})
        self.assertEqual('snap-1', queries[0][2]['snapshot'].value)

    def test_no_changes(self):
        self.assertEqual([], self._query(self._session([
            answer(0, GIB, [])])))

    def test_answer_without_progress_is_refused(self):
        exc = self.assertRaises(ValueError, self._query, self._session([
            answer(0, 0, [])]))
        self.assertIn('answered for 0..0', str(exc))

    def test_area_beyond_disk_is_refused(self):
        self.assertRaises(ValueError, self._query, self._session([
            answer(0, GIB, [(GIB - 4096, 8192)])]))

    def test_areas_out_of_order_are_refused(self):
        self.assertRaises(ValueError, self._query, self._session([
            answer(0, GIB, [(65536, 65536), (0, 65536)])]))

    def test_fault_is_raised(self):
        self.assertRaises(vexc.VimFaultException, self._query,
                          self._session([vexc.VimFaultException(
                              ['FileFault'], 'bad changeId')]))


class EnableTestCase(testtools.TestCase):

    def _session(self, enabled, change_id=CHANGE_ID):
        snapshot = fakes.moref('snap-9', 'VirtualMachineSnapshot')

        def wait(task):
            return types.SimpleNamespace(result=snapshot)

        devices = fakes.vobj('ArrayOfVirtualDevice', VirtualDevice=[
            fakes.vobj('VirtualLsiLogicController', key=1000),
            disk(change_id=change_id)])
        return fakes.FakeSession(
            properties={('vm-1', 'config.changeTrackingEnabled'): enabled,
                        ('vm-1', 'config.hardware.device'): devices},
            handlers={'wait_for_task': wait})

    def test_enable_reconfigures_and_runs_a_stun_cycle(self):
        session = self._session(False)
        self.assertTrue(cbt.enable(session, fakes.moref('vm-1')))
        self.assertEqual(['ReconfigVM_Task', 'CreateSnapshot_Task',
                          'RemoveSnapshot_Task'], session.methods())
        spec = session.calls[1][2]['spec']
        self.assertIs(True, spec.changeTrackingEnabled)
        create = [c for c in session.calls
                  if c[0] == 'CreateSnapshot_Task'][0][2]
        # Named like every snapshot of ours: the janitor removes a leftover.
        self.assertIsNotNone(vmsnapshot.parse_snapshot_name(create['name']))
        self.assertFalse(create['memory'])
        remove = [c for c in session.calls
                  if c[0] == 'RemoveSnapshot_Task'][0]
        self.assertEqual('snap-9', remove[1])

    def test_enabled_already_does_nothing(self):
        session = self._session(True)
        self.assertFalse(cbt.enable(session, fakes.moref('vm-1')))
        self.assertEqual([], session.methods())

    def test_reset_tracking_is_started_again(self):
        # On, but the disk shows no changeId (extended, relocated...).
        session = self._session(True, change_id=None)
        self.assertTrue(cbt.enable(session, fakes.moref('vm-1')))
        self.assertEqual(['CreateSnapshot_Task', 'RemoveSnapshot_Task'],
                         session.methods())

    def test_restart_runs_the_stun_cycle_only(self):
        session = self._session(True)
        self.assertTrue(cbt.enable(session, fakes.moref('vm-1'),
                                   restart=True))
        self.assertEqual(['CreateSnapshot_Task', 'RemoveSnapshot_Task'],
                         session.methods())


class TrackerTestCase(testtools.TestCase):

    def setUp(self):
        super(TrackerTestCase, self).setUp()
        self.answers = []

        def query(vm, snapshot=None, deviceKey=None, startOffset=None,
                  changeId=None):
            self.queried = changeId
            result = self.answers.pop(0)
            if isinstance(result, Exception):
                raise result
            return result

        self.session = fakes.FakeSession(
            handlers={'QueryChangedDiskAreas': query})
        self.backup = backup()

    def _tracker(self, the_disk=None, length=GIB):
        return cbt.Tracker(self.backup, length, self.session,
                           fakes.moref('vm-1'),
                           fakes.moref('snap-1', 'VirtualMachineSnapshot'),
                           the_disk or disk())

    def _parent(self, **kwargs):
        kwargs.setdefault('metadata', {cbt.CHANGE_ID_KEY: 'parent-id/3'})
        kwargs.setdefault('backup_id', 'b-parent')
        return backup(**kwargs)

    def test_changes_since_the_parent(self):
        self.answers = [answer(0, GIB, [(4 * units.Mi, 65536)])]
        tracker = self._tracker()
        self.assertEqual(CHANGE_ID, tracker.change_id)
        self.assertEqual(([(4 * units.Mi, 65536)], None),
                         tracker(self._parent()))
        self.assertEqual('parent-id/3', self.queried)

    def _reason(self, tracker, parent):
        ranges, reason = tracker(parent)
        self.assertIsNone(ranges)
        self.assertTrue(reason)
        return reason

    def test_parent_without_change_id(self):
        reason = self._reason(self._tracker(), self._parent(metadata={}))
        self.assertIn('has no changeId', reason)
        self.assertEqual([], self.session.methods())

    def test_parent_of_another_volume(self):
        reason = self._reason(self._tracker(),
                              self._parent(volume_id='vol-2'))
        self.assertIn('of another volume (vol-2)', reason)

    def test_parent_of_another_size(self):
        reason = self._reason(self._tracker(length=2 * GIB),
                              self._parent(size=1))
        self.assertIn('size changed', reason)

    def test_disk_without_change_id(self):
        reason = self._reason(self._tracker(disk(change_id=None)),
                              self._parent())
        self.assertIn('no changeId in the backup\'s snapshot', reason)

    def test_disk_of_another_capacity(self):
        reason = self._reason(self._tracker(disk(capacity=GIB // 2)),
                              self._parent())
        self.assertIn('holds %d bytes' % (GIB // 2), reason)

    def test_change_id_refused_by_vcenter(self):
        self.answers = [vexc.VimFaultException(['FileFault'],
                                               'Error caused by file')]
        reason = self._reason(self._tracker(), self._parent())
        self.assertIn('tracking was reset', reason)
        self.assertIn('parent-id/3', reason)
        self.assertIn('Error caused by file', reason)

    def test_nonsense_answer(self):
        self.answers = [answer(0, GIB, [(GIB, 65536)])]
        reason = self._reason(self._tracker(), self._parent())
        self.assertIn('beyond the disk', reason)

    def test_off(self):
        tracker = cbt.Tracker.off(self.backup, GIB, 'tracking is off')
        self.assertEqual((None, 'tracking is off'), tracker(self._parent()))
        self.assertIsNone(tracker.change_id)
        self.assertEqual([], tracker.zero_ranges())

    def test_zero_ranges_from_allocated_areas(self):
        self.answers = [answer(0, GIB, [(65536, 65536),
                                        (GIB - 65536, 65536)])]
        self.assertEqual([(0, 65536), (131072, GIB - 196608)],
                         self._tracker().zero_ranges())
        self.assertEqual('*', self.queried)

    def test_zero_ranges_not_asked_once_the_changes_are_known(self):
        self.answers = [answer(0, GIB, [(4 * units.Mi, 65536)])]
        tracker = self._tracker()
        tracker(self._parent())
        queries = self.session.methods()
        self.assertEqual([], tracker.zero_ranges())
        self.assertEqual(queries, self.session.methods())

    def test_zero_ranges_asked_when_the_changes_are_in_doubt(self):
        # A full read (the parent's changeId refused): the allocated
        # areas spare reading the rest.
        self.answers = [vexc.VimFaultException(['FileFault'], 'reset'),
                        answer(0, GIB, [(0, 65536)])]
        tracker = self._tracker()
        self._reason(tracker, self._parent())
        self.assertEqual([(65536, GIB - 65536)], tracker.zero_ranges())
        self.assertEqual('*', self.queried)

    def test_zero_ranges_unknown_when_the_query_fails(self):
        self.answers = [vexc.VimFaultException(['RuntimeFault'], 'x')]
        self.assertEqual([], self._tracker().zero_ranges())

    def test_zero_ranges_unknown_without_tracking(self):
        self.assertEqual([], self._tracker(disk(change_id=None))
                         .zero_ranges())
        self.assertEqual([], self.session.methods())


class TrackedSourceTestCase(testtools.TestCase):

    def test_forwards_and_adds(self):
        inner = types.SimpleNamespace(fill=lambda view: 5, size=10)
        tracker = cbt.Tracker.off(backup(), GIB, 'why')
        source = cbt.TrackedSource(inner, tracker)
        self.assertEqual(5, source.fill(None))
        self.assertEqual(10, source.size)
        self.assertFalse(hasattr(source, 'read_at'))
        self.assertEqual((None, 'why'), source.changed_ranges(backup()))
        self.assertEqual([], source.zero_ranges())

    def test_source_zero_ranges_win(self):
        inner = types.SimpleNamespace(zero_ranges=lambda: [(0, 1)])
        source = cbt.TrackedSource(inner, cbt.Tracker.off(backup(), GIB,
                                                          'why'))
        self.assertEqual([(0, 1)], source.zero_ranges())

    def test_record_keeps_other_metadata(self):
        saved = []
        the_backup = backup(metadata={'disk_profile:hw_version': 'vmx-13'})
        the_backup.save = lambda: saved.append(dict(the_backup.metadata))
        cbt.record(the_backup, CHANGE_ID)
        self.assertEqual([{'disk_profile:hw_version': 'vmx-13',
                           cbt.CHANGE_ID_KEY: CHANGE_ID}], saved)
