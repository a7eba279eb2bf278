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

"""A stream-optimized VMDK of ordered pieces, its length known beforehand.

:class:`~.writer.StreamOptimizedWriter` finds the stream's exact length by
a measuring pass over its source: it needs a source it can read twice (the
restore's staging file). :class:`PlannedStreamWriter` takes data that can be
read only once (the pieces of a backup chain,
:class:`~cinder_vmdk_backup.backup.chain_reader.ChainReader`) and a map of
the grains that hold data, known in advance (from the backup's digests):

* every grain the map marks is stored in deflate's uncompressed blocks
  (:func:`~.compression.stored`), so its size is known without its data:
  129 sectors for a 64 KiB grain. The stream is as long as the marked
  grains plus 0.8 %; compressing would make the length depend on the data,
  which is not there yet. The import lease's receiver copies stored blocks,
  it does not inflate them;
* a grain the map leaves out is not stored, and must read as zeros: data
  there means the map was wrong, and the writer raises
  :class:`~.errors.VmdkSourceChanged` rather than drop it;
* a marked grain that turns out to be zeros is stored all the same (the
  length was promised): with a map of coarse blocks (1 MiB digests) a few
  zero grains next to data are written to the target.

The pieces must be contiguous and ascending, from 0 to the capacity: they
are ``(offset, length, data)`` with ``data`` a bytes-like object or None
for zeros (a zero run costs nothing per byte).
"""

import array

from cinder_vmdk_backup.vmdk import compression
from cinder_vmdk_backup.vmdk import errors
from cinder_vmdk_backup.vmdk import format as fmt
from cinder_vmdk_backup.vmdk import writer


