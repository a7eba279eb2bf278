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

"""The extent hand-off: a driver-owned backup written into Cinder's format.

Cinder's ``ChunkedBackupDriver.backup()`` reads the whole volume as one
stream, ``backup_file_size`` at a time into memory (1.9 GB for posix),
hashes every block, holds the parent's digests and the new ones as Python
lists, and writes the digest list whole at the end. Its cost follows the
volume's capacity. :func:`backup` writes the very same format (objects,
``_metadata``, ``_sha256file``, ``object_count``) through the driver's own
primitives, but reads only what may hold data that the parent lacks:

* **Format.** Objects are written by the driver's ``_backup_chunk``
  (compression, object writer, MD5, names ``'<prefix>-%05d'``) and the
  metadata by its ``_write_metadata``, after ``_prepare_backup`` and
  ``_backup_metadata``: any Cinder restores the backup with its own
  ``restore()``, from any backend of the same kind. Every internal used is
  a target of :mod:`.cinder_internals` (group ``handoff``): a Cinder that
  changed one sends backups back to the stream path.
* **Blocks.** A full backup uses ``driver_owned_backup_hash_block_kb``
  (1 MiB by default: 32 times fewer digests than Cinder's 32 KiB; the cost
  is that Cinder's own incremental refuses to follow it, with its clear
  ``InvalidBackup``); an incremental keeps its parent's ``chunk_size``, as
  Cinder requires. Data objects hold at most
  ``driver_owned_backup_object_mb`` (a block multiple): memory is one
  object read plus its compressed copy, whatever ``backup_file_size`` is.
* **What is read.** A block outside every range the source's
  ``changed_ranges(parent)`` reports keeps the parent's digest and is not
  read; a block inside the source's ``zero_ranges()`` has the digest of
  zeros and is not read; only the others are read (``read_at`` with
  ascending offsets, or the sequential stream, skipping). No ranges, or
  any doubt, reads everything, logged in one line with the reason: the
  backup is then still an incremental, against the parent's digests.
  ``zero_ranges()`` is asked after ``changed_ranges(parent)``: a source
  whose answer costs a query may then know it cannot matter.
* **Holes are stored.** A full backup stores zeros too, as objects of
  compressed zeros up to 1 GiB (:mod:`.zero_objects`: the payload built
  once per length without compressing the zeros): Cinder's restore onto an
  existing volume writes every object, so a hole must overwrite what the
  volume held. With zlib one object covers 1 GiB (the plugin's restore
  inflates it as calloc'd zeros, :mod:`.fast_zlib`); other algorithms
  would be inflated whole by Cinder, so their zero objects stay within the
  object size. Deflate shrinks zeros about a thousand times at most: a
  sparse TiB costs about 1 GB of zero objects in its full backup (as it
  does through Cinder's own path). An incremental stores the blocks whose
  digest differs from the parent's, zeros that replaced data included.
* **Digests stream** (:mod:`.sha_lists`): the parent's list is parsed as
  it is read, the new one written as it is produced, byte for byte what
  Cinder's ``json.dumps`` gives; neither is ever held whole (batches of
  a piece's worth of digests at most).
* **Cancel and failure.** The backup's status is reloaded at most once a
  second while scanning or writing (Cinder reloads it per object; a
  thousand objects of zeros per TiB made that the largest cost of a sparse
  full backup), and once more at the end: ``deleting`` deletes what was
  written and stops, as Cinder's ``backup()`` does. Any error deletes what
  was written (every object under the backup's prefix) and is raised
  again.
* **Progress** is notified every ``backup_object_number_per_notification``
  objects (and by Cinder's timer when enabled), as the share of the volume
  scanned; without the object list Cinder puts in each notification,
  which serialised again and again grows with the square of the count.
"""

import contextlib
import hashlib
import time

from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.objects import fields
from cinder import utils
from oslo_config import cfg
from oslo_log import log as logging
from oslo_service import loopingcall
from oslo_utils import excutils
from oslo_utils import units

from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import filled_bytes
from cinder_vmdk_backup.backup import sha_lists
from cinder_vmdk_backup.backup import zero_hashing
from cinder_vmdk_backup.backup import zero_objects
from cinder_vmdk_backup import opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.backup_manager_opts)

#: Largest object of zeros (zlib only, see the module's docstring).
MAX_ZERO_OBJECT = units.Gi

