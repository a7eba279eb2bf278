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

"""Encode raw disk data as a stream-optimized VMDK, written sequentially.

:class:`StreamOptimizedWriter` produces what a vSphere import lease (HTTP
POST, ``application/x-vnd.vmware-streamVmdk``) takes: header, embedded
descriptor, compressed grains behind grain markers, a grain table after
each run of grains it covers, the grain directory, the footer and the
end-of-stream marker. It never seeks in its output.

Holes of a sparse source file are skipped without reading them, and grains
that read as zeros are not stored. Grains are deflated in batches, in the
caller's thread or on an executor the caller hands in (with at most a few
batches in flight); results are consumed in submission order, so the output
does not depend on thread timing. The writer itself starts no threads and
logs nothing.

The exact output length (oslo.vmware aborts an upload that ends below the
size it was told) is found by a measuring pass that compresses every grain
(at level 0 it only looks for zero grains)
and keeps only its size: the deflate output of one library at one level is
deterministic, so the writing pass produces the same sizes again. The pass
also records, one bit per grain, which grains did not compress; the writing
pass stores those without compressing them, so incompressible data costs one
compression, not two. Should the source change between the passes, the
writer notices at the next grain table and raises
:class:`~.errors.VmdkSourceChanged` instead of sending a stream of the
wrong length.
"""

import array
import collections
import os
import sys
import uuid

from cinder_vmdk_backup.vmdk import compression
from cinder_vmdk_backup.vmdk import errors
from cinder_vmdk_backup.vmdk import extents
from cinder_vmdk_backup.vmdk import format as fmt

#: sectors before the first grain: header, descriptor, padding to 64 KiB
OVERHEAD_SECTORS = 128
#: room for the embedded descriptor, NUL-padded (what VMware and qemu use)
DESCRIPTOR_SECTORS = 20
MAX_CAPACITY = 64 << 40
#: most grains whose "store, do not compress" bit is kept (32 MiB of bits,
#: a 16 TiB disk); above it the writing pass compresses every grain again
#: and takes the same decision, only slower
MAX_STORED_BITS = 1 << 28
#: grains per compression task
BATCH_GRAINS = 16
#: batches in flight per CPU (with an executor)
INFLIGHT_PER_THREAD = 3


