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

"""Routing decisions of the plugin's BackupManager.

Cinder's own ``continue_backup`` / ``_run_restore`` are replaced by autospec
mocks whose side effects look at what Cinder's code would see while they
run: the backup service ``self.service(context)`` builds, what
``_attach_device`` returns, what ``_detach_device`` does.
"""

import logging
import threading
from unittest import mock

from cinder import objects

objects.register_all()

from cinder.backup import manager as cinder_manager  # noqa: E402
import ddt  # noqa: E402
import fixtures  # noqa: E402
from oslo_config import fixture as config_fixture  # noqa: E402
from oslotest import base  # noqa: E402

from cinder_vmdk_backup.backup import cinder_internals  # noqa: E402
from cinder_vmdk_backup.backup import driver_loader  # noqa: E402
from cinder_vmdk_backup.backup import driver_owned  # noqa: E402
from cinder_vmdk_backup.backup import manager  # noqa: E402
from cinder_vmdk_backup import malloc_tuning  # noqa: E402
from cinder_vmdk_backup.plans import runner as plan_runner  # noqa: E402

VOLUME_HOST = 'node1@fast#pool1'


class FakeBackupService(object):
    """Stands for the configured backup service class (posix, swift...)."""

    support_force_delete = True

    def __init__(self, context):
        self.context = context

    def backup(self, backup, volume_file, backup_metadata=False):
        raise AssertionError('the real service must not be called here')

    def restore(self, backup, volume_id, volume_file, volume_is_new):
        raise AssertionError('the real service must not be called here')


class ProtocolDriver(driver_owned.DriverOwnedBackupMixin):
    pass


def _fake_base_init(self, *args, **kwargs):
    self.service = FakeBackupService


