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

"""The qcow2 driver's dirty bitmaps: each doubt, pruning, the freeze.

The bitmaps module (qemu-img, qemu-nbd) and the freezer are mocked with
autospec; the backups are Cinder's real objects in its test database.
"""

import datetime
from unittest import mock

import fixtures
from oslo_utils import units

from cinder import context
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import fake_volume
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import configuration

from cinder_vmdk_backup.kvm import bitmaps
from cinder_vmdk_backup.kvm import changes
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import paths as kvm_paths
from cinder_vmdk_backup.kvm import raw_reader
from cinder_vmdk_backup.volume.drivers import qcow2

VOLUME = '11111111-1111-1111-1111-111111111111'
OTHER = '22222222-2222-2222-2222-222222222222'
GIB = units.Gi
IDENTITY = kvm_paths.IDENTITY


def _backup(backup_id, volume_id=VOLUME, size=1):
    return mock.Mock(id=backup_id, volume_id=volume_id, size=size,
                     spec=['id', 'volume_id', 'size'])


class TrackerTestCase(test.TestCase):
    """Every doubt is (None, reason); only a clean bitmap gives ranges."""

    def setUp(self):
        super().setUp()
        self.list_ours = self.useFixture(fixtures.MockPatchObject(
            bitmaps, 'list_ours', autospec=True,
            return_value=[bitmaps.name_for('parent')])).mock
        self.dirty = self.useFixture(fixtures.MockPatchObject(
            bitmaps, 'dirty_ranges', autospec=True,
            return_value=[(0, 65536), (GIB - 65536, 65536)])).mock
        self.parent = _backup('parent')

    def _tracker(self, **kwargs):
        args = {'read_path': '/v/img.cvb-frozen-x',
                'backup': _backup('new'), 'length': GIB,
                'image_size': GIB}
        args.update(kwargs)
        return changes.Tracker(**args)

    def assertDoubt(self, expected, result):
        ranges, reason = result
        self.assertIsNone(ranges)
        self.assertIn(expected, reason)

    def test_clean_bitmap_gives_its_ranges(self):
        self.assertEqual(([(0, 65536), (GIB - 65536, 65536)], None),
                         self._tracker()(self.parent))
        self.dirty.assert_called_once_with(
            '/v/img.cvb-frozen-x', bitmaps.name_for('parent'), GIB)
        self.list_ours.assert_called_once_with('/v/img.cvb-frozen-x')

    def test_nothing_changed_is_no_ranges(self):
        self.dirty.return_value = []
        self.assertEqual(([], None), self._tracker()(self.parent))

    def test_bitmaps_off(self):
        self.assertDoubt('qcow2_dirty_bitmaps',
                         self._tracker(enabled=False)(self.parent))
        self.list_ours.assert_not_called()

    def test_backup_of_a_snapshot(self):
        self.assertDoubt('snapshot',
                         self._tracker(of_snapshot=True)(self.parent))
        self.dirty.assert_not_called()

    def test_parent_of_another_volume(self):
        self.assertDoubt('of another volume',
                         self._tracker()(_backup('parent', OTHER)))

    def test_volume_extended_since_the_parent(self):
        self.assertDoubt('size changed since the parent backup parent',
                         self._tracker(length=2 * GIB,
                                       image_size=2 * GIB)(self.parent))
        self.dirty.assert_not_called()

    def test_parent_without_size(self):
        self.assertDoubt('size changed',
                         self._tracker()(_backup('parent', size=None)))

    def test_image_resized_behind_cinder(self):
        self.assertDoubt('the image holds %d bytes' % (GIB + 65536),
                         self._tracker(image_size=GIB + 65536)(self.parent))
        self.dirty.assert_not_called()

    def test_no_bitmap_of_the_parent(self):
        # Made before dirty bitmaps, by another path or backend, pruned,
        # or the image was replaced by a restore since.
        self.list_ours.return_value = [bitmaps.name_for('older')]
        result = self._tracker()(self.parent)
        self.assertDoubt('no dirty bitmap of the parent backup parent',
                         result)
        self.assertIn('restore', result[1])
        self.dirty.assert_not_called()

    def test_listing_fails(self):
        self.list_ours.side_effect = errors.QemuImgError('boom')
        self.assertDoubt('listing the dirty bitmaps', self._tracker()(
            self.parent))

    def test_bitmap_unusable(self):
        self.dirty.side_effect = bitmaps.BitmapUnusable(
            'the dirty bitmap cvb-parent is inconsistent')
        self.assertDoubt('the dirty bitmap cvb-parent is inconsistent',
                         self._tracker()(self.parent))

    def test_reading_the_bitmap_fails(self):
        self.dirty.side_effect = errors.KvmError('qemu-nbd died')
        self.assertDoubt('reading the dirty bitmap cvb-parent failed: '
                         'qemu-nbd died', self._tracker()(self.parent))

    def test_ranges_that_make_no_sense(self):
        for ranges in ([(65536, 10), (0, 10)], [(0, 10), (5, 10)],
                       [(GIB - 10, 20)], [(0, 0)]):
            self.dirty.return_value = ranges
            self.assertDoubt('out of order', self._tracker()(self.parent))


