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

import glob
import json
import os
import stat
import threading
import time
import types
from unittest import mock

import fixtures
from oslo_vmware import api
from oslo_vmware import exceptions as vexc
import testtools

from cinder_vmdk_backup import exception
from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import recovery_lock
from tests.unit.vmware import fakes

ALL = list(recovery_lock.METHODS)


def _fault(name):
    return vexc.VimFaultException([name], 'fault %s' % name)


class Vim(object):
    """The vim service's two SOAP calls, recorded; ``handlers`` answer."""

    def __init__(self, calls, handlers):
        self.calls = calls
        self.handlers = handlers
        self.client = types.SimpleNamespace(factory=fakes._Factory())
        self.service_content = types.SimpleNamespace(
            authorizationManager=fakes.moref('AuthorizationManager',
                                             'AuthorizationManager'))

    def _call(self, name, manager, **kwargs):
        self.calls.append((name, manager.value, kwargs))
        handler = self.handlers.get(name)
        if isinstance(handler, Exception):
            raise handler
        if handler is not None:
            return handler(manager, **kwargs)

    def DisableMethods(self, manager, **kwargs):
        return self._call('DisableMethods', manager, **kwargs)

    def EnableMethods(self, manager, **kwargs):
        return self._call('EnableMethods', manager, **kwargs)


def make_session(test):
    """An autospec'd VMwareAPISession whose invoke_api calls through."""
    test.soap, test.handlers = [], {}
    session = mock.create_autospec(api.VMwareAPISession, instance=True)
    session.vim = Vim(test.soap, test.handlers)
    session.invoke_api.side_effect = (
        lambda module, method, *a, **k: getattr(module, method)(*a, **k))
    return session


