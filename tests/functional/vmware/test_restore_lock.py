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

"""The backing locked during a restore, against vcsim (patch 0016).

vcsim's ``AuthorizationManager.DisableMethods`` makes a disabled method fail
with ``MethodDisabled`` for every session, as vCenter does. The restores
run in worker processes (:mod:`tests.functional.vmware.worker`, with their
own vCenter session), held in the middle of their import by vcsim's NFC
fault injection; the test's own session plays "someone else in vCenter":

* a power on and a snapshot of the backing are refused during the restore
  (``MethodDisabled``, source: Cinder's extension) and work after it; the
  restore itself swaps the disk into the locked backing;
* a restore that fails (in the import, in the swap) leaves nothing locked;
* a vCenter that refuses the lock fails the restore before data moves;
* a restore killed while it holds the lock: the next start enables the
  methods again;
* a restore that creates the backing locks it once it exists (its extend);
* vCenter unreachable at the end of a restore (:mod:`.netcut` between the
  plugin and vcsim): the restore keeps its outcome, the methods stay
  disabled while vCenter cannot be reached, and are enabled by the
  driver's periodic re-enable once it can, without a restart.
"""

import glob
import os
import signal
import time

import fixtures
from oslo_utils import units
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

from cinder_vmdk_backup.vmware import diskswap
from cinder_vmdk_backup.vmware import recovery_lock
from cinder_vmdk_backup.volume.drivers import vmdk
from tests.functional.vmware import netcut
from tests.functional.vmware import test_backup_faults as faults
from tests.functional.vmware import test_backup_flows as flows
from tests.functional.vmware import test_janitor as janitor

LOCKED = set(recovery_lock.METHODS)


