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
import subprocess
import sys
import threading
import tracemalloc
from unittest import mock

import ddt
import fixtures
from oslotest import base

from cinder_vmdk_backup.vmdk import compression
from cinder_vmdk_backup.vmdk import errors
from cinder_vmdk_backup.vmdk import format as fmt
from cinder_vmdk_backup.vmdk import reader
from cinder_vmdk_backup.vmdk import writer
from tests.unit.vmdk import streams

GRAIN = streams.GRAIN
MiB = 1 << 20
SECTOR = fmt.SECTOR
_real_pread = os.pread
_TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def _text(n):
    return (b'some log line %d with words ' % n * GRAIN)[:GRAIN]


def _decode(stream):
    return reader.StreamOptimizedReader(io.BytesIO(stream)).read()


class _Pipe(object):
    """A source that can only be read forwards."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def read(self, n):
        return self._data.read(n)


@ddt.ddt
class WriterTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def _sparse_file(self, size, writes):
        path = os.path.join(self.tmp, 'disk.raw')
        with open(path, 'wb') as f:
            f.truncate(size)
            for offset, data in writes:
                f.seek(offset)
                f.write(data)
        return path

    def _pool(self, workers=2):
        pool = streams.RecordingExecutor(workers)
        self.addCleanup(pool.shutdown)
        return pool

    @ddt.data((b'', 0), (b'', 2), (os.urandom(SECTOR), 0),
              (_text(0) + os.urandom(GRAIN) + bytes(GRAIN), 2),
              (bytes(3 * GRAIN), 2), (os.urandom(GRAIN + 3 * SECTOR), 2),
              (_text(1) * 40 + os.urandom(GRAIN) * 3, 2))
    @ddt.unpack
    def test_round_trip_and_exact_length(self, data, workers):
        pool = self._pool(workers) if workers else None
        vmdk = writer.StreamOptimizedWriter(io.BytesIO(data), len(data),
                                            executor=pool)
        length = vmdk.length
        sink = io.BytesIO()
        self.assertEqual(length, vmdk.write_to(sink))
        self.assertEqual(length, len(sink.getvalue()))
        self.assertEqual(data, _decode(sink.getvalue()))

    def test_sparse_file_holes_are_not_read(self):
        size = 50 << 20
        writes = [(3 * GRAIN + 100, b'data'), (700 * GRAIN, _text(2))]
        path = self._sparse_file(size, writes)
        with open(path, 'rb') as source, mock.patch.object(
                os, 'pread', autospec=True, side_effect=_real_pread) as pread:
            vmdk = writer.StreamOptimizedWriter(source, size,
                                                executor=self._pool())
            vmdk.length
            stream = b''.join(vmdk.iter_chunks())
        offsets = sorted({c.args[2] for c in pread.call_args_list})
        self.assertEqual([3 * GRAIN, 700 * GRAIN], offsets)
        expected = bytearray(size)
        for offset, data in writes:
            expected[offset:offset + len(data)] = data
        self.assertEqual(bytes(expected), _decode(stream))

    def test_largest_disk_in_bounded_memory(self):
        capacity = 62 << 40
        path = self._sparse_file(MiB, [(100, b'start'), (MiB - 5, b'end')])
        tracemalloc.start()
        try:
            with open(path, 'rb') as source:
                vmdk = writer.StreamOptimizedWriter(source, capacity)
                length = vmdk.length
                chunks = list(vmdk.iter_chunks())
            stream = b''.join(chunks)
            del chunks
            disk = reader.StreamOptimizedReader(io.BytesIO(stream))
            extents = [(o, n, d is None) for o, n, d in disk.iter_extents()]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertEqual(length, len(stream))
        self.assertEqual([(0, GRAIN, False), (GRAIN, 14 * GRAIN, True),
                          (15 * GRAIN, GRAIN, False),
                          (MiB, capacity - MiB, True)], extents)
        self.assertLess(peak, 80 * MiB)

    def test_zero_grains_are_not_stored(self):
        data = bytes(GRAIN) + _text(3) + bytes(5 * GRAIN) + _text(4)
        stream = streams.encode(data)
        grains = [value for _o, kind, value in streams.records(stream)
                  if kind == 'grain']
        self.assertEqual([128, 7 * 128], grains)

    def test_output_does_not_depend_on_executor_or_measuring(self):
        data = b''.join(_text(i) if i % 3 else os.urandom(GRAIN)
                        for i in range(70))
        bodies = set()
        for workers, measure in ((0, True), (2, True), (2, False),
                                 (3, False), (0, False)):
            stream = streams.encode(data, workers=workers, measure=measure)
            bodies.add(stream[streams.OVERHEAD * SECTOR:])
        self.assertEqual(1, len(bodies))

    def test_output_without_the_stored_bitmap_is_the_same(self):
        data = b''.join(_text(i) if i % 2 else os.urandom(GRAIN)
                        for i in range(10))
        with_bits = streams.encode(data, workers=2)
        with mock.patch.object(writer, 'MAX_STORED_BITS', 0):
            vmdk = writer.StreamOptimizedWriter(io.BytesIO(data), len(data))
            length = vmdk.length
            without = b''.join(vmdk.iter_chunks())
        self.assertEqual(len(without), length)
        self.assertEqual(with_bits[streams.OVERHEAD * SECTOR:],
                         without[streams.OVERHEAD * SECTOR:])

    def test_incompressible_grains_are_stored_blocks(self):
        data = os.urandom(GRAIN)
        stream = streams.encode(data)
        offset = streams.OVERHEAD * SECTOR
        lba, size = fmt.GRAIN_MARKER.unpack_from(stream, offset)
        self.assertEqual(compression.stored_size(GRAIN), size)
        self.assertEqual(b'\x78\x01', stream[offset + 12:offset + 14])

    @ddt.data(0, 2)
    def test_level_0_stores_every_grain_without_compressing(self, workers):
        data = (_text(5) * 3 + bytes(GRAIN) + os.urandom(GRAIN + SECTOR))
        with mock.patch.object(compression, 'compress',
                               autospec=True) as compress:
            stream = streams.encode(data, workers=workers,
                                    compression_level=0)
        compress.assert_not_called()
        self.assertEqual(data, _decode(stream))
        grains = [(offset, value) for offset, kind, value
                  in streams.records(stream) if kind == 'grain']
        # The zero grain is left out; every other one is stored blocks.
        self.assertEqual([0, 128, 256, 512, 640],
                         [lba for _offset, lba in grains])
        for offset, lba in grains:
            size = fmt.GRAIN_MARKER.unpack_from(stream, offset)[1]
            body = stream[offset + 12:offset + 12 + size]
            self.assertEqual(b'\x78\x01', body[:2])
            start = lba * SECTOR
            self.assertEqual(
                compression.stored(data[start:start + GRAIN]), body)
        vmdk = writer.StreamOptimizedWriter(io.BytesIO(data), len(data),
                                            compression_level=0)
        self.assertEqual(len(stream), vmdk.length)

    @ddt.data(('lsiLogic', 'lsilogic'), ('busLogic', 'buslogic'),
              ('lsiLogicsas', 'lsilogic'), ('paraVirtual', 'lsilogic'),
              ('ide', 'ide'))
    @ddt.unpack
    def test_descriptor(self, adapter_type, ddb_adapter):
        capacity = 3 << 30
        with open(self._sparse_file(capacity, []), 'rb') as source:
            vmdk = writer.StreamOptimizedWriter(
                source, capacity, adapter_type=adapter_type, hw_version=11)
            head = next(vmdk.iter_chunks())
        desc = reader.StreamOptimizedReader(io.BytesIO(head)).descriptor
        self.assertEqual(ddb_adapter, desc['ddb.adapterType'])
        self.assertEqual('streamOptimized', desc['createType'])
        self.assertEqual('11', desc['ddb.virtualHWVersion'])
        self.assertEqual('ffffffff', desc['parentCID'])
        self.assertNotEqual('ffffffff', desc['CID'])
        self.assertEqual(32, len(desc['ddb.longContentID']))
        cylinders, heads, sectors = fmt.geometry(capacity // SECTOR,
                                                 ddb_adapter)
        self.assertEqual((str(cylinders), str(heads), str(sectors)),
                         (desc['ddb.geometry.cylinders'],
                          desc['ddb.geometry.heads'],
                          desc['ddb.geometry.sectors']))

    @ddt.data({'adapter_type': 'scsi-9'}, {'capacity': -1},
              {'capacity': writer.MAX_CAPACITY + 1},
              {'extent_name': 'x' * 20000})
    def test_bad_arguments(self, kwargs):
        kwargs.setdefault('capacity', 1 << 20)
        self.assertRaises(ValueError, writer.StreamOptimizedWriter,
                          io.BytesIO(b''), **kwargs)

    def test_forward_only_source_without_length(self):
        data = _text(5) + bytes(GRAIN) + os.urandom(100)
        vmdk = writer.StreamOptimizedWriter(_Pipe(data), len(data),
                                            executor=self._pool())
        self.assertEqual(data + bytes(-len(data) % SECTOR),
                         _decode(b''.join(vmdk.iter_chunks())))

    def test_forward_only_source_cannot_be_measured(self):
        vmdk = writer.StreamOptimizedWriter(_Pipe(b'x' * 10), 10)
        exc = self.assertRaises(errors.VmdkError, getattr, vmdk, 'length')
        self.assertIn('cannot seek', str(exc))

    def test_sequential_source_shorter_than_capacity(self):
        vmdk = writer.StreamOptimizedWriter(_Pipe(b'x' * 1000), GRAIN * 2)
        exc = self.assertRaises(errors.VmdkTruncated, b''.join,
                                vmdk.iter_chunks())
        self.assertIn('source ended at byte 1000', str(exc))

    def test_regular_file_shorter_than_capacity_reads_as_zeros(self):
        path = self._sparse_file(1000, [(0, b'y' * 1000)])
        with open(path, 'rb') as source:
            stream = b''.join(writer.StreamOptimizedWriter(
                source, 3 * GRAIN).iter_chunks())
        self.assertEqual(b'y' * 1000 + bytes(3 * GRAIN - 1000),
                         _decode(stream))

    def test_capacity_rounds_up_to_a_sector(self):
        data = os.urandom(1000)
        self.assertEqual(data + bytes(24), _decode(streams.encode(data)))

    def test_source_changed_after_measuring(self):
        path = self._sparse_file(4 * GRAIN, [(0, _text(6))])
        with open(path, 'r+b') as source:
            vmdk = writer.StreamOptimizedWriter(source, 4 * GRAIN)
            vmdk.length
            os.pwrite(source.fileno(), os.urandom(GRAIN), GRAIN)
            exc = self.assertRaises(errors.VmdkSourceChanged, b''.join,
                                    vmdk.iter_chunks())
        self.assertIn('source changed', str(exc))

    def test_abandoned_stream_leaves_no_job_behind(self):
        data = b''.join(_text(i) for i in range(200))
        pool = self._pool()
        chunks = writer.StreamOptimizedWriter(
            io.BytesIO(data), len(data), executor=pool).iter_chunks()
        next(chunks)
        next(chunks)
        chunks.close()
        self.assertTrue(pool.futures)
        self.assertTrue(all(f.done() for f in pool.futures))
        # borrowed: still usable
        self.assertFalse(pool.shut_down)
        self.assertEqual(3, pool.submit(sum, [1, 2]).result())

    def test_executor_gets_batches_in_flight_and_order_is_kept(self):
        data = b''.join(_text(i) if i % 2 else os.urandom(GRAIN)
                        for i in range(100))
        pool = self._pool(3)
        stream = streams.encode(data)
        vmdk = writer.StreamOptimizedWriter(io.BytesIO(data), len(data),
                                            executor=pool)
        self.assertEqual(stream[streams.OVERHEAD * SECTOR:],
                         b''.join(vmdk.iter_chunks())[
                             streams.OVERHEAD * SECTOR:])
        # 100 grains, 16 a batch: 7 batches, one pass (not measured)
        self.assertEqual(7, len(pool.futures))

    def test_without_executor_starts_no_thread(self):
        data = b''.join(_text(i) for i in range(40))
        with mock.patch.object(threading.Thread, 'start',
                               autospec=True) as start:
            vmdk = writer.StreamOptimizedWriter(io.BytesIO(data), len(data))
            vmdk.length
            self.assertEqual(data, _decode(b''.join(vmdk.iter_chunks())))
        start.assert_not_called()

    def test_codec_imports_no_thread_machinery(self):
        # The codec is plain synchronous code: no eventlet, no
        # native_threads, whatever imported it.
        code = ('import sys; import cinder_vmdk_backup.vmdk; '
                'print(sorted(m for m in sys.modules if m == "eventlet" or '
                'm.startswith("eventlet.") or m.endswith("native_threads") '
                'or m.startswith("oslo_log")))')
        out = subprocess.run(
            [sys.executable, '-c', code], check=True, capture_output=True,
            text=True, env=dict(os.environ, PYTHONPATH=_TOP))
        self.assertEqual('[]', out.stdout.strip(), out.stderr)