class KeepTestCase(test.TestCase):
    """Which bitmaps stay, against Cinder's real Backup objects."""

    def setUp(self):
        super().setUp()
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=False)
        self.admin = context.get_admin_context()
        self.volume = test_utils.create_volume(self.admin, size=1)
        self.now = datetime.datetime(2026, 1, 1,
                                     tzinfo=datetime.timezone.utc)

    def _backup(self, minutes, status=fields.BackupStatus.AVAILABLE,
                project=fake.PROJECT_ID, volume=None):
        backup = test_utils.create_backup(
            self.admin, (volume or self.volume).id, status=status,
            project_id=project)
        # (create_backup sets it to created_at.)
        backup.data_timestamp = self.now + datetime.timedelta(
            minutes=minutes)
        backup.save()
        return backup

    def _names(self, *backups):
        return [bitmaps.name_for(b.id) for b in backups]

    def test_newest_live_backups_keep_theirs(self):
        new = self._backup(5, fields.BackupStatus.CREATING)
        old = self._backup(10)
        newer = self._backup(30)
        self._backup(40, fields.BackupStatus.ERROR)
        self._backup(45, fields.BackupStatus.DELETING)
        self._backup(46).destroy()
        other_project = self._backup(20, project=fake.PROJECT2_ID)
        self._backup(60, volume=test_utils.create_volume(self.admin))

        def keep(kept):
            return changes.bitmaps_to_keep(self.ctxt, self.volume.id, kept,
                                           new_backup_id=new.id)
        self.assertEqual(self._names(new), keep(1))
        self.assertEqual(self._names(new, newer), keep(2))
        # Another project's backup of the volume counts (admin lookup).
        self.assertEqual(self._names(new, newer, other_project, old),
                         keep(4))
        self.assertEqual(self._names(new, newer, other_project, old),
                         keep(10))

    def test_a_failed_backup_keeps_none(self):
        failed = self._backup(50, fields.BackupStatus.CREATING)
        old = self._backup(10)
        self.assertEqual(self._names(old), changes.bitmaps_to_keep(
            self.ctxt, self.volume.id, 2, failed_backup_id=failed.id))


