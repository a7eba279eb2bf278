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

"""Decode a stream-optimized VMDK arriving on a non-seekable stream.

:class:`StreamOptimizedReader` turns the VMDK that a vSphere export lease
(or ``qemu-img convert -O vmdk -o subformat=streamOptimized``) sends into
the raw guest data, exactly ``capacity`` bytes, reading its input strictly
front to back and holding no more than a few grains in memory.

Two layouts exist and both are read:

* VMware's: the header's grain directory offset is ``GD_AT_END``; grain
  tables follow their grains behind GT markers, then the grain directory,
  the footer (a header copy with the real directory offset) and the
  end-of-stream (EOS) marker.
* qemu's: the grain directory and tables are filled in the header's
  overhead area, before the grains; there are no metadata markers, the EOS
  marker and zero padding may follow, and a disk without data ends right
  after the overhead.

Validation happens while the data flows. Grain tables are checked without
keeping them: for every grain table the reader keeps an 8-byte digest of
the entries the grains seen so far imply, and compares it with a digest of
the table as stored. The final bytes of the disk are handed out only after
the whole stream has been checked, so a caller never sees a complete disk
from a broken stream.

Every fault raises a :class:`~.errors.VmdkError` of the kind it is:
:class:`~.errors.VmdkTruncated` where the stream ends early (a broken
transfer), :class:`~.errors.VmdkCorrupt` where the bytes are there but
disagree with each other, :class:`~.errors.VmdkUnsupported` for another
kind of file.

The reader is plain synchronous code: it starts no threads and logs
nothing. Grains are inflated in the caller's thread, or on an executor the
caller hands in.
"""

import array
import bisect
import collections
import concurrent.futures
import hashlib
import io
import os
import sys

from cinder_vmdk_backup.vmdk import compression
from cinder_vmdk_backup.vmdk import errors
from cinder_vmdk_backup.vmdk import format as fmt


#: largest capacity accepted: 64 TiB (VMDK's own limit is 62 TiB)
MAX_CAPACITY_SECTORS = (64 << 40) // fmt.SECTOR
MAX_DESCRIPTOR_SECTORS = 2048
MIN_GRAIN_SECTORS = 8
MAX_GRAIN_SECTORS = 2048
#: zero bytes tolerated after the EOS marker (qemu pads its files)
MAX_TRAILING_ZEROS = 1 << 20
_READ_CHUNK = 256 << 10
#: grains inflated by one task
BATCH_GRAINS = 8
#: batches being inflated at a time, per CPU (with an executor)
INFLIGHT_PER_THREAD = 2
#: createType values of the VMDK variants (Virtual Disk Format 5.0)
CREATE_TYPES = frozenset([
    'monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse',
    'twoGbMaxExtentFlat', 'fullDevice', 'partitionedDevice',
    'vmfsPreallocated', 'vmfsEagerZeroedThick', 'vmfsThin', 'vmfsSparse',
    'vmfsRDM', 'vmfsRDMP', 'vmfsRaw', 'seSparse', 'streamOptimized',
    'custom', 'vmfs'])
_ZEROS = memoryview(bytes(1 << 20))


def _digest(entries):
    """8-byte digest of grain table entries; zeros for an empty table."""
    if entries.count(0) == len(entries):
        return _EMPTY_DIGEST
    return hashlib.blake2b(entries.tobytes(), digest_size=8).digest()


def _gt_array(raw):
    entries = array.array('I')
    entries.frombytes(raw)
    if sys.byteorder != 'little':  # pragma: no cover
        entries.byteswap()
    return entries


_EMPTY_DIGEST = bytes(8)
_ZERO_BLOCK = bytes(4096)


def _nonzero(entries):
    """Yield ``(index, entry)`` of the non-zero entries of an array('I').

    Blocks of zeros are skipped by comparing bytes, so a sparse 62 TiB
    disk's directory of two million entries costs milliseconds.
    """
    raw = memoryview(entries).cast('B')
    step = len(_ZERO_BLOCK)
    per_block = step // entries.itemsize
    for base in range(0, len(raw), step):
        if raw[base:base + step] != _ZERO_BLOCK[:len(raw) - base]:
            first = base // entries.itemsize
            for k in range(first, min(first + per_block, len(entries))):
                if entries[k]:
                    yield k, entries[k]


class _Input(object):
    """Reads a non-seekable stream in bounded chunks, counting offsets."""

    def __init__(self, fileobj):
        self._file = fileobj
        self._buf = b''
        self._pos = 0
        self.offset = 0

    def read(self, n):
        """Return n bytes, fewer only at the end of the stream."""
        pos = self._pos
        avail = len(self._buf) - pos
        if avail >= n:
            self._pos = pos + n
            self.offset += n
            return self._buf[pos:pos + n]
        parts = [self._buf[pos:]]
        need = n - avail
        self._buf = b''
        self._pos = 0
        while need > 0:
            chunk = self._file.read(max(need, _READ_CHUNK))
            if not chunk:
                break
            if len(chunk) > need:
                parts.append(chunk[:need])
                self._buf = chunk
                self._pos = need
                need = 0
            else:
                parts.append(chunk)
                need -= len(chunk)
        data = b''.join(parts)
        self.offset += len(data)
        return data

    def read_exact(self, n, what):
        """Return n bytes.

        :raises VmdkTruncated: naming what was being read
        """
        start = self.offset
        data = self.read(n)
        if len(data) != n:
            raise errors.VmdkTruncated(
                'stream ends inside %s: %d of %d bytes present'
                % (what, len(data), n), start)
        return data

    def skip_to(self, offset, what):
        while self.offset < offset:
            self.read_exact(min(offset - self.offset, _READ_CHUNK), what)


