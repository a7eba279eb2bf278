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

"""The VMDK driver's part of changed-block tracking (vmware.cbt)."""

import contextlib
import types
from unittest import mock

from cinder import objects

objects.register_all()

from cinder import context  # noqa: E402
from cinder.tests.unit.backup import fake_backup  # noqa: E402
from cinder.tests.unit import fake_constants as fake  # noqa: E402
from cinder.tests.unit import fake_volume  # noqa: E402
from cinder.volume.drivers.vmware import vmdk as cinder_vmdk  # noqa: E402
from cinder.volume.drivers.vmware import volumeops  # noqa: E402
import fixtures  # noqa: E402
from oslo_utils import units  # noqa: E402
from oslo_vmware import exceptions as vexc  # noqa: E402
import testtools  # noqa: E402

from cinder_vmdk_backup import exception  # noqa: E402
from cinder_vmdk_backup.vmware import cbt  # noqa: E402
from cinder_vmdk_backup.vmware import errors  # noqa: E402
from cinder_vmdk_backup.vmware import export  # noqa: E402
from cinder_vmdk_backup.vmware import upload  # noqa: E402
from cinder_vmdk_backup.vmware import vmsnapshot  # noqa: E402
from cinder_vmdk_backup.volume.drivers import vmdk  # noqa: E402
from tests.unit.volume.drivers import test_vmdk  # noqa: E402

CHANGE_ID = '52 aa bb cc dd ee ff 00-11 22 33 44 55 66 77 88/3'
VMDK_PATH = '[ds1] volume-x/volume-x.vmdk'