class RestoreLockTestCase(flows.VmdkBackupTestBase):

    # The worker processes' world, as the janitor's tests build it.
    _db_copy = janitor.JanitorTestCase._db_copy
    _query = janitor.JanitorTestCase._query
    _worker_conf = janitor.JanitorTestCase._worker_conf
    _worker = janitor.JanitorTestCase._worker
    _start_stalled_restore = janitor.JanitorTestCase._start_stalled_restore

    def setUp(self):
        super(RestoreLockTestCase, self).setUp()
        self.override_config('backup_file_size', 32 * units.Mi)
        self.lock_path = self._dir('locks')
        self.disk = flows.Disk(regions=faults.BIG_REGIONS, random=True)
        source = self._vmdk_volume(disk=self.disk)
        self.backup = self._backup(source)
        self.backup.host = janitor.BACKUP_HOST
        self.backup.save()
        self.changed = flows.Disk(seed=b'changed')
        self.target = self._vmdk_volume(disk=self.changed)
        self.target_path = self._vmdk_path(self.target)
        self.backing = self._backing(self.target)

    # -- someone else in vCenter ------------------------------------------

    def _disabled(self, vm_ref=None):
        value = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim,
            vm_ref or self.backing, 'disabledMethod')
        if value is None:
            return set()
        return set(getattr(value, 'string', value) or [])

    def _wait_locked(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._disabled() == LOCKED:
                return
            time.sleep(0.1)
        self.fail('backing not locked in %d s: %s' % (timeout,
                                                      self._disabled()))

    def _task(self, method, vm_ref=None, **kwargs):
        task = self.session.invoke_api(self.session.vim, method,
                                       vm_ref or self.backing, **kwargs)
        return self.session.wait_for_task(task)

    def _snapshot(self):
        return self._task('CreateSnapshot_Task', name='someone-else',
                          description='', memory=False, quiesce=False)

    def _assert_refused(self, func):
        exc = self.assertRaises(vexc.VimFaultException, func)
        self.assertIn('MethodDisabled', exc.fault_list)
        self.assertIn(recovery_lock.SOURCE_ID, str(exc.details or exc))
        return exc

    def _assert_usable(self):
        """No method left disabled: power on, snapshot, back as it was."""
        self.assertEqual(set(), self._disabled())
        self._task('PowerOnVM_Task')
        self._task('PowerOffVM_Task')
        info = self._snapshot()
        self._task('RemoveSnapshot_Task', info.result,
                   removeChildren=False)

    def _records(self):
        return glob.glob(os.path.join(
            self.staging_dir,
            'cvb-owner-%s-*' % recovery_lock.RECORD_KIND))

    # -- the tests -----------------------------------------------------------

    def test_power_on_and_snapshot_refused_during_restore(self):
        db = self._db_copy('restorer')
        restoring = self._start_stalled_restore(db)
        self._wait_locked()
        self.assertEqual(1, len(self._records()))
        self._assert_refused(lambda: self._task('PowerOnVM_Task'))
        self._assert_refused(self._snapshot)
        self._assert_refused(lambda: self._task('Destroy_Task'))

        self.vcsim.clear_faults()
        self.assertEqual('done', restoring.next_line(),
                         restoring.log_text()[-3000:])
        self.assertEqual(0, restoring.process.wait())
        log = restoring.log_text()
        # The restore swapped its disk into the locked backing.
        self.assertIn('Opened ReconfigVM_Task of %s'
                      % self.backing.value, log)
        self.assertIn('Unlocked %s' % self.backing.value, log)
        self.assertEqual([('available',)], self._query(
            db, 'SELECT status FROM volumes WHERE id = ?', self.target.id))
        new_path = self._vmdk_path(self.target)
        self.assertNotEqual(self.target_path, new_path)
        self._assert_data(self.disk, self.target, new_path)
        self.assertEqual([], self._records())
        self._assert_usable()
        self.assertNotIn(self.vcsim.password, log)

    def _assert_failed_cleanly(self):
        self.assertEqual('error_restoring', self.target.status)
        self._assert_data(self.changed, self.target, self.target_path)
        self._assert_nothing_left()
        self._assert_usable()

    def test_unlocked_when_the_import_fails(self):
        self.vcsim.set_nfc_fault(fail_after_bytes=4 * units.Mi, count=1)
        self.addCleanup(self.vcsim.clear_faults)
        self._restore(self.backup, self.target, fail=True)
        self.assertIn('Locked %s' % self.backing.value, self.logs.output)
        self._assert_failed_cleanly()

    def test_unlocked_when_the_swap_fails(self):
        # The swap's attach: the backing's own reconfiguration, made while
        # the lock has ReconfigVM_Task open.
        real = diskswap._reconfigure
        seen = []

        def reconfigure(session, vm_ref, changes):
            if vm_ref.value == self.backing.value:
                seen.append(self._disabled())
                raise vexc.VimException('injected attach fault')
            return real(session, vm_ref, changes)

        self._patch(diskswap, '_reconfigure', side_effect=reconfigure)
        self._restore(self.backup, self.target, fail=True)
        self.assertIn('injected attach fault', str(self.error))
        self.assertEqual([LOCKED - {recovery_lock.RECONFIGURE}], seen)
        self._assert_failed_cleanly()

    def test_refused_lock_fails_before_data_moves(self):
        self.vcsim.set_method_fault('DisableMethods', 'NoPermission',
                                    message='Global.DisableMethods')
        self.addCleanup(self.vcsim.clear_faults)
        files = self._vmdk_files()
        leases = list(self.leases)  # the backup's export
        self._restore(self.backup, self.target, fail=True)
        self.assertIn('vmware_backup_restore_lock', str(self.error))
        self.assertEqual(leases, self.leases)  # no import began
        self.assertEqual(files, self._vmdk_files())
        self._assert_failed_cleanly()

    def test_killed_restore_unlocked_at_next_start(self):
        db = self._db_copy('shared')
        restoring = self._start_stalled_restore(db)
        self._wait_locked()
        os.kill(restoring.pid, signal.SIGKILL)
        restoring.process.wait()
        # What a killed restore leaves, until a start cleans it up.
        self.assertEqual(LOCKED, self._disabled())
        self.assertEqual(1, len(self._records()))
        self._assert_refused(lambda: self._task('PowerOnVM_Task'))

        start = self._worker('next-start', 'start', db)
        self.assertEqual('done', start.next_line())
        log = start.log_text()
        self.assertIn('of %s again (restore into volume %s)'
                      % (self.backing.value, self.target.id), log)
        self.assertEqual([], self._records())
        self._assert_data(self.changed, self.target, self.target_path)
        self._assert_usable()
        self.assertNotIn(self.vcsim.password, log)

    def test_new_backing_locked_once_it_exists(self):
        bigger = self._vmdk_volume(size=2, backing=False, status='creating')
        real = vmdk.VMwareVcVmdkBackupDriver._extend_if_needed
        seen = []

        def extend(driver, volume, backing):
            seen.append(self._disabled(backing))
            return real(driver, volume, backing)

        self._patch(vmdk.VMwareVcVmdkBackupDriver, '_extend_if_needed',
                    side_effect=extend)
        self._restore(self.backup, bigger)
        self.assertEqual('available', bigger.status)
        self.assertEqual([LOCKED], seen)
        self.backing = self._backing(bigger)
        self._assert_data(self.disk.resized(2 * units.Gi), bigger)
        self._assert_nothing_left()
        self._assert_usable()


class UnreachableAtTheEndTestCase(flows.VmdkBackupTestBase):
    """The plugin reaches vcsim through a forwarder the test cuts."""

    _disabled = RestoreLockTestCase._disabled
    _task = RestoreLockTestCase._task
    _snapshot = RestoreLockTestCase._snapshot
    _assert_refused = RestoreLockTestCase._assert_refused
    _assert_usable = RestoreLockTestCase._assert_usable
    _records = RestoreLockTestCase._records

    def _write_conf(self):
        # Before the manager's and the test's drivers are made: they
        # connect through the forwarder.
        self.net = self.useFixture(netcut.Forwarder(self.vcsim.host,
                                                    self.vcsim.port))
        direct = self.vcsim.cinder_backend_options

        def options():
            return dict(direct(), vmware_host_port=self.net.port)

        self.useFixture(fixtures.MockPatchObject(
            self.vcsim, 'cinder_backend_options', options))
        super(UnreachableAtTheEndTestCase, self)._write_conf()

    def setUp(self):
        super(UnreachableAtTheEndTestCase, self).setUp()
        self.override_config('backup_file_size', 32 * units.Mi)
        self.disk = flows.Disk(regions=faults.BIG_REGIONS, random=True)
        self.backup = self._backup(self._vmdk_volume(disk=self.disk))
        self.target = self._vmdk_volume(disk=flows.Disk(seed=b'changed'))
        self.backing = self._backing(self.target)
        # "Someone else in vCenter", and the test's checks: straight to
        # vcsim, whatever the forwarder does.
        self.session = self.vcsim.session()
        self.assertGreater(self.net.connections, 0)

    def test_methods_enabled_again_once_vcenter_answers(self):
        self.useFixture(fixtures.MockPatchObject(
            recovery_lock, 'ENABLE_RETRY_DELAYS', (0.5,)))
        self.useFixture(fixtures.MockPatchObject(
            recovery_lock, 'REENABLE_INTERVAL', 1.0))
        real = recovery_lock.enable
        cuts = []

        def enable(session, entities, methods,
                   source_id=recovery_lock.SOURCE_ID):
            if tuple(methods) == recovery_lock.METHODS and not cuts:
                # The restore's end: vCenter goes out of reach.
                cuts.append(time.monotonic())
                self.net.cut()
            return real(session, entities, methods, source_id)

        self._patch(recovery_lock, 'enable', side_effect=enable)
        self._restore(self.backup, self.target)
        # The restore keeps its outcome; the lock could not be released.
        self.assertEqual('available', self.target.status)
        self.assertEqual(1, len(cuts))
        log = self.logs.output
        self.assertIn('Trying again in 0.5 s', log)
        self.assertIn('tries again every 1 s', log)
        self.assertEqual(LOCKED, self._disabled())
        self.assertEqual(1, len(self._records()))
        self._assert_refused(lambda: self._task('PowerOnVM_Task'))
        # Passes while vCenter is out of reach change nothing.
        deadline = time.monotonic() + 30
        while (log.count('Could not enable the methods of VM') < 1 and
               time.monotonic() < deadline):
            time.sleep(0.2)
            log = self.logs.output
        self.assertIn('Could not enable the methods of VM %s'
                      % self.backing.value, log)
        self.assertEqual(LOCKED, self._disabled())
        self.assertEqual(1, len(self._records()))

        self.net.restore()
        deadline = time.monotonic() + 60
        while self._records() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertEqual([], self._records())
        self.assertIn('of %s again (restore into volume %s)'
                      % (self.backing.value, self.target.id),
                      self.logs.output)
        self._assert_data(self.disk, self.target)
        self._assert_usable()
        self.assertNotIn(self.vcsim.password, self.logs.output)
