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

"""A staged restore checked while the backup service writes it.

A staged restore lets Cinder's chunked backup driver write the staging
file: the full backup's objects first, then each incremental's on top, each
object whole at its offset. Checking the file afterwards
(:func:`~.restore_checks.check_file`) is a second pass over the data, after
the restore, on its critical path. :class:`StagingCheck` checks each object
as the staging writer (:class:`~.staging.SparseStagingWriter`) receives it
instead, on a thread of its own, while the writer writes it and the backup
service inflates the next object. No byte is read back from the file,
except for the rare blocks no single object writes whole.

What is final is known before the first write: the chain's metadata
(:class:`~.chain_reader.ChainReader`) says, for every byte of the disk,
which object of which backup holds it last, and Cinder writes the objects
in the order of the chain and of each backup's list. Each write is matched
to the object expected next; of its data only what that object holds last
is checked, in the requested backup's hash blocks:

* a block held whole by one object is checked when that object is written:
  against the zero digest by comparison (or by nothing at all for an object
  of zeros, :func:`~.zero_objects.zeros`), else hashed;
* the requested backup's SHA-256 list is read in order, once: a block
  whose object comes later in the write order (an incremental's) has its
  digest kept until then (memory: one digest per block the incrementals
  hold), and a block no object holds is zeros in the file, its digest
  compared at once;
* a block that several objects share (objects not aligned to hash blocks),
  is read back from the staging file at :meth:`StagingCheck.finish`.

A write the metadata did not announce (another Cinder's write pattern)
gives the overlap up: :meth:`StagingCheck.finish` then checks the whole
file as before, and says why in the log. A damaged block fails the write
that carries it, so the backup service's restore stops with
:class:`~cinder.exception.InvalidBackup` naming the backup, the region and
the object; the driver never gets the file.
"""

import bisect
import os

from cinder import exception
from cinder.i18n import _
from oslo_log import log as logging

from cinder_vmdk_backup.backup import restore_checks
from cinder_vmdk_backup.backup import zero_objects

LOG = logging.getLogger(__name__)

__all__ = ['StagingCheck']


class _GivenUp(Exception):
    """The writes are not what the metadata announced."""


