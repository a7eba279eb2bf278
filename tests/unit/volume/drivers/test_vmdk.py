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

import contextlib
import os
import tempfile
import types
from unittest import mock

from cinder import objects

objects.register_all()

from cinder import context  # noqa: E402
from cinder.tests.unit.backup import fake_backup  # noqa: E402
from cinder.tests.unit import fake_volume  # noqa: E402
from cinder.volume.drivers.vmware import vmdk as cinder_vmdk  # noqa: E402
from cinder.volume.drivers.vmware import volumeops  # noqa: E402
import ddt  # noqa: E402
import fixtures  # noqa: E402
from oslo_utils import units  # noqa: E402
import testtools  # noqa: E402

from cinder_vmdk_backup.backup import driver_owned  # noqa: E402
from cinder_vmdk_backup import exception  # noqa: E402
from cinder_vmdk_backup.vmdk import reader as vmdk_reader  # noqa: E402
from cinder_vmdk_backup.vmware import cbt  # noqa: E402
from cinder_vmdk_backup.vmware import diskswap  # noqa: E402
from cinder_vmdk_backup.vmware import errors  # noqa: E402
from cinder_vmdk_backup.vmware import export  # noqa: E402
from cinder_vmdk_backup.vmware import leftovers  # noqa: E402
from cinder_vmdk_backup.vmware import upload  # noqa: E402
from cinder_vmdk_backup.volume.drivers import vmdk  # noqa: E402

PASSWORD = 'pa55-w0rd-never-logged'


class MockConfiguration(object):
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def safe_get(self, name):
        return getattr(self, name, None)

    def append_config_values(self, opts):
        for opt in opts:
            if not hasattr(self, opt.dest):
                setattr(self, opt.dest, opt.default)


def moref(value):
    return types.SimpleNamespace(value=value, _type='VirtualMachine')


class DriverTestBase(testtools.TestCase):
    """A VMware backup driver on an autospec'd VMwareVolumeOps.

    :attr:`config_overrides` adds or replaces configuration values of the
    subclass's driver.
    """

    #: Configuration values a test case adds to the base ones.
    config_overrides = {}

    def setUp(self):
        super(DriverTestBase, self).setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.logs = self.useFixture(fixtures.FakeLogger(level='DEBUG'))
        values = dict(
            vmware_host_ip='vc.example.org', vmware_host_port=443,
            vmware_host_username='admin', vmware_host_password=PASSWORD,
            vmware_ca_file=None, vmware_insecure=True,
            vmware_task_poll_interval=2.0, vmware_tmp_dir=self.tmp,
            vmware_max_objects_retrieval=100,
            vmware_adapter_type='lsiLogic', vmware_lazy_create=True,
            reserved_percentage=0)
        values.update(self.config_overrides)
        self.config = MockConfiguration(**values)
        self.driver = vmdk.VMwareVcVmdkBackupDriver(
            configuration=self.config)
        self.vops = mock.create_autospec(volumeops.VMwareVolumeOps,
                                         instance=True)
        self.driver._volumeops = self.vops
        self.driver._session = mock.Mock()
        self.ctx = context.get_admin_context()
        self.volume = fake_volume.fake_volume_obj(self.ctx, size=2,
                                                  volume_type_id=None)
        self.backup = fake_backup.fake_backup_obj(self.ctx, size=1,
                                                  status='available')


