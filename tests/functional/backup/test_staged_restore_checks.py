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

"""The staged restore checked while Cinder's posix driver writes it.

Through the plugin's BackupManager, the file volume driver (its restores
are staged) and Cinder's real posix backup driver: a full backup and an
incremental restore byte for byte with every block checked as the backup
service writes it, and no pass over the staging file after the restore; a
flipped byte in the incremental's object fails the restore, naming the
region and the object, before the driver gets the image.
"""

import hashlib
import os
import unittest

from cinder import exception
from oslo_utils import units

from cinder_vmdk_backup.backup import restore_checks
from cinder_vmdk_backup.backup import staging_checks
from tests.functional.backup import test_manager

BLOCK = 32 * units.Ki


def _digest(path):
    sha = hashlib.sha256()
    with open(path, 'rb') as f:
        for piece in iter(lambda: f.read(units.Mi), b''):
            sha.update(piece)
    return sha.hexdigest()


class StagedRestoreChecksTestCase(
        test_manager.DriverOwnedBackupManagerTestCase):

    def setUp(self):
        super(StagedRestoreChecksTestCase, self).setUp()
        # Object bytes as stored: a flipped byte stays one byte.
        self.override_config('backup_compression_algorithm', 'none')
        self.override_config('backup_file_size', 8 * units.Mi)
        self.override_config('driver_owned_restore_check_digests', True)
        self.file_pass = self._patch(restore_checks, 'check_file',
                                     side_effect=restore_checks.check_file)
        self.finished = []
        real_finish = staging_checks.StagingCheck.finish

        def finish(check, fd):
            result = real_finish(check, fd)
            self.finished.append((check.given_up, check.chunk_size,
                                  check.blocks_checked, check.bytes_hashed))
            return result

        self._patch(staging_checks.StagingCheck, 'finish',
                    side_effect=finish)

    def _staging_files(self):
        found = []
        for root, _dirs, names in os.walk(self.volume_dir):
            found.extend(n for n in names if n.startswith(
                ('cvb-restore-', '.cvb-restore-')))
        return found

    def test_chain_checked_as_written_and_damage_stops_it(self):
        volume = self._volume()
        full = self._backup(volume)
        self.assertEqual('available', full.status)
        self._write(volume, 300 * units.Mi + 5000,
                    self._pattern(b'incr', 3 * BLOCK))
        incr = self._backup(volume, parent=full)
        self.assertEqual('available', incr.status)
        self.assertEqual(full.id, incr.parent_id)
        source = _digest(self._path(volume))

        target = self._new_volume()
        self._restore(incr, target)
        self.assertEqual('available', target.status)
        self.assertEqual(source, _digest(self._path(target)))
        [(given_up, chunk, blocks, hashed)] = self.finished
        self.assertIsNone(given_up)
        # The plugin's backups hash 1 MiB blocks (the extent hand-off).
        self.assertEqual(units.Mi, chunk)
        self.assertEqual(units.Gi // chunk, blocks)
        # The data blocks (6 MiB and the incremental's) hashed, the rest
        # of the GiB compared with zeros.
        self.assertLess(hashed, 16 * units.Mi)
        self.file_pass.assert_not_called()

        # Four bytes flipped in the middle of the incremental's object.
        service = self.manager._backup_service_class(self.ctxt)
        entry = service._read_metadata(incr)['objects'][0]
        [(name, info)] = entry.items()
        path = os.path.join(self.posix_dir, incr.container, name)
        at = info['length'] // 2
        with open(path, 'r+b') as f:
            f.seek(at)
            data = f.read(4)
            f.seek(at)
            f.write(bytes(b ^ 0xff for b in data))
        stored = os.stat(path)

        damaged = self._new_volume()
        empty = _digest(self._path(damaged))
        incr.status = 'restoring'
        incr.restore_volume_id = damaged.id
        incr.save()
        exc = self.assertRaises(exception.InvalidBackup,
                                self.manager.restore_backup, self.ctxt,
                                incr, damaged.id, True)
        region = (info['offset'] + at) // chunk * chunk
        self.assertIn('offset %d, length %d' % (region, chunk), str(exc))
        self.assertIn('%s of backup %s' % (name, incr.id), str(exc))
        damaged.refresh()
        self.assertEqual('error_restoring', damaged.status)
        # The driver never got the image; nothing is left behind.
        self.assertEqual(empty, _digest(self._path(damaged)))
        self.assertEqual([], self._staging_files())
        self.file_pass.assert_not_called()
        # The store is not changed by a failed restore.
        after = os.stat(path)
        self.assertEqual((stored.st_size, stored.st_mtime_ns),
                         (after.st_size, after.st_mtime_ns))


def load_tests(loader, tests, pattern):
    """Only this module's tests, not those of the manager's it builds on."""
    names = loader.getTestCaseNames(StagedRestoreChecksTestCase)
    own = [name for name in names
           if name in vars(StagedRestoreChecksTestCase)]
    return unittest.TestSuite(StagedRestoreChecksTestCase(name)
                              for name in own)