class StreamOptimizedWriter(object):
    """A stream-optimized VMDK of a raw source.

    :param source: file object of raw data; a regular file (or block
        device) is read with ``os.pread`` and its holes are skipped, any
        other object is read sequentially with ``read(n)``
    :param capacity: disk size in bytes (rounded up to whole sectors; data
        of the source beyond it is ignored, a shorter regular file reads as
        zeros)
    :param adapter_type: vSphere/Cinder adapter type (``lsiLogic``,
        ``busLogic``, ``lsiLogicsas``, ``paraVirtual``, ``ide``)
    :param hw_version: ``ddb.virtualHWVersion`` of the descriptor
    :param compression_level: zlib-style deflate level, 1 (fastest) to 9,
        or 0: grains stored in deflate's uncompressed blocks, which costs
        only a checksum here and a copy on the receiving side, and lets the
        measuring pass skip compression (the stream is then as long as the
        non-zero data, plus about 0.8 %: 129 sectors a grain)
    :param executor: a :class:`concurrent.futures.Executor` to deflate
        batches of grains on, a few per CPU in flight; it is borrowed, never
        shut down. None (the default) deflates in the caller's thread.
    :param extent_name: file name in the descriptor's extent line
    :raises ValueError: for a bad capacity or adapter type
    """

    def __init__(self, source, capacity, adapter_type='lsiLogic',
                 hw_version=14, compression_level=1, executor=None,
                 extent_name='disk.vmdk'):
        if capacity < 0 or capacity > MAX_CAPACITY:
            raise ValueError('capacity of %d bytes is out of range'
                             % capacity)
        self._source = source
        self._fd = extents.regular_fd(source)
        self._capacity_sectors = fmt.sectors_for(capacity)
        self._capacity = self._capacity_sectors * fmt.SECTOR
        self._data_end = capacity
        self._grain_bytes = fmt.DEFAULT_GRAIN_SECTORS * fmt.SECTOR
        self._store_only = compression_level == 0
        self._level = (None if self._store_only
                       else compression.backend_level(compression_level))
        self._executor = executor
        self._n_gt = fmt.gt_count(self._capacity_sectors)
        self._gd_sectors = fmt.sectors_for(self._n_gt * fmt.GTE_SIZE)
        adapter = fmt.descriptor_adapter_type(adapter_type)
        descriptor = fmt.build_descriptor(
            self._capacity_sectors, adapter, hw_version,
            cid=int.from_bytes(os.urandom(4), 'little') & 0xFFFFFFFE,
            long_content_id=uuid.uuid4().hex,
            extent_name=extent_name).encode('utf-8')
        if len(descriptor) >= DESCRIPTOR_SECTORS * fmt.SECTOR:
            raise ValueError('descriptor of %d bytes does not fit'
                             % len(descriptor))
        header = fmt.new_header(self._capacity_sectors, DESCRIPTOR_SECTORS,
                                OVERHEAD_SECTORS)
        self._header = header
        self._prologue = (fmt.pack_header(header) + descriptor +
                          bytes(OVERHEAD_SECTORS * fmt.SECTOR -
                                fmt.SECTOR - len(descriptor)))
        self._length = None
        self._stored = None
        self._gt_plan = None

    # -- public -------------------------------------------------------------

    @property
    def length(self):
        """Exact length in bytes of the VMDK stream.

        The first access runs the measuring pass (a full compression of the
        data, at level 0 only a look for zero grains); it needs a source
        that is a regular file or seekable.

        :raises VmdkError: for a source that can be read only once
        """
        if self._length is None:
            self._measure()
        return self._length

    def iter_chunks(self):
        """Yield the VMDK stream as bytes objects of up to about 1 MiB.

        :raises VmdkSourceChanged: when the source changed after
            :attr:`length` was measured
        :raises VmdkTruncated: when a sequential source ends before the
            capacity
        :raises VmdkError: when the source cannot be read twice (see
            :attr:`length`)
        """
        yield self._prologue
        sector = OVERHEAD_SECTORS
        gd = array.array('I', bytes(self._n_gt * fmt.GTE_SIZE))
        table = _OpenTable()
        total = len(self._prologue)
        for batch in self._encoded_batches(measure=False):
            parts = []
            for grain, payload, sectors in batch:
                k, index = divmod(grain, fmt.GTES_PER_GT)
                if k != table.k:
                    sector = self._close_table(table, gd, sector, parts)
                    table.open(k, sector)
                table.entries[index] = sector
                parts.extend(payload)
                sector += sectors
            if parts:
                chunk = b''.join(parts)
                total += len(chunk)
                yield chunk
        parts = []
        sector = self._close_table(table, gd, sector, parts)
        parts.append(fmt.meta_marker(self._gd_sectors, fmt.MARKER_GD))
        gd_bytes = _le_bytes(gd)
        parts.append(gd_bytes + bytes(self._gd_sectors * fmt.SECTOR -
                                      len(gd_bytes)))
        footer = self._header._replace(gd_offset=sector + 1)
        parts.append(fmt.meta_marker(1, fmt.MARKER_FOOTER))
        parts.append(fmt.pack_header(footer))
        parts.append(fmt.meta_marker(0, fmt.MARKER_EOS))
        chunk = b''.join(parts)
        total += len(chunk)
        if self._length is not None and total != self._length:
            raise errors.VmdkSourceChanged(
                'the VMDK stream came out %d bytes long instead of the %d '
                'measured: the source changed while it was being encoded'
                % (total, self._length), total)
        yield chunk

    def write_to(self, sink):
        """Write the whole VMDK to ``sink.write(bytes)``.

        :returns: the number of bytes written (== :attr:`length`)
        """
        written = 0
        for chunk in self.iter_chunks():
            sink.write(chunk)
            written += len(chunk)
        return written

    # -- grain tables ---------------------------------------------------------

    def _close_table(self, table, gd, sector, parts):
        """Append the open grain table to parts; return the next sector."""
        if table.k is None:
            return sector
        if self._gt_plan is not None:
            planned = self._gt_plan[table.k]
            if planned != sector - table.first_sector:
                raise errors.VmdkSourceChanged(
                    'grain table %d covers %s sectors of grains instead of '
                    'the %s measured: the source changed while it was being '
                    'encoded' % (table.k, sector - table.first_sector,
                                 planned), sector * fmt.SECTOR)
        parts.append(fmt.meta_marker(fmt.GT_SECTORS, fmt.MARKER_GT))
        parts.append(_le_bytes(table.entries))
        gd[table.k] = sector + 1
        table.k = None
        return sector + 1 + fmt.GT_SECTORS

    # -- measuring ------------------------------------------------------------

    def _measure(self):
        n_grains = -(-self._capacity // self._grain_bytes)
        stored = None
        if n_grains <= MAX_STORED_BITS and not self._store_only:
            stored = bytearray((n_grains + 7) // 8)
        # sectors of grains per grain table, to catch a changing source
        plan = array.array('I', bytes(self._n_gt * 4))
        grain_sectors = 0
        for batch in self._encoded_batches(measure=True):
            for grain, sectors, is_stored in batch:
                plan[grain // fmt.GTES_PER_GT] += sectors
                grain_sectors += sectors
                if is_stored and stored is not None:
                    stored[grain >> 3] |= 1 << (grain & 7)
        self._stored = stored
        tables = (len(plan) - plan.count(0)) * (1 + fmt.GT_SECTORS)
        self._length = (OVERHEAD_SECTORS + grain_sectors + tables +
                        1 + self._gd_sectors + 2 + 1) * fmt.SECTOR
        self._gt_plan = plan

    # -- reading and compressing -------------------------------------------

    def _encoded_batches(self, measure):
        """Yield lists of encoded grains, in order.

        With an executor, a few batches per CPU are in flight; batches not
        started when the caller stops are cancelled, and those running are
        waited for, so no job outlives the iteration.
        """
        encode = self._measure_batch if measure else self._encode_batch
        jobs = self._jobs(measure)
        pool = self._executor
        if pool is None:
            for job in jobs:
                yield encode(job)
            return
        limit = (os.cpu_count() or 1) * INFLIGHT_PER_THREAD
        pending = collections.deque()
        try:
            for job in jobs:
                pending.append(pool.submit(encode, job))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            # Wait for the jobs that run (not concurrent.futures.wait: any
            # executor's futures have result(), not all a condition).
            for future in pending:
                if not future.cancelled():
                    try:
                        future.result()
                    except Exception:  # nosec B110
                        pass

    def _jobs(self, measure):
        """Yield batches: lists of grain indexes (file) or (grain, data)."""
        if self._fd is not None:
            batch = []
            for grain in extents.grains_with_data(
                    self._fd, self._data_end, self._grain_bytes):
                batch.append(grain)
                if len(batch) == BATCH_GRAINS:
                    yield batch
                    batch = []
            if batch:
                yield batch
            return
        if measure or self._length is not None:
            self._rewind()
        batch = []
        for grain in range(-(-self._capacity // self._grain_bytes)):
            batch.append((grain, self._read_sequential(grain)))
            if len(batch) == BATCH_GRAINS:
                yield batch
                batch = []
        if batch:
            yield batch

    def _rewind(self):
        try:
            self._source.seek(0)
        except (AttributeError, OSError, ValueError) as exc:
            raise errors.VmdkError(
                'the length of the VMDK needs a second pass over the source, '
                'which cannot seek: %s' % exc)

    def _read_sequential(self, grain):
        start = grain * self._grain_bytes
        want = min(self._grain_bytes, self._data_end - start)
        parts = []
        got = 0
        while got < want:
            data = self._source.read(want - got)
            if not data:
                raise errors.VmdkTruncated(
                    'the source ended at byte %d, before the capacity of %d '
                    'bytes' % (start + got, self._data_end))
            parts.append(data)
            got += len(data)
        return b''.join(parts)

    def _grain_data(self, item):
        if self._fd is None:
            return item
        start = item * self._grain_bytes
        want = min(self._grain_bytes, self._data_end - start)
        data = os.pread(self._fd, want, start)
        return item, data

    def _padded(self, grain, data):
        """Pad a short read to the grain, or the last grain to its sector."""
        want = min(self._grain_bytes, self._capacity - grain *
                   self._grain_bytes)
        if len(data) < want:
            data += bytes(want - len(data))
        return data

    def _measure_batch(self, items):
        out = []
        for item in items:
            grain, data = self._grain_data(item)
            data = self._padded(grain, data)
            if data == _ZERO_GRAIN[:len(data)]:
                continue
            limit = compression.stored_size(len(data))
            if self._store_only:
                out.append((grain, _payload_sectors(limit), True))
                continue
            size = len(compression.compress(data, self._level))
            is_stored = size >= limit
            out.append((grain,
                        _payload_sectors(limit if is_stored else size),
                        is_stored))
        return out

    def _encode_batch(self, items):
        out = []
        stored = self._stored
        for item in items:
            grain, data = self._grain_data(item)
            data = self._padded(grain, data)
            if data == _ZERO_GRAIN[:len(data)]:
                continue
            if self._store_only:
                body = compression.stored(data)
            elif stored is not None:
                if stored[grain >> 3] & (1 << (grain & 7)):
                    body = compression.stored(data)
                else:
                    body = compression.compress(data, self._level)
            else:
                body = compression.compress(data, self._level)
                if len(body) >= compression.stored_size(len(data)):
                    body = compression.stored(data)
            lba = grain * fmt.DEFAULT_GRAIN_SECTORS
            head = fmt.GRAIN_MARKER.pack(lba, len(body))
            pad = -(len(head) + len(body)) % fmt.SECTOR
            out.append((grain, (head, body, _PADDING[:pad]),
                        _payload_sectors(len(body))))
        return out


class _OpenTable(object):
    """The grain table being filled."""

    def __init__(self):
        self.k = None
        self.first_sector = 0
        self.entries = None

    def open(self, k, sector):
        self.k = k
        self.first_sector = sector
        self.entries = array.array('I', bytes(fmt.GTES_PER_GT *
                                              fmt.GTE_SIZE))


_ZERO_GRAIN = bytes(fmt.DEFAULT_GRAIN_SECTORS * fmt.SECTOR)
_PADDING = bytes(fmt.SECTOR)


def _payload_sectors(body_size):
    return fmt.sectors_for(fmt.GRAIN_MARKER.size + body_size)


def _le_bytes(entries):
    if sys.byteorder != 'little':  # pragma: no cover
        entries = array.array('I', entries)
        entries.byteswap()
    return entries.tobytes()
