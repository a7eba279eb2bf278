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

import ddt
from oslotest import base

from cinder_vmdk_backup.vmdk import errors
from cinder_vmdk_backup.vmdk import piece_writer
from cinder_vmdk_backup.vmdk import reader
from tests.unit.vmdk import streams

GRAIN = streams.GRAIN
MiB = 1 << 20


def _grain_map(data, size):
    n = -(-size // GRAIN)
    bitmap = bytearray((n + 7) // 8)
    for g in range(n):
        chunk = data[g * GRAIN:(g + 1) * GRAIN]
        if chunk.count(0) != len(chunk):
            bitmap[g >> 3] |= 1 << (g & 7)
    return bitmap


def _pieces(data, cuts, zero_runs=()):
    """Pieces of data cut at the offsets given; zero_runs as None pieces."""
    bounds = sorted({0, len(data)} | set(cuts) |
                    {b for run in zero_runs for b in run})
    for a, b in zip(bounds, bounds[1:]):
        if any(s <= a and b <= e for s, e in zero_runs):
            yield (a, b - a, None)
        else:
            yield (a, b - a, data[a:b])


def _decode(stream):
    return reader.StreamOptimizedReader(io.BytesIO(stream)).read()


@ddt.ddt
class PlannedStreamWriterTestCase(base.BaseTestCase):

    def _disk(self, size):
        data = bytearray(size)
        for offset, length in ((0, 100), (GRAIN * 3 + 7, GRAIN * 2),
                               (size - 4096, 4096),
                               (GRAIN * 700, GRAIN * 3)):
            data[offset:offset + length] = os.urandom(length)
        return bytes(data)

    @ddt.data(None, 0, 32 * 1024, 12345)
    def test_length_exact_and_data_round_trip(self, step):
        size = 64 * MiB
        if step is None:
            cuts = []
        elif step == 0:
            cuts = [1, GRAIN, GRAIN * 3 + 100, GRAIN * 513]
        else:
            cuts = list(range(0, size, step))
        data = self._disk(size)
        vmdk = piece_writer.PlannedStreamWriter(
            _pieces(data, [c for c in cuts if c < size]), size,
            _grain_map(data, size))
        length = vmdk.length
        stream = b''.join(vmdk.iter_chunks())
        self.assertEqual(length, len(stream))
        self.assertEqual(data, _decode(stream))

    def test_zero_runs_as_none_pieces(self):
        size = 64 * MiB
        data = self._disk(size)
        runs = ((GRAIN * 10, GRAIN * 600 + 512), (8 * MiB, size - 8 * MiB))
        data = bytearray(data)
        for a, b in runs:
            data[a:b] = bytes(b - a)
        data = bytes(data)
        vmdk = piece_writer.PlannedStreamWriter(
            _pieces(data, [], runs), size, _grain_map(data, size))
        stream = b''.join(vmdk.iter_chunks())
        self.assertEqual(vmdk.length, len(stream))
        self.assertEqual(data, _decode(stream))

    def test_marked_zero_grains_are_stored_and_counted(self):
        size = 4 * MiB
        data = bytes(size)
        bitmap = bytearray(b'\xff' * (size // GRAIN // 8))
        vmdk = piece_writer.PlannedStreamWriter(
            _pieces(data, [MiB], [(MiB, size)]), size, bitmap)
        stream = b''.join(vmdk.iter_chunks())
        self.assertEqual(vmdk.length, len(stream))
        self.assertGreater(len(stream), size)
        self.assertEqual(data, _decode(stream))

    def test_data_in_an_unmarked_grain_raises(self):
        size = 4 * MiB
        data = bytearray(size)
        data[GRAIN * 5] = 1
        bitmap = bytearray(size // GRAIN // 8)
        vmdk = piece_writer.PlannedStreamWriter(
            _pieces(bytes(data), []), size, bitmap)
        vmdk.length
        self.assertRaises(errors.VmdkSourceChanged, b''.join,
                          vmdk.iter_chunks())

    def test_pieces_with_a_gap_or_short_raise(self):
        size = 4 * MiB
        bitmap = bytearray(size // GRAIN // 8)
        gap = piece_writer.PlannedStreamWriter(
            iter([(0, MiB, None), (2 * MiB, MiB, None)]), size, bitmap)
        self.assertRaises(errors.VmdkError, b''.join, gap.iter_chunks())
        short = piece_writer.PlannedStreamWriter(
            iter([(0, MiB, None)]), size, bitmap)
        self.assertRaises(errors.VmdkTruncated, b''.join,
                          short.iter_chunks())

    def test_encoded_once_only(self):
        size = MiB
        vmdk = piece_writer.PlannedStreamWriter(
            iter([(0, size, None)]), size, bytearray(2))
        self.assertEqual(vmdk.length, len(b''.join(vmdk.iter_chunks())))
        self.assertRaises(errors.VmdkError, b''.join, vmdk.iter_chunks())

    def test_map_too_small(self):
        self.assertRaises(ValueError, piece_writer.PlannedStreamWriter,
                          iter(()), 4 * MiB, bytearray(1))
