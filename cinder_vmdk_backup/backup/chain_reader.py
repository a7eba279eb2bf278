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

"""A backup chain of a chunked backup driver, read as one ordered stream.

Cinder's chunked drivers restore an incremental backup by restoring its full
backup into the volume and writing every incremental on top of it, in
order: each object goes to its offset, newer ones overwrite older ones. A
target that can only be written sequentially (a stream-optimized VMDK sent to
a vSphere import lease) cannot take that; the plugin used to stage the whole
raw disk in a local file first.

:class:`ChainReader` does without the file. From the backups' metadata alone
(each backup's object list: offset, length, compression, md5) it resolves,
for every byte of the disk, the object of the newest backup in the chain
that holds it, and yields the disk as ordered :class:`Piece` s covering
``[0, size)``:

* each object that contributes anything is read exactly once, front to
  back, and decompressed as a stream (zlib, bz2; ``none``); ``zstd`` has no
  streaming decoder in the ``zstd`` module Cinder uses, so such an object is
  decompressed whole. The parts of an object that newer objects replace are
  decompressed and dropped, never yielded; objects replaced entirely are not
  read at all. Objects of older backups stay open while newer ones are read
  in between: at most one object per backup of the chain is open at a time;
* every object read is checked against its recorded md5 once its end is
  reached; a missing, short, long, undecodable or corrupt object raises
  :class:`~cinder.exception.InvalidBackup` naming the backup and the object.
  Where the consumer checks every piece against the requested backup's
  digests instead (``pieces(digests_checked=True)``,
  :mod:`.restore_checks`), no md5 is taken and objects the digests mark
  as zeros are not read, whatever their md5;
* an object whose visible part the requested backup's digests mark as zeros
  and whose md5 is that of zeros of its length (the zero objects of a full
  backup written by the plugin's hand-off) is not read: its range is a zero
  :class:`Piece` (``data`` None), as are ranges no object covers;
* memory stays at a few pieces plus the open decoders, whatever the object
  size (except whole-object decoders: ``zstd``, and object readers of
  backup drivers that cannot read part of an object, such as Swift's).

Objects and the sha256 file are read through the driver's own
``get_object_reader`` (not the ``_get_object_reader`` that wraps it for
eventlet's thread pool): :meth:`ChainReader.pieces` and
:meth:`ChainReader.nonzero_grains` run on native threads of
:mod:`~.transfer`, so they log nothing (Cinder asks the same of object
readers: eventlet issue 432).

The requested backup's sha256 file, read in pieces (never whole), also
tells which 64 KiB grains of the disk are non-zero
(:meth:`ChainReader.nonzero_grains`): what a VMDK writer needs to know the
stream's length before the first byte.

A restore cancelled through Cinder (the requested backup's status no longer
``restoring``) stops at the next check, at most once a second
(:meth:`ChainReader.check_cancelled`), as Cinder's own restore does before
each object.
"""

import bisect
import collections
import hashlib
import heapq
import re
import time

from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.objects import fields
from oslo_utils import units

from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import object_stream
from cinder_vmdk_backup.backup import transfer


#: Largest piece of data yielded (and read from an object at a time).
PIECE_BYTES = object_stream.PIECE_BYTES
#: Bytes of an object or of the sha256 file read at a time.
READ_BYTES = object_stream.READ_BYTES
#: Seconds between two status checks of the requested backup.
STATUS_CHECK_INTERVAL = 1.0
#: The restore method of the backup format this reader understands.
SUPPORTED_RESTORE = '_restore_v1'

Piece = collections.namedtuple('Piece', 'offset length data')
Piece.__doc__ = """``length`` bytes of the disk at ``offset``.

``data`` is a bytes-like object of ``length`` bytes, or None for zeros.
"""

_DIGEST = re.compile(rb'"([0-9a-fA-F]{64})"')
_CHUNK_SIZE = re.compile(rb'"chunk_size"\s*:\s*(\d+)')
_SHA_LIST = re.compile(rb'"sha256s"\s*:\s*\[')
_ZERO = bytes(READ_BYTES)


class ChainUnsupported(Exception):
    """The chain cannot be read this way; the caller takes another path."""


#: What of a chunked backup driver this reader uses (besides the formats
#: of its metadata and sha256 files).
SERVICE_ATTRIBUTES = ('DRIVER_VERSION_MAPPING', 'context', '_read_metadata',
                      '_metadata_filename', '_sha256_filename',
                      '_generate_object_names', 'get_object_reader',
                      'put_metadata')


