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

import errno
import io
import os
from unittest import mock

import fixtures
from oslotest import base

from cinder_vmdk_backup.vmdk import extents

MiB = 1 << 20


class ExtentsTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 'disk.raw')
        with open(self.path, 'wb') as f:
            f.truncate(64 * MiB)
            f.seek(8 * MiB + 5)
            f.write(b'a')
            f.seek(40 * MiB)
            f.write(b'b' * MiB)
        self.file = open(self.path, 'rb')
        self.addCleanup(self.file.close)

    def _supports_holes(self):
        ranges = list(extents.data_ranges(self.file.fileno(), 64 * MiB))
        if ranges == [(0, 64 * MiB)]:
            self.skipTest('file system without SEEK_HOLE')
        return ranges

    def test_data_ranges_skip_holes(self):
        ranges = self._supports_holes()
        self.assertEqual(2, len(ranges))
        start, stop = ranges[0]
        self.assertLessEqual(start, 8 * MiB + 5)
        self.assertGreater(stop, 8 * MiB + 5)
        self.assertLess(stop - start, MiB)
        self.assertLessEqual(ranges[1][0], 40 * MiB)
        self.assertGreaterEqual(ranges[1][1], 41 * MiB)

    def test_data_ranges_end_at_the_limit(self):
        self._supports_holes()
        ranges = list(extents.data_ranges(self.file.fileno(), 40 * MiB + 7))
        self.assertEqual(40 * MiB + 7, ranges[-1][1])
        self.assertEqual([], list(extents.data_ranges(self.file.fileno(),
                                                      8 * MiB)))

    def test_grains_with_data(self):
        self._supports_holes()
        grains = list(extents.grains_with_data(self.file.fileno(), 64 * MiB,
                                               64 << 10))
        self.assertIn(8 * 16, grains)
        self.assertEqual(list(range(40 * 16, 41 * 16)), grains[-16:])
        self.assertEqual(sorted(set(grains)), grains)
        self.assertLess(len(grains), 40)

    def test_without_seek_data_everything_is_data(self):
        with mock.patch.object(os, 'lseek', autospec=True,
                               side_effect=OSError(errno.EINVAL, 'no')):
            self.assertEqual([(0, 64 * MiB)], list(
                extents.data_ranges(self.file.fileno(), 64 * MiB)))

    def test_other_lseek_errors_propagate(self):
        with mock.patch.object(os, 'lseek', autospec=True,
                               side_effect=OSError(errno.EIO, 'io')):
            self.assertRaises(OSError, list, extents.data_ranges(
                self.file.fileno(), 64 * MiB))

    def test_regular_fd(self):
        self.assertEqual(self.file.fileno(), extents.regular_fd(self.file))
        self.assertIsNone(extents.regular_fd(io.BytesIO(b'x')))
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, write_end)
        with os.fdopen(read_end, 'rb') as pipe:
            self.assertIsNone(extents.regular_fd(pipe))