def _damaged_magic(sector):
    """Whether a sector without KDMV still reads as a VMDK header.

    A header whose newline detection characters are intact, or whose
    version and entries per grain table are the format's, is a damaged
    VMDK header, not the first sector of a raw disk.
    """
    _magic, header = fmt.unpack_header(sector)
    return fmt.nl_chars_ok(header) or (
        header.version in (1, 2, 3) and
        header.gtes_per_gt == fmt.GTES_PER_GT)


def _missing_stream_flags(flags):
    missing = []
    if not flags & fmt.FLAG_COMPRESSED:
        missing.append('compressed grains (0x%x)' % fmt.FLAG_COMPRESSED)
    if not flags & fmt.FLAG_MARKERS:
        missing.append('markers (0x%x)' % fmt.FLAG_MARKERS)
    return ' and '.join(missing)


def _sniff(first):
    """Name what a stream that does not start with KDMV is."""
    if first.startswith(b'COWD'):
        return 'an ESX vmfsSparse (COWD) extent, not a streamOptimized VMDK'
    if first.startswith(b'QFI\xfb'):
        return 'a qcow2 image, not a VMDK'
    if first.startswith(b'conectix'):
        return 'a VHD image, not a VMDK'
    if first.startswith(b'vhdxfile'):
        return 'a VHDX image, not a VMDK'
    text = first.split(b'\0', 1)[0]
    if b'# Disk DescriptorFile' in text or b'createType' in text:
        entries, _ = fmt.parse_descriptor(text.decode('ascii', 'replace'))
        return ('a VMDK text descriptor file (createType=%s), not a '
                'streamOptimized disk' % entries.get('createType', '?'))
    return ('not a VMDK: no KDMV magic; the data looks like a flat extent '
            'or a raw disk image')


