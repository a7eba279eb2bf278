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
from unittest import mock
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
    def test_inflates_on_the_executor_it_is_given(self, workers):
        data = b''.join(_disk('t', 'r', 'z') for _ in range(12))
        pool = streams.RecordingExecutor(workers)
        self.addCleanup(pool.shutdown)
        vmdk = reader.StreamOptimizedReader(
            io.BytesIO(streams.encode(data)), executor=pool)
        self.assertEqual(data, vmdk.read())
        # 24 data grains, 8 a batch
        self.assertEqual(3, len(pool.futures))
        vmdk.close()
        self.assertFalse(pool.shut_down)

    def test_without_executor_starts_no_thread(self):
        data = b''.join(_disk('t', 'r', 'z') for _ in range(12))
        stream = streams.encode(data)
        with mock.patch.object(threading.Thread, 'start',
                               autospec=True) as start:
            vmdk = reader.StreamOptimizedReader(io.BytesIO(stream))
            self.assertEqual(data, vmdk.read())
        start.assert_not_called()

    def test_abandoned_reader_leaves_no_job_behind(self):
        data = b''.join(_disk('t', 'r') for _ in range(30))
        pool = streams.RecordingExecutor(2)
        self.addCleanup(pool.shutdown)
        vmdk = reader.StreamOptimizedReader(
            io.BytesIO(streams.encode(data)), executor=pool)
        extents = vmdk.iter_extents()
        next(extents)
        extents.close()
        vmdk.close()
        self.assertTrue(vmdk.closed)
        self.assertTrue(pool.futures)
        self.assertTrue(all(f.done() for f in pool.futures))
        self.assertFalse(pool.shut_down)

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

    def test_readinto_writes_zero_runs(self):
        data = _disk('r', 'z', 't')
        vmdk = reader.StreamOptimizedReader(io.BytesIO(streams.encode(data)))
        buf = bytearray(b'\xff' * len(data))
        self.assertEqual(len(data), vmdk.readinto(buf))
        self.assertEqual(data, buf)

    def test_extents_of_a_huge_sparse_disk_hold_no_zeros(self):
        capacity = 62 << 40
        stream = (streams.prologue(capacity // SECTOR) +
                  streams.grain(1 << 30, _disk('t')))
        stream += fmt.meta_marker(4, fmt.MARKER_GT) + (
            struct.pack('<I', streams.OVERHEAD) + bytes(2044))
        n_gt = fmt.gt_count(capacity // SECTOR)
        gd_sector = len(stream) // SECTOR + 1
        gd = bytearray(fmt.sectors_for(4 * n_gt) * SECTOR)
        struct.pack_into('<I', gd, 4 * ((1 << 30) // 128 // 512),
                         streams.OVERHEAD + 2)
        stream += fmt.meta_marker(len(gd) // SECTOR, fmt.MARKER_GD) + gd
        stream += fmt.meta_marker(1, fmt.MARKER_FOOTER) + streams.header(
            capacity // SECTOR, gd_offset=gd_sector) + streams.EOS
        tracemalloc.start()
        try:
            vmdk = reader.StreamOptimizedReader(io.BytesIO(stream))
            extents = [(o, n, d is None) for o, n, d in vmdk.iter_extents()]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        start = (1 << 30) * SECTOR
        self.assertEqual([(0, start, True), (start, GRAIN, False),
                          (start + GRAIN, capacity - start - GRAIN, True)],
                         extents)
        self.assertLess(peak, 64 << 20)

    def test_extents_end_only_after_the_tail_is_checked(self):
        data = _disk('t', 'r')
        stream = bytearray(streams.encode(data))
        footer = [r for r in streams.records(bytes(stream))
                  if r[1] == fmt.MARKER_FOOTER][0][0]
        stream[footer + SECTOR + 12] ^= 1  # the footer's capacity
        vmdk = reader.StreamOptimizedReader(io.BytesIO(bytes(stream)))
        seen = []
        extents = vmdk.iter_extents()
        exc = self.assertRaises(errors.VmdkCorrupt, lambda: [
            seen.append(e[:2]) for e in extents])
        self.assertIn('footer capacity', str(exc))
        # No grain came out before the tail was checked (the reader holds
        # back the last grains), and none after the fault.
        self.assertEqual([], seen)
        self.assertRaises(errors.VmdkCorrupt, vmdk.read, 1)

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

    @ddt.data((os.urandom(4096), 'raw disk image'),
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

    @ddt.data(b'', b'KD', fmt.MAGIC + bytes(100))
    def test_truncated_header(self, stream):
        exc = self._error(stream, errors.VmdkTruncated)
        self.assertEqual(0, exc.offset)
        self.assertIn('header', str(exc))

    @ddt.data(b'KDMX', b'\0\0\0\0', b'kdmv')
    def test_damaged_magic_is_corrupt(self, magic):
        stream = streams.encode(bytes(SECTOR))
        exc = self._error(magic + stream[4:], errors.VmdkCorrupt)
        self.assertIn('magic %r' % magic, str(exc))
        self.assertIn('corrupt', str(exc))
        self.assertEqual(0, exc.offset)

    @ddt.data(fmt.FLAG_NL_DETECT | fmt.FLAG_COMPRESSED,
              fmt.FLAG_NL_DETECT | fmt.FLAG_MARKERS,
              fmt.FLAG_NL_DETECT | fmt.FLAG_RGD, 0)
    def test_damaged_flags_of_a_stream_optimized_vmdk(self, flags):
        # The descriptor says streamOptimized: the flags are wrong, the
        # file is not "a streamOptimized VMDK, not streamOptimized".
        stream = bytearray(streams.encode(_disk('t')))
        stream[8:12] = flags.to_bytes(4, 'little')
        exc = self._error(bytes(stream), errors.VmdkCorrupt)
        self.assertIn('flags 0x%x are corrupt' % flags, str(exc))
        self.assertIn('createType=streamOptimized', str(exc))
        self.assertNotIn('not streamOptimized', str(exc))
        self.assertEqual(8, exc.offset)

    @ddt.data(fmt.FLAG_COMPRESSED, fmt.FLAG_MARKERS | fmt.FLAG_RGD)
    def test_half_stream_flags_without_descriptor(self, flags):
        exc = self._error(streams.prologue(2048, flags=flags) + streams.EOS,
                          errors.VmdkCorrupt)
        self.assertIn('no VMDK variant has only one', str(exc))

    def test_hosted_sparse_without_descriptor_is_unsupported(self):
        exc = self._error(streams.prologue(2048, flags=fmt.FLAG_RGD),
                          errors.VmdkUnsupported)
        self.assertIn('hosted sparse VMDK', str(exc))

    def test_unknown_flag_bits_are_corrupt(self):
        stream = bytearray(streams.encode(_disk('t')))
        stream[11] = 0x80
        exc = self._error(bytes(stream), errors.VmdkCorrupt)
        self.assertIn('0x80000000 have no meaning', str(exc))
        self.assertEqual(8, exc.offset)

    def test_grain_size_beyond_what_is_supported(self):
        exc = self._error(streams.prologue(2048, grain_size=4096) +
                          streams.EOS, errors.VmdkUnsupported)
        self.assertIn('grain size of 4096 sectors', str(exc))
        self.assertEqual(20, exc.offset)

    @ddt.data(('version=1\nRW 2048 SPARSE "a.vmdk"\n', 'no createType'),
              ('createType="streamOptimizeX"\n', 'no VMDK variant'))
    @ddt.unpack
    def test_descriptor_without_a_known_create_type(self, text, words):
        exc = self._error(streams.prologue(2048, text) + streams.EOS,
                          errors.VmdkCorrupt)
        self.assertIn(words, str(exc))
        self.assertEqual(SECTOR, exc.offset)

    def test_overhead_past_the_end_of_a_stream_with_grains(self):
        stream = bytearray(streams.encode(_disk('t', 'r')))
        stream[64:72] = (1000).to_bytes(8, 'little')
        exc = self._error(bytes(stream), errors.VmdkCorrupt)
        self.assertIn('overhead of 1000 sectors', str(exc))
        self.assertEqual(64, exc.offset)

    def test_stream_cut_in_the_header_area(self):
        stream = streams.encode(_disk('t', 'r'))
        exc = self._error(stream[:100 * SECTOR], errors.VmdkTruncated)
        self.assertIn('header area', str(exc))

    @ddt.data(({'version': 1}, 4, 'version 1'),
              ({'version': 4}, 4, 'version 4'),
              ({'flags': fmt.STREAM_FLAGS | 1 << 5}, 8, 'flags 0x30021 are '
               'invalid'),
              ({'nl_chars': b'\n \n\n'}, 73, 'newline'),
              ({'compression': 2}, 77, 'compression algorithm 2'),
              ({'grain_size': 100}, 20, 'grain size'),
              ({'grain_size': 4}, 20, 'grain size'),
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

    def _last_grain(self):
        return [r for r in self.records if r[1] == 'grain'][-1]

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

    def _front(self, eos=True, second_table=False):
        data = _disk('t', 'r')
        grains = [(0, data[:GRAIN]), (128, data[GRAIN:])]
        cap = 256
        if second_table:
            grains.append((512 * 128, data[:GRAIN]))
            cap = 513 * 128
        return bytearray(streams.front_layout(cap, grains, eos=eos))

    @ddt.data(True, False)
    def test_front_layout_entry_past_the_end_is_corrupt(self, eos):
        # Every grain the tables list is in the stream, but one entry
        # points past its end: corrupt, not "stream ends before the grain".
        stream = self._front(eos=eos)
        struct.pack_into('<I', stream, 22 * SECTOR + 4, 1 << 20)
        exc = self._error(bytes(stream), errors.VmdkCorrupt)
        self.assertIn('grain table 0', str(exc))
        self.assertIn('does not match the grains', str(exc))
        self.assertNotIn('stream ends', str(exc))
        self.assertEqual(21 * SECTOR, exc.offset)

    def test_front_layout_entries_out_of_guest_order(self):
        stream = self._front()
        first = struct.unpack_from('<I', stream, 22 * SECTOR)[0]
        struct.pack_into('<I', stream, 22 * SECTOR + 4, first)
        exc = self._error(bytes(stream), errors.VmdkCorrupt)
        self.assertIn('grain table 0 entry 1 points to sector %d, not after '
                      'sector %d of entry 0' % (first, first), str(exc))
        self.assertEqual(22 * SECTOR + 4, exc.offset)

    def test_front_layout_tables_out_of_guest_order(self):
        stream = self._front(second_table=True)
        gd = struct.unpack_from('<2I', stream, 21 * SECTOR)
        # table 1's grain moved before table 0's last grain
        struct.pack_into('<I', stream, gd[1] * SECTOR, streams.OVERHEAD + 1)
        exc = self._error(bytes(stream), errors.VmdkCorrupt)
        self.assertIn('grain table 1 lists its first grain at sector %d'
                      % (streams.OVERHEAD + 1), str(exc))
        self.assertEqual(21 * SECTOR + 4, exc.offset)

    def test_front_layout_cut_after_a_table_that_does_not_match(self):
        stream = self._front(eos=False, second_table=True)
        records = streams.records(bytes(stream))
        gd = struct.unpack_from('<2I', stream, 21 * SECTOR)
        # grain 1's entry moved by one sector: still in order
        entry = gd[0] * SECTOR + 4
        struct.pack_into('<I', stream, entry,
                         struct.unpack_from('<I', stream, entry)[0] + 1)
        exc = self._error(bytes(stream[:records[2][0]]), errors.VmdkCorrupt)
        self.assertIn('grain table 0', str(exc))

    def test_front_layout_cut_between_tables(self):
        stream = self._front(eos=False, second_table=True)
        records = streams.records(bytes(stream))
        exc = self._error(bytes(stream[:records[2][0]]),
                          errors.VmdkTruncated)
        self.assertIn('2 of their 3 grains present', str(exc))
        self.assertEqual(records[2][0], exc.offset)

    def test_grain_size_field_past_the_end_is_corrupt(self):
        stream = bytearray(self.stream)
        offset, _kind, lba = self._last_grain()
        size = fmt.GRAIN_MARKER.unpack_from(stream, offset)[1]
        struct.pack_into('<I', stream, offset + 8, size + 20000)
        exc = self._error(bytes(stream), errors.VmdkCorrupt)
        self.assertIn('grain marker of LBA %d gives a compressed size of %d '
                      'bytes' % (lba, size + 20000), str(exc))
        self.assertIn('ends after %d bytes' % size, str(exc))
        self.assertEqual(offset, exc.offset)

    def test_grain_data_cut_is_truncated(self):
        offset = self._last_grain()[0]
        exc = self._error(self.stream[:offset + 100], errors.VmdkTruncated)
        self.assertIn('compressed grain data', str(exc))
        self.assertEqual(offset + 12, exc.offset)

    def test_end_of_stream_marker_with_sectors(self):
        stream = bytearray(self.stream)
        struct.pack_into('<Q', stream, len(stream) - SECTOR, 2)
        exc = self._error(bytes(stream), errors.VmdkCorrupt)
        self.assertIn('end-of-stream marker spans 2 sectors instead of 0',
                      str(exc))

    def test_front_layout_table_inside_the_header(self):
        stream = bytearray(streams.front_layout(256, []))
        struct.pack_into('<I', stream, 21 * SECTOR, 3)
        exc = self._error(bytes(stream), errors.VmdkFormatError)
        self.assertIn('grain directory entry 0', str(exc))
        self.assertEqual(21 * SECTOR, exc.offset)
