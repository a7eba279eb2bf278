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
import hashlib
import io
import json
import os
import tempfile

from cinder import exception
import ddt
from oslotest import base

from cinder_vmdk_backup.backup import restore_checks

BLOCK = 4096


class FakeBackup(object):
    id = 'b-1'
    container = 'c'


class FakeService(object):
    """The two things the checker uses of a chunked backup driver."""

    def __init__(self, sha_file=None):
        self.sha_file = sha_file
        self.opened = 0
        self.closed = 0

    def _sha256_filename(self, backup):
        return 'prefix_sha256file'

    @contextlib.contextmanager
    def get_object_reader(self, container, name, extra_metadata=None):
        if self.sha_file is None:
            raise IOError('no such object')
        self.opened += 1
        try:
            yield io.BytesIO(self.sha_file)
        finally:
            self.closed += 1


def sha_file(disk, block=BLOCK):
    digests = [hashlib.sha256(disk[i:i + block]).hexdigest()
               for i in range(0, len(disk), block)]
    return json.dumps({'backup_id': 'b-1', 'chunk_size': block,
                       'sha256s': digests, 'volume_id': 'v'},
                      sort_keys=True, indent=2).encode()


def disk_of(size, data_at=((0, 100), (5 * BLOCK + 7, 9000))):
    disk = bytearray(size)
    for offset, length in data_at:
        disk[offset:offset + length] = os.urandom(length)
    return bytes(disk)


def pieces_of(disk, step, zero_runs=True):
    """The disk as pieces of ``step`` bytes; all-zero ones as None."""
    for offset in range(0, len(disk), step):
        data = disk[offset:offset + step]
        if zero_runs and not data.strip(b'\0'):
            yield offset, len(data), None
        else:
            yield offset, len(data), data


