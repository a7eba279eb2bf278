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

"""Verification of backups written by Cinder's real posix backup driver.

Cinder's test base class gives an sqlite database; the backups are written
by Cinder's own ``PosixBackupDriver.backup()`` into a temporary directory,
then damaged the way a store damages them (an object deleted, cut, with
four bytes flipped, with bytes appended; the sha256 file gone; a parent
gone). Every damage must be reported precisely (the backup, the object,
the volume region) and the store must be left exactly as it was.
"""

import hashlib
import io
import json
import os
import stat
import tracemalloc

import ddt
import fixtures
from oslo_utils import units

from cinder.backup.drivers import posix
from cinder import context
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.verification import verifier

MiB = units.Mi
BLOCK = 32 * units.Ki
SIZE = 16 * MiB
OBJECT = 4 * MiB


def _data(seed, length):
    """Compressible, non-repeating bytes."""
    line = b'%s line %%08d of some log\n' % seed
    out = b''.join(line % i for i in range(length // len(line % 0) + 1))
    return out[:length]


@ddt.ddt
class VerifierTestCase(test.TestCase):

    def setUp(self):
        super(VerifierTestCase, self).setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.scratch = os.path.join(self.tmp, 'scratch')
        self.store = os.path.join(self.tmp, 'store')
        os.mkdir(self.store)
        self.override_config('backup_posix_path', self.store)
        self.override_config('backup_file_size', OBJECT)
        self.override_config('backup_sha_block_size_bytes', BLOCK)
        self.override_config('backup_enable_progress_timer', False)
        self.override_config('scratch_dir', self.scratch,
                             group='backup_verification')
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.volume = test_utils.create_volume(self.ctxt, size=1)
        self.disk = bytearray(SIZE)
        self._write(0, _data(b'a', 100))
        self._write(OBJECT - 5000, _data(b'b', 3 * MiB))
        self._write(SIZE - BLOCK, _data(b'c', BLOCK))

    # -- helpers ------------------------------------------------------------

    def _service(self):
        return posix.PosixBackupDriver(self.ctxt)

    def _write(self, offset, data):
        self.disk[offset:offset + len(data)] = data

    def _backup(self, parent=None):
        backup = test_utils.create_backup(
            self.ctxt, self.volume.id, status=fields.BackupStatus.CREATING,
            parent_id=parent and parent.id, size=1)
        self._service().backup(backup, io.BytesIO(bytes(self.disk)))
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        return backup

    def _chain(self):
        full = self._backup()
        self._write(MiB, _data(b'd', 40000))
        self._write(OBJECT + 12345, bytes(2 * MiB))      # data -> zeros
        self._write(3 * OBJECT + 7, _data(b'e', 70000))  # zeros -> data
        incr = self._backup(full)
        return full, incr

    def _path(self, backup, suffix):
        return os.path.join(self.store, backup.container,
                            backup.service_metadata + suffix)

    def _objects(self, backup):
        with open(self._path(backup, '_metadata'), 'rb') as f:
            metadata = json.load(f)
        out = []
        for entry in metadata['objects']:
            (name, info), = entry.items()
            out.append((name, info))
        return out

    def _object_path(self, backup, index):
        name, info = self._objects(backup)[index]
        return os.path.join(self.store, backup.container, name), name, info

    def _snapshot(self):
        """Every file of the store: (size, mtime, sha256)."""
        out = {}
        for top, _dirs, files in os.walk(self.store):
            for name in files:
                path = os.path.join(top, name)
                st = os.stat(path)
                with open(path, 'rb') as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[path] = (st.st_size, st.st_mtime_ns, digest)
        return out

    def _verify(self, backup, **kwargs):
        before = self._snapshot()
        status = backup.status
        report = verifier.verify(self._service(), backup, **kwargs)
        self.assertEqual(before, self._snapshot())
        backup.refresh()
        self.assertEqual(status, backup.status)
        return report

    def _reasons(self, report):
        return sorted({p['reason'] for p in report.problems})

    def assertWithin(self, regions, offset, length):
        self.assertNotEqual([], regions)
        for start, size in regions:
            self.assertGreaterEqual(start, offset)
            self.assertLessEqual(start + size, offset + length)

    # -- good backups ------------------------------------------------------

    @ddt.data('zlib', 'bz2', 'none', 'zstd')
    def test_good_chain_is_ok(self, algorithm):
        self.override_config('backup_compression_algorithm', algorithm)
        full, incr = self._chain()
        progress = []
        report = self._verify(incr, progress=progress.append)
        self.assertTrue(report.ok, report.problems)
        self.assertEqual([full.id, incr.id], report.chain)
        self.assertEqual([], report.regions)
        n_objects = len(self._objects(full)) + len(self._objects(incr))
        self.assertEqual(n_objects, report.objects_checked)
        incr_bytes = sum(i['length'] for _n, i in self._objects(incr))
        self.assertEqual(SIZE + incr_bytes, report.bytes_checked)
        self.assertEqual(SIZE // BLOCK + incr_bytes // BLOCK,
                         report.blocks_checked)
        self.assertNotEqual([], progress)
        self.assertTrue(report.summary().startswith('ok: 2 backup(s)'))

    def test_memory_is_pieces_not_objects(self):
        self.override_config('backup_file_size', SIZE)
        self._write(0, os.urandom(SIZE // 2))
        full = self._backup()
        self.assertEqual(1, len(self._objects(full)))
        service = self._service()
        tracemalloc.start()
        try:
            report = verifier.verify(service, full)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertTrue(report.ok, report.problems)
        # One 16 MiB object (8 MiB stored); read and inflated 1 MiB at a
        # time, a few pieces waiting for the md5 thread.
        self.assertLess(peak, (verifier.MD5_PENDING + 4) * MiB)

    def test_good_full_is_ok(self):
        full = self._backup()
        report = self._verify(full)
        self.assertTrue(report.ok, report.problems)
        self.assertEqual([full.id], report.chain)
        self.assertEqual(SIZE // OBJECT, report.objects_checked)

    # -- bad input --------------------------------------------------------

    def test_object_deleted(self):
        full, incr = self._chain()
        path, name, info = self._object_path(full, 2)
        os.unlink(path)
        report = self._verify(incr)
        self.assertFalse(report.ok)
        self.assertEqual([{'backup_id': full.id, 'object': name,
                           'offset': info['offset'],
                           'length': info['length'], 'reason': 'missing'}],
                         [{k: v for k, v in p.items() if k != 'detail'}
                          for p in report.problems])
        self.assertEqual([(info['offset'], info['length'])], report.regions)

    def test_object_truncated(self):
        full = self._backup()
        path, name, info = self._object_path(full, 1)
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
        report = self._verify(full)
        self.assertIn('truncated', self._reasons(report) + ['undecodable'])
        self.assertEqual({name}, {p['object'] for p in report.problems})
        self.assertWithin(report.regions, info['offset'], info['length'])
        # Blocks inflated before the cut were checked, and are not named.
        self.assertGreater(report.regions[0][0], info['offset'])

    @ddt.data('zlib', 'zstd', 'none')
    def test_four_bytes_flipped(self, algorithm):
        self.override_config('backup_compression_algorithm', algorithm)
        full = self._backup()
        path, name, info = self._object_path(full, 1)
        with open(path, 'r+b') as f:
            middle = os.path.getsize(path) // 2
            f.seek(middle)
            data = f.read(4)
            f.seek(middle)
            f.write(bytes(b ^ 0xFF for b in data))
        report = self._verify(full)
        self.assertFalse(report.ok)
        self.assertEqual({name}, {p['object'] for p in report.problems})
        self.assertEqual({full.id}, {p['backup_id'] for p in report.problems})
        self.assertWithin(report.regions, info['offset'], info['length'])
        reasons = self._reasons(report)
        if algorithm == 'zstd':
            # The zstd module inflates objects whole: its error names the
            # whole object; wrong data the damaged blocks.
            self.assertTrue(reasons == ['undecodable'] or
                            'digest_mismatch' in reasons, reasons)
        else:
            # Inflated as a stream: the blocks before the damage check
            # out; the region starts at the damaged block.
            self.assertIn('digest_mismatch', reasons)
            self.assertGreater(report.regions[0][0], info['offset'])
        if algorithm == 'none':
            start = info['offset'] + middle
            self.assertEqual([(start - start % BLOCK, BLOCK)],
                             report.regions)
            self.assertEqual(['digest_mismatch', 'md5_mismatch'], reasons)

    def test_extra_bytes(self):
        full = self._backup()
        path, name, info = self._object_path(full, 3)
        with open(path, 'ab') as f:
            f.write(b'\x00extra')
        report = self._verify(full)
        self.assertEqual(['too_long'], self._reasons(report))
        self.assertEqual([name], [p['object'] for p in report.problems])
        self.assertEqual([(info['offset'], info['length'])], report.regions)

    def test_extra_bytes_uncompressed(self):
        self.override_config('backup_compression_algorithm', 'none')
        full = self._backup()
        path, name, info = self._object_path(full, 0)
        with open(path, 'ab') as f:
            f.write(b'extra')
        report = self._verify(full)
        self.assertEqual(['too_long'], self._reasons(report))

    def test_sha256_file_missing(self):
        full, incr = self._chain()
        os.unlink(self._path(incr, '_sha256file'))
        report = self._verify(incr)
        self.assertEqual(['sha256_file_missing'], self._reasons(report))
        self.assertEqual([incr.id], [p['backup_id'] for p in report.problems])
        self.assertEqual([(0, SIZE)], report.regions)

    def test_sha256_file_invalid(self):
        full = self._backup()
        path = self._path(full, '_sha256file')
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
        report = self._verify(full)
        self.assertEqual(['sha256_file_invalid'], self._reasons(report))

    def test_digest_changed_in_list(self):
        full = self._backup()
        path = self._path(full, '_sha256file')
        with open(path, 'rb') as f:
            sha = json.load(f)
        sha['sha256s'][200] = '0' * 64
        with open(path, 'w') as f:
            json.dump(sha, f, sort_keys=True, indent=2)
        report = self._verify(full)
        self.assertEqual(['digest_mismatch'], self._reasons(report))
        self.assertEqual([(200 * BLOCK, BLOCK)], report.regions)

    def test_chain_does_not_compose(self):
        """The incremental's list disagrees with its parent's data."""
        full, incr = self._chain()
        path = self._path(incr, '_sha256file')
        with open(path, 'rb') as f:
            sha = json.load(f)
        index = (2 * OBJECT + 3 * BLOCK) // BLOCK  # not in incr's objects
        sha['sha256s'][index] = 'f' * 64
        with open(path, 'w') as f:
            json.dump(sha, f, sort_keys=True, indent=2)
        report = self._verify(incr)
        self.assertEqual(['digest_mismatch'], self._reasons(report))
        self.assertEqual([(index * BLOCK, BLOCK)], report.regions)
        self.assertEqual([incr.id], [p['backup_id'] for p in report.problems])

    def test_parent_gone(self):
        full, incr = self._chain()
        full.destroy()
        report = self._verify(incr)
        self.assertIn('parent_missing', self._reasons(report))
        self.assertEqual([incr.id], report.chain)
        self.assertEqual([(0, SIZE)], report.regions)

    def test_metadata_missing(self):
        full, incr = self._chain()
        os.unlink(self._path(full, '_metadata'))
        report = self._verify(incr)
        self.assertEqual(['metadata_missing'], self._reasons(report))
        self.assertEqual({full.id}, {p['backup_id'] for p in report.problems})

    def test_unlisted_object(self):
        full = self._backup()
        stray = os.path.join(self.store, full.container,
                             full.service_metadata + '-00099')
        with open(stray, 'wb') as f:
            f.write(b'stray')
        report = self._verify(full)
        self.assertEqual(['metadata_missing'], self._reasons(report))
        self.assertEqual([os.path.basename(stray)],
                         [p['object'] for p in report.problems])

    # -- what is not about the backup ------------------------------------

    def test_store_unreachable_raises(self):
        full = self._backup()
        container = os.path.join(self.store, full.container)
        os.rename(container, container + '.away')
        with open(container, 'w') as f:
            f.write('not a directory')
        self.assertRaises(cvb_exception.VerificationError, verifier.verify,
                          self._service(), full)

    def test_cancelled(self):
        full = self._backup()
        self.assertRaises(verifier.Cancelled, verifier.verify,
                          self._service(), full, cancelled=lambda: True)

    # -- deep -----------------------------------------------------------

    def test_deep_ok_and_scratch_removed(self):
        full, incr = self._chain()
        modes = []
        real_restore = posix.PosixBackupDriver.restore

        def restore(service, backup, volume_id, volume_file, volume_is_new):
            st = os.fstat(volume_file.fileno())
            modes.append((stat.S_IMODE(st.st_mode), st.st_size,
                          backup.status))
            return real_restore(service, backup, volume_id, volume_file,
                                volume_is_new)

        self.mock_object(posix.PosixBackupDriver, 'restore', restore)
        report = self._verify(incr, deep=True)
        self.assertTrue(report.ok, report.problems)
        self.assertTrue(report.restored)
        self.assertEqual([(0o600, SIZE, 'restoring')], modes)
        self.assertEqual([], os.listdir(self.scratch))
        self.assertIn('and restored', report.summary())

    def test_deep_finds_what_the_restore_gives(self):
        """A digest of the list changed in both places: only deep sees."""
        full = self._backup()
        path, name, info = self._object_path(full, 0)
        # Replace object 0 by other data with a matching md5 and list: a
        # consistent lie that the shallow checks accept, the restore
        # checked against the list does too -- so change the restore.
        real_restore = posix.PosixBackupDriver.restore

        def restore(service, backup, volume_id, volume_file, volume_is_new):
            real_restore(service, backup, volume_id, volume_file,
                         volume_is_new)
            volume_file.seek(5 * BLOCK + 10)
            volume_file.write(b'XXXX')

        self.mock_object(posix.PosixBackupDriver, 'restore', restore)
        report = self._verify(full, deep=True)
        self.assertEqual(['digest_mismatch'], self._reasons(report))
        self.assertEqual([(5 * BLOCK, BLOCK)], report.regions)
        self.assertEqual([], os.listdir(self.scratch))

    def test_deep_scratch_removed_on_failure(self):
        full = self._backup()

        def restore(*args, **kwargs):
            raise OSError(28, 'No space left on device')

        self.mock_object(posix.PosixBackupDriver, 'restore', restore)
        self.assertRaises(cvb_exception.VerificationError, verifier.verify,
                          self._service(), full, deep=True)
        self.assertEqual([], os.listdir(self.scratch))

    def test_deep_not_run_on_a_damaged_backup(self):
        full = self._backup()
        os.unlink(self._object_path(full, 0)[0])
        report = self._verify(full, deep=True)
        self.assertEqual(['missing'], self._reasons(report))
        self.assertFalse(report.restored)