class TrackedBackupTestCase(test_vmdk.DriverTestBase):

    def setUp(self):
        super(TrackedBackupTestCase, self).setUp()
        self.backup = fake_backup.fake_backup_obj(
            self.ctx, size=2, status='creating', volume_id=self.volume.id)
        self.backing = test_vmdk.moref('vm-1')
        self.vops.get_backing.return_value = self.backing
        self.vops.get_vmdk_path.return_value = VMDK_PATH
        self.enable = self._patch(cbt, 'enable', return_value=False)
        self.record = self._patch(cbt, 'record')
        self.export = self._patch(export, 'export_disk')
        frozen_class = self._patch(vmsnapshot, 'FrozenVM')
        self.frozen = frozen_class.return_value
        self.frozen.snapshot = test_vmdk.moref('snapshot-1')
        self.frozen.freeze.return_value = self.frozen
        self.disk = types.SimpleNamespace(
            key=2000, capacityInBytes=2 * units.Gi,
            backing=types.SimpleNamespace(changeId=CHANGE_ID))
        self.frozen.disk_of.return_value = self.disk
        self.stream = types.SimpleNamespace(fill=len)
        self.read_frozen = self._patch(
            vmdk.VMwareVcVmdkBackupDriver, '_read_frozen_disk',
            return_value=contextlib.nullcontext(self.stream))
        self.frozen_class = frozen_class

    def _patch(self, obj, name, **kwargs):
        patcher = mock.patch.object(obj, name, autospec=True, **kwargs)
        self.addCleanup(patcher.stop)
        return patcher.start()

    def _source(self, body=None):
        with self.driver.open_backup_source(self.ctx, self.backup,
                                            self.volume) as source:
            if body:
                body(source)
            return source

    def test_detached_volume_read_from_a_snapshot_of_its_backing(self):
        seen = []
        source = self._source(seen.append)
        self.assertIs(self.stream.fill, source.fill)
        self.enable.assert_called_once_with(self.driver.session,
                                            self.backing)
        args = self.frozen_class.call_args[0]
        self.assertIs(self.backing, args[2])
        self.frozen.freeze.assert_called_once_with(
            description='backup %s' % self.backup.id, always=True)
        # The path is the one before the snapshot (real vSphere gives the
        # VM a delta disk once snapshotted).
        self.frozen.disk_of.assert_called_once_with(self.volume.id,
                                                    VMDK_PATH)
        # Read through the transport seam, so HotAdd plugs in.
        self.read_frozen.assert_called_once_with(
            self.driver, self.frozen, self.disk, 2 * units.Gi)
        self.export.assert_not_called()
        # The snapshot's changeId is kept with the backup, once read.
        self.record.assert_called_once_with(self.backup, CHANGE_ID)
        self.frozen.release.assert_called_once_with()
        # The tracker asks vCenter about this snapshot's disk.
        tracker = source.tracker
        self.assertEqual(CHANGE_ID, tracker.change_id)
        parent = types.SimpleNamespace(id='p', volume_id=self.volume.id,
                                       size=2, metadata={})
        ranges, reason = source.changed_ranges(parent)
        self.assertIsNone(ranges)
        self.assertIn('has no changeId', reason)

    def test_changed_ranges_query_the_backup_snapshot(self):
        queried = []

        def query(*args, **kwargs):
            queried.append((args, kwargs))
            return types.SimpleNamespace(
                startOffset=0, length=2 * units.Gi,
                changedArea=[types.SimpleNamespace(start=65536,
                                                   length=65536)])

        self.driver.session.invoke_api.side_effect = query
        parent = types.SimpleNamespace(
            id='p', volume_id=self.volume.id, size=2,
            metadata={cbt.CHANGE_ID_KEY: 'old/1'})
        source = self._source()
        self.assertEqual(([(65536, 65536)], None),
                         source.changed_ranges(parent))
        args, kwargs = queried[0]
        self.assertEqual('QueryChangedDiskAreas', args[1])
        self.assertIs(self.backing, args[2])
        self.assertIs(self.frozen.snapshot, kwargs['snapshot'])
        self.assertEqual(2000, kwargs['deviceKey'])
        self.assertEqual('old/1', kwargs['changeId'])

    def test_failed_read_records_nothing_and_releases(self):
        def fail(source):
            raise errors.TransferError(reason='cut')

        exc = self.assertRaises(exception.VmdkBackupError, self._source,
                                fail)
        self.assertIn(self.volume.id, str(exc))
        self.record.assert_not_called()
        self.frozen.release.assert_called_once_with()

    def test_failed_snapshot_releases(self):
        self.frozen.freeze.side_effect = vexc.VimFaultException(
            ['RuntimeFault'], 'no snapshot')
        self.assertRaises(exception.VmdkBackupError, self._source)
        self.frozen.release.assert_called_once_with()
        self.record.assert_not_called()

    def test_tracking_cannot_be_enabled(self):
        self.enable.side_effect = vexc.VimFaultException(
            ['NoPermission'], 'not allowed')
        source = self._source()
        self.assertIn('could not be switched on',
                      source.changed_ranges(self.backup)[1])
        self.assertIn('not allowed', self.logs.output)
        # Still a consistent point in time: the snapshot.
        self.read_frozen.assert_called_once_with(
            self.driver, self.frozen, self.disk, 2 * units.Gi)
        self.record.assert_not_called()

    def test_disk_without_change_id_records_nothing(self):
        self.disk.backing.changeId = None
        self._source()
        self.record.assert_not_called()

    def test_tracking_off_exports_the_backing(self):
        self.config.vmware_backup_change_tracking = False
        self.export.return_value = contextlib.nullcontext(self.stream)
        source = self._source()
        self.assertIn('vmware_backup_change_tracking',
                      source.changed_ranges(self.backup)[1])
        self.enable.assert_not_called()
        self.frozen_class.assert_not_called()
        self.record.assert_not_called()

    def test_temporary_copy_exports_it(self):
        clone = fake_volume.fake_volume_obj(self.ctx, size=2,
                                            id=fake.VOLUME2_ID)
        self.export.return_value = contextlib.nullcontext(self.stream)
        with self.driver.open_backup_source(self.ctx, self.backup,
                                            clone) as source:
            self.assertIn('temporary copy',
                          source.changed_ranges(self.backup)[1])
        self.enable.assert_not_called()
        self.frozen_class.assert_not_called()

    def test_attached_volume_exports_it(self):
        self.volume.volume_attachment = objects.VolumeAttachmentList(
            objects=[objects.VolumeAttachment(
                instance_uuid=fake.INSTANCE_ID, attach_status='attached')])
        self.export.return_value = contextlib.nullcontext(self.stream)
        source = self._source()
        self.assertIn('attached to an instance',
                      source.changed_ranges(self.backup)[1])
        self.enable.assert_not_called()
        self.frozen_class.assert_not_called()

    def test_instance_snapshot_source_is_untracked(self):
        frozen = self.frozen_class.return_value
        frozen.disk_of.return_value = self.disk
        self.driver._snapshot_sources[self.volume.id] = frozen
        source = self._source()
        self.assertIn('instance\'s VM', source.changed_ranges(
            self.backup)[1])
        self.read_frozen.assert_called_once_with(self.driver, frozen,
                                                 self.disk, 2 * units.Gi)
        self.enable.assert_not_called()
        self.record.assert_not_called()