#: Seconds between status checks while no object is written.
STATUS_INTERVAL = 1.0

#: Algorithms whose zero objects are built by :mod:`.zero_objects`.
_ZLIB = ('zlib', 'gzip')


def usable(backup_service):
    """Whether :func:`backup` can write into ``backup_service``."""
    return (CONF.driver_owned_backup_extent_handoff
            and cinder_internals.is_chunked(backup_service)
            and cinder_internals.usable('handoff'))


def parent_mismatch(parent, backup, length):
    """Why ``parent`` cannot be the base of ``backup``'s changes, or None.

    The doubt every source's ``changed_ranges(parent)`` shares: the parent
    is another volume's backup, or the volume's size (``length`` bytes now)
    changed since it.
    """
    if parent.volume_id != backup.volume_id:
        return ('the parent backup %s is of another volume (%s)'
                % (parent.id, parent.volume_id))
    if not parent.size or parent.size * units.Gi != length:
        return ('the volume\'s size changed since the parent backup %s '
                '(%s GiB then, %d bytes now)'
                % (parent.id, parent.size, length))
    return None


class _Cancelled(Exception):
    """The backup's status became deleting (or deleted)."""


class _Ranges(object):
    """A cursor over ascending (offset, length) ranges, merged."""

    def __init__(self, ranges):
        self._iter = iter(ranges or ())
        self._start = self._end = 0
        self._next = None
        self._advance()

    def _pull(self):
        for offset, length in self._iter:
            if length > 0:
                return offset, offset + length
        return None

    def _advance(self):
        current = self._next or self._pull()
        if current is None:
            self._start = self._end = float('inf')
            return
        start, end = current
        self._next = None
        while True:
            following = self._pull()
            if following is None or following[0] > end:
                self._next = following
                break
            end = max(end, following[1])
        self._start, self._end = start, end

    def _skip_to(self, offset):
        while self._end <= offset:
            self._advance()

    def covers(self, start, end):
        """Whether [start, end) lies within one (merged) range."""
        self._skip_to(start)
        return self._start <= start and end <= self._end

    def overlaps(self, start, end):
        self._skip_to(start)
        return self._start < end

    def current(self, offset):
        """(start, end) of the first range ending after ``offset``."""
        self._skip_to(offset)
        return self._start, self._end


class _Source(object):
    """Reads from a source at ascending offsets, randomly or in order."""

    def __init__(self, source, stream=None):
        self._read_at = getattr(source, 'read_at', None)
        self._stream = stream if stream is not None else source
        self._position = 0
        if self._read_at is not None:
            self._read_at = utils.tpool_wrap(self._read_at)

    def read(self, offset, length):
        if self._read_at is not None:
            return filled_bytes.filled(
                length, lambda view: self._read_at(offset, view))
        while self._position < offset:
            skip = min(offset - self._position, 32 * units.Mi)
            self._exact(skip)
        return self._exact(length)

    def _exact(self, length):
        data = self._stream.read(length)
        if len(data) != length:
            raise EOFError('%d bytes read of %d at %d' % (
                len(data), length, self._position))
        self._position += length
        return data

    def finish(self, size):
        if self._read_at is None and self._position < size:
            self.read(size, 0)


def _digests(data, block):
    """[(hex digest, all zero)] of each block of ``data`` (native thread)."""
    out = []
    with memoryview(data) as view:
        for start in range(0, len(view), block):
            piece = view[start:start + block]
            if zero_hashing.is_all_zero(piece):
                out.append((zero_objects.sha256_of_zeros(len(piece)), True))
            else:
                out.append((hashlib.sha256(piece).hexdigest(), False))
    return out


