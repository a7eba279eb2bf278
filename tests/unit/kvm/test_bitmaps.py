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

"""Dirty bitmaps: decisions and wiring, with qemu-img and libvirt mocked.

The real behaviour of QEMU and libvirt is held in
tests/functional/kvm/test_bitmaps.py.
"""

import fcntl
import os
import time
from unittest import mock

import fixtures
import libvirt
import testtools

from cinder_vmdk_backup.kvm import bitmaps
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import offline
from cinder_vmdk_backup.kvm import qemu_img

MIB = 1024 * 1024


def _info(size=64 * MIB, bitmaps_=()):
    return {'virtual-size': size,
            'format-specific': {'type': 'qcow2',
                                'data': {'bitmaps': list(bitmaps_)}}}


def _bitmap(name, flags=('auto',)):
    return {'name': name, 'flags': list(flags), 'granularity': 65536}


def _use(path, target='vda'):
    domain = mock.create_autospec(libvirt.virDomain, instance=True)
    domain.UUIDString.return_value = 'd1'
    domain.name.return_value = 'instance-1'
    return domains.DiskUse(domain, target, [os.path.realpath(path)])


class DirtyRangesTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.info = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'info', autospec=True)).mock
        self.server = self.useFixture(fixtures.MockPatchObject(
            bitmaps, '_nbd_server', autospec=True)).mock
        self.server.return_value.__enter__.return_value = ('/d', '/d/sock')
        self.map = self.useFixture(fixtures.MockPatchObject(
            bitmaps, '_map_extents', autospec=True)).mock

    def _map(self, *extents):
        at = 0
        out = []
        for length, dirty in extents:
            out.append({'start': at, 'length': length, 'depth': 0,
                        'present': not dirty, 'zero': False,
                        'data': not dirty})
            at += length
        self.map.return_value = (e for e in out)

    def test_name(self):
        self.assertEqual('cvb-1234', bitmaps.name_for('1234'))

    def test_dirty_is_data_false_merged_and_clipped(self):
        self.info.return_value = _info(3 * MIB + 512, [_bitmap('cvb-a')])
        self._map((MIB, False), (65536, True), (65536, True),
                  (MIB, False), (MIB + 65536, True))
        self.assertEqual([(MIB, 131072), (2 * MIB + 131072, MIB - 131072
                                          + 512)],
                         bitmaps.dirty_ranges('/v/x', 'cvb-a', 3 * MIB + 512))
        self.server.assert_called_once_with('/v/x', 'cvb-a')
        self.map.assert_called_once_with('/v/x', '/d', '/d/sock', 'cvb-a')

    def test_too_many_ranges_is_a_doubt(self):
        self.info.return_value = _info(bitmaps_=[_bitmap('cvb-a')])
        self.useFixture(fixtures.MockPatch(
            'cinder_vmdk_backup.kvm.bitmaps.MAX_RANGES', 2))
        self._map((65536, True), (65536, False), (65536, True),
                  (65536, False), (64 * MIB - 4 * 65536, True))
        exc = self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                                '/v/x', 'cvb-a', 64 * MIB)
        self.assertIn('more than 2 separate', exc.reason)

    def test_doubts(self):
        cases = [
            (_info(bitmaps_=[_bitmap('cvb-b')]), 'no dirty bitmap cvb-a'),
            (_info(bitmaps_=[_bitmap('cvb-a', ('in-use', 'auto'))]),
             'inconsistent'),
            (_info(bitmaps_=[_bitmap('cvb-a', ())]), 'disabled'),
            (_info(size=128 * MIB, bitmaps_=[_bitmap('cvb-a')]), 'resized'),
            ({'virtual-size': 64 * MIB, 'format-specific': {'type': 'raw'}},
             'no dirty bitmap'),
        ]
        for info, reason in cases:
            self.info.return_value = info
            exc = self.assertRaises(bitmaps.BitmapUnusable,
                                    bitmaps.dirty_ranges, '/v/x', 'cvb-a',
                                    64 * MIB)
            self.assertIn(reason, exc.reason)
        self.server.assert_not_called()

    def test_reader_failures_are_doubts(self):
        self.info.return_value = _info(bitmaps_=[_bitmap('cvb-a')])
        self.map.side_effect = errors.QemuImgError('qemu-img map failed')
        exc = self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                                '/v/x', 'cvb-a', 64 * MIB)
        self.assertIn('qemu-img map failed', exc.reason)
        self.map.side_effect = ValueError('not json')
        self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                          '/v/x', 'cvb-a', 64 * MIB)
        self.map.side_effect = None
        self.server.side_effect = errors.QemuImgError('qemu-nbd failed')
        self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                          '/v/x', 'cvb-a', 64 * MIB)
        self.server.side_effect = PermissionError('no lock directory')
        self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                          '/v/x', 'cvb-a', 64 * MIB)
        self.info.side_effect = errors.ImageCorruptError('corrupt')
        self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                          '/v/x', 'cvb-a', 64 * MIB)

    def test_a_map_with_a_gap_or_short_is_a_doubt(self):
        self.info.return_value = _info(bitmaps_=[_bitmap('cvb-a')])
        self.map.return_value = (e for e in [
            {'start': 0, 'length': 65536, 'data': False},
            {'start': 131072, 'length': 65536, 'data': True}])
        exc = self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                                '/v/x', 'cvb-a', 64 * MIB)
        self.assertIn('gap', exc.reason)
        self._map((MIB, True))
        exc = self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                                '/v/x', 'cvb-a', 64 * MIB)
        self.assertIn('ends at', exc.reason)


class PruneTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 'v')
        self.conn = mock.create_autospec(libvirt.virConnect, instance=True)
        self.users = self.useFixture(fixtures.MockPatchObject(
            domains, 'users', autospec=True, return_value={})).mock
        self.bitmaps = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'bitmaps', autospec=True)).mock
        self.bitmaps.return_value = [_bitmap('cvb-1'), _bitmap('theirs'),
                                     _bitmap('cvb-2'), _bitmap('cvb-3')]
        self.remove = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'bitmap_remove', autospec=True)).mock
        self.qmp_remove = self.useFixture(fixtures.MockPatchObject(
            domains, 'remove_bitmap', autospec=True)).mock
        self.node_bitmaps = self.useFixture(fixtures.MockPatchObject(
            domains, 'node_bitmaps', autospec=True)).mock

    def test_offline_removes_ours_not_kept(self):
        self.assertEqual(['cvb-1', 'cvb-3'],
                         bitmaps.prune(self.path, ['cvb-2'], self.conn))
        self.assertEqual([mock.call(self.path, 'cvb-1'),
                          mock.call(self.path, 'cvb-3')],
                         self.remove.call_args_list)
        self.qmp_remove.assert_not_called()

    def test_running_domain_goes_through_the_monitor(self):
        use = _use(self.path)
        self.users.return_value = {self.path: [use]}
        self.node_bitmaps.return_value = [
            {'name': 'cvb-1'}, {'name': 'cvb-2'}, {'name': 'other'}]
        self.assertEqual(['cvb-1'], bitmaps.prune(self.path, ['cvb-2'],
                                                  self.conn))
        self.qmp_remove.assert_called_once_with(use.domain, self.path,
                                                'cvb-1')
        self.remove.assert_not_called()

    def test_used_as_a_backing_file_is_left_alone(self):
        use = _use(self.path)
        use.top = '/elsewhere/overlay'
        self.users.return_value = {self.path: [use]}
        self.assertRaises(errors.ImageInUseError, bitmaps.prune, self.path,
                          [], self.conn)
        self.remove.assert_not_called()
        self.qmp_remove.assert_not_called()

    def test_one_failure_does_not_stop_the_others(self):
        self.remove.side_effect = [errors.QemuImgError('locked'), None, None]
        exc = self.assertRaises(errors.KvmError, bitmaps.prune, self.path,
                                [], None)
        self.assertIn('cvb-1: locked', str(exc))
        self.assertEqual(3, self.remove.call_count)


class ResizeTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.run = self.useFixture(fixtures.MockPatchObject(
            qemu_img, '_run', autospec=True)).mock
        self.bitmaps = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'bitmaps', autospec=True)).mock
        self.remove = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'bitmap_remove', autospec=True)).mock

    def test_inconsistent_bitmaps_of_ours_are_removed_and_resize_retried(
            self):
        self.run.side_effect = [errors.QemuImgError(
            "qemu-img: Bitmap 'cvb-1' is inconsistent"), '']
        self.bitmaps.return_value = [_bitmap('cvb-1', ('in-use', 'auto')),
                                     _bitmap('cvb-2')]
        qemu_img.resize('/v/x', 2 * MIB)
        self.remove.assert_called_once_with('/v/x', 'cvb-1')
        self.assertEqual(2, self.run.call_count)

    def test_an_inconsistent_bitmap_of_someone_else_fails(self):
        self.run.side_effect = errors.QemuImgError(
            "qemu-img: Bitmap 'x' is inconsistent")
        self.bitmaps.return_value = [_bitmap('x', ('in-use', 'auto'))]
        self.assertRaises(errors.QemuImgError, qemu_img.resize, '/v/x', 1)
        self.remove.assert_not_called()

    def test_other_failures_are_not_retried(self):
        self.run.side_effect = errors.QemuImgError('No space left')
        self.assertRaises(errors.QemuImgError, qemu_img.resize, '/v/x', 1)
        self.bitmaps.assert_not_called()


class FreezeWithBitmapsTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.paths = [os.path.join(self.dir, n) for n in ('a', 'b')]
        for path in self.paths:
            open(path, 'w').close()
        self.conn = mock.create_autospec(libvirt.virConnect, instance=True)
        self.users = self.useFixture(fixtures.MockPatchObject(
            domains, 'users', autospec=True, return_value={})).mock
        self.events = []
        self.add = self.useFixture(fixtures.MockPatchObject(
            bitmaps, 'add', autospec=True)).mock
        self.add.side_effect = lambda p, n, conn=None: self.events.append(
            ('add', p, n))
        self.remove = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'bitmap_remove', autospec=True)).mock
        self.freeze = self.useFixture(fixtures.MockPatchObject(
            offline, 'freeze', autospec=True)).mock
        self.freeze.side_effect = self._freeze
        self.qmp_add = self.useFixture(fixtures.MockPatchObject(
            domains, 'add_bitmap', autospec=True)).mock
        self.qmp_add.side_effect = lambda d, p, n, g: self.events.append(
            ('qmp-add', p, n, g))
        self.qmp_remove = self.useFixture(fixtures.MockPatchObject(
            domains, 'remove_bitmap', autospec=True)).mock
        self.snapshot = self.useFixture(fixtures.MockPatchObject(
            domains, 'snapshot_disks', autospec=True)).mock
        self.snapshot.side_effect = self._snapshot

    def _freeze(self, path, token):
        self.events.append(('freeze', path))
        return path + '.frozen'

    def _snapshot(self, domain, overlays, quiesce=True):
        self.events.append(('snapshot', sorted(overlays)))
        for path in overlays.values():
            open(path, 'w').close()   # libvirt makes the overlays
        return domains.Snapshot(False, None, 0.1, 1e9)

    def _merge_all(self, results):
        with mock.patch.object(offline, 'merge', autospec=True), \
                mock.patch.object(domains, 'active_commit', autospec=True):
            for result in results.values():
                result.merge()

    def test_offline_bitmap_is_added_before_the_freeze(self):
        results = freezer.freeze_all(
            self.paths, None, bitmaps={self.paths[0]: 'cvb-1'})
        self.assertEqual([('add', self.paths[0], 'cvb-1'),
                          ('freeze', self.paths[0]),
                          ('freeze', self.paths[1])], self.events)
        self.assertEqual('cvb-1', results[self.paths[0]].bitmap)
        self.assertIsNone(results[self.paths[1]].bitmap)
        self._merge_all(results)

    def test_a_bitmap_that_cannot_be_made_does_not_fail_the_freeze(self):
        self.add.side_effect = errors.QemuImgError('no space')
        with self.assertLogs('cinder_vmdk_backup.kvm.freezer', 'WARNING'
                             ) as logs:
            results = freezer.freeze_all(self.paths[:1], None,
                                         bitmaps={self.paths[0]: 'cvb-1'})
        self.assertIsNone(results[self.paths[0]].bitmap)
        self.assertIn('reads everything', logs.output[0])
        self.freeze.assert_called_once_with(self.paths[0], mock.ANY)
        self._merge_all(results)

    def test_failed_offline_freeze_removes_the_new_bitmap(self):
        self.freeze.side_effect = errors.QemuImgError('no space')
        results = freezer.freeze_all(self.paths[:1], None,
                                     bitmaps={self.paths[0]: 'cvb-1'})
        self.assertIsInstance(results[self.paths[0]], errors.QemuImgError)
        self.remove.assert_called_once_with(self.paths[0], 'cvb-1')

    def test_online_bitmaps_are_added_before_the_one_snapshot(self):
        uses = [_use(p, t) for p, t in zip(self.paths, ('vda', 'vdb'))]
        uses[1].domain = uses[0].domain
        self.users.return_value = {p: [u] for p, u in zip(self.paths, uses)}
        results = freezer.freeze_all(
            self.paths, self.conn,
            bitmaps={self.paths[0]: 'cvb-1', self.paths[1]: 'cvb-2'})
        self.assertEqual([('qmp-add', self.paths[0], 'cvb-1', 65536),
                          ('qmp-add', self.paths[1], 'cvb-2', 65536),
                          ('snapshot', ['vda', 'vdb'])], self.events)
        self.assertEqual(['cvb-1', 'cvb-2'],
                         [results[p].bitmap for p in self.paths])
        self.add.assert_not_called()
        self._merge_all(results)

    def test_failed_snapshot_removes_the_new_bitmaps(self):
        use = _use(self.paths[0])
        self.users.return_value = {self.paths[0]: [use]}
        self.snapshot.side_effect = errors.DomainError('no space')
        results = freezer.freeze_all(self.paths[:1], self.conn,
                                     bitmaps={self.paths[0]: 'cvb-1'})
        self.assertIsInstance(results[self.paths[0]], errors.DomainError)
        self.qmp_remove.assert_called_once_with(use.domain, self.paths[0],
                                                'cvb-1')

    def test_undone_freezes_remove_their_bitmaps(self):
        use = _use(self.paths[0])
        self.users.return_value = {self.paths[0]: [use]}
        self.freeze.side_effect = errors.QemuImgError('no space')
        with mock.patch.object(domains, 'active_commit', autospec=True):
            self.assertRaises(errors.GroupFreezeFailed, freezer.freeze_all,
                              self.paths, self.conn, all_or_nothing=True,
                              bitmaps={p: 'cvb-1' for p in self.paths})
        self.qmp_remove.assert_called_once_with(use.domain, self.paths[0],
                                                'cvb-1')
        self.remove.assert_called_once_with(self.paths[1], 'cvb-1')

    def test_frozen_passes_one_bitmap(self):
        with mock.patch.object(offline, 'merge', autospec=True):
            with freezer.frozen(self.paths[0], None, bitmap='cvb-9') as f:
                self.assertEqual('cvb-9', f.bitmap)
            with freezer.frozen(self.paths[1]) as f:
                self.assertIsNone(f.bitmap)
        self.assertEqual(1, self.add.call_count)


class QmpTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.domain = mock.create_autospec(libvirt.virDomain, instance=True)
        self.domain.name.return_value = 'instance-1'
        self.monitor = self.useFixture(fixtures.MockPatchObject(
            domains.libvirt_qemu, 'qemuMonitorCommand', autospec=True)).mock
        self.nodes = [
            {'node-name': 'libvirt-1-storage', 'drv': 'file',
             'file': '/v/x'},
            {'node-name': 'libvirt-1-format', 'drv': 'qcow2', 'file': '/v/x',
             'dirty-bitmaps': [{'name': 'cvb-1'}]}]
        self.sent = []
        self.monitor.side_effect = self._answer

    def _answer(self, domain, request, flags):
        import json
        request = json.loads(request)
        self.sent.append(request)
        if request['execute'] == 'query-named-block-nodes':
            return json.dumps({'return': self.nodes})
        if request['arguments'].get('name') == 'bad':
            return json.dumps({'error': {'class': 'GenericError',
                                         'desc': 'Bitmap not found'}})
        return json.dumps({'return': {}})

    def test_add_replaces_one_of_the_same_name(self):
        domains.add_bitmap(self.domain, '/v/x', 'cvb-1', 65536)
        self.assertEqual(
            [('block-dirty-bitmap-remove',
              {'node': 'libvirt-1-format', 'name': 'cvb-1'}),
             ('block-dirty-bitmap-add',
              {'node': 'libvirt-1-format', 'name': 'cvb-1',
               'granularity': 65536, 'persistent': True})],
            [(r['execute'], r['arguments']) for r in self.sent
             if r['execute'] != 'query-named-block-nodes'])

    def test_errors_name_the_command_and_domain(self):
        exc = self.assertRaises(errors.DomainError, domains.remove_bitmap,
                                self.domain, '/v/x', 'bad')
        self.assertIn('block-dirty-bitmap-remove', str(exc))
        self.assertIn('instance-1', str(exc))
        self.assertIn('Bitmap not found', str(exc))
        exc = self.assertRaises(errors.DomainError, domains.format_node,
                                self.domain, '/v/other')
        self.assertIn('no qcow2 node of /v/other', str(exc))


class LeftoverServersTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.useFixture(fixtures.MockPatchObject(
            bitmaps.tempfile, 'gettempdir', autospec=True,
            return_value=os.path.join(self.dir, 'tmp')))
        self.locks = os.path.join(self.dir, '.cvb-locks')
        os.makedirs(self.locks)

    def _server_dir(self, age):
        directory = os.path.join(self.locks, bitmaps.NBD_DIR_PREFIX + 'x')
        os.mkdir(directory, 0o700)
        then = time.time() - age
        os.utime(directory, (then, then))
        return directory

    def test_dir_without_server_is_removed_once_old(self):
        directory = self._server_dir(age=5)
        self.assertEqual([], bitmaps.stop_leftover_servers(self.dir))
        self.assertTrue(os.path.isdir(directory))
        then = time.time() - 120
        os.utime(directory, (then, then))
        done = bitmaps.stop_leftover_servers(self.dir)
        self.assertEqual(1, len(done))
        self.assertFalse(os.path.exists(directory))

    def test_locked_dir_is_left_alone(self):
        directory = self._server_dir(age=120)
        fd = os.open(os.path.join(directory, 'lock'),
                     os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.assertEqual([], bitmaps.stop_leftover_servers(self.dir))
        self.assertTrue(os.path.isdir(directory))

    def test_a_pid_that_is_not_our_qemu_nbd_is_not_killed(self):
        directory = self._server_dir(age=120)
        with open(os.path.join(directory, 'pid'), 'w') as f:
            f.write('%d\n' % os.getpid())
        then = time.time() - 120
        os.utime(directory, (then, then))
        with mock.patch.object(bitmaps.os, 'kill', autospec=True) as kill:
            bitmaps.stop_leftover_servers(self.dir)
        kill.assert_not_called()
        self.assertFalse(os.path.exists(directory))