def is_chunked(service):
    """Whether ``service`` is one of Cinder's chunked backup drivers."""
    from cinder.backup import chunkeddriver
    return isinstance(service, chunkeddriver.ChunkedBackupDriver)


def unusable_because(service):
    """Why the chain of this backup service cannot be streamed, or None."""
    if not is_chunked(service):
        return '%s is not a chunked backup driver' % type(service).__name__
    missing = [name for name in SERVICE_ATTRIBUTES
               if not hasattr(service, name)]
    if missing:
        return 'this Cinder\'s %s has no %s' % (type(service).__name__,
                                                ', '.join(missing))
    if not cinder_internals.usable('chain_reader'):
        return ('this Cinder\'s chunked backup driver reads its chains '
                'differently (see the start-up log)')
    return None


def _object_name(entry):
    return next(iter(entry))


class _Object(object):
    """One object of one backup of the chain."""

    __slots__ = ('level', 'backup', 'name', 'offset', 'length',
                 'compression', 'md5', 'extra_metadata')

    def __init__(self, level, backup, name, info, extra_metadata):
        self.level = level
        self.backup = backup
        self.name = name
        self.offset = int(info['offset'])
        self.length = int(info['length'])
        self.compression = str(info.get('compression') or 'none').lower()
        self.md5 = info.get('md5')
        self.extra_metadata = extra_metadata

    @property
    def end(self):
        return self.offset + self.length