class StreamOptimizedReader(io.RawIOBase):
    """Raw guest data of a stream-optimized VMDK read from a stream.

    Read it either as a file (:meth:`read`, :meth:`readinto`) or, without
    materialising runs of zeros, extent by extent (:meth:`iter_extents`).

    :param fileobj: object with ``read(n)``, e.g. an HTTP response; only
        ever read from the thread that reads this reader
    :param executor: a :class:`concurrent.futures.Executor` to inflate
        grains on, a few batches of grains ahead of the reader; it is
        borrowed, never shut down. None (the default) inflates in the
        caller's thread, one batch at a time.
    :raises VmdkError: (in the constructor) for a header that is not a
        stream-optimized VMDK's; later reads raise it for any fault found
        in the rest of the stream
    """

    def __init__(self, fileobj, executor=None):
        super().__init__()
        self._executor = executor
        self._in = _Input(fileobj)
        self.header = None
        self.descriptor = {}
        self._front_digests = None
        self._front_max_sector = 0
        self._front_count = 0
        self._front_spans = None
        self._read_header()
        self._extents = self._checked(self._iter_records())
        self._error = None
        self._cur_data = None
        self._cur_left = 0
        self._cur_off = 0
        self._position = 0

    # -- io.RawIOBase -------------------------------------------------------

    @property
    def capacity(self):
        """Size of the disk in bytes."""
        return self.header.capacity * fmt.SECTOR

    def readable(self):
        return True

    def close(self):
        """Drop grains still being inflated; the input stream is left open.

        Batches queued on the executor are cancelled and those it is running
        are waited for, so nothing works on this reader's behalf afterwards.
        """
        extents = getattr(self, '_extents', None)
        if extents is not None:
            extents.close()
        super().close()

    def seekable(self):
        return False

    def tell(self):
        return self._position

    def _checked(self, records):
        """Pass records on; remember an error so that it is raised again.

        A caller that catches the error and reads on gets it again rather
        than an end of file that looks like success.
        """
        if self._error is not None:
            raise self._error
        try:
            yield from records
        except errors.VmdkError as exc:
            self._error = exc
            raise

    def _next_extent(self):
        if self._error is not None:
            raise self._error
        for offset, length, data in self._extents:
            if length:
                self._cur_off = 0
                self._cur_left = length
                self._cur_data = memoryview(data) if data is not None \
                    else None
                return True
        return False

    def readinto(self, buf):
        """Fill buf with guest data; short only at the end of the disk.

        The last bytes of the disk are handed out only once the rest of the
        stream (grain tables, directory, footer, end-of-stream marker) has
        been checked.
        """
        view = memoryview(buf).cast('B')
        want = len(view)
        done = 0
        while done < want:
            if not self._cur_left and not self._next_extent():
                break
            n = min(want - done, self._cur_left)
            if self._cur_data is None:
                n = min(n, len(_ZEROS))
                view[done:done + n] = _ZEROS[:n]
            else:
                view[done:done + n] = \
                    self._cur_data[self._cur_off:self._cur_off + n]
            self._cur_off += n
            self._cur_left -= n
            done += n
        self._position += done
        return done

    def read(self, size=-1):
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def iter_extents(self):
        """Yield ``(offset, length, data)`` for the rest of the disk.

        The extents follow each other without gaps, in guest order, from
        the current position to :attr:`capacity`. ``data`` is a bytes-like
        object of ``length`` bytes (usually one grain, inflated for this
        call and not reused, so it may be kept), or None for a run of
        zeros: a grain the stream leaves out or stores as zeros. A zero run
        may span gigabytes; it costs nothing until the caller writes it.

        Like :meth:`read`, the iteration checks the whole stream: the last
        extents are yielded only after the grain tables, grain directory,
        footer, end-of-stream marker and any padding after it have been
        validated, so a caller that reaches the end of the iteration has a
        disk from an intact stream. Any fault raises
        :class:`~.errors.VmdkError` from the iterator, after the extents
        before the fault.

        Continues after a partial :meth:`read`; do not mix with
        :meth:`read` once the iteration has started.
        """
        if self._error is not None:
            raise self._error
        if self._cur_left:
            start = self._position
            left = self._cur_left
            data = None
            if self._cur_data is not None:
                data = self._cur_data[self._cur_off:]
            self._cur_left = 0
            self._position += left
            yield start, left, data
        for offset, length, data in self._extents:
            if length:
                self._position = offset + length
                yield offset, length, data

    # -- header and overhead ------------------------------------------------

    def _read_header(self):
        first = self._in.read(fmt.SECTOR)
        if not first:
            raise errors.VmdkTruncated(
                'stream is empty: no VMDK header arrived', 0)
        if len(first) < len(fmt.MAGIC) and fmt.MAGIC.startswith(first):
            raise errors.VmdkTruncated(
                'stream ends inside the sparse extent header', 0)
        if not first.startswith(fmt.MAGIC):
            if len(first) == fmt.SECTOR and _damaged_magic(first):
                raise errors.VmdkCorrupt(
                    'sparse extent header has the magic %r instead of %r; '
                    'the rest of it is a VMDK header\'s: the header is '
                    'corrupt' % (first[:4], fmt.MAGIC), 0)
            raise errors.VmdkUnsupported(_sniff(first), 0)
        if len(first) < fmt.SECTOR:
            raise errors.VmdkTruncated(
                'stream ends inside the sparse extent header', 0)
        _magic, header = fmt.unpack_header(first)
        self.header = header
        self._check_flags(header)
        self._check_header(header)
        self._read_overhead(header)

    def _check_flags(self, h):
        """Tell another hosted sparse variant from damaged flags."""
        if h.flags & ~fmt.KNOWN_FLAGS:
            raise errors.VmdkCorrupt(
                'sparse extent header flags 0x%x are invalid: bits 0x%x '
                'have no meaning; the header is corrupt'
                % (h.flags, h.flags & ~fmt.KNOWN_FLAGS), 8)
        stream_bits = fmt.FLAG_COMPRESSED | fmt.FLAG_MARKERS
        if h.flags & stream_bits == stream_bits:
            return
        create_type = self._peek_create_type(h)
        if create_type == 'streamOptimized' or (
                create_type is None and h.flags & stream_bits):
            said = ('the descriptor says createType=streamOptimized'
                    if create_type else 'no VMDK variant has only one of '
                    'them')
            raise errors.VmdkCorrupt(
                'sparse extent header flags 0x%x are corrupt: they lack %s, '
                'but %s' % (h.flags, _missing_stream_flags(h.flags), said),
                8)
        raise errors.VmdkUnsupported(
            'a %s VMDK (sparse extent flags 0x%x: grains neither compressed '
            'nor behind markers), not streamOptimized'
            % (create_type or 'hosted sparse', h.flags), 8)

    def _peek_create_type(self, header):
        if not (1 <= header.descriptor_offset <= 64 and
                0 < header.descriptor_size <= MAX_DESCRIPTOR_SECTORS):
            return None
        try:
            self._in.skip_to(header.descriptor_offset * fmt.SECTOR, 'header')
            raw = self._in.read(header.descriptor_size * fmt.SECTOR)
        except errors.VmdkError:
            return None
        entries, _ = fmt.parse_descriptor(
            raw.split(b'\0', 1)[0].decode('ascii', 'replace'))
        return entries.get('createType')

    def _check_header(self, h):
        def bad(reason, offset):
            raise errors.VmdkCorrupt(reason, offset)

        if h.version != fmt.VERSION:
            bad('sparse extent version %d; the header has the flags of a '
                'streamOptimized VMDK, which has version %d'
                % (h.version, fmt.VERSION), 4)
        if h.flags & fmt.FLAG_NL_DETECT and not fmt.nl_chars_ok(h):
            bad('newline detection characters are corrupted (was the file '
                'transferred in text mode?)', 73)
        if h.compression != fmt.COMPRESSION_DEFLATE:
            bad('compression algorithm %d; only 1 (deflate) exists'
                % h.compression, 77)
        if (h.grain_size < MIN_GRAIN_SECTORS or
                h.grain_size & (h.grain_size - 1)):
            bad('grain size of %d sectors is not a power of two of at '
                'least %d' % (h.grain_size, MIN_GRAIN_SECTORS), 20)
        if h.grain_size > MAX_GRAIN_SECTORS:
            raise errors.VmdkUnsupported(
                'grain size of %d sectors; grains of up to %d sectors are '
                'supported' % (h.grain_size, MAX_GRAIN_SECTORS), 20)
        if h.gtes_per_gt != fmt.GTES_PER_GT:
            bad('%d entries per grain table; the format has %d'
                % (h.gtes_per_gt, fmt.GTES_PER_GT), 44)
        if h.capacity > MAX_CAPACITY_SECTORS:
            bad('capacity of %d sectors is beyond the 64 TiB a VMDK can '
                'hold' % h.capacity, 12)
        desc_end = 1
        if h.descriptor_size or h.descriptor_offset:
            if (h.descriptor_offset < 1 or
                    h.descriptor_size > MAX_DESCRIPTOR_SECTORS):
                bad('descriptor at sector %d of %d sectors is out of bounds'
                    % (h.descriptor_offset, h.descriptor_size), 28)
            desc_end = h.descriptor_offset + h.descriptor_size
        n_gt = fmt.gt_count(h.capacity, h.grain_size)
        self._gd_sectors = fmt.sectors_for(n_gt * fmt.GTE_SIZE)
        self._n_gt = n_gt
        metadata = 2 * (self._gd_sectors + n_gt * fmt.GT_SECTORS)
        max_overhead = desc_end + metadata + 2048
        if h.overhead < desc_end or h.overhead > max_overhead:
            bad('overhead of %d sectors does not fit a descriptor ending at '
                'sector %d and at most %d sectors of tables'
                % (h.overhead, desc_end, metadata), 64)
        if h.gd_offset != fmt.GD_AT_END and not (
                desc_end <= h.gd_offset and
                h.gd_offset + self._gd_sectors <= h.overhead):
            bad('grain directory offset %d lies outside the header area'
                % h.gd_offset, 56)

    def _read_overhead(self, h):
        inp = self._in
        if h.descriptor_size:
            inp.skip_to(h.descriptor_offset * fmt.SECTOR, 'header area')
            start = inp.offset
            raw = inp.read_exact(h.descriptor_size * fmt.SECTOR,
                                 'the embedded descriptor')
            self._check_descriptor(raw, start)
        if h.gd_offset != fmt.GD_AT_END:
            self._read_front_tables(h)
        self._skip_padding(h.overhead * fmt.SECTOR)

    def _skip_padding(self, end):
        """Skip the rest of the header area, up to the first grain.

        A stream that ends there was cut, unless the padding held data:
        then the grains start before where the header's overhead says.
        """
        inp = self._in
        data_at = None
        while inp.offset < end:
            start = inp.offset
            want = min(end - start, _READ_CHUNK)
            chunk = inp.read(want)
            if data_at is None and chunk != _ZEROS[:len(chunk)]:
                data_at = start + len(chunk) - len(chunk.lstrip(b'\0'))
            if len(chunk) < want:
                if data_at is not None:
                    raise errors.VmdkCorrupt(
                        'overhead of %d sectors puts the first grain past '
                        'the end of the stream at byte %d, but data starts '
                        'at byte %d: the overhead is corrupt'
                        % (self.header.overhead, inp.offset, data_at), 64)
                raise errors.VmdkTruncated(
                    'stream ends inside the header area, %d bytes before '
                    'its end at byte %d' % (end - inp.offset, end),
                    inp.offset)

    def _check_descriptor(self, raw, offset):
        text = raw.split(b'\0', 1)[0].decode('utf-8', 'replace')
        entries, extents = fmt.parse_descriptor(text)
        self.descriptor = entries
        create_type = entries.get('createType')
        if create_type is None:
            raise errors.VmdkCorrupt(
                'embedded descriptor of %d sectors has no createType: it is '
                'corrupt or the header points to the wrong sectors'
                % self.header.descriptor_size, offset)
        if create_type not in CREATE_TYPES:
            raise errors.VmdkCorrupt(
                'descriptor says createType=%r, which is no VMDK variant'
                % create_type, offset)
        if create_type != 'streamOptimized':
            raise errors.VmdkUnsupported(
                'descriptor says createType=%s, not streamOptimized'
                % create_type, offset)
        if len(extents) > 1:
            raise errors.VmdkUnsupported(
                'descriptor lists %d extents; a streamOptimized VMDK has '
                'one' % len(extents), offset)
        if extents and extents[0][1] != self.header.capacity:
            raise errors.VmdkCorrupt(
                'descriptor extent of %d sectors differs from the header '
                'capacity of %d sectors'
                % (extents[0][1], self.header.capacity), offset)

    def _read_front_tables(self, h):
        """Read qemu's grain directory and tables from the header area."""
        inp = self._in
        inp.skip_to(h.gd_offset * fmt.SECTOR, 'header area')
        gd_start = inp.offset
        gd = _gt_array(inp.read_exact(self._n_gt * fmt.GTE_SIZE,
                                      'the grain directory'))
        gd_end = h.gd_offset + self._gd_sectors
        tables = ((sector, k) for k, sector in _nonzero(gd))
        ordered = [sector for _k, sector in _nonzero(gd)]
        if ordered != sorted(ordered):
            tables = sorted(tables)
        del ordered
        digests = _DigestList(self._n_gt)
        # sectors of the first and last grain each table lists
        firsts = array.array('I', bytes(self._n_gt * 4))
        lasts = array.array('I', bytes(self._n_gt * 4))
        previous = None
        for sector, k in tables:
            if (sector < gd_end or sector + fmt.GT_SECTORS > h.overhead or
                    (previous is not None and
                     sector < previous + fmt.GT_SECTORS)):
                raise errors.VmdkCorrupt(
                    'grain directory entry %d points to sector %d, outside '
                    'the table area after the directory or overlapping '
                    'another table' % (k, sector), gd_start + 4 * k)
            previous = sector
            inp.skip_to(sector * fmt.SECTOR, 'header area')
            gt_start = inp.offset
            entries = self._normalize(_gt_array(inp.read_exact(
                fmt.GTES_PER_GT * fmt.GTE_SIZE, 'a grain table')))
            last = last_i = 0
            for i, entry in _nonzero(entries):
                if entry < h.overhead:
                    raise errors.VmdkCorrupt(
                        'grain table %d entry %d points to sector %d, inside '
                        'the header area' % (k, i, entry), gt_start + 4 * i)
                if entry <= last:
                    raise errors.VmdkCorrupt(
                        'grain table %d entry %d points to sector %d, not '
                        'after sector %d of entry %d (grains are stored in '
                        'guest order)' % (k, i, entry, last, last_i),
                        gt_start + 4 * i)
                if not last:
                    firsts[k] = entry
                last, last_i = entry, i
                self._front_count += 1
            lasts[k] = last
            self._front_max_sector = max(self._front_max_sector, last)
            digests[k] = _digest(entries)
        last = last_k = 0
        for k, first in _nonzero(firsts):
            if first <= last:
                raise errors.VmdkCorrupt(
                    'grain table %d lists its first grain at sector %d, not '
                    'after sector %d of the last grain of table %d (grains '
                    'are stored in guest order)' % (k, first, last, last_k),
                    gd_start + 4 * k)
            last, last_k = lasts[k], k
        self._front_digests = digests
        self._front_spans = firsts, lasts

    def _normalize(self, entries):
        if self.header.flags & fmt.FLAG_ZERO_GRAIN:
            for i, entry in enumerate(entries):
                if entry == 1:
                    entries[i] = 0
        return entries

    # -- grains and metadata ------------------------------------------------

    def _iter_records(self):
        """Yield extents in guest order, validating the stream.

        Grains are inflated in batches, inline or on the executor a few
        batches ahead of the caller; the last grains are held back until
        the end has been validated. A fault found while parsing is raised
        after those of the grains before it.
        """
        pool = self._executor
        queue = collections.deque()
        try:
            try:
                yield from self._parse_records(pool, queue)
            except errors.VmdkError:
                for item in queue:
                    item[2].submit(pool)
                    _resolved(item)
                raise
        finally:
            for item in queue:
                item[2].cancel()
            for item in queue:
                item[2].wait()

    def _parse_records(self, pool, queue):
        h = self.header
        inp = self._in
        grain_bytes = h.grain_size * fmt.SECTOR
        capacity = h.capacity * fmt.SECTOR
        max_csize = grain_bytes + grain_bytes // 8 + fmt.SECTOR
        workers = 1 if pool is None else (os.cpu_count() or 1)
        limit = (workers * INFLIGHT_PER_THREAD + 1) * BATCH_GRAINS
        state = _TableState(self._n_gt, h.grain_size)
        batch = _Batch()
        emitted = 0
        last_lba = -1
        eos = False
        while True:
            marker_off = inp.offset
            raw = inp.read(fmt.GRAIN_MARKER.size)
            if not raw:
                break
            if len(raw) < fmt.GRAIN_MARKER.size:
                raise errors.VmdkTruncated(
                    'stream ends inside a marker', marker_off)
            lba, size = fmt.GRAIN_MARKER.unpack(raw)
            if size:
                if state.gd_seen:
                    raise errors.VmdkCorrupt(
                        'grain after the grain directory', marker_off)
                self._check_grain_marker(lba, size, last_lba, max_csize,
                                         marker_off)
                data = self._grain_data(size, lba, marker_off)
                inp.read_exact(-(fmt.GRAIN_MARKER.size + size) % fmt.SECTOR,
                               'grain padding')
                expect = min(grain_bytes, capacity - lba * fmt.SECTOR)
                if batch.submitted:
                    batch = _Batch()
                index = batch.add((data, grain_bytes, expect, lba,
                                   marker_off))
                state.add_grain(lba, marker_off // fmt.SECTOR)
                last_lba = lba
                offset = lba * fmt.SECTOR
                if offset > emitted:
                    queue.append((emitted, offset - emitted, _NO_BATCH, 0))
                queue.append((offset, expect, batch, index))
                emitted = offset + expect
                if index + 1 == BATCH_GRAINS:
                    batch.submit(pool)
                while len(queue) > limit and queue[0][2].submitted:
                    yield _resolved(queue.popleft())
                continue
            batch.submit(pool)
            rest = inp.read_exact(fmt.SECTOR - fmt.GRAIN_MARKER.size,
                                  'a metadata marker')
            marker_type = int.from_bytes(rest[:4], 'little')
            if marker_type == fmt.MARKER_EOS and lba == 0:
                eos = True
                break
            self._read_metadata(marker_type, lba, marker_off, state)
        batch.submit(pool)
        self._finish(state, eos)
        while queue:
            yield _resolved(queue.popleft())
        if emitted < capacity:
            yield emitted, capacity - emitted, None

    def _grain_data(self, size, lba, offset):
        """Read a grain's compressed data; tell a cut from a bad size."""
        start = self._in.offset
        data = self._in.read(size)
        if len(data) == size:
            return data
        used = _deflate_length(data)
        if used is not None:
            raise errors.VmdkCorrupt(
                'grain marker of LBA %d gives a compressed size of %d bytes, '
                'past the end of the stream, but its deflate stream ends '
                'after %d bytes: the marker\'s size is corrupt'
                % (lba, size, used), offset)
        raise errors.VmdkTruncated(
            'stream ends inside compressed grain data of LBA %d: %d of %d '
            'bytes present' % (lba, len(data), size), start)

    def _check_grain_marker(self, lba, size, last_lba, max_csize, offset):
        h = self.header
        if lba >= h.capacity:
            raise errors.VmdkCorrupt(
                'grain LBA %d is beyond the capacity of %d sectors'
                % (lba, h.capacity), offset)
        if lba % h.grain_size:
            raise errors.VmdkCorrupt(
                'grain LBA %d is not aligned to the grain size of %d sectors'
                % (lba, h.grain_size), offset)
        if lba <= last_lba:
            raise errors.VmdkCorrupt(
                'grain LBA %d does not follow the previous grain at LBA %d '
                '(grains must be strictly increasing)' % (lba, last_lba),
                offset)
        if size > max_csize:
            raise errors.VmdkCorrupt(
                'compressed grain size of %d bytes is more than a grain of '
                '%d bytes can take' % (size, h.grain_size * fmt.SECTOR),
                offset)

    def _read_metadata(self, marker_type, num_sectors, offset, state):
        inp = self._in
        name = fmt.MARKER_NAMES.get(marker_type)
        expected = {fmt.MARKER_EOS: 0, fmt.MARKER_GT: fmt.GT_SECTORS,
                    fmt.MARKER_GD: self._gd_sectors,
                    fmt.MARKER_FOOTER: 1}.get(marker_type)
        if expected is None:
            raise errors.VmdkCorrupt(
                'unknown metadata marker type %d' % marker_type, offset)
        if num_sectors != expected:
            raise errors.VmdkCorrupt(
                '%s marker spans %d sectors instead of %d'
                % (name, num_sectors, expected), offset)
        if state.footer_seen:
            raise errors.VmdkCorrupt(
                '%s marker after the footer' % name, offset)
        data_sector = offset // fmt.SECTOR + 1
        raw = inp.read_exact(num_sectors * fmt.SECTOR, 'the ' + name)
        if marker_type == fmt.MARKER_GT:
            if state.gd_seen:
                raise errors.VmdkCorrupt(
                    'grain table after the grain directory', offset)
            state.add_table(data_sector, _digest(self._normalize(
                _gt_array(raw[:fmt.GTES_PER_GT * fmt.GTE_SIZE]))))
        elif marker_type == fmt.MARKER_GD:
            if state.gd_seen:
                raise errors.VmdkCorrupt(
                    'second grain directory', offset)
            gd = _gt_array(memoryview(raw)[:self._n_gt * fmt.GTE_SIZE])
            del raw
            state.check_directory(gd, offset + fmt.SECTOR)
            state.gd_sector = data_sector
        else:
            if not state.gd_seen:
                raise errors.VmdkCorrupt(
                    'footer before the grain directory', offset)
            self._check_footer(raw, offset + fmt.SECTOR, state.gd_sector)
            state.footer_seen = True

    def _check_footer(self, raw, offset, gd_sector):
        magic, footer = fmt.unpack_header(raw)
        h = self.header
        if magic != fmt.MAGIC:
            raise errors.VmdkCorrupt('footer lacks the KDMV magic', offset)
        for field in ('version', 'flags', 'capacity', 'grain_size',
                      'gtes_per_gt', 'compression'):
            if getattr(footer, field) != getattr(h, field):
                raise errors.VmdkCorrupt(
                    'footer %s %r differs from the header\'s %r'
                    % (field, getattr(footer, field), getattr(h, field)),
                    offset)
        if footer.gd_offset != gd_sector:
            raise errors.VmdkCorrupt(
                'footer points to a grain directory at sector %d, but it is '
                'at sector %d' % (footer.gd_offset, gd_sector), offset)

    def _finish(self, state, eos):
        inp = self._in
        h = self.header
        end = inp.offset
        if eos:
            self._check_trailer()
        if h.gd_offset == fmt.GD_AT_END or state.gd_seen:
            if not eos:
                raise errors.VmdkTruncated(
                    'stream ends without an end-of-stream marker', end)
            if not state.footer_seen:
                raise errors.VmdkCorrupt(
                    'end-of-stream marker without a grain directory and '
                    'footer before it', end - fmt.SECTOR)
            return
        if (not eos and end <= self._front_max_sector * fmt.SECTOR and
                state.grains < self._front_count):
            # Either the stream was cut, or a table entry points past its
            # end. Cut, the grains seen are the first ones the tables list:
            # every table before the end matches them.
            state.compare(self._front_digests, h.gd_offset * fmt.SECTOR,
                          self._front_spans, end // fmt.SECTOR)
            raise errors.VmdkTruncated(
                'stream ends before the grain at sector %d that the grain '
                'tables list (%d of their %d grains present)'
                % (self._front_max_sector, state.grains, self._front_count),
                end)
        # All the grains the tables list were there (or an end-of-stream
        # marker says the stream is whole): any difference is corruption.
        state.compare(self._front_digests, h.gd_offset * fmt.SECTOR)

    def _check_trailer(self):
        inp = self._in
        seen = 0
        while True:
            start = inp.offset
            chunk = inp.read(_READ_CHUNK)
            if not chunk:
                return
            if chunk != _ZEROS[:len(chunk)]:
                first = next(i for i, b in enumerate(chunk) if b)
                raise errors.VmdkCorrupt(
                    'data after the end-of-stream marker', start + first)
            seen += len(chunk)
            if seen > MAX_TRAILING_ZEROS:
                raise errors.VmdkCorrupt(
                    'more than %d bytes of padding after the end-of-stream '
                    'marker' % MAX_TRAILING_ZEROS, start)


class _Batch(object):
    """Grains inflated together, on the pool or inline."""

    def __init__(self):
        self._args = []
        self._future = None

    @property
    def submitted(self):
        return self._future is not None

    def add(self, args):
        self._args.append(args)
        return len(self._args) - 1

    def submit(self, pool):
        if self._future is not None or not self._args:
            return
        if pool is None:
            self._future = concurrent.futures.Future()
            try:
                self._future.set_result(_inflate_all(self._args))
            except errors.VmdkError as exc:
                self._future.set_exception(exc)
        else:
            self._future = pool.submit(_inflate_all, self._args)

    def result(self, index):
        return self._future.result()[index]

    def cancel(self):
        if self._future is not None:
            self._future.cancel()

    def wait(self):
        """Wait until a batch the executor runs has finished."""
        if self._future is not None and not self._future.cancelled():
            # Any executor's futures have result(); its error was (or will
            # be) raised where the batch is used.
            try:
                self._future.result()
            except Exception:  # nosec B110
                pass


class _NoBatch(object):
    """Stands for the batch of a zero run."""

    submitted = True

    def submit(self, pool):
        pass

    def cancel(self):
        pass

    def wait(self):
        pass


_NO_BATCH = _NoBatch()


def _resolved(item):
    offset, length, batch, index = item
    if batch is _NO_BATCH:
        return offset, length, None
    return offset, length, batch.result(index)


def _deflate_length(data):
    """Bytes of data that one complete zlib stream takes, or None.

    None where data holds no complete stream (it was cut) or no valid one.
    """
    dec = compression.decompressobj()
    rest = data
    try:
        while rest and not dec.eof:
            # max_length bounds the memory a crafted stream can take
            dec.decompress(rest, 1 << 20)
            rest = dec.unconsumed_tail
    except compression.DECOMPRESS_ERRORS:
        return None
    if not dec.eof:
        return None
    return len(data) - len(dec.unused_data)


def _inflate_all(args):
    return [_inflate(*one) for one in args]


def _inflate(data, grain_bytes, expect, lba, offset):
    """Inflate one grain, never to more than a grain.

    :raises VmdkCorrupt: for corrupt data, a stream that does not end,
        trailing bytes, more than a grain (a decompression bomb) or a size
        other than expected
    """
    dec = compression.decompressobj()
    try:
        out = dec.decompress(data, grain_bytes)
        if not dec.eof and dec.unconsumed_tail:
            if dec.decompress(dec.unconsumed_tail, 1):
                raise errors.VmdkCorrupt(
                    'grain at LBA %d inflates to more than a grain of %d '
                    'bytes' % (lba, grain_bytes), offset)
    except compression.DECOMPRESS_ERRORS as exc:
        raise errors.VmdkCorrupt(
            'grain at LBA %d does not inflate: %s' % (lba, exc), offset)
    if not dec.eof:
        raise errors.VmdkCorrupt(
            'compressed data of the grain at LBA %d ends before its deflate '
            'stream does' % lba, offset)
    if dec.unused_data:
        raise errors.VmdkCorrupt(
            'compressed size of the grain at LBA %d counts %d bytes beyond '
            'its deflate stream' % (lba, len(dec.unused_data)), offset)
    if len(out) != expect:
        if len(out) == grain_bytes and expect < grain_bytes:
            return out[:expect]
        raise errors.VmdkCorrupt(
            'grain at LBA %d inflates to %d bytes instead of %d'
            % (lba, len(out), expect), offset)
    return out


class _DigestList(object):
    """8-byte digests, one per grain table, in one bytearray.

    16 MiB for the largest disk (2 million grain tables), where a list of
    bytes objects would take seven times that.
    """

    def __init__(self, count=0):
        self._buf = bytearray(len(_EMPTY_DIGEST) * count)

    def __len__(self):
        return len(self._buf) // len(_EMPTY_DIGEST)

    def append(self, digest):
        self._buf += digest

    def copy(self):
        other = _DigestList()
        other._buf[:] = self._buf
        return other

    def __getitem__(self, k):
        return bytes(self._buf[8 * k:8 * k + 8])

    def __setitem__(self, k, digest):
        self._buf[8 * k:8 * k + 8] = digest

    def first_difference(self, other):
        """Index of the first digest that differs from other's, or None."""
        if self._buf == other._buf:
            return None
        if len(self) != len(other):
            return min(len(self), len(other))
        for k in range(max(len(self), len(other))):
            if self[k] != other[k]:
                return k
        return None  # pragma: no cover


class _TableState(object):
    """Grain table digests implied by the grains, as they pass."""

    def __init__(self, n_gt, grain_size):
        self._n_gt = n_gt
        self._grain_size = grain_size
        self._expected = _DigestList(n_gt)
        self._closed = 0
        self._current = None
        # grain tables behind GT markers: data sectors (increasing, as the
        # stream goes forwards) and their digests
        self._table_sectors = array.array('Q')
        self._table_digests = _DigestList()
        self.gd_sector = None
        self.footer_seen = False
        #: grains seen
        self.grains = 0

    @property
    def gd_seen(self):
        return self.gd_sector is not None

    def _close_until(self, k):
        """Settle the digests of the grain tables before table k."""
        if k <= self._closed:
            return
        if self._current is not None:
            self._expected[self._closed] = _digest(self._current)
            self._current = None
        self._closed = k

    def add_grain(self, lba, marker_sector):
        grain = lba // self._grain_size
        k, index = divmod(grain, fmt.GTES_PER_GT)
        self._close_until(k)
        if self._current is None:
            self._current = array.array('I', bytes(fmt.GTES_PER_GT * 4))
        self._current[index] = marker_sector
        self.grains += 1

    def add_table(self, sector, digest):
        self._table_sectors.append(sector)
        self._table_digests.append(digest)

    def _table_at(self, sector):
        i = bisect.bisect_left(self._table_sectors, sector)
        if i < len(self._table_sectors) and self._table_sectors[i] == sector:
            return self._table_digests[i]
        return None

    def _gt_bytes(self, k):
        start = k * fmt.GTES_PER_GT * self._grain_size * fmt.SECTOR
        end = start + fmt.GTES_PER_GT * self._grain_size * fmt.SECTOR
        return start, end

    def check_directory(self, gd, offset):
        """Compare a grain directory read behind a GD marker."""
        self._close_until(self._n_gt)
        stored = _DigestList(len(gd))
        for k, sector in _nonzero(gd):
            digest = self._table_at(sector)
            if digest is None:
                start, end = self._gt_bytes(k)
                raise errors.VmdkCorrupt(
                    'grain directory entry %d (guest bytes %d-%d) points '
                    'to sector %d, where no grain table is'
                    % (k, start, end, sector), offset + 4 * k)
            stored[k] = digest
        k = self._expected.first_difference(stored)
        if k is not None:
            start, end = self._gt_bytes(k)
            raise errors.VmdkCorrupt(
                'grain table %d (guest bytes %d-%d) does not match the '
                'grains in the stream' % (k, start, end), offset + 4 * k)

    def compare(self, stored_digests, offset, spans=None, end_sector=None):
        """Compare the grain tables of the header area with the grains.

        :param spans: ``(firsts, lasts)``: the sector of the first and last
            grain each table lists. With end_sector (where a cut stream
            ended), the tables that list grains past it are left out: the
            one the cut went through, and those after it if none of their
            grains was seen.
        """
        self._close_until(self._n_gt)
        expected = self._expected
        if spans is not None:
            firsts, lasts = spans
            expected = expected.copy()
            for k, first in _nonzero(firsts):
                if lasts[k] < end_sector:
                    continue
                if first < end_sector or expected[k] == _EMPTY_DIGEST:
                    expected[k] = stored_digests[k]
        k = expected.first_difference(stored_digests)
        if k is not None:
            start, end = self._gt_bytes(k)
            raise errors.VmdkCorrupt(
                'grain table %d (guest bytes %d-%d) in the header area '
                'does not match the grains in the stream'
                % (k, start, end), offset + 4 * k)
