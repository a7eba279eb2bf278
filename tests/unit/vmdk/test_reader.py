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
import struct
import threading
import tracemalloc
import zlib

import ddt
from oslotest import base

from cinder_vmdk_backup.vmdk import errors
from cinder_vmdk_backup.vmdk import format as fmt
from cinder_vmdk_backup.vmdk import reader
from tests.unit.vmdk import streams

GRAIN = streams.GRAIN
SECTOR = fmt.SECTOR


def _disk(*kinds):
    """Raw disk of whole grains: 'z' zero, 'r' random, 't' text."""
    parts = []
    for kind in kinds:
        if kind == 'z':
            parts.append(bytes(GRAIN))
        elif kind == 'r':
            parts.append(os.urandom(GRAIN))
        else:
            parts.append((b'grain %d text ' % len(parts) * GRAIN)[:GRAIN])
    return b''.join(parts)[:len(kinds) * GRAIN]


def _read_all(stream):
    """Decode a stream to the end; return (bytes decoded, error or None).

    Zero runs are counted, not copied, to keep big sparse disks quick.
    """
    got = 0
    try:
        vmdk = reader.StreamOptimizedReader(io.BytesIO(stream))
        for _offset, length, _data in vmdk.iter_extents():
            got += length
        return got, None
    except errors.VmdkError as exc:
        return got, exc


