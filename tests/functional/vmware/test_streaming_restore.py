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

"""Restores of VMDK volumes that stage nothing, against vcsim.

vcsim plays vCenter, Cinder's posix driver is the backup service, the
plugin's manager runs the restores (see :mod:`.test_backup_flows`). A chain
of backups (full, incrementals) is restored onto new volumes and over the
backed-up volume itself; the disk vcsim wrote is compared with what the
volume held at each backup. While the VMDK streams, the staging directory
is watched: nothing may be staged.
"""

import hashlib
import os
import subprocess

from cinder.objects import fields
from oslo_utils import units

from cinder_vmdk_backup.backup import chain_reader
from cinder_vmdk_backup.backup import staging_files
from cinder_vmdk_backup.vmware import diskswap
from cinder_vmdk_backup.volume.drivers import vmdk
from tests.functional import vcsim as vcsim_fixture
from tests.functional.vmware import test_backup_flows as flows

#: Most bytes temporary files may take on the backup host during a restore.
TEMP_LIMIT = 64 * units.Mi


class StreamingRestoreTestCase(flows.VmdkBackupTestBase):

    def setUp(self):
        super(StreamingRestoreTestCase, self).setUp()
        # Cinder's default codec (streamed); small objects so that the
        # incrementals' objects interleave with the full backup's.
        self.override_config('backup_compression_algorithm', 'zlib')
        self.override_config('backup_file_size', 64 * units.Mi)
        self.temp_peak = 0
        self.staged = []
        real_checked = vmdk._checked

        def watch(chunks, check):
            for chunk in real_checked(chunks, check):
                self._sample_staging()
                yield chunk

        self.streamed = self._patch(vmdk, '_checked', side_effect=watch)

    def _sample_staging(self):
        used = 0
        for name in os.listdir(self.staging_dir):
            path = os.path.join(self.staging_dir, name)
            try:
                used += os.stat(path).st_blocks * 512
            except FileNotFoundError:
                continue
            if name.lstrip('.').startswith(staging_files.PREFIX):
                self.staged.append(name)
        self.temp_peak = max(self.temp_peak, used)

    def _change(self, volume, disk, changes):
        for offset, data in changes:
            disk.write(offset, data)
            # Through vcsim, zeros too: its change tracking must see every
            # write (the incrementals read only what it reports).
            vcsim_fixture.seed_disk(self.vcsim, self._vmdk_path(volume),
                                    data, offset=offset, zeros=True)

    @staticmethod
    def _disk_sha256(disk):
        digest = hashlib.sha256()
        position = 0
        for offset, data in sorted(disk.regions.items()):
            while position < offset:
                step = min(offset - position, 8 * units.Mi)
                digest.update(bytes(step))
                position += step
            digest.update(data)
            position = offset + len(data)
        while position < disk.size:
            step = min(disk.size - position, 8 * units.Mi)
            digest.update(bytes(step))
            position += step
        return digest.hexdigest()

    def _assert_exported(self, disk, volume):
        """The volume's disk, read back through an NFC export, is disk."""
        raw = vcsim_fixture.read_disk_nfc(self.vcsim, self.session,
                                          self._backing(volume))
        self.assertEqual(self._disk_sha256(disk),
                         hashlib.sha256(raw).hexdigest())

    def _assert_streamed(self):
        self.assertTrue(self.streamed.called)
        self.assertEqual([], self.staged)
        self.assertLessEqual(self.temp_peak, TEMP_LIMIT)

    def test_chain_restores_byte_identical_without_staging(self):
        disk = flows.Disk()
        volume = self._vmdk_volume(disk=disk)
        full = self._backup(volume)
        at_full = disk.resized(disk.size)
        # New data, data overwritten, data turned into zeros.
        self._change(volume, disk, (
            (5 * units.Mi + 8192, b'x' * 4096),
            (100 * units.Mi, flows.pattern(b'new', 3 * units.Mi)),
            (300 * units.Mi, b'\0' * units.Mi)))
        incr1 = self._backup(volume, parent=full)
        at_incr1 = disk.resized(disk.size)
        self._change(volume, disk, (
            (100 * units.Mi + units.Mi, b'z' * 70000),
            (700 * units.Mi + 12345, flows.pattern(b'late', 200000))))
        incr2 = self._backup(volume, parent=incr1)
        for backup in (full, incr1, incr2):
            self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)

        for backup, expected in ((incr2, disk), (incr1, at_incr1),
                                 (full, at_full)):
            new = self._vmdk_volume(backing=False, status='creating')
            self._restore(backup, new)
            self.assertEqual('available', new.status)
            self._assert_data(expected, new)
            if backup is incr2:
                self._assert_exported(expected, new)
            self.assertEqual(new.id, diskswap.disk_of(
                self.session, self._backing(new)).backing.uuid)

        # Over the volume itself (temporary VM, disk swap).
        old_path = self._vmdk_path(volume)
        self._restore(incr1, volume)
        self.assertEqual('available', volume.status)
        self._assert_data(at_incr1, volume)
        self.assertNotEqual(old_path, self._vmdk_path(volume))
        self._assert_streamed()
        self.assertIn('without staging', self.logs.output)
        self._assert_nothing_left()

    def _damaged_restore(self, damage):
        disk = flows.Disk()
        volume = self._vmdk_volume(disk=disk)
        full = self._backup(volume)
        self._change(volume, disk, ((5 * units.Mi, b'x' * 4096),))
        incr = self._backup(volume, parent=full)
        files = self._vmdk_files()
        path = self._vmdk_path(volume)
        name = damage(full)
        self._restore(incr, volume, fail=True)
        self.assertEqual('error_restoring', volume.status)
        self.assertEqual(fields.BackupStatus.AVAILABLE, incr.status)
        self.assertIn(name, str(self.error))
        self.assertIn(full.id, str(self.error))
        self._assert_data(disk, volume)
        self.assertEqual(path, self._vmdk_path(volume))
        self.assertEqual(volume.id, diskswap.disk_of(
            self.session, self._backing(volume)).backing.uuid)
        self.assertEqual(files, self._vmdk_files())
        self._assert_nothing_left()

    def _object_path(self, backup, number):
        name = '%s-%05d' % (backup.service_metadata, number)
        return name, os.path.join(self.posix_dir, backup.container, name)

    def test_corrupt_object_fails_cleanly(self):
        def damage(full):
            # Caught by the md5 once the object has been streamed: the
            # import, under way, is aborted.
            name, path = self._object_path(full, 1)
            with open(path, 'r+b') as f:
                f.seek(os.path.getsize(path) // 2)
                byte = f.read(1)
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte[0] ^ 0x01]))
            return name
        self._damaged_restore(damage)

    def test_missing_object_fails_before_the_import(self):
        def damage(full):
            name, path = self._object_path(full, 1)
            os.unlink(path)
            return name
        self._damaged_restore(damage)
        self.assertFalse(self.streamed.called)

    def test_streaming_off_stages(self):
        self.override_config('vmware_backup_restore_streaming', False,
                             group='vmdk')
        disk = flows.Disk()
        volume = self._vmdk_volume(disk=disk)
        full = self._backup(volume)
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(full, new)
        self._assert_data(disk, new)
        self.assertFalse(self.streamed.called)
        self._assert_nothing_left()

    def test_restore_needs_no_room_on_the_staging_disk(self):
        # The staged restore of this volume fails on a 4 MiB staging disk
        # (test_backup_faults.test_full_staging_disk, streaming off).
        disk = flows.Disk(regions=tuple(
            (offset * 16 * units.Mi, 4 * units.Mi)
            for offset in range(0, 64, 8)), random=True)
        volume = self._vmdk_volume(disk=disk)
        full = self._backup(volume)
        try:
            subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m',
                            'tmpfs', self.staging_dir], check=True,
                           capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            self.skipTest('cannot mount a small tmpfs: %s' % exc)
        self.addCleanup(subprocess.run, ['umount', self.staging_dir],
                        check=False)
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(full, new)
        self.assertEqual('available', new.status)
        self._assert_data(disk, new)
        self._assert_streamed()
        self._assert_nothing_left()

    def test_chain_it_does_not_understand_is_staged(self):
        self._patch(chain_reader.ChainReader, 'nonzero_grains',
                    side_effect=chain_reader.ChainUnsupported('injected'))
        disk = flows.Disk()
        volume = self._vmdk_volume(disk=disk)
        full = self._backup(volume)
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(full, new)
        self.assertEqual('available', new.status)
        self._assert_data(disk, new)
        self.assertFalse(self.streamed.called)
        self.assertIn('restored through a staging file: injected',
                      self.logs.output)
        self._assert_nothing_left()