class RecoveryLockTestCase(testtools.TestCase):

    def setUp(self):
        super(RecoveryLockTestCase, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.logs = self.useFixture(fixtures.FakeLogger())
        self.session = make_session(self)
        self.vms = [fakes.moref('vm-1'), fakes.moref('vm-7')]
        self.sleep = self.useFixture(fixtures.MockPatchObject(
            recovery_lock.time, 'sleep', autospec=True)).mock

    def records(self):
        return glob.glob(os.path.join(
            self.dir, 'cvb-owner-%s-*' % recovery_lock.RECORD_KIND))

    def lock(self, **kwargs):
        return recovery_lock.RecoveryLock(self.session, self.vms, self.dir,
                                          'restore into volume v-1',
                                          **kwargs)

    def calls(self, method):
        return [c[2] for c in self.soap if c[0] == method]

    def test_lock_and_unlock(self):
        seen = []

        def disable(ref, **kwargs):
            # The record exists, private, before anything is disabled.
            paths = self.records()
            self.assertEqual(1, len(paths))
            self.assertEqual(0o600, stat.S_IMODE(os.stat(paths[0]).st_mode))
            with open(paths[0]) as f:
                seen.append(json.load(f)['data'])
            return None

        self.handlers['DisableMethods'] = disable
        with self.lock():
            self.assertEqual([], self.calls('EnableMethods'))
        (kwargs,) = self.calls('DisableMethods')
        self.assertEqual(self.vms, kwargs['entity'])
        self.assertEqual(ALL, [r.method for r in kwargs['method']])
        self.assertEqual({recovery_lock.REASON_ID},
                         {r.reasonId for r in kwargs['method']})
        self.assertEqual('org.openstack.storage', kwargs['sourceId'])
        self.assertEqual([{'entity': self.vms, 'method': ALL,
                           'sourceId': 'org.openstack.storage'}],
                         self.calls('EnableMethods'))
        self.assertEqual([], self.records())
        self.assertEqual(
            [{'type': 'VirtualMachine', 'value': 'vm-1'},
             {'type': 'VirtualMachine', 'value': 'vm-7'}],
            seen[0]['entities'])
        self.assertEqual(ALL, seen[0]['methods'])
        self.assertIn('Locked vm-1, vm-7', self.logs.output)

    def test_unlocked_when_the_restore_fails(self):
        def restore():
            with self.lock():
                raise RuntimeError('import failed')

        self.assertRaises(RuntimeError, restore)
        self.assertEqual(1, len(self.calls('EnableMethods')))
        self.assertEqual([], self.records())

    def test_refused_lock_fails_before_anything(self):
        self.handlers['DisableMethods'] = _fault('NoPermission')
        exc = self.assertRaises(exception.VmdkBackupError,
                                self.lock().__enter__)
        self.assertIn('Global.DisableMethods', str(exc))
        self.assertIn('vmware_backup_restore_lock', str(exc))
        self.assertEqual([], self.calls('EnableMethods'))
        self.assertEqual([], self.records())

    def test_lost_answer_enables_and_leaves_record_for_janitor(self):
        self.handlers['DisableMethods'] = (
            vexc.VimConnectionException('connection reset'))
        self.handlers['EnableMethods'] = (
            vexc.VimConnectionException('connection reset'))
        self.assertRaises(exception.VmdkBackupError, self.lock().__enter__)
        self.assertEqual(1, len(self.records()))
        del self.handlers['EnableMethods']
        self.assertEqual(['restore into volume v-1'],
                         recovery_lock.enable_leftovers(self.session,
                                                        self.dir))
        self.assertEqual([], self.records())

    def test_failed_unlock_keeps_record_and_janitor_retries(self):
        with self.lock():
            self.handlers['EnableMethods'] = _fault('HostComm')
        self.assertIn('Could not enable the methods', self.logs.output)
        self.assertEqual(1, len(self.records()))
        # A live process's janitor (any start) takes the record over.
        del self.handlers['EnableMethods']
        self.soap[:] = []
        self.assertEqual(['restore into volume v-1'],
                         recovery_lock.enable_leftovers(self.session,
                                                        self.dir))
        self.assertEqual(['vm-1', 'vm-7'],
                         [c[2]['entity'][0].value for c in
                          self.soap if c[0] == 'EnableMethods'])
        self.assertEqual([], self.records())

    def _failing(self, times, error=None):
        """EnableMethods fails ``times`` times, then answers."""
        failures = [error or vexc.VimConnectionException('unreachable')
                    ] * times

        def enable(manager, **kwargs):
            if failures:
                raise failures.pop()
        self.handlers['EnableMethods'] = enable

    def test_unlock_tried_again_until_vcenter_answers(self):
        with self.lock() as lock:
            self._failing(2)
        self.assertEqual(3, len(self.calls('EnableMethods')))
        self.assertEqual([mock.call(2.0), mock.call(5.0)],
                         self.sleep.call_args_list)
        self.assertFalse(lock.left_behind)
        self.assertEqual([], self.records())
        self.assertIn('Trying again in 2.0 s', self.logs.output)
        self.assertIn('Unlocked vm-1, vm-7', self.logs.output)

    def test_unlock_given_up_after_the_delays_leaves_the_record(self):
        with self.lock() as lock:
            self._failing(3)
        self.assertEqual(3, len(self.calls('EnableMethods')))
        self.assertEqual(2, self.sleep.call_count)
        self.assertTrue(lock.left_behind)
        self.assertEqual(1, len(self.records()))
        self.assertEqual(1, recovery_lock.pending(self.dir))
        self.assertIn('This service tries again every 60 s',
                      self.logs.output)
        # The record is let go of (not held): the janitor can take it.
        self.assertEqual(['restore into volume v-1'],
                         recovery_lock.enable_leftovers(self.session,
                                                        self.dir))
        self.assertEqual(0, recovery_lock.pending(self.dir))

    def test_unlock_of_a_gone_vm_enables_the_others(self):
        def enable(manager, entity, **kwargs):
            if 'vm-7' in [e.value for e in entity]:
                raise vexc.ManagedObjectNotFoundException('gone')
        self.handlers['EnableMethods'] = None
        with self.lock() as lock:
            self.handlers['EnableMethods'] = enable
        self.assertEqual([['vm-1', 'vm-7'], ['vm-1'], ['vm-7']],
                         [[e.value for e in c['entity']]
                          for c in self.calls('EnableMethods')])
        self.assertFalse(lock.left_behind)
        self.sleep.assert_not_called()
        self.assertEqual([], self.records())

    def test_lock_held_now_is_not_pending(self):
        with self.lock():
            self.assertEqual(0, recovery_lock.pending(self.dir))

    def test_opened_enables_one_method_for_a_step(self):
        with self.lock() as lock:
            with lock.opened(recovery_lock.RECONFIGURE, 'NotLocked_Task'):
                self.assertEqual(
                    [['ReconfigVM_Task']],
                    [c['method'] for c in self.calls('EnableMethods')])
                # Nested: already open.
                with lock.opened(recovery_lock.RECONFIGURE):
                    pass
                self.assertEqual(1, len(self.calls('EnableMethods')))
            disabled = self.calls('DisableMethods')
            self.assertEqual([ALL, ['ReconfigVM_Task']],
                             [[r.method for r in c['method']]
                              for c in disabled])
        self.assertEqual(ALL, self.calls('EnableMethods')[-1]['method'])

    def test_opened_disables_again_when_the_step_fails(self):
        with self.lock() as lock:
            def step():
                with lock.opened(recovery_lock.RECONFIGURE):
                    raise vexc.VimException('swap failed')

            self.assertRaises(vexc.VimException, step)
            self.assertEqual(2, len(self.calls('DisableMethods')))

    def test_opened_without_lock_does_nothing(self):
        lock = self.lock()
        with lock.opened(recovery_lock.RECONFIGURE):
            pass
        self.assertEqual([], self.soap)
        self.session.invoke_api.assert_not_called()


class JanitorTestCase(testtools.TestCase):

    def setUp(self):
        super(JanitorTestCase, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.logs = self.useFixture(fixtures.FakeLogger())
        self.session = make_session(self)

    def record(self, what, *vms, dead=True):
        record = ownership.Record(self.dir, recovery_lock.RECORD_KIND, {
            'entities': [{'type': 'VirtualMachine', 'value': vm}
                         for vm in vms],
            'methods': ['PowerOnVM_Task', 'Destroy_Task'],
            'source': 'org.openstack.storage', 'what': what})
        if dead:
            # What a kill does: the descriptor closed, the file left.
            os.close(record._fd)
            record._fd = None
        else:
            self.addCleanup(record.release)
        return record.path

    def enabled(self):
        return [(c[2]['entity'][0].value, c[2]['method'], c[2]['sourceId'])
                for c in self.soap if c[0] == 'EnableMethods']

    def test_enables_what_gone_owners_left_locked(self):
        dead = self.record('restore into volume v-1', 'vm-1', 'vm-2')
        live = self.record('restore into volume v-3', 'vm-3', dead=False)
        self.assertEqual(['restore into volume v-1'],
                         recovery_lock.enable_leftovers(self.session,
                                                        self.dir))
        methods = ['PowerOnVM_Task', 'Destroy_Task']
        self.assertEqual([('vm-1', methods, 'org.openstack.storage'),
                          ('vm-2', methods, 'org.openstack.storage')],
                         self.enabled())
        self.assertFalse(os.path.exists(dead))
        self.assertTrue(os.path.exists(live))
        self.assertIn('Enabled PowerOnVM_Task, Destroy_Task of vm-1, vm-2',
                      self.logs.output)

    def test_vm_a_live_restore_holds_stays_locked(self):
        dead = self.record('restore into volume v-1', 'vm-1', 'vm-2')
        self.record('restore into volume v-1', 'vm-1', dead=False)
        recovery_lock.enable_leftovers(self.session, self.dir)
        self.assertEqual(['vm-2'], [e[0] for e in self.enabled()])
        self.assertFalse(os.path.exists(dead))

    def test_vm_gone_needs_nothing(self):
        dead = self.record('restore into volume v-1', 'vm-1')
        self.handlers['EnableMethods'] = (
            vexc.ManagedObjectNotFoundException())
        recovery_lock.enable_leftovers(self.session, self.dir)
        self.assertFalse(os.path.exists(dead))

    def test_failure_keeps_the_record(self):
        dead = self.record('restore into volume v-1', 'vm-1')
        self.handlers['EnableMethods'] = _fault('HostComm')
        self.assertEqual([], recovery_lock.enable_leftovers(self.session,
                                                            self.dir))
        self.assertTrue(os.path.exists(dead))
        self.assertIn('Could not enable the methods of VM vm-1',
                      self.logs.output)
        del self.handlers['EnableMethods']
        recovery_lock.enable_leftovers(self.session, self.dir)
        self.assertFalse(os.path.exists(dead))

    def test_no_directory(self):
        self.assertEqual([], recovery_lock.enable_leftovers(
            self.session, os.path.join(self.dir, 'missing')))


class ReenablerTestCase(testtools.TestCase):

    def setUp(self):
        super(ReenablerTestCase, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.logs = self.useFixture(fixtures.FakeLogger())
        self.session = make_session(self)
        self.vms = [fakes.moref('vm-1')]

    def _left_lock(self):
        """A restore whose unlock failed: its record let go of."""
        self.handlers['EnableMethods'] = _fault('HostComm')
        with mock.patch.object(recovery_lock, 'ENABLE_RETRY_DELAYS', ()):
            with recovery_lock.RecoveryLock(self.session, self.vms,
                                            self.dir, 'restore v-1') as lock:
                pass
        self.assertTrue(lock.left_behind)

    def _wait_stopped(self, reenabler, timeout=10):
        deadline = time.monotonic() + timeout
        while reenabler.running and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertFalse(reenabler.running)

    def test_passes_until_nothing_waits(self):
        self._left_lock()
        answers = [_fault('HostComm'), None]

        def enable(manager, **kwargs):
            answer = answers.pop(0) if answers else None
            if answer is not None:
                raise answer
        self.handlers['EnableMethods'] = enable
        self.soap[:] = []
        reenabler = recovery_lock.Reenabler(lambda: self.session, self.dir,
                                            interval=0.01)
        self.addCleanup(reenabler.stop, 5)
        reenabler.kick()
        self._wait_stopped(reenabler)
        self.assertEqual(2, len([c for c in self.soap
                                 if c[0] == 'EnableMethods']))
        self.assertEqual(0, recovery_lock.pending(self.dir))
        self.assertEqual([], os.listdir(self.dir))
        self.assertIn('Enabled PowerOnVM_Task', self.logs.output)

    def test_one_thread_and_stop(self):
        self._left_lock()
        reenabler = recovery_lock.Reenabler(lambda: self.session, self.dir,
                                            interval=30)
        reenabler.kick()
        reenabler.kick()
        self.assertTrue(reenabler.running)
        self.assertEqual(1, len([t for t in threading.enumerate()
                                 if t.name == 'cvb-restore-lock-reenable']))
        reenabler.stop(5)
        self.assertFalse(reenabler.running)
        # Stopped before its first pass: the record still waits.
        self.assertEqual(1, recovery_lock.pending(self.dir))

    def test_a_failing_pass_goes_on(self):
        self._left_lock()
        session = mock.Mock(side_effect=[RuntimeError('no session'),
                                         self.session])
        del self.handlers['EnableMethods']
        reenabler = recovery_lock.Reenabler(session, self.dir, interval=0.01)
        self.addCleanup(reenabler.stop, 5)
        reenabler.kick()
        self._wait_stopped(reenabler)
        self.assertIn('Could not enable the methods that restores left '
                      'disabled: no session', self.logs.output)
        self.assertEqual(0, recovery_lock.pending(self.dir))
