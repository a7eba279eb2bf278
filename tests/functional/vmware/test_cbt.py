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

"""Changed-block tracking of VMDK volumes against vcsim (patch 0015).

vcsim tracks each disk's writes (its ``/cvb-disk-write`` endpoint, NFC
imports, uploads), keeps a changeId per snapshot and answers
``QueryChangedDiskAreas``; tracking resets where vSphere resets it. The
backups go through the plugin's manager into Cinder's posix driver, as in
:mod:`.test_backup_flows`: an incremental must store exactly the blocks
that were written since its parent, restore byte for byte, and every doubt
must read the whole volume and say why.
"""

import os
import re
import urllib.parse
import urllib.request

from cinder.objects import fields
from oslo_utils import units
from oslo_vmware import vim_util

from cinder_vmdk_backup.vmware import cbt
from tests.functional.vmware import test_backup_flows as flows

#: vSphere's changeId: 16 bytes (the 9th after a dash there, a space in
#: vcsim), a slash, the sequence number.
CHANGE_ID_RE = re.compile(r'^52( [0-9a-f]{2}){7}[- ][0-9a-f]{2}'
                          r'( [0-9a-f]{2}){7}/\d+$')


def tracked_write(fixture, ds_path, data, offset):
    """Write into a disk through vcsim, which records the change."""
    url = 'https://%s:%d/cvb-disk-write?%s' % (
        fixture.host, fixture.port, urllib.parse.urlencode(
            {'path': ds_path, 'offset': offset}))
    request = urllib.request.Request(url, data=data, method='POST')
    with urllib.request.urlopen(request, context=fixture.ssl_context(),
                                timeout=30) as response:  # nosec
        if response.status != 200:
            raise AssertionError('tracked write: HTTP %d' % response.status)