@ddt.ddt
class BackupManagerTestCase(base.BaseTestCase):

    def setUp(self):
        super(BackupManagerTestCase, self).setUp()
        self.conf = self.useFixture(config_fixture.Config(manager.CONF))
        self._patch(cinder_manager.BackupManager, '__init__',
                    side_effect=_fake_base_init)
        self.base_continue = self._patch(cinder_manager.BackupManager,
                                         'continue_backup')
        self.base_run_restore = self._patch(cinder_manager.BackupManager,
                                            '_run_restore')
        self.base_attach = self._patch(
            cinder_manager.BackupManager, '_attach_device',
            return_value={'conn': {}, 'connector': mock.sentinel.connector,
                          'device': {'path': '/dev/sdx'}})
        self.base_detach = self._patch(cinder_manager.BackupManager,
                                       '_detach_device')
        self.driver_for = self._patch(driver_loader.BackendDrivers,
                                      'driver_for', return_value=None)
        self.driver = mock.create_autospec(ProtocolDriver, instance=True)
        self.tune_malloc = self._patch(malloc_tuning, 'apply',
                                       return_value=[])
        # Cinder's methods are mocks here: the check of the real ones is
        # cinder_internals' test.
        self.check = self._patch(cinder_internals, 'check_and_report',
                                 return_value=True)
        self.manager = manager.BackupManager()
        self.ctxt = mock.sentinel.context
        self.backup = objects.Backup(id='b0000000-0000-4000-8000-000000000001')
        self.volume = objects.Volume(id='a0000000-0000-4000-8000-00000000000a',
                                     host=VOLUME_HOST, size=1)

    def _patch(self, obj, name, **kwargs):
        patcher = mock.patch.object(obj, name, autospec=True, **kwargs)
        self.addCleanup(patcher.stop)
        return patcher.start()

    @ddt.data(True, False)
    def test_malloc_tuned_unless_turned_off(self, tune):
        self.conf.config(driver_owned_backup_tune_malloc=tune)
        self.tune_malloc.reset_mock()
        manager.BackupManager()
        self.assertEqual(tune, self.tune_malloc.called)

    def _device(self, snapshot=False):
        device = objects.BackupDeviceInfo()
        if snapshot:
            device.snapshot = objects.Snapshot(
                id='c0000000-0000-4000-8000-00000000000c',
                volume=self.volume)
        else:
            device.volume = self.volume
        return device

    def _seen_by_cinder(self, method, *args):
        """Record what Cinder's code sees while ``method`` runs."""
        seen = {}

        def side_effect(mgr, context, *rest):
            seen['service'] = mgr.service(context)
            seen['attach'] = mgr._attach_device(context, self.volume,
                                                {}, False)
            mgr._detach_device(context, seen['attach'], self.volume, {})
            return mock.sentinel.result

        method.side_effect = side_effect
        return seen

    # -- continue_backup -------------------------------------------------

    @ddt.data(False, True)
    def test_backup_of_stock_volume_is_cinders(self, snapshot):
        device = self._device(snapshot)
        seen = self._seen_by_cinder(self.base_continue)
        result = self.manager.continue_backup(self.ctxt, self.backup, device)
        self.assertIs(mock.sentinel.result, result)
        self.base_continue.assert_called_once_with(
            self.manager, self.ctxt, self.backup, device)
        self.driver_for.assert_called_once_with(mock.ANY, self.volume)
        self.assertIsInstance(seen['service'], FakeBackupService)
        self.assertIs(self.base_attach.return_value, seen['attach'])
        self.base_detach.assert_called_once()

    @ddt.data(False, True)
    def test_backup_of_driver_owned_volume(self, snapshot):
        """The device Cinder chose, snapshot or volume, reaches the driver."""
        self.driver_for.return_value = self.driver
        device = self._device(snapshot)
        seen = self._seen_by_cinder(self.base_continue)
        self.manager.continue_backup(self.ctxt, self.backup, device)
        self.driver_for.assert_called_once_with(mock.ANY, self.volume)
        service = seen['service']
        self.assertIsInstance(service, manager.DriverOwnedBackupService)
        self.assertTrue(seen['attach']['driver_owned'])
        self.assertIsInstance(seen['attach']['device']['path'],
                              manager.DriverOwnedDevice)
        self.base_attach.assert_not_called()
        self.base_detach.assert_not_called()

        updates = service.backup(self.backup, mock.sentinel.file)
        self.driver.backup_volume.assert_called_once_with(
            self.ctxt, self.backup, mock.ANY, backup_device=device)
        real_service = self.driver.backup_volume.call_args[0][2]
        self.assertIsInstance(real_service, FakeBackupService)
        self.assertIs(self.driver.backup_volume.return_value, updates)
        # Anything else is the real service's.
        self.assertTrue(service.support_force_delete)
        # Outside the operation, Cinder's behaviour again.
        self.assertIsInstance(self.manager.service(self.ctxt),
                              FakeBackupService)

    def test_backup_disabled_does_not_look_at_drivers(self):
        self.conf.config(driver_owned_backup_enabled=False)
        self.driver_for.return_value = self.driver
        seen = self._seen_by_cinder(self.base_continue)
        self.manager.continue_backup(self.ctxt, self.backup, self._device())
        self.driver_for.assert_not_called()
        self.assertIsInstance(seen['service'], FakeBackupService)

    def test_routing_error_falls_back_to_cinder(self):
        self.driver_for.side_effect = RuntimeError('db gone')
        seen = self._seen_by_cinder(self.base_continue)
        self.manager.continue_backup(self.ctxt, self.backup, self._device())
        self.assertIsInstance(seen['service'], FakeBackupService)
        self.base_attach.assert_called_once()

    def test_job_ends_when_cinders_code_raises(self):
        self.driver_for.return_value = self.driver
        self.base_continue.side_effect = IOError('copy failed')
        self.assertRaises(IOError, self.manager.continue_backup,
                          self.ctxt, self.backup, self._device())
        self.assertIsNone(cinder_internals.current_operation())
        self.assertIsInstance(self.manager.service(self.ctxt),
                              FakeBackupService)

    # -- _run_restore ------------------------------------------------------

    @ddt.data(True, False)
    def test_restore_of_driver_owned_volume(self, volume_is_new):
        self.driver_for.return_value = self.driver
        seen = self._seen_by_cinder(self.base_run_restore)
        self.manager._run_restore(self.ctxt, self.backup, self.volume,
                                  volume_is_new)
        self.base_run_restore.assert_called_once_with(
            self.manager, self.ctxt, self.backup, self.volume, volume_is_new)
        self.base_attach.assert_not_called()
        seen['service'].restore(self.backup, self.volume.id,
                                mock.sentinel.file, volume_is_new)
        self.driver.restore_backup.assert_called_once_with(
            self.ctxt, self.backup, self.volume, mock.ANY,
            volume_is_new=volume_is_new)
        self.assertIsInstance(self.driver.restore_backup.call_args[0][3],
                              FakeBackupService)

    def test_restore_of_stock_volume_is_cinders(self):
        seen = self._seen_by_cinder(self.base_run_restore)
        self.manager._run_restore(self.ctxt, self.backup, self.volume, True)
        self.assertIsInstance(seen['service'], FakeBackupService)
        self.base_attach.assert_called_once()
        self.base_detach.assert_called_once()

    # -- pieces ------------------------------------------------------------

    @ddt.data('read', 'write', 'seek', 'tell', 'fileno')
    def test_placeholder_device_cannot_be_used(self, method):
        device = manager.DriverOwnedDevice(self.volume)
        self.assertRaises(IOError, getattr(device, method), 1)

    def test_concurrent_operations_do_not_share_the_job(self):
        """A stock backup running beside a driver-owned one stays stock."""
        self.driver_for.side_effect = (
            lambda drivers, volume: self.driver
            if volume.host == VOLUME_HOST else None)
        inside = threading.Event()
        release = threading.Event()
        seen = {}

        def owned(mgr, context, backup, device):
            inside.set()
            release.wait(10)
            seen['owned'] = mgr.service(context)

        def stock(mgr, context, backup, device):
            seen['stock'] = mgr.service(context)

        stock_volume = objects.Volume(id=self.volume.id, size=1,
                                      host='node1@lvm#pool')
        stock_device = objects.BackupDeviceInfo()
        stock_device.volume = stock_volume
        self.base_continue.side_effect = owned
        worker = threading.Thread(
            target=self.manager.continue_backup,
            args=(self.ctxt, self.backup, self._device()))
        worker.start()
        self.assertTrue(inside.wait(10))
        self.base_continue.side_effect = stock
        self.manager.continue_backup(self.ctxt, self.backup, stock_device)
        release.set()
        worker.join(10)
        self.assertIsInstance(seen['stock'], FakeBackupService)
        self.assertIsInstance(seen['owned'],
                              manager.DriverOwnedBackupService)

    def test_service_wrapper_marks_the_driver_called(self):
        job = manager._Job(self.driver, self.ctxt)
        service = manager.DriverOwnedBackupService(
            FakeBackupService(self.ctxt), job)
        self.assertFalse(job.driver_called)
        service.restore(self.backup, 'vol', mock.sentinel.file, False)
        self.assertTrue(job.driver_called)

    # -- a Cinder that does not match ----------------------------------------

    def _mismatched_manager(self):
        self.check.return_value = False
        self.driver_for.return_value = self.driver
        return manager.BackupManager()

    def test_mismatched_cinder_backups_take_cinders_path(self):
        mgr = self._mismatched_manager()
        self.assertIs(FakeBackupService, mgr.service)
        seen = self._seen_by_cinder(self.base_continue)
        device = self._device()
        mgr.continue_backup(self.ctxt, self.backup, device)
        self.base_continue.assert_called_once_with(
            mgr, self.ctxt, self.backup, device)
        self.driver_for.assert_not_called()
        self.assertIsInstance(seen['service'], FakeBackupService)
        self.assertIs(self.base_attach.return_value, seen['attach'])
        self.base_detach.assert_called_once()
        self.driver.backup_volume.assert_not_called()

    def test_mismatched_cinder_restores_take_cinders_path(self):
        mgr = self._mismatched_manager()
        seen = self._seen_by_cinder(self.base_run_restore)
        mgr._run_restore(self.ctxt, self.backup, self.volume, True)
        self.base_run_restore.assert_called_once_with(
            mgr, self.ctxt, self.backup, self.volume, True)
        self.driver_for.assert_not_called()
        self.assertIsInstance(seen['service'], FakeBackupService)
        self.base_attach.assert_called_once()

    def test_mismatched_cinder_arguments_pass_through(self):
        """A Cinder whose signatures changed still runs its own path."""
        calls = []

        def continue_backup(mgr, context, backup, backup_device,
                            new_argument=None):
            calls.append((context, backup, backup_device, new_argument))

        self.useFixture(fixtures.MockPatchObject(
            cinder_manager.BackupManager, 'continue_backup',
            continue_backup))
        mgr = self._mismatched_manager()
        device = self._device()
        mgr.continue_backup(self.ctxt, self.backup, device, new_argument=1)
        self.assertEqual([(self.ctxt, self.backup, device, 1)], calls)


