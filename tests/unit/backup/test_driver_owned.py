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
import dataclasses
import io
import os
import stat
from unittest import mock

from cinder import objects

objects.register_all()

from cinder.backup import chunkeddriver  # noqa: E402
from cinder.backup import driver as backup_driver  # noqa: E402
from cinder import exception  # noqa: E402
import ddt  # noqa: E402
import fixtures  # noqa: E402
from oslo_config import fixture as config_fixture  # noqa: E402
from oslo_utils import units  # noqa: E402
from oslotest import base  # noqa: E402

from cinder_vmdk_backup.backup import chain_reader  # noqa: E402
from cinder_vmdk_backup.backup import driver_owned  # noqa: E402
from cinder_vmdk_backup.backup import restore_checks  # noqa: E402
from cinder_vmdk_backup.backup import staging_files  # noqa: E402
from cinder_vmdk_backup.backup import transfer  # noqa: E402
from cinder_vmdk_backup import ownership  # noqa: E402


class Driver(driver_owned.DriverOwnedBackupMixin):
    """The hooks, recorded."""

    def __init__(self, staging_dir, source=b''):
        self.staging_dir = staging_dir
        self.source = source
        self.images = []
        self.profile = {}

    @contextlib.contextmanager
    def open_backup_source(self, context, backup, device):
        yield io.BytesIO(self.source)

    def restore_raw_image(self, context, backup, volume, image_path):
        st = os.stat(image_path)
        with open(image_path, 'rb') as image:
            head = image.read(16)
        self.images.append((image_path, st.st_size,
                            stat.S_IMODE(st.st_mode), head))

    def backup_staging_dir(self):
        return self.staging_dir

    def get_disk_profile(self, context, device):
        return self.profile


def _backup(size=1, metadata=None):
    backup = objects.Backup(id='b0000000-0000-4000-8000-000000000001',
                            volume_id='a0000000-0000-4000-8000-00000000000a',
                            size=size, metadata=metadata or {})
    return backup


def _volume(size=1):
    return objects.Volume(id='a0000000-0000-4000-8000-00000000000a',
                          size=size)