@ddt.ddt
class ReaderRoundTripTestCase(base.BaseTestCase):

    @ddt.data(b'', os.urandom(SECTOR), os.urandom(GRAIN + 3 * SECTOR),
              bytes(1 << 20), _disk('t', 'z', 'r', 'z'),
              _disk('r', 't', 'z'), _disk('z', 'z', 't'))
    def test_decodes_what_the_writer_encodes(self, data):
        vmdk = reader.StreamOptimizedReader(io.BytesIO(streams.encode(data)))
        self.assertEqual(len(data), vmdk.capacity)
        self.assertEqual(data, vmdk.read())
        self.assertEqual(b'', vmdk.read(10))

    @ddt.data(1, 2, 3)
    def test_any_number_of_inflate_threads(self, threads):
        data = b''.join(_disk('t', 'r', 'z') for _ in range(12))
        vmdk = reader.StreamOptimizedReader(
            io.BytesIO(streams.encode(data)), threads=threads)
        self.assertEqual(data, vmdk.read())

    def test_abandoned_reader_stops_its_threads(self):
        data = b''.join(_disk('t', 'r') for _ in range(30))
        before = threading.active_count()
        vmdk = reader.StreamOptimizedReader(
            io.BytesIO(streams.encode(data)), threads=2)
        extents = vmdk.iter_extents()
        next(extents)
        extents.close()
        vmdk.close()
        self.assertTrue(vmdk.closed)
        self.assertEqual(before, threading.active_count())

    def test_extents_cover_the_disk_with_zero_runs(self):
        data = _disk('z', 't', 'z', 'z', 'r', 'z')
        vmdk = reader.StreamOptimizedReader(io.BytesIO(streams.encode(data)))
        extents = list(vmdk.iter_extents())
        self.assertEqual([(0, GRAIN, None), (GRAIN, GRAIN),
                          (2 * GRAIN, 2 * GRAIN, None), (4 * GRAIN, GRAIN),
                          (5 * GRAIN, GRAIN, None)],
                         [e if e[2] is None else e[:2] for e in extents])
        self.assertEqual(data[GRAIN:2 * GRAIN], bytes(extents[1][2]))

    def test_extents_continue_after_a_partial_read(self):
        data = _disk('t', 'r')
        vmdk = reader.StreamOptimizedReader(io.BytesIO(streams.encode(data)))
        head = vmdk.read(100)
        rest = b''.join(bytes(d) for _o, _l, d in vmdk.iter_extents())
        self.assertEqual(data, head + rest)

    def test_readinto_and_stream_properties(self):
        data = _disk('r', 'z')
        vmdk = reader.StreamOptimizedReader(io.BytesIO(streams.encode(data)))
        self.assertTrue(vmdk.readable())
        self.assertFalse(vmdk.seekable())
        buf = bytearray(GRAIN + 10)
        self.assertEqual(GRAIN + 10, vmdk.readinto(buf))
        self.assertEqual(data[:GRAIN + 10], bytes(buf))
        self.assertEqual(GRAIN + 10, vmdk.tell())
        self.assertEqual(GRAIN - 10, vmdk.readinto(buf))

    def test_readinto_zeroed_buffer_skips_zero_runs(self):
        data = _disk('r', 'z', 't')
        vmdk = reader.StreamOptimizedReader(io.BytesIO(streams.encode(data)))
        # A buffer that does not read as zeros shows what was skipped.
        buf = bytearray(b'\xff' * len(data))
        self.assertEqual(len(data), vmdk.readinto(buf, zeroed=True))
        self.assertEqual(data[:GRAIN], buf[:GRAIN])
        self.assertEqual(b'\xff' * GRAIN, buf[GRAIN:2 * GRAIN])
        self.assertEqual(data[2 * GRAIN:], buf[2 * GRAIN:])

    def test_descriptor_is_parsed(self):
        vmdk = reader.StreamOptimizedReader(io.BytesIO(
            streams.encode(bytes(SECTOR), adapter_type='ide')))
        self.assertEqual('ide', vmdk.descriptor['ddb.adapterType'])
        self.assertEqual('streamOptimized', vmdk.descriptor['createType'])

    @ddt.data((True, 0), (True, 4096), (False, 0))
    @ddt.unpack
    def test_front_layout_like_qemu(self, eos, padding):
        data = _disk('t', 'z', 'r') + os.urandom(3 * SECTOR)
        cap = len(data) // SECTOR
        stream = streams.front_layout(
            cap, [(0, data[:GRAIN]), (256, data[2 * GRAIN:3 * GRAIN]),
                  (384, data[3 * GRAIN:])], eos=eos, padding=padding)
        vmdk = reader.StreamOptimizedReader(io.BytesIO(stream))
        self.assertEqual(data, vmdk.read())

    def test_front_layout_without_grains_ends_after_header_area(self):
        stream = streams.front_layout(1, [], eos=False)
        self.assertEqual(bytes(SECTOR), reader.StreamOptimizedReader(
            io.BytesIO(stream)).read())

    def test_tail_grain_inflating_to_a_full_grain(self):
        tail = os.urandom(2 * SECTOR)
        stream = (streams.prologue(130) +
                  streams.grain(128, tail + bytes(GRAIN - len(tail))))
        stream += self._tables(stream, 130, {128: 128})
        self.assertEqual(bytes(GRAIN) + tail, reader.StreamOptimizedReader(
            io.BytesIO(stream)).read())

    @staticmethod
    def _tables(stream, capacity, entries):
        """GT, GD, footer and EOS for grains at {lba: marker sector}."""
        sector = len(stream) // SECTOR
        table = [0] * fmt.GTES_PER_GT
        for lba, marker in entries.items():
            table[lba // 128] = marker
        out = fmt.meta_marker(4, fmt.MARKER_GT) + struct.pack('<512I',
                                                              *table)
        out += fmt.meta_marker(1, fmt.MARKER_GD) + struct.pack(
            '<I', sector + 1).ljust(SECTOR, b'\0')
        footer = streams.header(capacity, gd_offset=sector + 6)
        return out + fmt.meta_marker(1, fmt.MARKER_FOOTER) + footer + \
            streams.EOS


@ddt.ddt
class ReaderHeaderTestCase(base.BaseTestCase):

    def _error(self, stream, cls=errors.VmdkError):
        got, exc = _read_all(stream)
        self.assertIsInstance(exc, cls)
        return exc

    @ddt.data((b'', 'empty stream'),
              (os.urandom(4096), 'raw disk image'),
              (bytes(4096), 'raw disk image'),
              (b'QFI\xfb' + bytes(508), 'qcow2'),
              (b'COWD' + bytes(508), 'vmfsSparse'),
              (b'conectix' + bytes(504), 'VHD'),
              (b'# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"'
               b'\nRW 2048 FLAT "x-flat.vmdk" 0\n',
               'createType=monolithicFlat'))
    @ddt.unpack
    def test_other_kinds_are_named(self, stream, name):
        exc = self._error(stream, errors.VmdkUnsupportedError)
        self.assertIn(name, str(exc))
        self.assertEqual(0, exc.offset)

    def test_monolithic_sparse_is_named(self):
        stream = streams.prologue(
            2048, '# Disk DescriptorFile\ncreateType="monolithicSparse"\n',
            flags=fmt.FLAG_NL_DETECT | fmt.FLAG_RGD)
        exc = self._error(stream, errors.VmdkUnsupportedError)
        self.assertIn('monolithicSparse', str(exc))

    def test_truncated_header(self):
        exc = self._error(fmt.MAGIC + bytes(100), errors.VmdkTruncatedError)
        self.assertEqual(0, exc.offset)

    @ddt.data(({'version': 1}, 4, 'version 1'),
              ({'version': 4}, 4, 'version 4'),
              ({'flags': fmt.STREAM_FLAGS | 1 << 5}, 8, 'unknown header flag'),
              ({'nl_chars': b'\n \n\n'}, 73, 'newline'),
              ({'compression': 2}, 77, 'compression algorithm 2'),
              ({'grain_size': 100}, 20, 'grain size'),
              ({'grain_size': 4}, 20, 'grain size'),
              ({'grain_size': 4096}, 20, 'grain size'),
              ({'gtes_per_gt': 256}, 44, 'entries per grain table'),
              ({'capacity': 1 << 50}, 12, 'capacity'),
              ({'overhead': 0}, 64, 'overhead'),
              ({'overhead': 1 << 40}, 64, 'overhead'),
              ({'gd_offset': 1 << 30}, 56, 'grain directory offset'),
              ({'descriptor_offset': 1, 'descriptor_size': 1 << 20}, 28,
               'descriptor'))
    @ddt.unpack
    def test_bad_header_fields(self, fields, offset, words):
        exc = self._error(streams.prologue(2048, **fields) + streams.EOS,
                          errors.VmdkFormatError)
        self.assertIn(words, str(exc))
        self.assertEqual(offset, exc.offset)
        self.assertIn('at byte offset %d' % offset, str(exc))

    def test_descriptor_of_another_kind(self):
        stream = streams.prologue(
            2048, 'createType="monolithicSparse"\n') + streams.EOS
        exc = self._error(stream, errors.VmdkUnsupportedError)
        self.assertIn('monolithicSparse', str(exc))
        self.assertEqual(SECTOR, exc.offset)

    def test_descriptor_capacity_differs(self):
        stream = streams.prologue(
            2048, 'createType="streamOptimized"\nRW 4096 SPARSE "a.vmdk"\n')
        exc = self._error(stream + streams.EOS, errors.VmdkFormatError)
        self.assertIn('4096', str(exc))


@ddt.ddt
class ReaderBadStreamTestCase(base.BaseTestCase):

    _cache = {}

    def setUp(self):
        super().setUp()
        if not self._cache:
            # grains in two grain tables, with a zero grain table between
            data = (_disk('t', 'r', 'z', 't') + bytes(62 << 20) +
                    _disk('r', 'z') + os.urandom(5 * SECTOR))
            self._cache.update(data=data, stream=streams.encode(data))
        self.data = self._cache['data']
        self.stream = self._cache['stream']
        self.records = streams.records(self.stream)

    def _error(self, stream, cls):
        got, exc = _read_all(stream)
        self.assertIsInstance(exc, cls)
        self.assertLess(got, len(self.data))
        return exc

    def _first(self, kind):
        return next(r for r in self.records if r[1] == kind)

    def test_valid_stream_reads(self):
        self.assertEqual((len(self.data), None), _read_all(self.stream))
        kinds = [r[1] for r in self.records]
        self.assertEqual(['grain'] * 3 + [fmt.MARKER_GT] + ['grain'] * 2 +
                         [fmt.MARKER_GT, fmt.MARKER_GD, fmt.MARKER_FOOTER,
                          fmt.MARKER_EOS], kinds)

    def test_truncation_at_every_boundary(self):
        cuts = {1, 100, SECTOR - 1, SECTOR, SECTOR + 10,
                streams.OVERHEAD * SECTOR - 1}
        for offset, _kind, _value in self.records:
            cuts.update({offset, offset + 1, offset + 11, offset + 12,
                         offset + 13, offset + SECTOR - 1, offset + SECTOR,
                         offset + SECTOR + 1})
        cuts.add(len(self.stream) - 1)
        wrong = []
        for cut in sorted(c for c in cuts if c < len(self.stream)):
            got, exc = _read_all(self.stream[:cut])
            if not isinstance(exc, errors.VmdkTruncatedError) or \
                    exc.offset is None or got >= len(self.data):
                wrong.append((cut, got, exc))
        self.assertEqual([], wrong)

    def test_grain_lba_beyond_capacity(self):
        offset = self._first('grain')[0]
        stream = bytearray(self.stream)
        struct.pack_into('<Q', stream, offset, 1 << 40)
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn('beyond the capacity', str(exc))
        self.assertEqual(offset, exc.offset)

    @ddt.data((0, 'strictly increasing'), (128, 'strictly increasing'),
              (129, 'not aligned'))
    @ddt.unpack
    def test_grain_lba_backwards_repeated_or_unaligned(self, lba, words):
        offset = self.records[2][0]
        stream = bytearray(self.stream)
        struct.pack_into('<Q', stream, offset, lba)
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn(words, str(exc))
        self.assertEqual(offset, exc.offset)

    def test_error_is_raised_again_on_the_next_read(self):
        stream = self.stream[:self._first(fmt.MARKER_GT)[0] + 5]
        vmdk = reader.StreamOptimizedReader(io.BytesIO(stream))
        first = self.assertRaises(errors.VmdkTruncatedError, vmdk.read,
                                  len(self.data))
        again = self.assertRaises(errors.VmdkTruncatedError, vmdk.read, 10)
        self.assertIs(first, again)
        self.assertRaises(errors.VmdkTruncatedError, list,
                          vmdk.iter_extents())

    def test_decompression_bomb_stops_at_a_grain(self):
        bomb = zlib.compress(bytes(64 << 20), 9)
        stream = streams.prologue(2048) + streams.grain(0, body=bomb)
        tracemalloc.start()
        try:
            got, exc = _read_all(stream + streams.EOS)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertIsInstance(exc, errors.VmdkFormatError)
        self.assertIn('more than a grain', str(exc))
        self.assertEqual(streams.OVERHEAD * SECTOR, exc.offset)
        self.assertLess(peak, 4 << 20)

    def test_faults_are_reported_in_stream_order(self):
        stream = (streams.prologue(2048) +
                  streams.grain(0, body=zlib.compress(b'short')) +
                  streams.grain(0, b'backwards'))
        exc = self._error(stream, errors.VmdkFormatError)
        self.assertIn('inflates to 5 bytes', str(exc))
        self.assertEqual(streams.OVERHEAD * SECTOR, exc.offset)

    def test_compressed_size_past_the_stream(self):
        stream = streams.prologue(2048) + streams.grain(
            0, body=b'x' * 100, csize=60000)
        exc = self._error(stream, errors.VmdkTruncatedError)
        self.assertIn('compressed grain data', str(exc))

    def test_absurd_compressed_size(self):
        stream = streams.prologue(2048) + streams.grain(
            0, body=b'x' * 100, csize=0xFFFFFFFF)
        exc = self._error(stream, errors.VmdkFormatError)
        self.assertIn('more than a grain', str(exc))

    @ddt.data((zlib.compress(b'short'), 'inflates to 5 bytes'),
              (b'\x78\x9c garbage that is not deflate', 'does not inflate'),
              (zlib.compress(bytes(GRAIN))[:-6], 'ends before'),
              (zlib.compress(bytes(GRAIN)) + b'tail', 'beyond its deflate'))
    @ddt.unpack
    def test_grain_that_does_not_inflate_to_a_grain(self, body, words):
        stream = streams.prologue(2048) + streams.grain(0, body=body)
        exc = self._error(stream + streams.EOS, errors.VmdkFormatError)
        self.assertIn(words, str(exc))

    def test_garbage_after_eos(self):
        exc = self._error(self.stream + bytes(700) + b'junk',
                          errors.VmdkFormatError)
        self.assertIn('after the end-of-stream', str(exc))
        self.assertEqual(len(self.stream) + 700, exc.offset)

    def test_zero_padding_after_eos_is_accepted(self):
        got, exc = _read_all(self.stream + bytes(64 << 10))
        self.assertIsNone(exc)
        self.assertEqual(len(self.data), got)

    def test_endless_padding_after_eos(self):
        exc = self._error(self.stream + bytes(reader.MAX_TRAILING_ZEROS +
                                              (1 << 20)),
                          errors.VmdkFormatError)
        self.assertIn('padding', str(exc))

    def test_grain_table_that_does_not_match(self):
        offset = self._first(fmt.MARKER_GT)[0]
        stream = bytearray(self.stream)
        struct.pack_into('<I', stream, offset + SECTOR + 4, 12345)
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn('grain table 0', str(exc))

    def test_grain_directory_pointing_nowhere(self):
        offset = self._first(fmt.MARKER_GD)[0]
        stream = bytearray(self.stream)
        struct.pack_into('<I', stream, offset + SECTOR, 7)
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn('no grain table', str(exc))
        self.assertEqual(offset + SECTOR, exc.offset)

    @ddt.data((12, 'capacity'), (56, 'grain directory at sector'),
              (0, 'magic'))
    @ddt.unpack
    def test_footer_that_does_not_match(self, field, words):
        offset = self._first(fmt.MARKER_FOOTER)[0] + SECTOR
        stream = bytearray(self.stream)
        stream[offset + field] ^= 0x55
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn(words, str(exc))
        self.assertEqual(offset, exc.offset)

    def test_unknown_marker_type(self):
        offset = self._first(fmt.MARKER_GT)[0]
        stream = bytearray(self.stream)
        struct.pack_into('<I', stream, offset + 12, 9)
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn('unknown metadata marker type 9', str(exc))
        self.assertEqual(offset, exc.offset)

    def test_marker_with_wrong_size(self):
        offset = self._first(fmt.MARKER_GT)[0]
        stream = bytearray(self.stream)
        struct.pack_into('<Q', stream, offset, 3)
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn('spans 3 sectors', str(exc))

    def test_missing_footer(self):
        footer = self._first(fmt.MARKER_FOOTER)[0]
        exc = self._error(self.stream[:footer] + streams.EOS,
                          errors.VmdkFormatError)
        self.assertIn('footer', str(exc))

    def test_grain_after_the_directory(self):
        footer = self._first(fmt.MARKER_FOOTER)[0]
        stream = (self.stream[:footer] + streams.grain(1 << 20, b'late') +
                  self.stream[footer:])
        exc = self._error(stream, errors.VmdkFormatError)
        self.assertIn('after the grain directory', str(exc))

    def test_front_layout_table_that_does_not_match(self):
        data = _disk('t', 'r')
        stream = bytearray(streams.front_layout(
            256, [(0, data[:GRAIN]), (128, data[GRAIN:])]))
        struct.pack_into('<I', stream, 22 * SECTOR + 4, 500)
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn('header area does not match', str(exc))

    def test_front_layout_cut_before_a_listed_grain(self):
        data = _disk('t', 'r')
        stream = streams.front_layout(
            256, [(0, data[:GRAIN]), (128, data[GRAIN:])], eos=False)
        second = (streams.OVERHEAD * SECTOR +
                  len(streams.grain(0, data[:GRAIN])))
        exc = self._error(stream[:second], errors.VmdkTruncatedError)
        self.assertIn('grain tables list', str(exc))
        self.assertEqual(second, exc.offset)

    def test_front_layout_table_inside_the_header(self):
        stream = bytearray(streams.front_layout(256, []))
        struct.pack_into('<I', stream, 21 * SECTOR, 3)
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn('grain directory entry 0', str(exc))
        self.assertEqual(21 * SECTOR, exc.offset)