@ddt.ddt
class BlockCheckerTestCase(base.BaseTestCase):

    def _checker(self, listed, size=None, describe=None):
        self.service = FakeService(sha_file(listed))
        return restore_checks.BlockChecker(
            self.service, FakeBackup(), size or len(listed),
            describe=describe)

    def _run(self, checker, pieces):
        return list(restore_checks.checked_pieces(pieces, checker))

    # Sizes: whole blocks, a short last block; pieces smaller than a
    # block, not aligned, and larger than one.
    @ddt.data((16 * BLOCK, 1000), (16 * BLOCK, 3 * BLOCK + 5),
              (16 * BLOCK + 123, BLOCK), (16 * BLOCK + 123, 7 * BLOCK))
    @ddt.unpack
    def test_good_disk_passes(self, size, step):
        disk = disk_of(size)
        checker = self._checker(disk)
        got = self._run(checker, pieces_of(disk, step))
        self.assertEqual(list(pieces_of(disk, step)), got)
        self.assertEqual(-(-size // BLOCK), checker.blocks_checked)
        self.assertEqual((1, 1), (self.service.opened, self.service.closed))

    def test_zero_blocks_are_not_hashed(self):
        disk = disk_of(64 * BLOCK, data_at=((3 * BLOCK, BLOCK),))
        checker = self._checker(disk)
        # Zeros handed in as data (not None): compared, not hashed.
        self._run(checker, pieces_of(disk, 8 * BLOCK, zero_runs=False))
        self.assertEqual(BLOCK, checker.bytes_hashed)
        self.assertEqual(64, checker.blocks_checked)

    @ddt.data(0, 1, BLOCK - 1, 9 * BLOCK + 1000)
    def test_four_flipped_bytes_name_the_block(self, at):
        disk = disk_of(16 * BLOCK, data_at=((0, 16 * BLOCK),))
        bad = bytearray(disk)
        for i in range(at, at + 4):
            bad[i] ^= 0xff
        checker = self._checker(disk, describe=lambda o, n: [
            'obj-%d+%d of backup b-1' % (o, n)])
        gen = restore_checks.checked_pieces(
            pieces_of(bytes(bad), 3000), checker)
        exc = self.assertRaises(exception.InvalidBackup, list, gen)
        start = at // BLOCK * BLOCK
        self.assertIn('offset %d, length %d' % (start, BLOCK), str(exc))
        self.assertIn('obj-%d+%d of backup b-1' % (start, BLOCK), str(exc))
        self.assertIn('b-1', str(exc))
        self.assertEqual(1, self.service.closed)

    def test_last_piece_held_until_all_is_checked(self):
        disk = disk_of(8 * BLOCK, data_at=((0, 8 * BLOCK),))
        bad = disk[:-1] + bytes([disk[-1] ^ 1])
        seen = []
        gen = restore_checks.checked_pieces(
            pieces_of(bad, BLOCK), self._checker(disk))
        with self.assertRaisesRegex(exception.InvalidBackup,
                                    'offset %d' % (7 * BLOCK)):
            for piece in gen:
                seen.append(piece[0])
        self.assertNotIn(7 * BLOCK, seen)

    def test_zeros_where_the_list_has_data(self):
        disk = disk_of(8 * BLOCK, data_at=((2 * BLOCK + 10, 4),))
        exc = self.assertRaises(
            exception.InvalidBackup, self._run, self._checker(disk),
            [(0, 8 * BLOCK, None)])
        self.assertIn('offset %d, length %d' % (2 * BLOCK, BLOCK),
                      str(exc))
        self.assertIn('holds no data there', str(exc))

    def test_data_where_the_list_has_zeros(self):
        disk = bytes(8 * BLOCK)
        bad = bytearray(disk)
        bad[5 * BLOCK + 3] = 1
        exc = self.assertRaises(
            exception.InvalidBackup, self._run, self._checker(disk),
            pieces_of(bytes(bad), 8 * BLOCK, zero_runs=False))
        self.assertIn('offset %d, length %d' % (5 * BLOCK, BLOCK), str(exc))

    def test_short_last_block_of_zeros(self):
        size = 4 * BLOCK + 100
        checker = self._checker(bytes(size))
        self._run(checker, [(0, size, None)])
        self.assertEqual(5, checker.blocks_checked)

    @ddt.data(-1, 1)
    def test_list_that_does_not_fit_the_disk(self, change):
        disk = bytes(8 * BLOCK)
        checker = self._checker(disk, size=len(disk) + change * BLOCK)
        size = len(disk) + change * BLOCK
        exc = self.assertRaises(exception.InvalidBackup, self._run, checker,
                                [(0, size, None)] if change > 0 else
                                pieces_of(disk[:size], BLOCK))
        self.assertIn('does not fit the disk', str(exc))

    def test_missing_list(self):
        checker = restore_checks.BlockChecker(FakeService(None),
                                              FakeBackup(), BLOCK)
        exc = self.assertRaises(exception.InvalidBackup, checker.start)
        self.assertIn('prefix_sha256file', str(exc))
        self.assertIn('driver_owned_restore_check_digests', str(exc))

    def test_pieces_must_be_contiguous(self):
        disk = disk_of(8 * BLOCK)
        self.assertRaises(ValueError, self._run, self._checker(disk),
                          [(0, BLOCK, None), (2 * BLOCK, BLOCK, None)])


class CheckFileTestCase(base.BaseTestCase):

    def _file(self, disk, holes=()):
        f = tempfile.TemporaryFile()
        self.addCleanup(f.close)
        f.truncate(len(disk))
        position = 0
        for start, end in list(holes) + [(len(disk), len(disk))]:
            f.seek(position)
            f.write(disk[position:start])
            position = end
        f.flush()
        return f.fileno()

    def test_sparse_file_checked_holes_not_read(self):
        size = 256 * BLOCK
        disk = disk_of(size, data_at=((0, BLOCK), (200 * BLOCK, 3 * BLOCK)))
        fd = self._file(disk, holes=((BLOCK, 200 * BLOCK),
                                     (203 * BLOCK, size)))
        service = FakeService(sha_file(disk))
        checker = restore_checks.BlockChecker(service, FakeBackup(), size)
        self.assertEqual(256, restore_checks.check_file(fd, checker))
        self.assertLessEqual(checker.bytes_hashed, 4 * BLOCK)

    def test_flipped_bytes_in_file(self):
        size = 64 * BLOCK
        disk = disk_of(size, data_at=((0, size),))
        bad = bytearray(disk)
        bad[40 * BLOCK + 17:40 * BLOCK + 21] = b'\xff\xff\xff\xff'
        fd = self._file(bytes(bad))
        checker = restore_checks.BlockChecker(FakeService(sha_file(disk)),
                                              FakeBackup(), size)
        exc = self.assertRaises(exception.InvalidBackup,
                                restore_checks.check_file, fd, checker)
        self.assertIn('offset %d, length %d' % (40 * BLOCK, BLOCK),
                      str(exc))