@ddt.ddt
class DriverOwnedBackupMixinTestCase(base.BaseTestCase):

    def setUp(self):
        super(DriverOwnedBackupMixinTestCase, self).setUp()
        self.staging_dir = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'staging')
        self.driver = Driver(self.staging_dir)
        self.service = mock.create_autospec(backup_driver.BackupDriver,
                                            instance=True)
        self.ctxt = mock.sentinel.context

    def test_implements_protocol(self):
        self.assertTrue(driver_owned.implements_protocol(Driver))
        self.assertTrue(driver_owned.implements_protocol(self.driver))
        self.assertFalse(driver_owned.implements_protocol(object))

    # -- backup ------------------------------------------------------------

    def _volume_in_db(self, volume):
        """Make ``volume`` what Cinder's database gives for its id."""
        lookup = self.useFixture(fixtures.MockPatchObject(
            objects.Volume, 'get_by_id', autospec=True,
            return_value=volume)).mock
        self.addCleanup(lambda: [
            self.assertEqual(volume.id, call.args[1])
            for call in lookup.call_args_list])

    def _small_gib(self):
        """Make 1 GiB a few bytes, so that a volume's data fits a test."""
        self.useFixture(fixtures.MockPatchObject(driver_owned.units, 'Gi',
                                                 16))

    @ddt.data('volume', 'snapshot', None)
    def test_backup_reads_the_device_cinder_chose(self, kind):
        self._small_gib()
        self.driver.source = b'0123456789abcdef'
        opened = []
        original = self.driver.open_backup_source

        def record(context, backup, device):
            opened.append(device)
            return original(context, backup, device)

        self.driver.open_backup_source = record
        volume = _volume()
        backup = _backup()
        self._volume_in_db(volume)
        device = None
        if kind:
            device = objects.BackupDeviceInfo()
            if kind == 'snapshot':
                device.snapshot = objects.Snapshot(
                    id='c0000000-0000-4000-8000-00000000000c', volume_size=1)
                device.snapshot.volume = volume
            else:
                device.volume = _volume()
        read = []
        self.service.backup.side_effect = (
            lambda backup, volume_file: read.append(volume_file.read(99)) or
            {'parent_id': None})
        result = self.driver.backup_volume(self.ctxt, backup, self.service,
                                           backup_device=device)
        self.assertEqual({'parent_id': None}, result)
        self.assertEqual([b'0123456789abcdef'], read)
        expected = device.device_obj if device else volume
        self.assertIs(expected, opened[0])

    @ddt.data(0, 1)
    def test_backup_reads_through_the_transfer_pipeline(self, read_ahead_mb):
        self._small_gib()
        self.useFixture(config_fixture.Config()).config(
            driver_owned_backup_read_ahead_mb=read_ahead_mb)
        self.driver.source = b'0123456789abcdef'
        self._volume_in_db(_volume())
        wrap = self.useFixture(fixtures.MockPatchObject(
            driver_owned.transfer, 'BackupReader', autospec=True,
            side_effect=transfer.BackupReader)).mock
        read = []
        self.service.backup.side_effect = (
            lambda backup, volume_file: read.append(volume_file.read(16)))
        self.driver.backup_volume(self.ctxt, _backup(), self.service)
        self.assertEqual([b'0123456789abcdef'], read)
        wrap.assert_called_once_with(mock.ANY, 16, read_ahead_mb * units.Mi,
                                     0, name=mock.ANY)

    def test_source_ending_early_fails_the_backup(self):
        self._small_gib()
        self.driver.source = b'x' * 10
        self._volume_in_db(_volume())
        self.service.backup.side_effect = (
            lambda backup, volume_file: volume_file.read(16))
        error = self.assertRaises(exception.BackupDriverException,
                                  self.driver.backup_volume, self.ctxt,
                                  _backup(), self.service)
        self.assertIn('volume a0000000-0000-4000-8000-00000000000a ended '
                      'before its size of 16 bytes', str(error))

    def test_backup_records_the_disk_profile(self):
        self._small_gib()
        self.driver.source = b'x' * 16
        self.driver.profile = {'adapter': 'lsiLogic', 'capacity': 16}
        backup = _backup(metadata={'user': 'kept'})
        self._volume_in_db(_volume())
        with mock.patch.object(objects.Backup, 'save',
                               autospec=True) as save:
            self.driver.backup_volume(self.ctxt, backup, self.service)
        save.assert_called_once_with(backup)
        self.assertEqual({'user': 'kept',
                          'disk_profile:adapter': 'lsiLogic',
                          'disk_profile:capacity': '16'}, backup.metadata)
        self.assertEqual({'adapter': 'lsiLogic', 'capacity': '16'},
                         Driver.disk_profile_of(backup))

    def test_backup_without_profile_saves_nothing(self):
        self._small_gib()
        self.driver.source = b'x' * 16
        backup = _backup()
        self._volume_in_db(_volume())
        with mock.patch.object(objects.Backup, 'save',
                               autospec=True) as save:
            self.driver.backup_volume(self.ctxt, backup, self.service)
        save.assert_not_called()

    # -- restore -----------------------------------------------------------

    @ddt.data(True, False)
    def test_restore_through_exact_size_private_staging_file(self,
                                                             volume_is_new):
        def restore(backup, volume_id, volume_file, is_new):
            volume_file.seek(4)
            volume_file.write(b'data')

        self.service.restore.side_effect = restore
        backup = _backup(size=2)
        self.driver.restore_backup(self.ctxt, backup, _volume(size=3),
                                   self.service,
                                   volume_is_new=volume_is_new)
        # The service writes every byte; the staging writer skips the
        # zeros that need no writing, whatever the volume is.
        self.service.restore.assert_called_once_with(
            backup, _volume().id, mock.ANY, False)
        [(path, size, mode, head)] = self.driver.images
        self.assertEqual(2 * units.Gi, size)
        self.assertEqual(0o600, mode)
        self.assertEqual(b'\0\0\0\0data' + b'\0' * 8, head)
        self.assertEqual(self.staging_dir, os.path.dirname(path))
        self.assertTrue(os.path.basename(path).startswith(
            driver_owned.STAGING_PREFIX))
        self.assertEqual([], os.listdir(self.staging_dir))

    def test_restore_writes_without_fsync(self):
        calls = []

        def restore(backup, volume_id, volume_file, is_new):
            volume_file.write(b'data')
            volume_file.flush()
            # What Cinder's chunked drivers do after each object.
            try:
                fileno = volume_file.fileno()
            except IOError:
                calls.append('no fsync')
            else:
                calls.append(fileno)

        self.service.restore.side_effect = restore
        self.driver.restore_backup(self.ctxt, _backup(size=1),
                                   _volume(size=1), self.service)
        self.assertEqual(['no fsync'], calls)
        [(path, size, mode, head)] = self.driver.images
        self.assertEqual(b'data' + b'\0' * 12, head)

    def test_failed_backup_service_restore_leaves_nothing(self):
        self.service.restore.side_effect = IOError('object missing')
        self.assertRaises(IOError, self.driver.restore_backup, self.ctxt,
                          _backup(), _volume(), self.service)
        self.assertEqual([], self.driver.images)
        self.assertEqual([], os.listdir(self.staging_dir))

    def test_failed_driver_restore_leaves_nothing(self):
        with mock.patch.object(Driver, 'restore_raw_image', autospec=True,
                               side_effect=IOError('upload failed')):
            self.assertRaises(IOError, self.driver.restore_backup,
                              self.ctxt, _backup(), _volume(), self.service)
        self.assertEqual([], os.listdir(self.staging_dir))