@ddt.ddt
class VmdkBackupDriverTestCase(DriverTestBase):

    # HotAdd is covered by test_vmdk_hotadd; here NFC (NBD) only.
    config_overrides = {'vmware_backup_transports': ['nbd']}

    def test_options_registered(self):
        self.assertEqual(600, self.config.vmware_backup_transfer_idle_timeout)
        self.assertTrue(self.config.vmware_backup_restore_in_volume_service)
        names = [o.name for o in self.driver.get_driver_options()]
        self.assertIn('vmware_host_ip', names)
        self.assertIn('vmware_backup_lease_ready_timeout', names)

    def test_protocol(self):
        self.assertTrue(driver_owned.implements_protocol(self.driver))

    def test_transfer_settings(self):
        settings = self.driver._transfer_settings()
        self.assertEqual(('vc.example.org', 443, True, 600, 300, 1.0),
                         (settings.host, settings.port, settings.insecure,
                          settings.idle_timeout,
                          settings.lease_ready_timeout,
                          settings.poll_interval))

    @ddt.data(None, '')
    def test_staging_dir_defaults_to_tmp_dir(self, value):
        self.config.vmware_backup_staging_dir = value
        self.assertEqual(self.tmp, self.driver.backup_staging_dir())
        self.config.vmware_backup_staging_dir = '/srv/staging'
        self.assertEqual('/srv/staging', self.driver.backup_staging_dir())

    # -- backup ------------------------------------------------------------

    @mock.patch.object(export, 'export_disk', autospec=True)
    def test_backup_source_without_backing_is_zeros(self, export_disk):
        self.vops.get_backing.return_value = None
        with self.driver.open_backup_source(self.ctx, self.backup,
                                            self.volume) as source:
            view = memoryview(bytearray(1000))
            source.fill(view)  # a fresh buffer reads as zeros: untouched
            self.assertEqual(bytes(1000), view)
            self.assertEqual(2 * units.Gi, source.size)
        export_disk.assert_not_called()
        self.vops.create_backing.assert_not_called()

    @mock.patch.object(export, 'export_disk', autospec=True)
    def test_backup_source_exports_the_backing(self, export_disk):
        # Without change tracking: the backing itself is exported.
        self.config.vmware_backup_change_tracking = False
        backing = moref('vm-1')
        self.vops.get_backing.return_value = backing
        stream = types.SimpleNamespace(fill=len)
        export_disk.return_value = contextlib.nullcontext(stream)
        with self.driver.open_backup_source(self.ctx, self.backup,
                                            self.volume) as source:
            self.assertIs(stream.fill, source.fill)
            self.assertEqual(
                (None, 'change tracking is off '
                       '(vmware_backup_change_tracking)'),
                source.changed_ranges(self.backup))
        args = export_disk.call_args[0]
        self.assertIs(backing, args[2])
        self.assertEqual(2 * units.Gi, args[3])
        # Inflated inline, on the transfer pipeline's producer thread.
        self.assertIs(vmdk_reader.StreamOptimizedReader, args[4])
        # Read below the service's CPU priority: the backend's option, its
        # default here.
        self.assertEqual(10, self.driver.backup_read_niceness())
        self.vops.get_backing.assert_called_once_with(self.volume.name,
                                                      self.volume.id)

    @mock.patch.object(export, 'export_disk', autospec=True)
    def test_backup_source_error_names_the_volume(self, export_disk):
        self.config.vmware_backup_change_tracking = False
        self.vops.get_backing.return_value = moref('vm-1')
        export_disk.side_effect = errors.TransferStalled(what='export',
                                                         seconds=600)
        exc = self.assertRaises(exception.VmdkBackupError,
                                self._enter_source)
        self.assertIn(self.volume.id, str(exc))
        self.assertIn('600 s', str(exc))
        self.assertNotIn(PASSWORD, self.logs.output)

    def _enter_source(self):
        with self.driver.open_backup_source(self.ctx, self.backup,
                                            self.volume):
            pass

    def test_snapshot_device_is_refused(self):
        snapshot = types.SimpleNamespace(id='snap-1', size=1)
        self.assertRaises(exception.VmdkBackupError,
                          self.driver.get_disk_profile, self.ctx, snapshot)

    def test_disk_profile_without_backing(self):
        self.vops.get_backing.return_value = None
        profile = self.driver.get_disk_profile(self.ctx, self.volume)
        # What the volume type would give the disk (here: no type).
        self.assertEqual({'adapter_type': 'lsiLogic', 'disk_type': 'thin',
                          'hw_version': ''}, profile)

    @mock.patch.object(diskswap, 'controller_of', autospec=True)
    @mock.patch.object(diskswap, 'disk_of', autospec=True)
    def test_disk_profile_from_backing(self, disk_of, controller_of):
        self.vops.get_backing.return_value = moref('vm-1')
        disk_of.return_value = types.SimpleNamespace(
            capacityInKB=units.Mi,
            backing=types.SimpleNamespace(thinProvisioned=False,
                                          eagerlyScrub=True))
        controller_of.return_value = type('ParaVirtualSCSIController',
                                          (object,), {})()
        self.driver.session.invoke_api.return_value = 'vmx-13'
        profile = self.driver.get_disk_profile(self.ctx, self.volume)
        # Only what a restore reads (_new_disk_shape, the VMDK descriptor).
        self.assertEqual({'adapter_type': 'paraVirtual',
                          'disk_type': 'eagerZeroedThick',
                          'hw_version': 'vmx-13'}, profile)

    @ddt.data(
        # (volume type's extra specs, recorded profile, expected shape)
        ({}, {}, ('lsiLogic', 'thin')),
        ({}, {'adapter_type': 'paraVirtual',
              'disk_type': 'eagerZeroedThick'},
         ('paraVirtual', 'eagerZeroedThick')),
        ({'adapter_type': 'lsiLogicsas', 'vmdk_type': 'thin'},
         {'adapter_type': 'paraVirtual', 'disk_type': 'eagerZeroedThick'},
         ('lsiLogicsas', 'thin')),
        ({'vmdk_type': 'thick'}, {'adapter_type': 'busLogic',
                                  'disk_type': 'thin'},
         ('busLogic', 'thick')),
        # A backup of a qcow2 volume, or a value Cinder does not know.
        ({}, {'format': 'qcow2'}, ('lsiLogic', 'thin')),
        ({}, {'adapter_type': 'nvme', 'disk_type': 'sparse'},
         ('lsiLogic', 'thin')),
    )
    @ddt.unpack
    @mock.patch.object(cinder_vmdk, '_get_volume_type_extra_spec',
                       autospec=True)
    def test_new_disk_shape(self, specs, profile, expected, extra_spec):
        def spec(type_id, key, possible_values=None, default_value=None):
            return specs.get(key, default_value)

        extra_spec.side_effect = spec
        self.assertEqual(expected,
                         self.driver._new_disk_shape(self.volume, profile))

    # -- restore -----------------------------------------------------------

    def test_restore_refused_when_backing_has_snapshots(self):
        self.vops.get_backing.return_value = moref('vm-1')
        self.vops.snapshot_exists.return_value = True
        service = mock.Mock()
        exc = self.assertRaises(exception.VmdkBackupError,
                                self.driver.restore_backup, self.ctx,
                                self.backup, self.volume, service)
        self.assertIn('snapshots', str(exc))
        service.restore.assert_not_called()

    def _image(self, data):
        path = os.path.join(self.tmp, 'image')
        with open(path, 'wb') as f:
            f.write(data)
        return path

    @mock.patch.object(cbt, 'enable', autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, '_extend_if_needed',
                       autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver,
                       '_select_ds_for_volume', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    def test_restore_into_volume_without_backing(self, import_disk, select,
                                                 extend, track):
        self.vops.get_backing.return_value = None
        summary = types.SimpleNamespace(name='ds1')
        select.return_value = ('host-1', 'rp-1', 'folder-1', summary)
        new_backing = moref('vm-new')
        import_disk.return_value = new_backing
        lengths = []

        def record(session, settings, rp, folder, spec, writer, host=None):
            lengths.append(writer.length)
            return new_backing

        import_disk.side_effect = record
        self.backup.metadata = {'disk_profile:adapter_type': 'paraVirtual',
                                'disk_profile:disk_type': 'thick'}
        self.driver.restore_raw_image(self.ctx, self.backup, self.volume,
                                      self._image(b'a' * 65536))
        self.assertEqual(1, len(lengths))
        self.assertGreater(lengths[0], 512)
        args, kwargs = import_disk.call_args
        self.assertEqual(('rp-1', 'folder-1'), args[2:4])
        self.assertEqual('host-1', kwargs['host'])
        create = self.vops.get_create_spec.call_args
        self.assertEqual(self.volume.name, create[0][0])
        self.assertEqual(64, create[0][1])
        # The new backing's disk is shaped like the backed-up one.
        self.assertEqual('thick', create[0][2])
        self.assertEqual('ds1', create[0][3])
        self.assertEqual('paraVirtual', create[1]['adapter_type'])
        self.assertEqual(self.volume.id,
                         create[1]['extra_config']['instanceUuid'])
        self.vops.update_backing_disk_uuid.assert_called_once_with(
            new_backing, self.volume.id)
        extend.assert_called_once_with(self.driver, self.volume,
                                       new_backing)
        # The new backing's changes are tracked.
        track.assert_called_once_with(self.driver.session, new_backing)

    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver,
                       '_select_ds_for_volume', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    def test_new_backing_removed_when_uuid_fails(self, import_disk, select):
        self.vops.get_backing.return_value = None
        select.return_value = ('h', 'rp', 'f', types.SimpleNamespace(
            name='ds1'))
        import_disk.return_value = moref('vm-new')
        self.vops.update_backing_disk_uuid.side_effect = (
            errors.TransferError(reason='x'))
        self.assertRaises(exception.VmdkBackupError,
                          self.driver.restore_raw_image, self.ctx,
                          self.backup, self.volume, self._image(b'a'))
        self.vops.delete_backing.assert_called_once_with(moref('vm-new'))

    def _existing_backing(self):
        backing = moref('vm-1')
        self.vops.get_backing.return_value = backing
        self.vops.snapshot_exists.return_value = False
        self.vops.get_summary.return_value = types.SimpleNamespace(
            name='ds1')
        self.vops.get_vmdk_path.return_value = (
            '[ds1] volume-x/volume-x.vmdk')
        return backing

    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, '_extend_if_needed',
                       autospec=True)
    @mock.patch.object(diskswap, 'swap_disk', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    def test_restore_into_existing_backing_swaps(self, import_disk, swap,
                                                 extend):
        backing = self._existing_backing()
        temp_vm = moref('vm-temp')
        import_disk.return_value = temp_vm
        self.driver.restore_raw_image(self.ctx, self.backup, self.volume,
                                      self._image(b'b' * 4096))
        name = self.vops.get_create_spec.call_args[0][0]
        _place, pid, _tag, volume_id = leftovers.parse_temp_vm_name(name)
        self.assertEqual((os.getpid(), self.volume.id), (pid, volume_id))
        self.assertFalse(leftovers.is_leftover(name))
        self.assertIsNone(
            self.vops.get_create_spec.call_args[1]['extra_config'])
        args = swap.call_args[0]
        self.assertEqual((backing, temp_vm), args[1:3])
        self.assertTrue(args[4].startswith('[ds1] volume-x/%s-r' %
                                           self.volume.name))
        self.assertEqual(self.volume.id, args[5])
        self.vops.delete_backing.assert_called_once_with(temp_vm)
        extend.assert_called_once_with(self.driver, self.volume, backing)

    @mock.patch.object(diskswap, 'swap_disk', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    def test_failed_swap_removes_temp_vm(self, import_disk, swap):
        self._existing_backing()
        import_disk.return_value = moref('vm-temp')
        swap.side_effect = errors.DiskSwapError(backing='vm-1', reason='x')
        exc = self.assertRaises(exception.VmdkBackupError,
                                self.driver.restore_raw_image, self.ctx,
                                self.backup, self.volume,
                                self._image(b'c'))
        self.assertIn(self.backup.id, str(exc))
        self.vops.delete_backing.assert_called_once_with(moref('vm-temp'))

    def test_hw_version_number(self):
        self.assertEqual(13, vmdk._hw_version_number('vmx-13'))
        self.assertEqual(14, vmdk._hw_version_number('', 14))
        self.assertEqual(14, vmdk._hw_version_number(None, 14))

    # -- create volume from backup -------------------------------------------

    def test_create_from_backup_disabled(self):
        self.config.vmware_backup_restore_in_volume_service = False
        self.assertRaises(NotImplementedError,
                          self.driver.create_volume_from_backup,
                          self.volume, self.backup)

    def test_create_from_backup_not_available(self):
        self.backup.status = 'restoring'
        self.assertRaises(NotImplementedError,
                          self.driver.create_volume_from_backup,
                          self.volume, self.backup)

    def test_create_from_backup_other_service(self):
        self.backup.service = 'some.other.Driver'
        self.assertRaises(NotImplementedError,
                          self.driver.create_volume_from_backup,
                          self.volume, self.backup)

    @mock.patch.object(objects.Backup, 'save', autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, '_delete_volume',
                       autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, 'restore_backup',
                       autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver,
                       '_local_backup_service', autospec=True)
    def test_create_from_backup_falls_back_on_failure(self, local, restore,
                                                      delete, save):
        local.return_value = 'service'
        restore.side_effect = exception.VmdkBackupError(reason='boom')
        self.assertRaises(NotImplementedError,
                          self.driver.create_volume_from_backup,
                          self.volume, self.backup)
        delete.assert_called_once_with(self.driver, self.volume)
        self.assertEqual('available', self.backup.status)
        self.assertIsNone(self.backup.restore_volume_id)

    @mock.patch.object(objects.Backup, 'save', autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, 'restore_backup',
                       autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver,
                       '_local_backup_service', autospec=True)
    def test_create_from_backup_restores_directly(self, local, restore,
                                                  save):
        local.return_value = 'service'
        seen = []
        restore.side_effect = lambda *a, **k: seen.append(
            (self.backup.status, self.backup.restore_volume_id))
        self.driver.create_volume_from_backup(self.volume, self.backup)
        args, kwargs = restore.call_args
        self.assertEqual((self.backup, self.volume, 'service'), args[2:5])
        self.assertTrue(kwargs['volume_is_new'])
        self.assertEqual([('restoring', self.volume.id)], seen)
        self.assertEqual('available', self.backup.status)
        self.assertEqual(2, save.call_count)

    # -- leftovers -----------------------------------------------------------

    @mock.patch.object(driver_owned.staging_files, 'remove_leftovers',
                       autospec=True)
    @mock.patch.object(leftovers, 'remove_temp_vms', autospec=True)
    @mock.patch.object(leftovers, 'abort_leases', autospec=True)
    def test_remove_leftovers(self, abort, remove_vms, remove_staging):
        calls = []
        abort.side_effect = lambda *a: calls.append('leases')
        remove_vms.side_effect = lambda *a: calls.append('vms')
        remove_staging.side_effect = lambda *a: calls.append('staging')
        self.driver.remove_leftovers()
        # Leases first: a VM under an import lease cannot be destroyed.
        self.assertEqual(['leases', 'vms', 'staging'], calls)
        abort.assert_called_once_with(self.driver.session, self.tmp)
        remove_vms.assert_called_once_with(self.driver.session, 100)
        remove_staging.assert_called_once_with(self.tmp)

    @mock.patch.object(leftovers, 'remove_temp_vms', autospec=True)
    @mock.patch.object(leftovers, 'abort_leases', autospec=True)
    def test_leftover_failure_does_not_stop_setup(self, abort, remove):
        abort.side_effect = errors.TransferError(reason='vc gone')
        remove.side_effect = errors.TransferError(reason='vc down')
        self.config.vmware_backup_staging_dir = os.path.join(
            tempfile.gettempdir(), 'does-not-exist-cvb')
        self.driver.remove_leftovers()
        self.assertIn('vc down', self.logs.output)
        self.assertIn('vc gone', self.logs.output)

    @mock.patch.object(vmdk.vmdk.VMwareVcVmdkDriver, 'do_setup',
                       autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, 'remove_leftovers',
                       autospec=True)
    def test_do_setup_removes_leftovers(self, remove, setup):
        remove.side_effect = RuntimeError('boom')
        self.driver.do_setup(self.ctx)
        setup.assert_called_once_with(self.driver, self.ctx)
        remove.assert_called_once_with(self.driver)
        self.assertIn('boom', self.logs.output)

    def test_transfer_settings_record_leases_in_the_staging_dir(self):
        self.assertEqual(self.tmp, self.driver._transfer_settings().state_dir)