class StartupCheckTestCase(base.BaseTestCase):
    """The manager checks Cinder's internals once and says so once."""

    def setUp(self):
        super(StartupCheckTestCase, self).setUp()
        for name, value in (('_checked', None), ('_reported', False)):
            self.useFixture(fixtures.MonkeyPatch(
                cinder_internals.__name__ + '.' + name, value))
        patcher = mock.patch.object(cinder_manager.BackupManager, '__init__',
                                    autospec=True,
                                    side_effect=_fake_base_init)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.useFixture(fixtures.MockPatchObject(
            malloc_tuning, 'apply', autospec=True, return_value=[]))
        self.log = self.useFixture(fixtures.FakeLogger(level=logging.ERROR))

    def _check(self, problems):
        # Cinder's __init__ is a mock here: the check of the real one is
        # cinder_internals' test.
        self.useFixture(fixtures.MockPatchObject(
            cinder_internals, 'check', autospec=True,
            return_value=problems))

    def test_matching_cinder_is_hooked_silently(self):
        self._check([])
        mgr = manager.BackupManager()
        self.assertEqual('', self.log.output)
        self.assertIsNot(FakeBackupService, mgr.service)
        self.assertIs(FakeBackupService, mgr._backup_service_class)

    def test_renamed_target_one_error_and_cinders_path(self):
        self._check(['cinder.backup.manager.BackupManager._attach_device '
                     'is missing'])
        managers = [manager.BackupManager() for _ in range(2)]
        self.assertEqual(1, self.log.output.count('\n'), self.log.output)
        self.assertIn('Driver-owned backup is disabled', self.log.output)
        self.assertIn('BackupManager._attach_device is missing',
                      self.log.output)
        for mgr in managers:
            self.assertIs(FakeBackupService, mgr.service)
            self.assertIsNone(mgr._driver_for(mock.sentinel.volume))