class _Backup(object):
    """One hand-off backup: state shared by the steps of :func:`backup`."""

    def __init__(self, service, backup, source, size, what, stream=None):
        self.service = service
        self.backup = backup
        self.source = _Source(source, stream)
        # Asked once the parent's changes are known (see ask_zero_ranges).
        self.zero_ranges = None
        self.raw_source = source
        self.size = size
        self.what = what
        self.parent = None
        self.changed = None  # _Ranges of the parent's changes, or None
        self.last_check = time.monotonic()
        self.objects_since_progress = 0
        self.done_bytes = 0
        # A zero run waiting to be stored: [offset, length] or None.
        self.zero_run = None
        # Compressed zeros by length, for algorithms other than zlib.
        self.zero_payloads = {}
        self.backup_metadata = True
        self.volume_meta = None

    # -- set-up --------------------------------------------------------------

    def block_size(self, parent_reader):
        if parent_reader is not None:
            return parent_reader.chunk_size()
        kb = CONF.driver_owned_backup_hash_block_kb
        return kb * units.Ki if kb else self.service.sha_block_size_bytes

    def sizes(self, block):
        self.block = block
        object_bytes = CONF.driver_owned_backup_object_mb * units.Mi
        self.object_bytes = max(block, object_bytes - object_bytes % block)
        self.algorithm = ('none' if self.service.compressor is None
                          else CONF.backup_compression_algorithm.lower())
        if self.algorithm in _ZLIB:
            zero_bytes = max(block, MAX_ZERO_OBJECT - MAX_ZERO_OBJECT % block)
        else:
            zero_bytes = self.object_bytes
        self.zero_bytes = zero_bytes

    def ranges_of_changes(self):
        """The parent's changed ranges, or None (read everything)."""
        parent = self.parent
        why = None
        if self.backup.size and parent.size and (
                int(self.backup.size) != int(parent.size)):
            why = _('its size changed since the parent backup %s') % (
                parent.id)
        elif not hasattr(self.raw_source, 'changed_ranges'):
            why = _('its source does not report what changed')
        else:
            ranges, why = self.raw_source.changed_ranges(parent)
            if ranges is not None:
                return _Ranges(ranges)
        LOG.info('Backup %(backup)s of %(what)s reads the whole volume: '
                 '%(why)s.', {'backup': self.backup.id, 'what': self.what,
                              'why': why})
        return None

    def ask_zero_ranges(self):
        """The source's ``zero_ranges()``, asked after ``changed_ranges``.

        A source may answer it from what it learnt of the changes (a
        vCenter query it can then skip, :mod:`..vmware.cbt`).
        """
        self.zero_ranges = _Ranges(
            getattr(self.raw_source, 'zero_ranges', lambda: ())())

    # -- status and progress -------------------------------------------------

    def check_status(self, force=False):
        now = time.monotonic()
        if not force and now - self.last_check < STATUS_INTERVAL:
            return
        self.last_check = now
        with self.backup.as_read_deleted():
            self.backup.refresh()
        if self.backup.status in (fields.BackupStatus.DELETING,
                                  fields.BackupStatus.DELETED):
            raise _Cancelled()

    def progress(self):
        self.objects_since_progress += 1
        if self.objects_since_progress >= self.service.data_block_num:
            self.objects_since_progress = 0
            self.notify()

    def notify(self):
        # Cinder's notifications carry the whole object list; serialised
        # every few objects that grows with the square of the count (a
        # thousand zero objects per TiB). Consumers read the percentage.
        self.service._send_progress_notification(
            self.service.context, self.backup, self.summary(),
            self.done_bytes, self.size or 1)

    def summary(self):
        return {key: value for key, value in self.object_meta.items()
                if key != 'list'}

    # -- objects -----------------------------------------------------------

    def store_data(self, data, offset):
        self.check_status()
        self.service._backup_chunk(self.backup, self.container, data, offset,
                                   self.object_meta, self.extra_metadata)
        self.progress()

    def store_zeros(self, offset, length):
        """Extend the pending zero run; store full runs."""
        if self.zero_run is not None:
            run_offset, run_length = self.zero_run
            if run_offset + run_length == offset:
                self.zero_run = [run_offset, run_length + length]
            else:
                self.flush_zeros()
                self.zero_run = [offset, length]
        else:
            self.zero_run = [offset, length]
        while self.zero_run and self.zero_run[1] >= self.zero_bytes:
            run_offset, run_length = self.zero_run
            self._zero_object(run_offset, self.zero_bytes)
            rest = run_length - self.zero_bytes
            self.zero_run = ([run_offset + self.zero_bytes, rest] if rest
                             else None)

    def flush_zeros(self):
        if self.zero_run is not None:
            run_offset, run_length = self.zero_run
            self.zero_run = None
            self._zero_object(run_offset, run_length)

    def _zero_object(self, offset, length):
        self.check_status()
        meta = self.object_meta
        name = '%s-%05d' % (meta['prefix'], meta['id'])
        if self.algorithm in _ZLIB:
            algorithm, payload = self.algorithm, zero_objects.zlib_zeros(
                length)
        else:
            if length not in self.zero_payloads:
                if len(self.zero_payloads) >= 4:
                    self.zero_payloads.clear()
                self.zero_payloads[length] = (
                    self.service._prepare_output_data(bytes(length)))
            algorithm, payload = self.zero_payloads[length]
        with self.service._get_object_writer(
                self.container, name,
                extra_metadata=self.extra_metadata) as writer:
            writer.write(payload)
        meta['list'].append({name: {
            'offset': offset, 'length': length, 'compression': algorithm,
            'md5': zero_objects.md5_of_zeros(length)}})
        meta['id'] += 1
        self.progress()
        utils.cooperative_yield()