class PlannedStreamWriter(writer.StreamOptimizedWriter):
    """A stream-optimized VMDK of pieces read once, its length planned.

    :param pieces: iterable of ``(offset, length, data)``, contiguous from
        0 to ``capacity``; iterated once, by :meth:`iter_chunks`
    :param capacity: disk size in bytes
    :param nonzero_grains: bytearray bitmap, bit ``g & 7`` of byte
        ``g >> 3`` set for a 64 KiB grain ``g`` that may hold data
    :param adapter_type: see :class:`~.writer.StreamOptimizedWriter`
    :param hw_version: see :class:`~.writer.StreamOptimizedWriter`
    :param extent_name: see :class:`~.writer.StreamOptimizedWriter`
    """

    def __init__(self, pieces, capacity, nonzero_grains,
                 adapter_type='lsiLogic', hw_version=14,
                 extent_name='disk.vmdk'):
        super(PlannedStreamWriter, self).__init__(
            None, capacity, adapter_type=adapter_type,
            hw_version=hw_version, compression_level=0, executor=None,
            extent_name=extent_name)
        self._pieces = pieces
        self._n_grains = -(-self._capacity // self._grain_bytes)
        if len(nonzero_grains) * 8 < self._n_grains:
            raise ValueError('the grain map covers %d grains, the disk has '
                             '%d' % (len(nonzero_grains) * 8,
                                     self._n_grains))
        self._map = nonzero_grains
        self._started = False

    # -- the plan ---------------------------------------------------------

    def _grain_length(self, grain):
        return min(self._grain_bytes,
                   self._capacity - grain * self._grain_bytes)

    def _is_marked(self, grain):
        return bool(self._map[grain >> 3] & (1 << (grain & 7)))

    def _measure(self):
        plan = array.array('I', bytes(self._n_gt * 4))
        full = writer._payload_sectors(
            compression.stored_size(self._grain_bytes))
        last = self._n_grains - 1
        per_gt_bytes = fmt.GTES_PER_GT // 8
        grain_sectors = 0
        for k in range(self._n_gt):
            first = k * fmt.GTES_PER_GT
            stop = min(first + fmt.GTES_PER_GT, self._n_grains)
            chunk = self._map[k * per_gt_bytes:(k + 1) * per_gt_bytes]
            bits = int.from_bytes(chunk, 'little') & ((1 << (stop - first))
                                                      - 1)
            if not bits:
                continue
            count = bits.bit_count()
            sectors = count * full
            if (first <= last < stop and (bits >> (last - first)) & 1 and
                    self._grain_length(last) != self._grain_bytes):
                sectors += writer._payload_sectors(compression.stored_size(
                    self._grain_length(last))) - full
            plan[k] = sectors
            grain_sectors += sectors
        tables = (len(plan) - plan.count(0)) * (1 + fmt.GT_SECTORS)
        self._length = (writer.OVERHEAD_SECTORS + grain_sectors + tables +
                        1 + self._gd_sectors + 2 + 1) * fmt.SECTOR
        self._gt_plan = plan

    # -- the data ---------------------------------------------------------

    def _encoded_batches(self, measure):
        if measure:  # pragma: no cover - _measure does not read
            raise AssertionError('nothing to measure')
        if self._started:
            raise errors.VmdkError('the pieces of a planned VMDK can be '
                                   'encoded once only')
        self._started = True
        batch = []
        for item in self._grains():
            batch.append(item)
            if len(batch) == writer.BATCH_GRAINS:
                yield batch
                batch = []
        if batch:
            yield batch

    def _encode(self, grain, data):
        """The grain as (grain, parts, sectors), or None when not stored."""
        if not self._is_marked(grain):
            # bytes compare with memcmp; a memoryview compares per item.
            if data is not None and bytes(data) != (
                    writer._ZERO_GRAIN if len(data) == self._grain_bytes
                    else bytes(len(data))):
                raise errors.VmdkSourceChanged(
                    'grain %d holds data, but the map of grains with data '
                    'said zeros' % grain, grain * self._grain_bytes)
            return None
        if data is None:
            data = writer._ZERO_GRAIN[:self._grain_length(grain)]
        body = compression.stored(data)
        lba = grain * fmt.DEFAULT_GRAIN_SECTORS
        head = fmt.GRAIN_MARKER.pack(lba, len(body))
        pad = -(len(head) + len(body)) % fmt.SECTOR
        return (grain, (head, body, writer._PADDING[:pad]),
                writer._payload_sectors(len(body)))

    def _marked_in(self, first, stop):
        """Marked grains in [first, stop)."""
        g = first
        while g < stop:
            if not g & 7 and g + 8 <= stop:
                nxt = min(g + 64 * 1024, stop) & ~7
                if not any(self._map[g >> 3:nxt >> 3]):
                    g = nxt
                    continue
            if self._is_marked(g):
                yield g
            g += 1

    def _grains(self):
        """Yield encoded grains of the pieces, in order."""
        gb = self._grain_bytes
        end = self._data_end
        position = 0
        grain = 0
        fill = bytearray()
        for offset, length, data in self._pieces:
            if offset != position:
                raise errors.VmdkError(
                    'a piece at byte %d follows the data up to byte %d'
                    % (offset, position))
            if length < 0 or offset + length > end:
                raise errors.VmdkError(
                    'a piece of %d bytes at byte %d passes the capacity of '
                    '%d bytes' % (length, offset, end))
            position += length
            view = None if data is None else memoryview(data)
            if view is not None and len(view) != length:
                raise errors.VmdkError('a piece at byte %d has %d bytes, '
                                       'not %d' % (offset, len(view),
                                                   length))
            used = 0
            if fill:
                take = min(length, self._grain_length(grain) - len(fill))
                fill += (bytes(take) if view is None
                         else view[:take])
                used = take
                if len(fill) == self._grain_length(grain):
                    item = self._encode(grain, bytes(fill))
                    if item is not None:
                        yield item
                    fill = bytearray()
                    grain += 1
            rest = length - used
            whole = rest // gb
            if view is None:
                for g in self._marked_in(grain, grain + whole):
                    yield self._encode(g, None)
                grain += whole
                used += whole * gb
                if length > used:
                    fill = bytearray(length - used)
            else:
                for _ in range(whole):
                    item = self._encode(grain, view[used:used + gb])
                    if item is not None:
                        yield item
                    grain += 1
                    used += gb
                if length > used:
                    fill = bytearray(view[used:])
        if position != end:
            raise errors.VmdkTruncated(
                'the pieces ended at byte %d, before the capacity of %d '
                'bytes' % (position, end))
        if fill:
            fill += bytes(self._grain_length(grain) - len(fill))
            item = self._encode(grain, bytes(fill))
            if item is not None:
                yield item
