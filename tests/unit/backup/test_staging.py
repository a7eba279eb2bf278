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

import io
import os
import random

import ddt
import fixtures
from oslotest import base

from cinder_vmdk_backup.backup import staging
from cinder_vmdk_backup.backup import zero_objects

KIB = 1024
MIB = 1024 * KIB


@ddt.ddt
class SparseStagingWriterTestCase(base.BaseTestCase):

    def setUp(self):
        super(SparseStagingWriterTestCase, self).setUp()
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'f')
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, self.fd)
        self.writer = staging.SparseStagingWriter(self.fd)

    def _content(self, size):
        os.ftruncate(self.fd, size)
        return os.pread(self.fd, size, 0)

    def _allocated(self):
        return os.fstat(self.fd).st_blocks * 512

    def test_zeros_of_a_new_file_are_not_written(self):
        data = bytes(4 * MIB) + b'data' + bytes(MIB)
        self.assertEqual(len(data), self.writer.write(data))
        self.assertEqual(len(data), self.writer.tell())
        self.assertEqual(data, self._content(len(data)))
        # One 64 KiB piece holds data; file systems may preallocate some.
        self.assertLess(self._allocated(), MIB)

    def test_zeros_over_data_are_written(self):
        # A full backup, then an incremental that zeroed part of it.
        self.writer.write(b'\xff' * (2 * MIB))
        self.writer.seek(MIB - 32 * KIB)
        self.writer.write(bytes(96 * KIB))
        expected = (b'\xff' * (MIB - 32 * KIB) + bytes(96 * KIB) +
                    b'\xff' * (MIB - 64 * KIB))
        self.assertEqual(expected, self._content(2 * MIB))

    @ddt.data(1, 2, 3, 4, 5)
    def test_random_writes_read_back_as_written(self, seed):
        rng = random.Random(seed)
        size = 8 * MIB
        model = bytearray(size)
        end = 0
        for _ in range(60):
            offset = rng.randrange(size)
            length = rng.randrange(1, min(size - offset, 3 * MIB) + 1)
            kind = rng.random()
            if kind < 0.4:
                data = bytes(length)
            elif kind < 0.7:
                data = rng.randbytes(length)
            else:
                # Data and zeros mixed at odd boundaries.
                cut = rng.randrange(length + 1)
                data = rng.randbytes(cut) + bytes(length - cut)
            how = rng.choice(('set', 'cur', 'end'))
            if how == 'set':
                self.writer.seek(offset)
            elif how == 'cur':
                self.writer.seek(offset - self.writer.tell(), io.SEEK_CUR)
            else:
                # The end of what was written, skipped zeros included.
                self.writer.seek(offset - end, io.SEEK_END)
            self.assertEqual(offset, self.writer.tell())
            self.writer.write(memoryview(data) if rng.random() < 0.5
                              else data)
            model[offset:offset + length] = data
            end = max(end, offset + length)
        self.assertEqual(bytes(model), self._content(size))

    def test_seek_end_counts_skipped_zeros(self):
        self.writer.write(bytes(64 * KIB))
        self.assertEqual(64 * KIB, self.writer.seek(0, io.SEEK_END))
        self.writer.write(b'x')
        self.assertEqual(bytes(64 * KIB) + b'x', self._content(64 * KIB + 1))

    def test_sequential_writes_without_seek(self):
        parts = [b'a' * 1000, bytes(70 * KIB), b'b' * 3, bytes(MIB)]
        for part in parts:
            self.writer.write(part)
        joined = b''.join(parts)
        self.assertEqual(joined, self._content(len(joined)))

    def test_no_fileno_so_no_fsync(self):
        self.assertRaises(io.UnsupportedOperation, self.writer.fileno)
        self.assertRaises(OSError, self.writer.fileno)
        self.writer.flush()

    def test_bad_seeks_are_refused(self):
        self.assertRaises(ValueError, self.writer.seek, -1)
        self.assertRaises(ValueError, self.writer.seek, 0, 7)

    def test_full_disk_is_an_error(self):
        self.useFixture(fixtures.MockPatchObject(
            os, 'pwrite', autospec=True,
            side_effect=OSError(28, 'No space left on device')))
        error = self.assertRaises(OSError, self.writer.write, b'x' * 10)
        self.assertEqual(28, error.errno)


class KnownZerosTestCase(base.BaseTestCase):
    """Objects of zeros from the inflater are skipped without reading."""

    def setUp(self):
        super(KnownZerosTestCase, self).setUp()
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 's')
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, self.fd)
        self.writer = staging.SparseStagingWriter(self.fd)

    def test_zeros_are_skipped_where_nothing_was_written(self):
        self.writer.seek(staging.REGION // 2)
        self.writer.write(b'\x01' * 10)
        zeros = zero_objects.zeros(5 * staging.REGION)
        self.assertTrue(zero_objects.known(zeros))
        self.writer.seek(0)
        self.assertEqual(len(zeros), self.writer.write(zeros))
        self.assertEqual(5 * staging.REGION, self.writer.tell())
        os.ftruncate(self.fd, 6 * staging.REGION)
        # Only the first region, which held data, was written.
        self.assertEqual(bytes(6 * staging.REGION),
                         os.pread(self.fd, 6 * staging.REGION, 0))
        blocks = os.fstat(self.fd).st_blocks * 512
        self.assertLessEqual(blocks, 2 * staging.REGION)

    def test_other_zeros_are_looked_at(self):
        data = bytes(staging.REGION)
        self.assertFalse(zero_objects.known(data))
        self.writer.write(data)
        self.assertEqual(staging.REGION, self.writer.tell())