def backup(backup_service, backup, source, size, what, stream=None,
           backup_metadata=True, block_size=None, volume_meta=None):
    """Back up ``size`` bytes of ``source`` into a chunked backup driver.

    :param backup_service: a Cinder chunked backup driver instance
        (:func:`usable` says so)
    :param backup: the Backup object (``parent_id`` for an incremental)
    :param source: see the source protocol in :mod:`.driver_owned`:
        ``read_at(offset, view)`` or a sequential ``read(n)``; optionally
        ``zero_ranges()`` and ``changed_ranges(parent)``
    :param size: bytes of the device
    :param what: the device, for the log (``'volume <id>'``)
    :param stream: where sequential reads go when ``source`` has no
        ``read_at`` (``read(n)`` giving exactly ``n`` bytes: the source
        behind a :class:`~.transfer.BackupReader`); default ``source``
    :param backup_metadata: store the volume's current metadata (Cinder's
        ``_backup_metadata``)
    :param block_size: bytes per digest of a full backup instead of
        ``driver_owned_backup_hash_block_kb`` (a synthetic full keeps its
        chain's)
    :param volume_meta: the ``volume_meta`` to store when
        ``backup_metadata`` is off (a synthetic full stores its chain's)
    :returns: None, like Cinder's ``backup()``; a cancelled backup returns
        with its objects deleted
    """
    service = backup_service
    state = _Backup(service, backup, source, size, what, stream)
    state.backup_metadata = backup_metadata
    with contextlib.ExitStack() as stack:
        parent_reader = None
        if backup.parent_id:
            state.parent = objects.Backup.get_by_id(service.context,
                                                    backup.parent_id)
            name = service._sha256_filename(state.parent)
            parent_file = stack.enter_context(service._get_object_reader(
                state.parent['container'], name))
            parent_reader = sha_lists.ShaFileReader(parent_file,
                                                    name).open()
        state.sizes(block_size if block_size and parent_reader is None
                    else state.block_size(parent_reader))
        state.volume_meta = volume_meta
        if state.parent is not None:
            state.changed = state.ranges_of_changes()
        state.ask_zero_ranges()
        return _run(state, parent_reader)


def _run(state, parent_reader):
    service, backup = state.service, state.backup
    (state.object_meta, _sha, state.extra_metadata, state.container,
     _volume_size) = service._prepare_backup(backup)
    if state.volume_meta is not None and not state.backup_metadata:
        state.object_meta['volume_meta'] = state.volume_meta
    timer = loopingcall.FixedIntervalLoopingCall(state.notify)
    if service.enable_progress_timer:
        timer.start(interval=service.backup_timer_interval)
    try:
        try:
            with service._get_object_writer(
                    state.container,
                    service._sha256_filename(backup)) as sha_object:
                header = {
                    'version': service.DRIVER_VERSION,
                    'backup_id': backup['id'],
                    'volume_id': backup.volume_id,
                    'backup_name': backup['display_name'],
                    'backup_description': backup['display_description'],
                    'created_at': str(backup['created_at']),
                    'chunk_size': state.block,
                }
                sha_writer = sha_lists.ShaFileWriter(sha_object, header)
                parents = (parent_reader.digests() if parent_reader
                           else iter(()))
                _scan(state, sha_writer, parents)
                sha_writer.close()
                if parent_reader is not None:
                    # Read to the end: a truncated parent list is an error.
                    for _digest in parents:
                        pass
            state.source.finish(state.size)
            state.check_status(force=True)
        except _Cancelled:
            LOG.info('Backup %s was cancelled: its objects are deleted.',
                     backup.id)
            service.delete_backup(backup)
            return None
    except Exception:
        with excutils.save_and_reraise_exception():
            _delete_written(service, backup)
    finally:
        timer.stop()
    try:
        service._send_progress_end(service.context, backup,
                                   state.summary())
        if state.backup_metadata:
            service._backup_metadata(backup, state.object_meta)
        service._write_metadata(backup, backup.volume_id, state.container,
                                state.object_meta['list'],
                                state.object_meta['volume_meta'],
                                state.extra_metadata)
        backup.object_count = state.object_meta['id'] - 1
        backup.save()
    except Exception:
        with excutils.save_and_reraise_exception():
            _delete_written(service, backup)
    LOG.debug('Hand-off backup %s finished.', backup.id)
    return None