class StagedRestoreChecksTestCase(base.BaseTestCase):
    """The staging file is checked before the driver gets it."""

    def setUp(self):
        super(StagedRestoreChecksTestCase, self).setUp()
        self.staging_dir = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'staging')
        self.driver = Driver(self.staging_dir)
        self.service = mock.create_autospec(chunkeddriver.ChunkedBackupDriver,
                                            instance=True)
        self.check_file = self.useFixture(fixtures.MockPatchObject(
            restore_checks, 'check_file', autospec=True)).mock
        self.checker = self.useFixture(fixtures.MockPatchObject(
            restore_checks, 'BlockChecker', autospec=True)).mock
        self.useFixture(fixtures.MockPatchObject(
            chain_reader, 'ChainReader', autospec=True,
            side_effect=chain_reader.ChainUnsupported('not here')))

    def test_checked_before_the_driver_gets_the_file(self):
        order = []
        self.check_file.side_effect = lambda fd, checker: order.append(
            ('check', os.fstat(fd).st_size))
        with mock.patch.object(Driver, 'restore_raw_image', autospec=True,
                               side_effect=lambda *a: order.append('raw')):
            self.driver.restore_backup(mock.sentinel.ctxt, _backup(size=1),
                                       _volume(), self.service)
        self.assertEqual([('check', units.Gi), 'raw'], order)
        self.checker.assert_called_once_with(self.service, mock.ANY,
                                             units.Gi, describe=None)

    def test_mismatch_fails_before_the_driver_and_leaves_nothing(self):
        self.check_file.side_effect = exception.InvalidBackup(
            reason='region at offset 0')
        self.assertRaises(exception.InvalidBackup,
                          self.driver.restore_backup, mock.sentinel.ctxt,
                          _backup(), _volume(), self.service)
        self.assertEqual([], self.driver.images)
        self.assertEqual([], os.listdir(self.staging_dir))

    def test_off_or_not_chunked_not_checked(self):
        self.driver.restore_backup(
            mock.sentinel.ctxt, _backup(), _volume(),
            mock.create_autospec(backup_driver.BackupDriver, instance=True))
        with mock.patch.object(restore_checks, 'enabled', autospec=True,
                               return_value=False):
            self.driver.restore_backup(mock.sentinel.ctxt, _backup(),
                                       _volume(), self.service)
        self.check_file.assert_not_called()
        self.assertEqual(2, len(self.driver.images))


class StagingLeftoversTestCase(base.BaseTestCase):

    def setUp(self):
        super(StagingLeftoversTestCase, self).setUp()
        self.staging_dir = self.useFixture(fixtures.TempDir()).path
        self.driver = Driver(self.staging_dir)

    def _file(self, name):
        path = os.path.join(self.staging_dir, name)
        with open(path, 'wb') as f:
            f.write(b'x')
        return path

    def test_only_unheld_files_of_ours_are_removed(self):
        leftover = self._file(driver_owned.STAGING_PREFIX + 'killed')
        foreign = self._file('operator-notes')
        with self.driver._staging_file() as (_staging, in_use):
            removed = self.driver.remove_staging_leftovers()
            self.assertTrue(os.path.exists(in_use))
        self.assertEqual([leftover], removed)
        self.assertEqual([os.path.basename(foreign)],
                         os.listdir(self.staging_dir))

    def test_missing_directory_is_nothing_to_clean(self):
        driver = Driver(os.path.join(self.staging_dir, 'never-made'))
        self.assertEqual([], driver.remove_staging_leftovers())

    def test_staging_file_stays_locked_through_restore_raw_image(self):
        # A janitor of another host (a shared staging directory) runs
        # while this process hands the image to its volume driver: only
        # the lock tells it the file is in use.
        seen = []
        elsewhere = dataclasses.replace(ownership.current(), host='other')

        def restore_raw_image(driver, context, backup, volume, image_path):
            with mock.patch.object(ownership, 'current', autospec=True,
                                   return_value=elsewhere):
                seen.append(staging_files.remove_leftovers(
                    self.staging_dir))
            with open(image_path, 'rb') as image:
                seen.append(image.read(4))

        service = mock.Mock()
        service.restore.side_effect = (
            lambda backup, volume_id, volume_file, is_new:
            volume_file.write(b'data'))
        with mock.patch.object(Driver, 'restore_raw_image', autospec=True,
                               side_effect=restore_raw_image):
            self.driver.restore_backup(mock.sentinel.ctxt, _backup(),
                                       _volume(), service)
        self.assertEqual([[], b'data'], seen)
        self.assertEqual([], os.listdir(self.staging_dir))

    def test_do_setup_removes_leftovers_and_survives_failures(self):
        class Base(object):
            def do_setup(self, context):
                self.setup_done = context

        class SetUpDriver(Driver, Base):
            pass

        driver = SetUpDriver(self.staging_dir)
        leftover = self._file(driver_owned.STAGING_PREFIX + 'killed')
        driver.do_setup('ctxt')
        self.assertEqual('ctxt', driver.setup_done)
        self.assertFalse(os.path.exists(leftover))
        with mock.patch.object(SetUpDriver, 'remove_leftovers',
                               autospec=True, side_effect=OSError('ro')):
            driver.do_setup('ctxt2')
        self.assertEqual('ctxt2', driver.setup_done)