class TrackingSwitchedOnTestCase(testtools.TestCase):

    def setUp(self):
        super(TrackingSwitchedOnTestCase, self).setUp()
        self.logs = self.useFixture(fixtures.FakeLogger(level='DEBUG'))
        self.config = test_vmdk.MockConfiguration(
            vmware_host_ip='vc.example.org', vmware_host_port=443,
            vmware_host_username='admin',
            vmware_host_password=test_vmdk.PASSWORD,
            vmware_ca_file=None, vmware_insecure=True,
            vmware_task_poll_interval=2.0, vmware_tmp_dir='/tmp',
            vmware_max_objects_retrieval=100,
            vmware_adapter_type='lsiLogic', vmware_lazy_create=True,
            reserved_percentage=0)
        self.driver = vmdk.VMwareVcVmdkBackupDriver(
            configuration=self.config)
        self.driver._session = mock.Mock()
        self.volume = fake_volume.fake_volume_obj(
            context.get_admin_context(), size=1, volume_type_id=None)
        self.backing = test_vmdk.moref('vm-1')
        patcher = mock.patch.object(cinder_vmdk.VMwareVcVmdkDriver,
                                    '_create_backing', autospec=True,
                                    return_value=self.backing)
        self.addCleanup(patcher.stop)
        self.create = patcher.start()
        patcher = mock.patch.object(cbt, 'enable', autospec=True)
        self.addCleanup(patcher.stop)
        self.enable = patcher.start()

    def test_at_creation(self):
        self.assertIs(self.backing,
                      self.driver._create_backing(self.volume, 'host-1'))
        self.create.assert_called_once_with(self.driver, self.volume,
                                            host='host-1',
                                            create_params=None)
        self.enable.assert_called_once_with(self.driver.session,
                                            self.backing)

    def test_not_for_temporary_backings(self):
        self.driver._create_backing(
            self.volume, create_params={
                cinder_vmdk.CREATE_PARAM_TEMP_BACKING: True})
        self.enable.assert_not_called()

    def test_not_when_off(self):
        self.config.vmware_backup_change_tracking = False
        self.driver._create_backing(self.volume)
        self.enable.assert_not_called()

    def test_failure_does_not_fail_the_creation(self):
        self.enable.side_effect = vexc.VimFaultException(['RuntimeFault'],
                                                         'busy')
        self.assertIs(self.backing,
                      self.driver._create_backing(self.volume))
        self.assertIn('Could not switch change tracking on', self.logs.output)
        self.assertIn('busy', self.logs.output)

    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver,
                       '_select_ds_for_volume', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    def test_restore_into_a_new_backing_tracks_it(self, import_disk, select):
        vops = mock.create_autospec(volumeops.VMwareVolumeOps, instance=True)
        self.driver._volumeops = vops
        select.return_value = ('h', 'rp', 'f', types.SimpleNamespace(
            name='ds1'))
        import_disk.return_value = self.backing
        calls = []
        vops.update_backing_disk_uuid.side_effect = (
            lambda *a: calls.append('uuid'))
        self.enable.side_effect = lambda *a, **k: calls.append(('enable', a))
        self.assertIs(self.backing, self.driver._import_new_backing(
            self.volume, 'vmdk', units.Gi, 'lsiLogic', 'thin'))
        self.assertEqual(['uuid', ('enable', (self.driver.session,
                                              self.backing))], calls)