def _delete_written(service, backup):
    try:
        service.delete_backup(backup)
    except Exception:
        LOG.exception('Could not delete the objects of the failed backup '
                      '%s.', backup.id)


def _scan(state, sha_writer, parents):
    """Walk the blocks: digests out, objects for what the parent lacks."""
    size, block = state.size, state.block
    zero_block = zero_objects.sha256_of_zeros(block)
    incremental = state.parent is not None
    changed = state.changed
    offset = 0
    while offset < size:
        state.check_status()
        state.done_bytes = offset
        length = min(block, size - offset)
        end = offset + length
        if incremental and changed is not None and not changed.overlaps(
                offset, end):
            # Unchanged since the parent: its digests, nothing read. Up to
            # the next changed range, whole blocks only.
            start, _end = changed.current(offset)
            count = max(1, (min(start, size) - offset) // block)
            if sha_writer.add_many(parents, count) != count:
                raise exception.InvalidBackup(reason=_(
                    'the parent backup %s has fewer digests than the '
                    'volume has blocks') % state.parent.id)
            state.flush_zeros()
            offset += count * block
            continue
        if state.zero_ranges.covers(offset, end):
            _zero_start, zero_end = state.zero_ranges.current(offset)
            count = max(1, (min(zero_end, size) - offset) // block)
            if incremental and changed is not None:
                # Blocks starting before the changed range's end.
                _start, changed_end = changed.current(offset)
                count = min(count, max(1, -(-(changed_end - offset) //
                                            block)))
            if end == size:
                count = 1
            if not incremental:
                # Whole blocks, or the last one (maybe short): count 1.
                sha_writer.add_repeated(
                    zero_objects.sha256_of_zeros(length) if count == 1
                    else zero_block, count)
                state.store_zeros(offset, min(count * block, size - offset))
                offset += count * block
                continue
            for index in range(count):
                at = offset + index * block
                piece = min(block, size - at)
                digest = (zero_block if piece == block
                          else zero_objects.sha256_of_zeros(piece))
                sha_writer.add(digest)
                if not incremental or next(parents, None) != digest:
                    state.store_zeros(at, piece)
                else:
                    state.flush_zeros()
            offset += count * block
            continue
        offset = _read_and_store(state, sha_writer, parents, offset)
    state.flush_zeros()
    state.done_bytes = size


def _read_and_store(state, sha_writer, parents, offset):
    """Read the blocks from ``offset`` that must be read (up to an object).

    :returns: the offset after them
    """
    size, block = state.size, state.block
    incremental = state.parent is not None
    changed = state.changed
    end = offset
    while end < size and end - offset < state.object_bytes:
        block_end = min(size, end + block)
        if end > offset and (
                state.zero_ranges.covers(end, block_end)
                or (incremental and changed is not None
                    and not changed.overlaps(end, block_end))):
            break
        end = block_end
    data = state.source.read(offset, end - offset)
    digests = utils.tpool_wrap(_digests)(data, block)
    run_start = None
    for index, (digest, is_zero) in enumerate(digests):
        at = offset + index * block
        sha_writer.add(digest)
        store = not incremental or next(parents, None) != digest
        if store and is_zero:
            _store_data_run(state, data, offset, run_start, at)
            run_start = None
            state.store_zeros(at, min(block, size - at))
        elif store:
            state.flush_zeros()
            if run_start is None:
                run_start = at
        else:
            _store_data_run(state, data, offset, run_start, at)
            run_start = None
            state.flush_zeros()
    _store_data_run(state, data, offset, run_start, end)
    return end


def _store_data_run(state, data, data_offset, start, end):
    if start is None or end <= start:
        return
    first, last = start - data_offset, end - data_offset
    piece = data if (first, last) == (0, len(data)) else data[first:last]
    state.store_data(piece, start)