class ChainReader(object):
    """The disk that ``backup`` restores to, as ordered pieces.

    :param service: the backup service (a Cinder chunked backup driver)
    :param backup: the backup to restore (Cinder Backup object, status
        ``restoring`` while it is read)
    :param size: bytes of the disk (the backup's ``size`` in GiB)
    :param clock: monotonic clock (tests)
    :raises ChainUnsupported: for a chain this reader does not understand
        (another metadata version, objects beyond ``size``): Cinder's own
        restore must take it
    :raises InvalidBackup: for objects listed in the metadata that the
        backup repository does not hold, or the other way round
    """

    def __init__(self, service, backup, size, clock=None):
        self._service = service
        self._backup = backup
        self.size = int(size)
        self._clock = clock or time.monotonic
        self._last_check = None
        self.chain = self._chain(backup)
        self._metadata = []
        self._objects = []
        for level, member in enumerate(self.chain):
            metadata = self._read_metadata(member)
            self._metadata.append(metadata)
            self._check_listing(member, metadata)
            extra = metadata.get('extra_metadata')
            for entry in metadata.get('objects') or ():
                name = _object_name(entry)
                obj = _Object(level, member, name, entry[name], extra)
                if obj.offset < 0 or obj.length < 0 or obj.end > self.size:
                    raise ChainUnsupported(
                        'object %s of backup %s lies at %d+%d, outside the '
                        '%d bytes of the disk' % (name, member.id,
                                                  obj.offset, obj.length,
                                                  self.size))
                if obj.compression not in ('none', 'off', 'no', 'zlib',
                                           'gzip', 'bz2', 'bzip2', 'zstd'):
                    raise ChainUnsupported(
                        'object %s of backup %s uses compression %s'
                        % (name, member.id, obj.compression))
                self._objects.append(obj)
        self._segments = _resolve(self._objects, self.size)
        self._starts = [start for start, _end, _obj in self._segments]
        self._grains = None
        self._grain_size = None

    @property
    def objects_in_write_order(self):
        """The chain's objects as Cinder's restore writes them.

        The full backup's first, each incremental's after its parent's, each
        backup's in the order of its metadata.
        """
        return tuple(self._objects)

    @property
    def segments(self):
        """``(start, end, object)`` of the disk, ascending: who holds it last.

        ``object`` is None where no object of the chain holds data.
        """
        return self._segments

    # -- the chain and its metadata -----------------------------------------

    def _chain(self, backup):
        """The backups to apply, the full one first, ``backup`` last."""
        chain = [backup]
        seen = {backup.id}
        current = backup
        while current.parent_id:
            if current.parent_id in seen:
                raise exception.InvalidBackup(reason=_(
                    'the parents of backup %s form a loop') % backup.id)
            current = objects.Backup.get_by_id(self._service.context,
                                               current.parent_id)
            seen.add(current.id)
            chain.append(current)
        chain.reverse()
        return chain

    def _read_metadata(self, backup):
        try:
            metadata = self._service._read_metadata(backup)
        except Exception as exc:
            raise exception.InvalidBackup(reason=_(
                'the metadata of backup %(backup)s cannot be read: '
                '%(err)s') % {'backup': backup.id, 'err': exc}) from exc
        version = metadata.get('version')
        restore = self._service.DRIVER_VERSION_MAPPING.get(version)
        if restore != SUPPORTED_RESTORE:
            raise ChainUnsupported(
                'backup %s has metadata version %s' % (backup.id, version))
        return metadata

    def _check_listing(self, backup, metadata):
        """The repository holds exactly the objects listed (as Cinder's)."""
        service = self._service
        listed = set()
        for entry in metadata.get('objects') or ():
            listed.update(entry)
        extra = {service._metadata_filename(backup),
                 service._sha256_filename(backup)}
        try:
            present = {name for name in service._generate_object_names(
                backup) if name not in extra}
        except Exception as exc:
            raise exception.InvalidBackup(reason=_(
                'the objects of backup %(backup)s cannot be listed: '
                '%(err)s') % {'backup': backup.id, 'err': exc}) from exc
        missing = sorted(listed - present)
        unknown = sorted(present - listed)
        if missing or unknown:
            raise exception.InvalidBackup(reason=_(
                'backup %(backup)s is damaged: objects missing from the '
                'repository: %(missing)s; objects not in its metadata: '
                '%(unknown)s') % {'backup': backup.id,
                                  'missing': ', '.join(missing) or '-',
                                  'unknown': ', '.join(unknown) or '-'})

    @property
    def service(self):
        """The backup service the chain is read through."""
        return self._service

    @property
    def volume_metas(self):
        """The ``volume_meta`` of each backup, the full one first."""
        return [metadata.get('volume_meta') for metadata in self._metadata]

    def restore_volume_metadata(self, volume_id):
        """Restore the volume's metadata from each backup, as Cinder does."""
        for volume_meta in self.volume_metas:
            if not volume_meta:
                continue
            try:
                self._service.put_metadata(volume_id, volume_meta)
            except exception.BackupMetadataUnsupportedVersion as exc:
                raise exception.BackupOperationError(_(
                    'Metadata restore failed due to incompatible '
                    'version.')) from exc

    # -- cancel ---------------------------------------------------------------

    def check_cancelled(self):
        """Raise BackupRestoreCancel once the restore was cancelled.

        Reloads the requested backup at most once per
        :data:`STATUS_CHECK_INTERVAL`; a database round trip, so call it
        from the thread that owns the context (not from a native helper
        thread under eventlet).
        """
        now = self._clock()
        if (self._last_check is not None and
                now - self._last_check < STATUS_CHECK_INTERVAL):
            return
        self._last_check = now
        backup = self._backup
        with backup.as_read_deleted():
            backup.refresh()
        if backup.status != fields.BackupStatus.RESTORING:
            raise exception.BackupRestoreCancel(back_id=backup.id,
                                                vol_id=backup.volume_id)

    # -- zeros, from the requested backup's digests ---------------------------

    def nonzero_grains(self, grain_size):
        """Which grains of the disk hold data, from the sha256 file.

        :param grain_size: bytes per grain
        :returns: a bytearray bitmap, bit ``g & 7`` of byte ``g >> 3`` set
            for grain ``g`` when a digest block overlapping it is not the
            digest of zeros
        :raises ChainUnsupported: for a sha256 file this reader cannot
            parse in pieces or that does not match the disk's size
        """
        if self._grains is None or self._grain_size != grain_size:
            self._grains = self._read_digests(grain_size)
            self._grain_size = grain_size
        return self._grains

    def _read_digests(self, grain_size):
        service = self._service
        backup = self._backup
        n_grains = -(-self.size // grain_size)
        grains = bytearray((n_grains + 7) // 8)
        name = service._sha256_filename(backup)
        try:
            with service.get_object_reader(backup.container,
                                           name) as reader:
                count = _scan_digests(
                    object_stream.read_pieces(reader), self.size, grain_size,
                    grains)
        except ChainUnsupported:
            raise
        except Exception as exc:
            raise exception.InvalidBackup(reason=_(
                'the digest list %(name)s of backup %(backup)s cannot be '
                'read: %(err)s') % {'name': name, 'backup': backup.id,
                                    'err': exc}) from exc
        del count
        return grains

    def _zero_objects(self, trust_digests=False):
        """Objects that need no reading: zeros by their md5 and digests.

        :param trust_digests: the restore checks every block against the
            digests (:mod:`.restore_checks`): an object whose visible part
            the digests mark as zeros is not read whatever its md5 (it
            could only fail that check)
        """
        if self._grains is None:
            return set()
        grains, size = self._grains, self._grain_size
        visible = collections.defaultdict(list)
        for start, end, obj in self._segments:
            if obj is not None:
                visible[id(obj)].append((start, end))
        candidates = {}
        for obj in self._objects:
            ranges = visible.get(id(obj))
            if not ranges or not (obj.md5 or trust_digests):
                continue
            if all(not _any_bit(grains, start // size,
                                -(-end // size)) for start, end in ranges):
                candidates[id(obj)] = obj
        if trust_digests:
            return set(candidates)
        lengths = {obj.length for obj in candidates.values()}
        zero_md5 = _zero_md5s(lengths)
        return {key for key, obj in candidates.items()
                if zero_md5[obj.length] == obj.md5}

    # -- the data ------------------------------------------------------------

    def describe(self, offset, length):
        """The objects that hold ``[offset, offset + length)``, as text.

        :returns: ``['<object> of backup <id>', ...]``; empty where no
            object holds data (zeros)
        """
        end = offset + length
        index = bisect.bisect_right(self._starts, offset) - 1
        found = []
        for start, stop, obj in self._segments[max(0, index):]:
            if start >= end:
                break
            if obj is not None and stop > offset:
                text = _('%(name)s of backup %(backup)s') % {
                    'name': obj.name, 'backup': obj.backup.id}
                if text not in found:
                    found.append(text)
        return found

    def pieces(self, check_cancel=False, digests_checked=False):
        """Yield the disk as :class:`Piece` s, ascending, covering it all.

        :param check_cancel: call :meth:`check_cancelled` before each
            object is opened and between pieces (only where the caller's
            thread may use the database)
        :param digests_checked: the consumer checks every piece against
            the requested backup's digests (:mod:`.restore_checks`):
            objects' md5 are not taken (the digests cover every byte
            yielded), and objects whose visible part the digests mark as
            zeros are not read
        :raises InvalidBackup: for an object that is missing, corrupt or
            of the wrong length (after its data was partly yielded: the
            consumer must throw away what it got)
        """
        skip = self._zero_objects(trust_digests=digests_checked)
        last_use = {}
        for index, (_start, _end, obj) in enumerate(self._segments):
            if obj is not None:
                last_use[id(obj)] = index
        open_streams = {}
        hasher = (None if digests_checked
                  else transfer.NativeExecutor(1, name='cvb-md5'))
        try:
            for index, (start, end, obj) in enumerate(self._segments):
                if check_cancel:
                    self.check_cancelled()
                if obj is None or id(obj) in skip:
                    if end > start:
                        yield Piece(start, end - start, None)
                    continue
                stream = open_streams.get(id(obj))
                if stream is None:
                    stream = object_stream.ObjectStream(
                        self._service, obj, hasher)
                    open_streams[id(obj)] = stream
                stream.skip_to(start)
                position = start
                while position < end:
                    data = stream.read(min(PIECE_BYTES, end - position))
                    yield Piece(position, len(data), data)
                    position += len(data)
                    if check_cancel and position < end:
                        self.check_cancelled()
                if last_use[id(obj)] == index:
                    del open_streams[id(obj)]
                    stream.finish()
        finally:
            for stream in open_streams.values():
                stream.close()
            if hasher is not None:
                hasher.shutdown(cancel_futures=True)


def _resolve(objs, size):
    """``[(start, end, object or None)]`` ascending, covering [0, size).

    Where objects overlap, the one of the newest backup (highest level)
    holds the data; objects of one backup do not overlap.
    """
    by_start = sorted(objs, key=lambda o: (o.offset, o.level))
    bounds = {0, size}
    for obj in objs:
        if obj.length:
            bounds.add(obj.offset)
            bounds.add(obj.end)
    bounds = sorted(bounds)
    active = []
    segments = []
    i = 0
    for a, b in zip(bounds, bounds[1:]):
        while i < len(by_start) and by_start[i].offset <= a:
            obj = by_start[i]
            i += 1
            if obj.length:
                heapq.heappush(active, (-obj.level, obj.end, id(obj), obj))
        while active and active[0][1] <= a:
            heapq.heappop(active)
        holder = active[0][3] if active else None
        if segments and segments[-1][2] is holder and segments[-1][1] == a:
            segments[-1] = (segments[-1][0], b, holder)
        else:
            segments.append((a, b, holder))
    return segments


def _any_bit(bitmap, first, stop):
    """Whether any bit in [first, stop) of the bitmap is set."""
    while first < stop and first & 7:
        if bitmap[first >> 3] & (1 << (first & 7)):
            return True
        first += 1
    while first + 8 <= stop:
        end_byte = (stop >> 3)
        if any(bitmap[first >> 3:end_byte]):
            return True
        first = end_byte << 3
    while first < stop:
        if bitmap[first >> 3] & (1 << (first & 7)):
            return True
        first += 1
    return False


#: md5 of zeros by length, across restores (a hand-off full backup's zero
#: objects come in few lengths, up to 1 GiB: about 2 s of md5 each).
_ZERO_MD5_CACHE = collections.OrderedDict()
_ZERO_MD5_CACHE_SIZE = 32


def _zero_md5s(lengths):
    """md5 hex digests of that many zero bytes, in one pass to the longest."""
    out = {}
    for length in lengths:
        if length in _ZERO_MD5_CACHE:
            out[length] = _ZERO_MD5_CACHE[length]
    md5 = hashlib.md5(usedforsecurity=False)
    done = 0
    for length in sorted(set(lengths) - set(out)):
        while done < length:
            step = min(len(_ZERO), length - done)
            md5.update(_ZERO[:step] if step < len(_ZERO) else _ZERO)
            done += step
        out[length] = _ZERO_MD5_CACHE[length] = md5.copy().hexdigest()
        while len(_ZERO_MD5_CACHE) > _ZERO_MD5_CACHE_SIZE:
            _ZERO_MD5_CACHE.popitem(last=False)
    return out


def _scan_digests(pieces, size, grain_size, grains):
    """Parse Cinder's sha256 file in pieces; mark the non-zero grains.

    Cinder writes the file with sorted keys, so ``chunk_size`` comes
    before ``sha256s``.

    :returns: the number of digests
    """
    buffer = b''
    chunk_size = None
    zero = zero_tail = None
    count = 0
    in_list = False
    done = False
    last = None
    for piece in pieces:
        buffer += piece
        if not in_list:
            match = _SHA_LIST.search(buffer)
            if match is None:
                if len(buffer) > 64 * units.Ki:
                    raise ChainUnsupported('no digest list near the start '
                                           'of the sha256 file')
                continue
            size_match = _CHUNK_SIZE.search(buffer, 0, match.start())
            if size_match is None:
                raise ChainUnsupported('the sha256 file does not give its '
                                       'chunk_size before its digests')
            chunk_size = int(size_match.group(1))
            if chunk_size <= 0:
                raise ChainUnsupported('chunk_size %d' % chunk_size)
            zero = hashlib.sha256(bytes(chunk_size)).hexdigest().encode()
            tail = size % chunk_size
            zero_tail = (hashlib.sha256(bytes(tail)).hexdigest().encode()
                         if tail else zero)
            buffer = buffer[match.end():]
            in_list = True
        close = buffer.find(b']')
        if close >= 0:
            cut, done = close, True
        else:
            cut = buffer.rfind(b',') + 1
        digests = _DIGEST.findall(buffer, 0, cut)
        buffer = buffer[cut:]
        if digests:
            digests = [d.lower() for d in digests]
            _mark(grains, count, digests, zero, chunk_size, grain_size)
            count += len(digests)
            last = digests[-1]
        if done:
            break
    if not done:
        raise ChainUnsupported('the sha256 file ends inside its digest list')
    expected = -(-size // chunk_size)
    if count != expected:
        raise ChainUnsupported('the sha256 file has %d digests, the disk '
                               'of %d bytes %d blocks of %d bytes'
                               % (count, size, expected, chunk_size))
    if last == zero_tail and zero_tail != zero:
        # The short last block reads as zeros: unmark its grains again
        # unless another block shares them.
        _unmark_tail(grains, size, chunk_size, grain_size, count)
    return count


def _mark(grains, first, digests, zero, chunk_size, grain_size):
    n_grains = len(grains) * 8
    for i, digest in enumerate(digests):
        if digest == zero:
            continue
        start = (first + i) * chunk_size
        g = start // grain_size
        stop = min(n_grains, -(-(start + chunk_size) // grain_size))
        while g < stop:
            grains[g >> 3] |= 1 << (g & 7)
            g += 1


def _unmark_tail(grains, size, chunk_size, grain_size, count):
    start = (count - 1) * chunk_size
    g = start // grain_size
    if g * grain_size < start:
        return  # shared with the previous block; keep the grain
    while g * grain_size < size:
        grains[g >> 3] &= ~(1 << (g & 7)) & 0xFF
        g += 1
