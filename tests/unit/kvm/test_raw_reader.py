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

import os
from unittest import mock

import fixtures
from oslotest import base

from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import qemu_img
from cinder_vmdk_backup.kvm import raw_reader


def _chain(size, fmt='qcow2', **extra):
    layer = {'virtual-size': size, 'filename': 'img', 'format': fmt,
             'format-specific': {'data': {}}}
    layer.update(extra)
    return [layer]


class RawReaderTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.dir, 'img')
        with open(self.path, 'wb') as f:
            f.write(b'H' * 100 + b'A' * 4096 + b'B' * 4096)

    def _reader(self, extents, size=12288, length=None, chain=None):
        with mock.patch.object(qemu_img, 'info', autospec=True,
                               return_value=chain or _chain(size)), \
                mock.patch.object(qemu_img, 'map_extents', autospec=True,
                                  return_value=extents):
            return raw_reader.RawImageReader(self.path, self.dir,
                                             length=length)

    def test_zeros_synthesised_data_read_at_host_offsets(self):
        reader = self._reader([
            {'start': 0, 'length': 4096, 'data': True, 'zero': False,
             'offset': 4196, 'depth': 0},
            {'start': 4096, 'length': 4096, 'data': False, 'zero': True},
            {'start': 8192, 'length': 4096, 'data': True, 'zero': False,
             'offset': 100, 'depth': 0}], length=16384)
        data = b''.join(iter(lambda: reader.read(3000), b''))
        self.assertEqual(b'B' * 4096 + bytes(4096) + b'A' * 4096
                         + bytes(4096), data)
        self.assertEqual(8192, reader.bytes_read_from_disk)
        self.assertEqual(b'', reader.read(10))

    def test_readinto_gives_the_same(self):
        reader = self._reader([
            {'start': 0, 'length': 8192, 'data': True, 'zero': False,
             'offset': 100, 'depth': 0},
            {'start': 8192, 'length': 4096, 'data': False, 'zero': False}])
        buf = bytearray(12288)
        self.assertEqual(12288, reader.readinto(buf))
        self.assertEqual(b'A' * 4096 + b'B' * 4096 + bytes(4096), buf)

    def test_fill_leaves_zero_regions_unwritten(self):
        reader = self._reader([
            {'start': 0, 'length': 4096, 'data': True, 'zero': False,
             'offset': 100, 'depth': 0},
            {'start': 4096, 'length': 4096, 'data': False, 'zero': True},
            {'start': 8192, 'length': 4096, 'data': True, 'zero': False,
             'offset': 4196, 'depth': 0}])
        # The pipeline hands fresh zeroed memory; a marker shows what was
        # written.
        buf = bytearray(b'\xee' * 12288)
        reader.fill(memoryview(buf))
        self.assertEqual(b'A' * 4096 + b'\xee' * 4096 + b'B' * 4096, buf)

    def test_fill_past_the_image_is_corruption(self):
        reader = self._reader([
            {'start': 0, 'length': 4096, 'data': False, 'zero': True}],
            size=4096)
        self.assertRaises(errors.ImageCorruptError, reader.fill,
                          memoryview(bytearray(8192)))

    def test_gap_in_map_is_corruption(self):
        self.assertRaises(errors.ImageCorruptError, self._reader, [
            {'start': 0, 'length': 4096, 'data': False, 'zero': True},
            {'start': 8192, 'length': 4096, 'data': False, 'zero': True}],
            size=12288)

    def test_image_bigger_than_expected_is_refused(self):
        self.assertRaises(errors.QemuImgError, self._reader, [], size=8192,
                          length=4096)

    def test_truncated_file_is_corruption(self):
        reader = self._reader([
            {'start': 0, 'length': 12288, 'data': True, 'zero': False,
             'offset': 4196, 'depth': 0}])
        self.assertRaises(errors.ImageCorruptError, reader.read, 12288)

    def test_extent_without_offset_is_decoded_in_windows(self):
        def window(source, fmt, offset, length, dest):
            with open(dest, 'r+b') as f:
                f.write(b'%d' % offset * (length // len(b'%d' % offset)))
        reader = self._reader([
            {'start': 0, 'length': 12288, 'data': True, 'zero': False,
             'depth': 0}])
        with mock.patch.object(qemu_img, 'convert_window', autospec=True,
                               side_effect=window) as convert:
            data = reader.read(12288)
        self.assertEqual(12288, len(data))
        convert.assert_called_once_with(self.path, 'qcow2', 0, 12288,
                                        mock.ANY)
        reader.close()
        self.assertEqual(['img'], os.listdir(self.dir))


class ExtentAccessTestCase(base.BaseTestCase):
    """read_at, zero_ranges and changed_ranges (the hand-off's way in)."""

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.dir, 'img')
        # Host file: 'A' cluster at 4096, 'B' at 8192, 'C' at 12288.
        with open(self.path, 'wb') as f:
            f.write(b'H' * 4096 + b'A' * 4096 + b'B' * 4096 + b'C' * 4096)
        # Guest: A | hole | B | zero cluster | C, then padding to 24 KiB.
        self.extents = [
            {'start': 0, 'length': 4096, 'data': True, 'zero': False,
             'offset': 4096, 'depth': 0},
            {'start': 4096, 'length': 4096, 'data': False, 'zero': True},
            {'start': 8192, 'length': 4096, 'data': True, 'zero': False,
             'offset': 8192, 'depth': 0},
            {'start': 12288, 'length': 4096, 'data': True, 'zero': True,
             'offset': 65536, 'depth': 0},
            {'start': 16384, 'length': 4096, 'data': True, 'zero': False,
             'offset': 12288, 'depth': 0}]
        self.guest = (b'A' * 4096 + bytes(4096) + b'B' * 4096 + bytes(4096)
                      + b'C' * 4096 + bytes(4096))

    def _reader(self, changes=None):
        with mock.patch.object(qemu_img, 'info', autospec=True,
                               return_value=_chain(20480)), \
                mock.patch.object(qemu_img, 'map_extents', autospec=True,
                                  return_value=self.extents):
            reader = raw_reader.RawImageReader(self.path, self.dir,
                                               length=24576, changes=changes)
        self.addCleanup(reader.close)
        return reader

    def test_zero_ranges_are_holes_zero_clusters_and_padding(self):
        self.assertEqual([(4096, 4096), (12288, 4096), (20480, 4096)],
                         list(self._reader().zero_ranges()))

    def test_read_at_ascending_skips_what_lies_between(self):
        reader = self._reader()
        pieces = [(0, 1000), (3000, 2000), (9000, 100), (16384, 4096),
                  (20000, 4576)]
        for offset, length in pieces:
            buf = bytearray(b'\xee' * length)
            reader.read_at(offset, buf)
            self.assertEqual(self.guest[offset:offset + length], buf,
                             (offset, length))
        # Only the data asked for came from the disk: zeros are not read.
        self.assertEqual(1000 + 1096 + 100 + 4096 + 480,
                         reader.bytes_read_from_disk)

    def test_read_at_every_block_matches_the_stream(self):
        for block in (512, 4096, 3000, 24576):
            reader = self._reader()
            got = bytearray()
            for offset in range(0, 24576, block):
                buf = bytearray(min(block, 24576 - offset))
                reader.read_at(offset, buf)
                got += buf
            self.assertEqual(self.guest, got, block)

    def test_read_at_backwards_still_right(self):
        reader = self._reader()
        buf = bytearray(100)
        reader.read_at(16384, buf)
        reader.read_at(8192, buf)
        self.assertEqual(b'B' * 100, buf)
        reader.read_at(0, buf)
        self.assertEqual(b'A' * 100, buf)

    def test_read_at_then_stream_continues_after_the_view(self):
        reader = self._reader()
        reader.read_at(8000, bytearray(192))
        self.assertEqual(8192, reader.tell())
        self.assertEqual(b'B' * 4096, reader.read(4096))

    def test_read_at_outside_the_length_is_refused(self):
        reader = self._reader()
        self.assertRaises(ValueError, reader.read_at, 24000,
                          bytearray(1000))
        self.assertRaises(ValueError, reader.read_at, -1, bytearray(1))
        reader.read_at(24576, bytearray(0))

    def test_changed_ranges_without_tracking_is_a_doubt(self):
        ranges, reason = self._reader().changed_ranges(mock.sentinel.parent)
        self.assertIsNone(ranges)
        self.assertIn('not tracked', reason)

    def test_changed_ranges_asks_the_tracker(self):
        def tracker(parent_backup):
            pass
        changes = mock.create_autospec(tracker,
                                       return_value=([(0, 4096)], None))
        reader = self._reader(changes)
        self.assertEqual(([(0, 4096)], None),
                         reader.changed_ranges(mock.sentinel.parent))
        changes.assert_called_once_with(mock.sentinel.parent)
