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

"""What a restore writes, checked against the backup's SHA-256 list.

Cinder's chunked backup drivers store one SHA-256 per hash block of the
volume with every backup (the ``*_sha256file`` object) and never read it on
restore: a flipped byte in a stored object is restored silently, with the
backup and the volume ``available``. A driver-owned restore
(``driver_owned_restore_check_digests``) checks the disk it is about to
write, block by block, against the *requested* backup's list (the list of
an incremental describes the whole disk at its point in time):

* :class:`BlockChecker` takes the disk in order, as ``(offset, length,
  data)`` pieces (``data`` None for zeros). Blocks whose listed digest is
  that of zeros are compared with zeros (``memcmp``), not hashed; a zero
  piece against such blocks costs a string comparison per block; the
  other blocks are hashed. The work runs on one native thread beside the
  caller (the decompression, the VMDK encoding), at most
  :data:`PENDING` pieces behind it; the list is read as it is parsed
  (:class:`~.sha_lists.ShaFileReader`), never held whole;
* the first block that does not match ends the restore with
  :class:`~cinder.exception.InvalidBackup` naming the backup, the volume
  region (offset, length) and, where known, the objects that hold it;
* :func:`checked_pieces` wraps the streaming restore's pieces
  (:class:`~.chain_reader.ChainReader`): the error is raised before the
  last piece is handed on, so the import is aborted and never completes;
* a staged restore is checked as the backup service writes the staging
  file (:class:`~.staging_checks.StagingCheck`, built on
  :class:`BlockChecker`); :func:`check_file` reads a staging file (holes
  by ``SEEK_HOLE``: not read) after the restore where the writes cannot
  be followed. Either way before the file is handed to the driver:
  nothing of the volume was touched yet.

Backup services that keep no such list (not chunked) are not checked.
"""

import collections
import hashlib
import os

from cinder import exception
from cinder.i18n import _
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import units

from cinder_vmdk_backup.backup import sha_lists
from cinder_vmdk_backup.backup import transfer
from cinder_vmdk_backup import opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.restore_check_opts)

#: Pieces that may wait for the checking thread.
PENDING = 3
#: Bytes of a staging file read at a time.
READ_BYTES = units.Mi


def enabled():
    """Whether driver-owned restores check what they write."""
    return bool(CONF.driver_owned_restore_check_digests)


def unusable_because(service):
    """Why ``service``'s backups cannot be checked, or None."""
    from cinder.backup import chunkeddriver
    if not isinstance(service, chunkeddriver.ChunkedBackupDriver):
        return _('%s keeps no SHA-256 list') % type(service).__name__
    for name in ('_sha256_filename', 'get_object_reader'):
        if not hasattr(service, name):
            return _('this Cinder\'s %(cls)s has no %(name)s') % {
                'cls': type(service).__name__, 'name': name}
    return None