class ChangeTrackingTestCase(flows.VmdkBackupTestBase):

    def _write(self, volume, disk, offset, data):
        disk.write(offset, data)
        tracked_write(self.vcsim, self._vmdk_path(volume), data, offset)

    def _tracking_on(self, volume):
        return bool(self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim,
            self._backing(volume), 'config.changeTrackingEnabled'))

    def _shas(self, backup):
        service = self.manager._backup_service_class(self.ctxt)
        sha_file = service._read_sha256file(backup)
        return sha_file['chunk_size'], sha_file['sha256s']

    def _stored_blocks(self, backup, block):
        service = self.manager._backup_service_class(self.ctxt)
        blocks = set()
        for entry in service._read_metadata(backup)['objects']:
            for obj in entry.values():
                first = obj['offset'] // block
                last = -(-(obj['offset'] + obj['length']) // block)
                blocks.update(range(first, last))
        return blocks

    def _whole_read_reasons(self, backup):
        return re.findall(r'Backup %s of \S+ \S+ reads the whole volume: '
                          r'(.*)' % backup.id, self.logs.output)

    def _assert_tracked(self, backup):
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.assertEqual([], self._whole_read_reasons(backup))
        self.assertRegex(backup.metadata[cbt.CHANGE_ID_KEY], CHANGE_ID_RE)

    def _assert_whole_read(self, backup, reason):
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        reasons = self._whole_read_reasons(backup)
        self.assertEqual(1, len(reasons), reasons)
        self.assertIn(reason, reasons[0])

    def _assert_no_snapshot(self, volume):
        self.assertFalse(self.driver.volumeops.snapshot_exists(
            self._backing(volume)))

    def _changed_blocks(self, parent, child):
        block, before = self._shas(parent)
        child_block, after = self._shas(child)
        self.assertEqual(block, child_block)
        self.assertEqual(len(before), len(after))
        return block, {i for i, (a, b) in enumerate(zip(before, after))
                       if a != b}

    def test_incremental_asks_no_allocated_areas_same_backup(self):
        # The allocated areas ("*") cannot change what an incremental with
        # known changes reads or stores: it is not asked, and the backup
        # is the same as one made asking it.
        disk = flows.Disk()
        volume = self._vmdk_volume(disk=disk)
        full = self._backup(volume)
        writes = ((5 * units.Mi + 4096 + 65536, os.urandom(70000)),
                  # Zeros over data: a changed area that reads as zeros.
                  (300 * units.Mi + 4096, bytes(2 * 65536)),
                  (700 * units.Mi, os.urandom(4096)))
        for offset, data in writes:
            self._write(volume, disk, offset, data)
        asked = []
        real = cbt.changed_areas

        def changed_areas(session, vm_ref, snapshot_ref, device_key,
                          capacity, change_id):
            asked.append(change_id)
            return real(session, vm_ref, snapshot_ref, device_key, capacity,
                        change_id)

        self._patch(cbt, 'changed_areas', side_effect=changed_areas)
        skipped = self._backup(volume, parent=full)
        self._assert_tracked(skipped)
        self.assertEqual([full.metadata[cbt.CHANGE_ID_KEY]], asked)

        # The same incremental again, the allocated areas asked (as before
        # this change).
        real_zero_ranges = cbt.Tracker.zero_ranges

        def zero_ranges(tracker):
            tracker.answered = None
            return real_zero_ranges(tracker)

        self._patch(cbt.Tracker, 'zero_ranges', side_effect=zero_ranges)
        del asked[:]
        queried = self._backup(volume, parent=full)
        self._assert_tracked(queried)
        self.assertEqual([full.metadata[cbt.CHANGE_ID_KEY],
                          cbt.ALL_ALLOCATED], asked)

        self.assertEqual(self._shas(queried), self._shas(skipped))
        self.assertEqual(self._objects(queried), self._objects(skipped))
        self.assertGreater(len(self._objects(skipped)), 0)
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(skipped, new)
        self._assert_data(disk, new)
        self._assert_nothing_left()

    def _objects(self, backup):
        """(offset, length, md5) of each object: the stored data."""
        service = self.manager._backup_service_class(self.ctxt)
        return [(obj['offset'], obj['length'], obj['md5'])
                for entry in service._read_metadata(backup)['objects']
                for obj in entry.values()]

    def test_incremental_stores_exactly_the_written_blocks(self):
        disk = flows.Disk()
        volume = self._vmdk_volume(disk=disk)
        # Switched on at the backing's creation.
        self.assertTrue(self._tracking_on(volume))
        full = self._backup(volume)
        self.assertEqual(fields.BackupStatus.AVAILABLE, full.status)
        self.assertRegex(full.metadata[cbt.CHANGE_ID_KEY], CHANGE_ID_RE)
        self._assert_no_snapshot(volume)

        # Known writes: inside a data region across a block boundary, a
        # new region in a hole, a few bytes near the end of the disk.
        writes = ((5 * units.Mi + 4096 + 3 * 65536 - 100, os.urandom(5000)),
                  (600 * units.Mi + 12345, os.urandom(units.Mi + 5)),
                  (units.Gi - units.Mi + 4096, os.urandom(8192)))
        for offset, data in writes:
            self._write(volume, disk, offset, data)
        incremental = self._backup(volume, parent=full)
        self._assert_tracked(incremental)
        self.assertNotEqual(full.metadata[cbt.CHANGE_ID_KEY],
                            incremental.metadata[cbt.CHANGE_ID_KEY])

        block, changed = self._changed_blocks(full, incremental)
        expected = set()
        for offset, data in writes:
            expected.update(range(offset // block,
                                  -(-(offset + len(data)) // block)))
        # Exactly the written blocks differ, and only they are stored.
        self.assertEqual(expected, changed)
        self.assertEqual(expected, self._stored_blocks(incremental, block))

        # A second incremental with nothing written stores nothing.
        idle = self._backup(volume, parent=incremental)
        self._assert_tracked(idle)
        self.assertEqual(set(), self._changed_blocks(incremental, idle)[1])
        self.assertEqual(0, self._stored_bytes(idle))

        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(idle, new)
        self.assertEqual('available', new.status)
        self._assert_data(disk, new)
        self._assert_no_snapshot(volume)
        self._assert_nothing_left()

    def test_only_the_tracked_changes_are_taken(self):
        # The proof that the incremental used vCenter's answer: a write
        # that bypasses tracking (impossible on vSphere) is not in it.
        disk = flows.Disk()
        volume = self._vmdk_volume(disk=disk)
        full = self._backup(volume)
        tracked = (400 * units.Mi, os.urandom(65536))
        self._write(volume, disk, *tracked)
        with open(self._flat(volume), 'r+b') as flat:
            flat.seek(800 * units.Mi)
            flat.write(os.urandom(65536))
        incremental = self._backup(volume, parent=full)
        self._assert_tracked(incremental)
        block, changed = self._changed_blocks(full, incremental)
        self.assertEqual({400 * units.Mi // block + i
                          for i in range(65536 // block or 1)}, changed)

    def test_each_doubt_reads_everything(self):
        # A backing made while tracking was off, backed up that way.
        self.override_config('vmware_backup_change_tracking', False,
                             group='vmdk')
        disk = flows.Disk()
        volume = self._vmdk_volume(disk=disk)
        self.assertFalse(self._tracking_on(volume))
        untracked = self._backup(volume)
        self.assertEqual(fields.BackupStatus.AVAILABLE, untracked.status)
        self.assertNotIn(cbt.CHANGE_ID_KEY, untracked.metadata)

        # Tracking on: switched on for the backing before its backup; the
        # parent has no changeId.
        self.override_config('vmware_backup_change_tracking', True,
                             group='vmdk')
        self._write(volume, disk, 70 * units.Mi, os.urandom(4096))
        first = self._backup(volume, parent=untracked)
        self._assert_whole_read(first, 'has no changeId')
        self.assertRegex(first.metadata[cbt.CHANGE_ID_KEY], CHANGE_ID_RE)
        self.assertIn('Change tracking started on the backing of volume '
                      '%s' % volume.id, self.logs.output)
        self.assertTrue(self._tracking_on(volume))

        # Tracked from there on.
        self._write(volume, disk, 90 * units.Mi, os.urandom(4096))
        tracked = self._backup(volume, parent=first)
        self._assert_tracked(tracked)
        tracked_disk = disk.resized(disk.size)

        # Tracking off for a backup.
        self.override_config('vmware_backup_change_tracking', False,
                             group='vmdk')
        off = self._backup(volume, parent=tracked)
        self._assert_whole_read(off, 'change tracking is off')
        self.override_config('vmware_backup_change_tracking', True,
                             group='vmdk')

        # A restore replaced the disk: vCenter refuses the old changeId.
        self._restore(first, volume)
        self.assertEqual('available', volume.status)
        restored = flows.Disk(regions=())
        restored.regions = dict(disk.regions)
        del restored.regions[90 * units.Mi]
        self._assert_data(restored, volume)
        after_restore = self._backup(volume, parent=tracked)
        self._assert_whole_read(after_restore, 'tracking was reset')
        # Tracked again from there on.
        self._write(volume, restored, 110 * units.Mi, os.urandom(4096))
        resumed = self._backup(volume, parent=after_restore)
        self._assert_tracked(resumed)
        self.assertEqual(
            {110 * units.Mi // self._shas(resumed)[0]},
            self._changed_blocks(after_restore, resumed)[1])

        # The parent is another volume's backup.
        other_disk = flows.Disk(seed=b'other')
        other = self._vmdk_volume(disk=other_disk)
        crossed = self._backup(other, parent=tracked)
        self._assert_whole_read(crossed, 'is of another volume')

        # Each still restores byte for byte.
        for backup, expected in ((tracked, tracked_disk),
                                 (resumed, restored),
                                 (crossed, other_disk)):
            new = self._vmdk_volume(backing=False, status='creating')
            self._restore(backup, new)
            self.assertEqual('available', new.status)
            self._assert_data(expected, new)
        self._assert_no_snapshot(volume)
        self._assert_nothing_left()

    def test_extended_volume_reads_everything(self):
        disk = flows.Disk()
        volume = self._vmdk_volume(disk=disk)
        full = self._backup(volume)
        self.driver.extend_volume(volume, 2)
        volume.size = 2
        volume.save()
        self._write(volume, disk, units.Gi + 4096, os.urandom(8192))
        bigger = self._backup(volume, parent=full)
        self._assert_whole_read(bigger, 'size changed')
        self.assertRegex(bigger.metadata[cbt.CHANGE_ID_KEY], CHANGE_ID_RE)
        # And tracked again from there.
        self._write(volume, disk, 4096, os.urandom(512))
        next_one = self._backup(volume, parent=bigger)
        self._assert_tracked(next_one)
        new = self._vmdk_volume(size=2, backing=False, status='creating')
        self._restore(next_one, new)
        self._assert_data(disk.resized(2 * units.Gi), new)
        self._assert_nothing_left()
