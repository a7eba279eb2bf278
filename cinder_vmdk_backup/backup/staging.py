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

"""The volume file a backup service restores into: a sparse staging file.

A restore's staging file starts empty and reads as zeros. Cinder's chunked
backup drivers can skip zeros themselves (``volume_is_new``), but they
compare each MiB through a ``memoryview``, element by element: measured at
3-7 s per GiB, more than decompressing it. :class:`SparseStagingWriter`
takes every byte (the service is told the volume is not new) and skips, in
64 KiB pieces compared as ``bytes`` (about 0.07 s per GiB), the all-zero
pieces of regions nothing was written to yet. Once a region holds data, its
zeros are written like any data: an incremental backup layered on its full
backup must be able to turn data back into zeros.
"""

import io
import os

from cinder_vmdk_backup.backup import zero_objects

__all__ = ['SparseStagingWriter']

#: Zero pieces of this size (aligned in the file) are skipped.
PIECE = 64 * 1024
#: Granularity of the record of regions written to (a multiple of PIECE):
#: one bit per MiB, 128 KiB of memory for a 1 TiB volume.
REGION = 1024 * 1024

_ZERO_PIECE = bytes(PIECE)
_ZERO_REGION = bytes(REGION)


class SparseStagingWriter(object):
    """Write a restore into a staging file, leaving never-written zeros out.

    A file object for backup services: ``write``, ``seek``, ``tell``,
    ``flush``. It has no ``fileno()``: backup services then do not
    ``fsync`` the file after each object. A staging file needs no
    durability; it is read once and deleted, and a restore that crashed is
    started again from the backup.

    :param fd: file descriptor of the staging file, new and empty
    :param observer: ``observer(offset, length, data)`` called with each
        write before it reaches the file, returning None or a future
        whose ``result()`` is waited for (and its error raised) once the
        write is done: the restore checks
        (:class:`~.staging_checks.StagingCheck`) look at the data while
        it is written
    """

    def __init__(self, fd, observer=None):
        self._fd = fd
        self._observer = observer
        self._pos = 0
        self._end = 0  # the end of what was written, zeros left out or not
        self._written = bytearray()

    # -- file interface ------------------------------------------------------

    def write(self, data):
        if self._observer is None:
            return self._write(data)
        with memoryview(data) as view:
            size = view.nbytes
        watching = self._observer(self._pos, size, data)
        written = self._write(data)
        if watching is not None:
            watching.result()
        return written

    def _write(self, data):
        if zero_objects.known(data):
            return self._write_zeros(len(data))
        with memoryview(data) as whole, whole.cast('B') as view:
            size = len(view)
            start = self._pos
            runs = []  # (start, end) in view of what must be written
            run = None
            offset = 0
            while offset < size:
                end = min(size, offset + PIECE - (start + offset) % PIECE)
                if self._skippable(start + offset, view[offset:end]):
                    if run is not None:
                        runs.append((run, offset))
                        run = None
                elif run is None:
                    run = offset
                offset = end
            if run is not None:
                runs.append((run, size))
            for first, end in runs:
                self._write_at(view[first:end], start + first)
        # Only now: the pieces of one write do not overlap, so its zeros
        # are skippable wherever earlier writes left nothing.
        for first, end in runs:
            self._mark_written(start + first, start + end)
        self._pos = start + size
        self._end = max(self._end, self._pos)
        return size

    def _write_zeros(self, size):
        """An object of zeros (:func:`.zero_objects.zeros`), not read.

        Written only over regions that hold data already; skipped, region
        by region, everywhere else.
        """
        position, end = self._pos, self._pos + size
        with memoryview(_ZERO_REGION) as zeros:
            while position < end:
                region_end = min(end, (position // REGION + 1) * REGION)
                if self._was_written(position // REGION):
                    self._write_at(zeros[:region_end - position], position)
                position = region_end
        self._pos = end
        self._end = max(self._end, end)
        return size

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._pos + offset
        elif whence == io.SEEK_END:
            position = max(self._end, os.fstat(self._fd).st_size) + offset
        else:
            raise ValueError('invalid whence %r' % whence)
        if position < 0:
            raise ValueError('negative seek position %d' % position)
        self._pos = position
        return position

    def tell(self):
        return self._pos

    def flush(self):
        """Nothing to flush: every write went to the file at once."""

    def fileno(self):
        raise io.UnsupportedOperation(
            'a staging file is not synced object by object')

    # -- helpers -----------------------------------------------------------

    def _skippable(self, offset, piece):
        """Whether ``piece`` (within one region) need not be written."""
        if self._was_written(offset // REGION):
            return False
        if len(piece) == PIECE:
            return piece.tobytes() == _ZERO_PIECE
        return piece.tobytes() == bytes(len(piece))

    def _write_at(self, view, offset):
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], offset + done)

    def _was_written(self, region):
        byte = region >> 3
        return (byte < len(self._written) and
                bool(self._written[byte] & (1 << (region & 7))))

    def _mark_written(self, start, end):
        first, last = start // REGION, (end - 1) // REGION
        need = (last >> 3) + 1
        if len(self._written) < need:
            self._written.extend(bytes(need - len(self._written)))
        for region in range(first, last + 1):
            self._written[region >> 3] |= 1 << (region & 7)
