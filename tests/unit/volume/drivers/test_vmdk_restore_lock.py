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

"""The VMDK driver's restores hold the recovery lock."""

import os
import types
from unittest import mock

from cinder import objects

objects.register_all()

import fixtures  # noqa: E402

from cinder_vmdk_backup.backup import driver_owned  # noqa: E402
from cinder_vmdk_backup import exception  # noqa: E402
from cinder_vmdk_backup.vmware import diskswap  # noqa: E402
from cinder_vmdk_backup.vmware import leftovers  # noqa: E402
from cinder_vmdk_backup.vmware import recovery_lock  # noqa: E402
from cinder_vmdk_backup.vmware import upload  # noqa: E402
from cinder_vmdk_backup.volume.drivers import vmdk  # noqa: E402
from tests.unit.volume.drivers import test_vmdk  # noqa: E402

moref = test_vmdk.moref


class RestoreLockTestCase(test_vmdk.DriverTestBase):

    def setUp(self):
        super(RestoreLockTestCase, self).setUp()
        self.events = []
        self.disable = self.useFixture(fixtures.MockPatchObject(
            recovery_lock, 'disable', autospec=True)).mock
        self.disable.side_effect = (
            lambda s, vms, methods, source_id=None: self.events.append(
                ('disable', [v.value for v in vms], list(methods))))
        self.enable = self.useFixture(fixtures.MockPatchObject(
            recovery_lock, 'enable', autospec=True)).mock
        self.enable.side_effect = (
            lambda s, vms, methods, source_id=None: self.events.append(
                ('enable', [v.value for v in vms], list(methods))))
        self.instances = self.useFixture(fixtures.MockPatchObject(
            vmdk.VMwareVcVmdkBackupDriver, '_instance_vms',
            autospec=True)).mock
        self.instances.return_value = []
        self.vops.snapshot_exists.side_effect = (
            lambda ref: self.events.append(('check', ref.value)) or False)

    def _restore(self):
        service = mock.Mock()
        with mock.patch.object(driver_owned.DriverOwnedBackupMixin,
                               'restore_backup', autospec=True) as parent:
            parent.side_effect = lambda *a, **k: self.events.append(
                ('restore',))
            self.driver.restore_backup(self.ctx, self.backup, self.volume,
                                       service)
        return parent

    @mock.patch.object(vmdk.vmsnapshot, 'vm_state', autospec=True)
    def test_lock_held_around_checks_and_restore(self, vm_state):
        vm_state.return_value = ('instance-vm', 'poweredOff', None)
        self.vops.get_backing.return_value = moref('vm-1')
        self.instances.return_value = [('inst-1', moref('vm-inst'))]
        self._restore()
        methods = list(recovery_lock.METHODS)
        self.assertEqual([
            ('disable', ['vm-1', 'vm-inst'], methods),
            ('check', 'vm-1'), ('check', 'vm-inst'), ('restore',),
            ('enable', ['vm-1', 'vm-inst'], methods)], self.events)
        self.assertEqual({}, self.driver._restore_locks)
        self.assertEqual([], os.listdir(self.tmp))

    def test_refused_restore_unlocks(self):
        self.vops.get_backing.return_value = moref('vm-1')
        self.vops.snapshot_exists.side_effect = None
        self.vops.snapshot_exists.return_value = True
        self.assertRaises(exception.VmdkBackupError, self._restore)
        self.assertEqual(['disable', 'enable'],
                         [e[0] for e in self.events])
        self.assertEqual([], os.listdir(self.tmp))

    @mock.patch.object(recovery_lock, 'ENABLE_RETRY_DELAYS', ())
    @mock.patch.object(recovery_lock, 'Reenabler', autospec=True)
    def test_unlock_failure_starts_the_reenabler(self, reenabler):
        self.vops.get_backing.return_value = moref('vm-1')
        self.enable.side_effect = recovery_lock.vexc.VimConnectionException(
            'vCenter unreachable')
        self._restore()
        self.assertIn('Could not enable the methods', self.logs.output)
        reenabler.assert_called_once_with(mock.ANY, self.tmp)
        session_of = reenabler.call_args[0][0]
        self.assertIs(self.driver.session, session_of())
        reenabler.return_value.kick.assert_called_once_with()
        # A second failure kicks the same one.
        self._restore()
        self.assertEqual(1, reenabler.call_count)
        self.assertEqual(2, reenabler.return_value.kick.call_count)

    @mock.patch.object(recovery_lock, 'Reenabler', autospec=True)
    def test_unlocked_restore_starts_nothing(self, reenabler):
        self.vops.get_backing.return_value = moref('vm-1')
        self._restore()
        reenabler.assert_not_called()

    def test_lock_refused_fails_before_data_moves(self):
        self.vops.get_backing.return_value = moref('vm-1')
        self.disable.side_effect = recovery_lock.vexc.NoPermissionException(
            'no Global.DisableMethods')
        exc = self.assertRaises(exception.VmdkBackupError, self._restore)
        self.assertIn('vmware_backup_restore_lock', str(exc))
        self.assertEqual([], self.events)

    def test_option_off(self):
        self.config.vmware_backup_restore_lock = False
        self.vops.get_backing.return_value = moref('vm-1')
        self._restore()
        self.assertEqual([('check', 'vm-1'), ('restore',)], self.events)

    def test_no_backing_nothing_to_lock(self):
        self.vops.get_backing.return_value = None
        self._restore()
        self.assertEqual([('restore',)], self.events)

    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, '_extend_if_needed',
                       autospec=True)
    @mock.patch.object(diskswap, 'swap_disk', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    def test_swap_opens_reconfigure_only(self, import_disk, swap, extend):
        backing = moref('vm-1')
        self.vops.get_backing.return_value = backing
        self.vops.get_summary.return_value = types.SimpleNamespace(
            name='ds1')
        self.vops.get_vmdk_path.return_value = '[ds1] volume-x/volume-x.vmdk'
        import_disk.side_effect = lambda *a, **k: self.events.append(
            ('import',)) or moref('vm-temp')
        swap.side_effect = lambda *a, **k: self.events.append(('swap',))
        extend.side_effect = lambda *a: self.events.append(('extend',))
        self.vops.delete_backing.side_effect = (
            lambda ref: self.events.append(('destroy', ref.value)))

        def restore(driver, context, backup, volume, service, **kwargs):
            path = os.path.join(self.tmp, 'image')
            with open(path, 'wb') as f:
                f.write(b'x' * 4096)
            driver.restore_raw_image(context, backup, volume, path)

        with mock.patch.object(driver_owned.DriverOwnedBackupMixin,
                               'restore_backup', autospec=True) as parent:
            parent.side_effect = restore
            self.driver.restore_backup(self.ctx, self.backup, self.volume,
                                       mock.Mock())
        methods = list(recovery_lock.METHODS)
        self.assertEqual([
            ('disable', ['vm-1'], methods), ('check', 'vm-1'),
            ('check', 'vm-1'), ('import',),
            ('enable', ['vm-1'], ['ReconfigVM_Task']),
            ('swap',),
            ('disable', ['vm-1'], ['ReconfigVM_Task']),
            # The temporary VM is not locked: destroyed as ever.
            ('destroy', 'vm-temp'),
            ('extend',),
            ('enable', ['vm-1'], methods)], self.events)

    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, '_extend_if_needed',
                       autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver,
                       '_select_ds_for_volume', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    def test_new_backing_locked_once_it_exists(self, import_disk, select,
                                               extend):
        self.vops.get_backing.return_value = None
        select.return_value = ('h', 'rp', 'f',
                               types.SimpleNamespace(name='ds1'))
        import_disk.side_effect = lambda *a, **k: self.events.append(
            ('import',)) or moref('vm-new')
        extend.side_effect = lambda *a: self.events.append(('extend',))
        path = os.path.join(self.tmp, 'image')
        with open(path, 'wb') as f:
            f.write(b'x' * 4096)
        self.driver.restore_raw_image(self.ctx, self.backup, self.volume,
                                      path)
        methods = list(recovery_lock.METHODS)
        self.assertEqual([('import',), ('disable', ['vm-new'], methods),
                          ('extend',), ('enable', ['vm-new'], methods)],
                         self.events)
        self.assertEqual([], [n for n in os.listdir(self.tmp)
                              if n.startswith('cvb-owner-')])

    @mock.patch.object(recovery_lock, 'enable_leftovers', autospec=True)
    @mock.patch.object(leftovers, 'remove_temp_vms', autospec=True)
    @mock.patch.object(leftovers, 'abort_leases', autospec=True)
    def test_janitor_enables_left_locks(self, abort, remove_vms, enable):
        calls = []
        abort.side_effect = lambda *a: calls.append('leases')
        remove_vms.side_effect = lambda *a: calls.append('vms')
        enable.side_effect = lambda *a: calls.append('locks')
        self.driver.remove_leftovers()
        self.assertEqual(['leases', 'locks', 'vms'], calls)
        enable.assert_called_once_with(self.driver.session, self.tmp)

    @mock.patch.object(recovery_lock, 'Reenabler', autospec=True)
    @mock.patch.object(recovery_lock, 'pending', autospec=True)
    @mock.patch.object(recovery_lock, 'enable_leftovers', autospec=True)
    @mock.patch.object(leftovers, 'remove_temp_vms', autospec=True)
    @mock.patch.object(leftovers, 'abort_leases', autospec=True)
    def test_janitor_leaving_records_starts_the_reenabler(
            self, abort, remove_vms, enable, pending, reenabler):
        pending.return_value = 0
        self.driver.remove_leftovers()
        reenabler.assert_not_called()
        pending.return_value = 1
        self.driver.remove_leftovers()
        pending.assert_called_with(self.tmp)
        reenabler.return_value.kick.assert_called_once_with()

    @mock.patch.object(recovery_lock, 'enable_leftovers', autospec=True)
    @mock.patch.object(leftovers, 'remove_temp_vms', autospec=True)
    @mock.patch.object(leftovers, 'abort_leases', autospec=True)
    def test_janitor_failure_does_not_stop_setup(self, abort, remove_vms,
                                                 enable):
        enable.side_effect = RuntimeError('vc down')
        self.driver.remove_leftovers()
        self.assertIn('VMs left locked by interrupted restores: vc down',
                      self.logs.output)
        remove_vms.assert_called_once_with(self.driver.session, 100)