class StagingCheck(restore_checks.BlockChecker):
    """Check a staging file block by block as its objects are written.

    Use it as a context manager around the backup service's restore; pass
    :meth:`observe` to :class:`~.staging.SparseStagingWriter` and call
    :meth:`finish` once the file has its size.

    :param service: the backup service (a Cinder chunked backup driver)
    :param backup: the requested backup (Cinder Backup object)
    :param size: bytes of the disk being restored
    :param chain: the :class:`~.chain_reader.ChainReader` of ``backup``
    """

    def __init__(self, service, backup, size, chain):
        super(StagingCheck, self).__init__(service, backup, size,
                                           describe=chain.describe)
        # In the order Cinder's restore writes them: the chain's backups
        # from the full one, each backup's objects as its metadata lists
        # them (ChainReader keeps them so).
        self._writes = list(chain.objects_in_write_order)
        self._segments = chain.segments
        self._starts = [start for start, _end, _obj in self._segments]
        self._next_write = 0
        self._cursor = 0      # next block whose digest is still in the list
        self._parked = {}     # block -> its digest, its object to come
        self.given_up = None  # why the writes could not be followed
        self.bytes_reread = 0

    # -- the writer's side (the write-behind thread) ------------------------

    def observe(self, offset, length, data):
        """One write of the backup service, before it reaches the file.

        :returns: a future (``result()`` raises
            :class:`~cinder.exception.InvalidBackup` for a damaged block of
            this write), or None when nothing is checked now
        """
        if self.given_up is not None or self._pool is None:
            return None
        index = self._next_write
        expected = (self._writes[index] if index < len(self._writes)
                    else None)
        if expected is None or (expected.offset, expected.length) != (
                offset, length):
            self.given_up = (
                'a write of %d bytes at %d, where the metadata announced '
                '%s' % (length, offset,
                        'no more writes' if expected is None else
                        '%d bytes at %d' % (expected.length,
                                            expected.offset)))
            return None
        self._next_write += 1
        if zero_objects.known(data):
            data = None
        return self._pool.submit(self._check_write, expected, data)

    # -- the checking thread -------------------------------------------------

    def _check_write(self, obj, data):
        if self._failure is not None or self.given_up is not None:
            return
        try:
            view = None if data is None else memoryview(data).cast('B')
            for start, end in self._held_by(obj):
                self._check_held(start, end, obj, view)
        except exception.InvalidBackup as exc:
            self._failure = exc
            raise
        except _GivenUp as exc:
            self.given_up = str(exc)

    def _held_by(self, obj):
        """``(start, end)`` of the disk that ``obj`` holds last."""
        index = max(0, bisect.bisect_right(self._starts, obj.offset) - 1)
        for start, end, holder in self._segments[index:]:
            if start >= obj.end:
                break
            if holder is obj:
                yield start, end

    def _check_held(self, start, end, obj, view):
        """Check the blocks lying whole in ``[start, end)``, held by obj."""
        chunk = self.chunk_size
        block = -(-start // chunk) * chunk
        while block < end:
            length = self.block_length(block)
            if block + length > end:
                break  # shared with the next holder: read back at finish
            expected = self._digest_of(block // chunk)
            piece = (None if view is None else
                     view[block - obj.offset:block - obj.offset + length])
            self._compare_block(block, piece, expected)
            block += length

    def _digest_of(self, index):
        """The listed digest of block ``index``, the list read in order."""
        if index < self._cursor:
            try:
                return self._parked.pop(index)
            except KeyError:
                raise _GivenUp('block %d was written whole twice' % index)
        while self._cursor < index:
            self._park(self._cursor)
        self._cursor += 1
        return self._next_digest(index * self.chunk_size)

    def _park(self, index):
        """Keep the digest of a block written later, or check zeros."""
        start = index * self.chunk_size
        digest = self._next_digest(start)
        self._cursor += 1
        if self._nobody_holds(start, start + self.block_length(start)):
            self._compare_block(start, None, digest)  # never written
        else:
            self._parked[index] = digest

    def _nobody_holds(self, start, end):
        index = bisect.bisect_right(self._starts, start) - 1
        seg_start, seg_end, holder = self._segments[index]
        return holder is None and seg_end >= end

    # -- the end -------------------------------------------------------------

    def finish(self, fd):
        """Wait for every check; check what the writes could not.

        :param fd: the staging file, at the disk's size
        :raises InvalidBackup: a damaged block, or a list that does not
            fit the disk
        """
        outcome = self._pool.submit(self._finish, fd).result()
        if outcome is None:
            return self.blocks_checked
        LOG.info('The data restored from backup %(backup)s is checked '
                 'after its restore, not during it: %(why)s.',
                 {'backup': self._backup.id, 'why': outcome})
        self.close()
        checker = restore_checks.BlockChecker(
            self._service, self._backup, self.size, describe=self._describe)
        return restore_checks.check_file(fd, checker)

    def _finish(self, fd):
        """On the checking thread: None, or why the file must be read."""
        if self._failure is not None:
            raise self._failure
        if self.given_up is None and self._next_write != len(self._writes):
            self.given_up = ('%d of the %d objects of the chain were '
                             'written' % (self._next_write, len(self._writes)))
        if self.given_up is not None:
            return self.given_up
        blocks = -(-self.size // self.chunk_size)
        while self._cursor < blocks:
            self._park(self._cursor)
        if next(self._digests, None) is not None:
            raise self._list_mismatch(_('more digests than blocks'))
        for index in sorted(self._parked):
            start = index * self.chunk_size
            length = self.block_length(start)
            data = os.pread(fd, length, start)
            if len(data) < length:
                data += bytes(length - len(data))
            self.bytes_reread += length
            self._compare_block(start, memoryview(data),
                                self._parked.pop(index))
        return None
