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

import dataclasses
import os
import types
import uuid

import fixtures
from oslo_vmware import exceptions as vexc
import testtools

from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import leftovers
from cinder_vmdk_backup.vmware import nfc
from tests.unit import test_ownership
from tests.unit.vmware import fakes


def vm_list(*names):
    objects = [types.SimpleNamespace(
        obj=fakes.moref(name),
        propSet=[types.SimpleNamespace(name='name', val=name)])
        for name in names]
    return types.SimpleNamespace(objects=objects)


class TempVmTestCase(testtools.TestCase):

    def setUp(self):
        super(TempVmTestCase, self).setUp()
        self.proc = self.useFixture(test_ownership.FakeProc())
        self.here = ownership.Owner('host-a', 'boot-1', 'pid:[4026531836]',
                                    os.getpid(), 500)
        # A live worker of this host, and one that was killed.
        self.proc.add(4242, 1000)
        self.live = dataclasses.replace(self.here, pid=4242, start_time=1000)
        self.dead = dataclasses.replace(self.here, pid=4343, start_time=7)
        self.reused = dataclasses.replace(self.here, pid=4242, start_time=9)
        self.rebooted = dataclasses.replace(self.live, boot_id='boot-0')
        self.other_host = dataclasses.replace(self.dead, host='host-b')
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.ownership.PROC', self.proc.path))
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.ownership.current', lambda *a: self.here))

    def name(self, owner):
        return leftovers.temp_vm_name(str(uuid.uuid4()), owner)

    def test_name_round_trip_and_length(self):
        volume_id = str(uuid.uuid4())
        name = leftovers.temp_vm_name(volume_id, self.live)
        place, pid, tag, volume = leftovers.parse_temp_vm_name(name)
        self.assertEqual((self.here.place_tag(), 4242, self.live.tag(),
                          volume_id), (place, pid, tag, volume))
        longest = dataclasses.replace(self.live, pid=4194304)
        self.assertLessEqual(len(leftovers.temp_vm_name(volume_id,
                                                        longest)), 80)

    def test_default_owner_is_this_process(self):
        name = leftovers.temp_vm_name(str(uuid.uuid4()))
        self.assertEqual(os.getpid(), leftovers.parse_temp_vm_name(name)[1])
        self.assertFalse(leftovers.is_leftover(name))

    def test_only_names_of_gone_owners_are_leftovers(self):
        here = self.here
        self.assertFalse(leftovers.is_leftover(self.name(self.live), here))
        self.assertFalse(leftovers.is_leftover(self.name(here), here))
        self.assertTrue(leftovers.is_leftover(self.name(self.dead), here))
        self.assertTrue(leftovers.is_leftover(self.name(self.reused), here))
        self.assertTrue(leftovers.is_leftover(self.name(self.rebooted),
                                              here))
        self.assertFalse(leftovers.is_leftover(self.name(self.other_host),
                                               here))
        # An older release's name (node, epoch, volume) names no process.
        old = 'cvb-tmp-0123abcd-1700000000-%s' % uuid.uuid4()
        self.assertIsNone(leftovers.parse_temp_vm_name(old))
        self.assertFalse(leftovers.is_leftover(old, here))
        self.assertFalse(leftovers.is_leftover('volume-1', here))
        self.assertFalse(leftovers.is_leftover(None, here))

    def test_remove_temp_vms(self):
        old = 'cvb-tmp-0123abcd-1700000000-%s' % uuid.uuid4()
        names = ['volume-1', self.name(self.dead), self.name(self.live),
                 self.name(self.other_host), self.name(self.reused), old,
                 self.name(self.rebooted)]
        locked = names[4]
        results = [vm_list(*names[:3]), vm_list(*names[3:]), None]
        session = fakes.FakeSession(handlers={
            'get_objects': lambda *a, **k: results.pop(0),
            'continue_retrieval': lambda *a, **k: results.pop(0)})

        def destroy(ref):
            if ref.value == locked:
                raise vexc.VimException('locked')
            return fakes.moref('task', 'Task')

        session.handlers['Destroy_Task'] = destroy
        logs = self.useFixture(fixtures.FakeLogger())
        removed = leftovers.remove_temp_vms(session, 100, self.here)
        self.assertEqual([names[1], names[6]], removed)
        destroyed = [c[1] for c in session.calls if c[0] == 'Destroy_Task']
        self.assertEqual([names[1], names[4], names[6]], destroyed)
        self.assertIn(old, logs.output)
        self.assertIn('older release', logs.output)


class LeaseJanitorTestCase(testtools.TestCase):

    def setUp(self):
        super(LeaseJanitorTestCase, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.logs = self.useFixture(fixtures.FakeLogger())

    def dead_record(self, value):
        """A lease record its (killed) owner left: lock free."""
        record = ownership.Record(self.dir, nfc.LEASE_RECORD_KIND,
                                  {'type': 'HttpNfcLease', 'value': value,
                                   'what': 'import of %s' % value})
        # Closing the descriptor without removing the file is what a kill
        # does.
        os.close(record._fd)
        record._fd = None
        return record.path

    def test_aborts_leases_of_gone_owners_only(self):
        dead = self.dead_record('lease-1')
        live = ownership.Record(self.dir, nfc.LEASE_RECORD_KIND,
                                {'type': 'HttpNfcLease', 'value': 'lease-2',
                                 'what': 'export of vm-2'})
        self.addCleanup(live.release)
        session = fakes.FakeSession()
        self.assertEqual(['import of lease-1'],
                         leftovers.abort_leases(session, self.dir))
        self.assertEqual([('HttpNfcLeaseAbort', 'lease-1', {})],
                         session.calls)
        self.assertFalse(os.path.exists(dead))
        self.assertTrue(os.path.exists(live.path))

    def test_lease_vcenter_no_longer_knows(self):
        dead = self.dead_record('lease-1')
        session = fakes.FakeSession(handlers={
            'HttpNfcLeaseAbort': vexc.ManagedObjectNotFoundException()})
        self.assertEqual([], leftovers.abort_leases(session, self.dir))
        self.assertFalse(os.path.exists(dead))

    def test_lease_finished_already(self):
        dead = self.dead_record('lease-1')
        session = fakes.FakeSession(handlers={
            'HttpNfcLeaseAbort': _fault('InvalidState')})
        self.assertEqual([], leftovers.abort_leases(session, self.dir))
        self.assertFalse(os.path.exists(dead))

    def test_abort_failure_keeps_the_record(self):
        dead = self.dead_record('lease-1')
        session = fakes.FakeSession(handlers={
            'HttpNfcLeaseAbort': _fault('HostCommunication')})
        self.assertEqual([], leftovers.abort_leases(session, self.dir))
        self.assertTrue(os.path.exists(dead))
        self.assertIn('Could not abort', self.logs.output)
        # It is tried again at the next start.
        session = fakes.FakeSession()
        leftovers.abort_leases(session, self.dir)
        self.assertFalse(os.path.exists(dead))


def _fault(name):
    return vexc.VimFaultException([name], 'fault %s' % name)