class DriverBitmapsTestCase(test.TestCase):
    """The driver creates, hands over and prunes the bitmaps."""

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        conf = mock.Mock(spec=configuration.Configuration)
        conf.qcow2_volumes_dir = self.dir
        conf.qcow2_connection_type = 'local'
        conf.qcow2_libvirt_uri = ''
        conf.qcow2_block_commit_timeout = 60
        conf.qcow2_backup_decode_window_mb = 64
        conf.qcow2_backup_staging_dir = None
        conf.qcow2_dirty_bitmaps = True
        conf.qcow2_dirty_bitmaps_kept = 2
        self.conf = conf
        self.driver = qcow2.Qcow2VolumeDriver(configuration=conf)
        self.ctxt = context.get_admin_context()
        self.volume = fake_volume.fake_volume_obj(self.ctxt, size=1,
                                                  id=VOLUME)
        self.path = self.driver.local_path(self.volume)
        self.name = bitmaps.name_for('new')
        self.frozen = mock.Mock(spec=freezer.FrozenImage, path=self.path,
                                read_path=self.path + '.cvb-frozen-t')
        self.frozen_cm = self.useFixture(fixtures.MockPatchObject(
            freezer, 'frozen', autospec=True)).mock
        self.frozen_cm.return_value.__enter__.return_value = self.frozen
        self.reader_cls = self.useFixture(fixtures.MockPatchObject(
            raw_reader, 'RawImageReader', autospec=True)).mock
        self.reader_cls.return_value.virtual_size = GIB
        self.reader_cls.return_value.bytes_read_from_disk = 65536
        self.prune = self.useFixture(fixtures.MockPatchObject(
            bitmaps, 'prune', autospec=True, return_value=['cvb-a'])).mock
        self.keep = self.useFixture(fixtures.MockPatchObject(
            changes, 'bitmaps_to_keep', autospec=True,
            return_value=[self.name, 'cvb-b'])).mock

    def _backup_volume(self, fail=None):
        backup = _backup('new')
        with self.driver.open_backup_source(self.ctxt, backup,
                                            self.volume) as source:
            self.assertIs(self.reader_cls.return_value, source)
            if fail:
                raise fail
        return source

    def test_bitmap_created_at_the_freeze_and_pruned_after(self):
        self._backup_volume()
        self.frozen_cm.assert_called_once_with(self.path, None, 60,
                                               path_map=IDENTITY,
                                               bitmap=self.name)
        self.keep.assert_called_once_with(self.ctxt, VOLUME, 2,
                                          new_backup_id='new',
                                          failed_backup_id=None)
        self.prune.assert_called_once_with(self.path, [self.name, 'cvb-b'],
                                           conn=None, path_map=IDENTITY)

    def test_pruned_after_the_merge(self):
        calls = []
        self.frozen_cm.return_value.__exit__.side_effect = (
            lambda *a: calls.append('merge'))
        self.prune.side_effect = lambda *a, **k: calls.append('prune')
        self._backup_volume()
        self.assertEqual(['merge', 'prune'], calls)

    def test_source_tracks_changes_of_the_frozen_image(self):
        with mock.patch.object(changes, 'Tracker', autospec=True) as cls:
            self._backup_volume()
        cls.assert_called_once_with(self.frozen.read_path, mock.ANY, GIB,
                                    None, enabled=True, of_snapshot=False)
        self.assertEqual(cls.return_value,
                         self.reader_cls.call_args[1]['changes'])
        self.assertEqual(GIB, cls.return_value.image_size)

    def test_failed_backup_removes_its_bitmap(self):
        self.keep.return_value = ['cvb-b']
        self.assertRaises(RuntimeError, self._backup_volume,
                          RuntimeError('service failed'))
        self.keep.assert_called_once_with(self.ctxt, VOLUME, 2,
                                          new_backup_id=None,
                                          failed_backup_id='new')
        self.prune.assert_called_once_with(self.path, ['cvb-b'], conn=None,
                                           path_map=IDENTITY)

    def test_pruning_trouble_does_not_fail_the_backup(self):
        self.prune.side_effect = errors.QemuImgError('locked')
        self._backup_volume()
        self.prune.assert_called_once_with(self.path, mock.ANY, conn=None,
                                           path_map=IDENTITY)

    def test_database_trouble_does_not_fail_the_backup(self):
        self.keep.side_effect = RuntimeError('db down')
        self._backup_volume()
        self.prune.assert_not_called()

    def test_bitmaps_off_creates_none_and_removes_ours(self):
        self.conf.qcow2_dirty_bitmaps = False
        self._backup_volume()
        self.frozen_cm.assert_called_once_with(
            self.path, None, 60, path_map=IDENTITY)
        self.prune.assert_called_once_with(self.path, (), conn=None,
                                           path_map=IDENTITY)
        tracker = self.reader_cls.call_args[1]['changes']
        self.assertFalse(tracker.enabled)

    def test_snapshot_has_no_bitmap_and_reads_everything(self):
        snapshot = mock.Mock(volume_size=1, spec=['volume_size', 'name',
                                                  'id'])
        snapshot.name = 'snapshot-x'
        with self.driver.open_backup_source(self.ctxt, _backup('new'),
                                            snapshot):
            pass
        self.frozen_cm.assert_not_called()
        self.prune.assert_not_called()
        tracker = self.reader_cls.call_args[1]['changes']
        self.assertTrue(tracker.of_snapshot)

    def test_temporary_copy_has_no_bitmap_and_reads_everything(self):
        copy = fake_volume.fake_volume_obj(self.ctxt, size=1, id=OTHER)
        with self.driver.open_backup_source(self.ctxt, _backup('new'),
                                            copy):
            pass
        self.frozen_cm.assert_called_once_with(
            self.driver.local_path(copy), None, 60,
            path_map=IDENTITY)
        self.prune.assert_not_called()
        tracker = self.reader_cls.call_args[1]['changes']
        self.assertTrue(tracker.of_snapshot)

    def _group(self):
        volumes = [self.volume, fake_volume.fake_volume_obj(
            self.ctxt, size=1, id=OTHER)]
        paths = [self.driver.local_path(v) for v in volumes]
        backups = [_backup('b0', VOLUME), _backup('b1', OTHER)]
        devices = [mock.Mock(is_snapshot=False, volume=v, spec=[
            'is_snapshot', 'volume', 'snapshot']) for v in volumes]
        return paths, [(b, mock.sentinel.service, d)
                       for b, d in zip(backups, devices)]

    @mock.patch.object(freezer, 'freeze_all', autospec=True)
    def test_group_backup_creates_each_bitmap_at_the_freeze(self,
                                                            freeze_all):
        paths, requests = self._group()
        busy = errors.KvmError('Image busy')
        freeze_all.return_value = {paths[0]: self.frozen, paths[1]: busy}
        with mock.patch.object(self.driver, 'backup_volume', autospec=True,
                               return_value='done'):
            results = self.driver.backup_volumes(self.ctxt, requests)
        self.assertEqual({paths[0]: bitmaps.name_for('b0'),
                          paths[1]: bitmaps.name_for('b1')},
                         freeze_all.call_args[1]['bitmaps'])
        self.assertEqual('done', results['b0'])
        self.assertIsInstance(results['b1'], Exception)
        # The freeze that failed removed its own bitmap; the frozen image
        # no backup took (backup_volume is mocked) loses its one.
        self.frozen.merge.assert_called_once_with()
        self.keep.assert_called_once_with(self.ctxt, VOLUME, 2,
                                          new_backup_id=None,
                                          failed_backup_id='b0')
        self.prune.assert_called_once_with(paths[0], mock.ANY, conn=None,
                                           path_map=IDENTITY)

    @mock.patch.object(freezer, 'freeze_all', autospec=True)
    def test_group_undone_leaves_bitmaps_to_the_freezer(self, freeze_all):
        paths, requests = self._group()
        freeze_all.side_effect = errors.GroupFreezeFailed(
            {paths[1]: errors.KvmError('Image busy')})
        self.assertRaises(qcow2.cvb_exception.GroupFreezeError,
                          self.driver.backup_volumes, self.ctxt, requests,
                          all_or_nothing=True)
        self.assertEqual({paths[0]: bitmaps.name_for('b0'),
                          paths[1]: bitmaps.name_for('b1')},
                         freeze_all.call_args[1]['bitmaps'])
        # Undoing the freeze removed what it made; nothing to prune.
        self.prune.assert_not_called()