@ddt.ddt
class StartTestCase(base.BaseTestCase):
    """init_host: leftovers at start, interrupted restores told."""

    def setUp(self):
        super(StartTestCase, self).setUp()
        self.conf = self.useFixture(config_fixture.Config(manager.CONF))
        self.addCleanup(mock.patch.stopall)
        mock.patch.object(cinder_manager.BackupManager, '__init__',
                          autospec=True, side_effect=_fake_base_init).start()
        self.base_init_host = mock.patch.object(
            cinder_manager.BackupManager, 'init_host', autospec=True).start()
        self.base_cleanup = mock.patch.object(
            cinder_manager.BackupManager, '_cleanup_one_backup',
            autospec=True).start()
        self.load = mock.patch.object(
            driver_loader.BackendDrivers, 'load_configured', autospec=True,
            return_value=['node1@fast']).start()
        self.driver_for = mock.patch.object(
            driver_loader.BackendDrivers, 'driver_for', autospec=True,
            return_value=mock.sentinel.driver).start()
        mock.patch.object(malloc_tuning, 'apply', autospec=True).start()
        mock.patch.object(cinder_internals, 'check_and_report',
                          autospec=True, return_value=True).start()
        self.runner_class = mock.patch.object(
            plan_runner, 'PlanRunner', autospec=True).start()
        self.runner = self.runner_class.return_value
        self.runner.ready.return_value = None
        self.manager = manager.BackupManager()
        self.manager.message_api = mock.Mock()
        self.manager.host = 'node1'
        self.logs = self.useFixture(fixtures.FakeLogger())
        atexit_register = mock.patch.object(manager.atexit, 'register',
                                            autospec=True).start()
        self.atexit = atexit_register

    def test_init_host_starts_the_plan_runner_last(self):
        order = mock.Mock()
        self.base_init_host.side_effect = lambda *a, **k: order.cinder()
        self.runner.start.side_effect = order.runner
        self.manager.init_host()
        self.assertEqual([mock.call.cinder(), mock.call.runner()],
                         order.mock_calls)
        self.runner_class.assert_called_once_with('node1',
                                                  backup_service=mock.ANY)
        # Retention's synthetic fulls use this node's backup driver.
        factory = self.runner_class.call_args.kwargs['backup_service']
        with mock.patch.object(self.manager, 'service',
                               create=True) as service:
            self.assertIs(service.return_value,
                          factory(mock.sentinel.context))
        service.assert_called_once_with(context=mock.sentinel.context)
        self.assertIs(self.runner, self.manager.plan_runner)
        self.atexit.assert_called_once_with(self.manager.stop_plan_runner)
        self.manager.stop_plan_runner()
        self.runner.stop.assert_called_once_with(timeout=5)

    def test_no_plan_runner_without_its_database(self):
        self.runner.ready.return_value = 'OperationalError: no such table'
        self.manager.init_host()
        self.runner.start.assert_not_called()
        self.assertIn('no such table', self.logs.output)
        self.assertIn('cinder-vmdk-backup-manage db sync', self.logs.output)
        self.manager.stop_plan_runner()  # nothing to stop
        self.atexit.assert_not_called()

    def test_a_plan_runner_that_cannot_start_does_not_stop_the_service(self):
        self.runner.start.side_effect = RuntimeError('no thread')
        self.manager.init_host()
        self.assertIn('no thread', self.logs.output)
        self.assertIsNone(getattr(self.manager, 'plan_runner', None))

    def test_init_host_sets_up_every_driver_owned_backend(self):
        self.conf.config(host='node1')
        self.manager.init_host(added_to_cluster=None)
        self.base_init_host.assert_called_once_with(self.manager,
                                                    added_to_cluster=None)
        self.load.assert_called_once_with(self.manager._backend_drivers,
                                          'node1', cluster_name=None)
        self.assertIn('node1@fast', self.logs.output)

    def test_init_host_when_disabled(self):
        self.conf.config(driver_owned_backup_enabled=False)
        self.manager.init_host()
        self.base_init_host.assert_called_once_with(self.manager)
        self.load.assert_not_called()

    def test_init_host_survives_a_failure(self):
        self.load.side_effect = RuntimeError('boom')
        self.manager.init_host()
        self.assertIn('boom', self.logs.output)

    def _restoring(self, volume_status='error_restoring'):
        backup = objects.Backup(id='b0000000-0000-4000-8000-000000000001',
                                status='restoring',
                                restore_volume_id='a0000000-0000-4000-8000-'
                                                  '00000000000a')
        volume = objects.Volume(id=backup.restore_volume_id,
                                host=VOLUME_HOST, status=volume_status,
                                user_id='u1', project_id='p1')
        mock.patch.object(objects.Volume, 'get_by_id', autospec=True,
                          return_value=volume).start()
        return backup, volume

    def test_interrupted_driver_owned_restore_is_told(self):
        backup, volume = self._restoring()
        self.manager._cleanup_one_backup(mock.sentinel.ctxt, backup)
        self.base_cleanup.assert_called_once_with(
            self.manager, mock.sentinel.ctxt, backup)
        self.assertIn("The volume's data is intact", self.logs.output)
        self.assertIn(volume.id, self.logs.output)
        create = self.manager.message_api.create
        create.assert_called_once_with(
            mock.ANY, manager.message_field.Action.BACKUP_RESTORE,
            resource_uuid=volume.id,
            detail=manager.message_field.Detail.BACKUP_RESTORE_ERROR)
        user_context = create.call_args[0][0]
        self.assertEqual(('u1', 'p1'), (user_context.user_id,
                                        user_context.project_id))

    @ddt.data('stock', 'not-reset', 'creating')
    def test_nothing_told_otherwise(self, case):
        backup, volume = self._restoring(
            'restoring-backup' if case == 'not-reset' else 'error_restoring')
        if case == 'stock':
            self.driver_for.return_value = None
        if case == 'creating':
            backup.status = 'creating'
        self.manager._cleanup_one_backup(mock.sentinel.ctxt, backup)
        self.manager.message_api.create.assert_not_called()
        self.assertNotIn('intact', self.logs.output)