class BlockChecker(object):
    """Check a disk, given in order, against a backup's SHA-256 list.

    :param service: the backup service (a Cinder chunked backup driver)
    :param backup: the requested backup (Cinder Backup object)
    :param size: bytes of the disk being restored
    :param describe: ``describe(offset, length) -> [str]``, the objects
        holding that region (for the error); optional
    """

    def __init__(self, service, backup, size, describe=None):
        self._service = service
        self._backup = backup
        self.size = int(size)
        self._describe = describe
        self._name = service._sha256_filename(backup)
        self._manager = None
        self._digests = None
        self.chunk_size = None
        self._zero = self._zero_tail = None
        self._position = 0    # end of what was handed in
        self._checked = 0     # end of what was checked
        self._partial = bytearray()  # a block begun in an earlier piece
        self._pool = None
        self._pending = collections.deque()
        self._failure = None
        self.blocks_checked = 0
        self.bytes_hashed = 0

    # -- life cycle --------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def start(self):
        """Open the list, read its header; start the checking thread.

        :raises InvalidBackup: no list, or one that does not fit the disk
        """
        service, backup = self._service, self._backup
        try:
            self._manager = service.get_object_reader(backup.container,
                                                      self._name)
            reader = sha_lists.ShaFileReader(self._manager.__enter__(),
                                             self._name).open()
            self.chunk_size = reader.chunk_size()
        except exception.InvalidBackup as exc:
            self.close()
            raise self._unreadable(exc.msg) from exc
        except Exception as exc:
            self.close()
            raise self._unreadable(exc) from exc
        if self.chunk_size <= 0:
            self.close()
            raise self._unreadable(_('chunk_size %d') % self.chunk_size)
        self._digests = reader.digests()
        self._zero = hashlib.sha256(bytes(self.chunk_size)).hexdigest()
        tail = self.size % self.chunk_size
        self._zero_tail = (hashlib.sha256(bytes(tail)).hexdigest()
                           if tail else self._zero)
        self._pool = transfer.NativeExecutor(1, name='cvb-restore-check')

    def _unreadable(self, why):
        return exception.InvalidBackup(reason=_(
            'backup %(backup)s cannot be restored with its data checked: '
            'its SHA-256 list %(name)s cannot be read (%(why)s). Set '
            'driver_owned_restore_check_digests = false to restore it '
            'unchecked.') % {'backup': self._backup.id, 'name': self._name,
                             'why': why})

    def close(self):
        """Stop the thread and close the list (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        manager, self._manager = self._manager, None
        if manager is not None:
            try:
                manager.__exit__(None, None, None)
            # A read-only stream: nothing is lost when closing it fails.
            except Exception:  # nosec B110
                pass

    # -- the data ----------------------------------------------------------

    def add(self, offset, length, data):
        """Hand in the next ``length`` bytes of the disk (None: zeros).

        :raises InvalidBackup: for a block found wrong so far
        """
        if offset != self._position:
            raise ValueError('a piece at byte %d follows byte %d'
                             % (offset, self._position))
        self._raise_failure()
        self._position += length
        self._pending.append(self._pool.submit(self._check, offset,
                                               length, data))
        while len(self._pending) > PENDING:
            self._pending.popleft().result()
        self._raise_failure()

    def finish(self):
        """Wait for every check; the whole disk and list must be there.

        :raises InvalidBackup: for a wrong block, or a list that does not
            have one digest per block of the disk
        """
        while self._pending:
            self._pending.popleft().result()
        self._raise_failure()
        if self._position != self.size:
            raise ValueError('the disk ended at byte %d of %d'
                             % (self._position, self.size))
        if self._partial:
            self._pool.submit(self._flush_partial).result()
            self._raise_failure()
        extra = next(self._digests, None)
        if extra is not None:
            raise self._list_mismatch(_('more digests than blocks'))

    def _raise_failure(self):
        if self._failure is not None:
            raise self._failure

    # -- on the checking thread --------------------------------------------

    def _check(self, offset, length, data):
        if self._failure is not None:
            return
        try:
            self._check_piece(offset, length, data)
        except exception.InvalidBackup as exc:
            self._failure = exc

    def _check_piece(self, offset, length, data):
        block = self.chunk_size
        view = None if data is None else memoryview(data).cast('B')
        used = 0
        if self._partial:
            take = min(length, block - len(self._partial))
            self._partial += (bytes(take) if view is None
                              else view[:take])
            used = take
            if len(self._partial) == block:
                self._flush_partial()
        while length - used >= block:
            start = offset + used
            if view is None:
                # Zeros: digests compared, nothing hashed.
                count = (length - used) // block
                for _index in range(count):
                    expected = self._next_digest(start)
                    if expected != self._zero:
                        self._mismatch(start, block, expected, zeros=True)
                    self.blocks_checked += 1
                    start += block
                used += count * block
                break
            self._check_block(start, view[used:used + block])
            used += block
        if used < length:
            self._partial += (bytes(length - used) if view is None
                              else view[used:])
            if offset + length == self.size:
                self._flush_partial()

    def _flush_partial(self):
        data, self._partial = bytes(self._partial), bytearray()
        self._check_block(self._checked, memoryview(data))

    def _check_block(self, start, view):
        self._compare_block(start, view, self._next_digest(start))

    def _compare_block(self, start, view, expected):
        """Check one block (``view`` None: zeros, compared, not hashed)."""
        length = self.block_length(start) if view is None else len(view)
        zero = self._zero if length == self.chunk_size else self._zero_tail
        if length != self.chunk_size and start + length != self.size:
            raise AssertionError('short block inside the disk')
        if view is None:
            if expected != zero:
                self._mismatch(start, length, expected, zeros=True)
        elif expected == zero:
            # memcmp on bytes; a memoryview compares item by item.
            if view.tobytes() != bytes(length):
                self._mismatch(start, length, expected)
        else:
            self.bytes_hashed += length
            if hashlib.sha256(view).hexdigest() != expected:
                self._mismatch(start, length, expected)
        self.blocks_checked += 1

    def block_length(self, start):
        """Bytes of the block at ``start`` (the disk's last may be short)."""
        return min(self.chunk_size, self.size - start)

    def _next_digest(self, start):
        self._checked = start + self.chunk_size
        try:
            digest = next(self._digests, None)
        except exception.InvalidBackup as exc:
            raise self._unreadable(exc.msg) from exc
        if digest is None:
            raise self._list_mismatch(_('fewer digests than blocks'))
        return digest

    def _list_mismatch(self, why):
        blocks = -(-self.size // self.chunk_size)
        return exception.InvalidBackup(reason=_(
            'backup %(backup)s cannot be restored with its data checked: '
            'its SHA-256 list %(name)s does not fit the disk of %(size)d '
            'bytes (%(blocks)d blocks of %(chunk)d bytes): %(why)s.') % {
                'backup': self._backup.id, 'name': self._name,
                'size': self.size, 'blocks': blocks,
                'chunk': self.chunk_size, 'why': why})

    def _mismatch(self, offset, length, expected, zeros=False):
        objects = []
        if self._describe is not None:
            try:
                objects = self._describe(offset, length)
            except Exception:
                # Only the message's list of objects is lost.
                objects = []
        raise exception.InvalidBackup(reason=_(
            'backup %(backup)s is damaged: the restored volume region at '
            'offset %(offset)d, length %(length)d, does not match the '
            'SHA-256 %(digest)s its list %(name)s records%(zeros)s (stored '
            'in %(objects)s). The restore was stopped; the volume was not '
            'given this data.') % {
                'backup': self._backup.id, 'offset': offset,
                'length': length, 'digest': expected, 'name': self._name,
                'zeros': (_(': the backup holds no data there')
                          if zeros else ''),
                'objects': ', '.join(objects) or _('no object')})


def checked_pieces(pieces, checker):
    """Yield ``pieces`` as they are checked; check all before the last.

    ``checker`` is started and closed here. Every piece is handed on at
    once except the last one, which waits for every check: a consumer
    that completes its target only after the last piece never completes
    it with wrong data.
    """
    with checker:
        previous = None
        for piece in pieces:
            checker.add(piece[0], piece[1], piece[2])
            if previous is not None:
                yield previous
            previous = piece
        checker.finish()
        if previous is not None:
            yield previous


def check_file(fd, checker):
    """Check a staging file (``checker.size`` bytes) against the list.

    Runs on a native thread (it reads the file); holes are not read.

    :raises InvalidBackup: see :class:`BlockChecker`
    """
    return transfer.run(_check_file, fd, checker, name='cvb-check-file')


def _check_file(fd, checker):
    size = checker.size
    with checker:
        position = 0
        for start, end in _data_ranges(fd, size):
            if start > position:
                checker.add(position, start - position, None)
            position = start
            while position < end:
                step = min(READ_BYTES, end - position)
                data = os.pread(fd, step, position)
                if len(data) < step:
                    data += bytes(step - len(data))
                checker.add(position, step, data)
                position += step
        if position < size:
            checker.add(position, size - position, None)
        checker.finish()
    return checker.blocks_checked


def _data_ranges(fd, size):
    """``(start, end)`` of the file's data (not holes), within ``size``."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            return
        if start >= size:
            return
        end = min(size, os.lseek(fd, start, os.SEEK_HOLE))
        yield start, end
        position = end
