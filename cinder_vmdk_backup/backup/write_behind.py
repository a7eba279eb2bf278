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

"""Writing a restore behind the backup service, one object at a time.

Cinder's chunked backup drivers restore object after object: read it,
inflate it, write it, then the next. :class:`WriteBehind` hands each write
to a native thread and returns, so writing one object overlaps with reading
and inflating the next; the write after waits for it. The counterpart of
:mod:`.read_ahead` on the way back.
"""

import io

from oslo_log import log as logging

from cinder_vmdk_backup import native_threads

LOG = logging.getLogger(__name__)

__all__ = ['WriteBehind', 'MAX_BEHIND']

#: A larger write is waited for before ``write`` returns: objects of
#: Cinder's default ``backup_file_size`` (1.86 GiB) would otherwise keep
#: one more of them in memory.
MAX_BEHIND = 64 * 1024 * 1024


class WriteBehind(object):
    """A file-like writer that writes into ``target`` on a native thread.

    At most one write is in flight: its data stays referenced until it is
    written, so the caller must not change it (one object's worth of
    memory more than writing in place; a write of more than
    :data:`MAX_BEHIND` bytes is waited for instead).
    Writes keep their order, and each lands where the position was when
    it was made. An error of a write is raised by the call that finds it:
    the next ``write``, ``seek`` or ``flush``, or :meth:`close`, which waits
    for the last write. Use it as a context manager; on leaving, the
    target holds every byte written, or an error was raised.

    ``flush`` does not wait (Cinder's drivers call it after every object):
    only :meth:`close` promises the data is in the target. ``fileno()``
    raises :class:`io.UnsupportedOperation` (an ``OSError``), as on the
    target, so backup drivers skip their ``fsync`` per object.

    :param target: file-like object with ``seek``, ``write`` and ``tell``
        (a :class:`~.staging.SparseStagingWriter`)
    """

    def __init__(self, target):
        self._target = target
        self._pool = native_threads.executor(
            1, thread_name_prefix='restore-write')
        self._pending = None
        self._pos = target.tell()
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._abandon()

    # -- file interface ------------------------------------------------------

    def write(self, data):
        self._check_open()
        self._wait()
        with memoryview(data) as view:
            size = view.nbytes
        self._pending = self._pool.submit(self._write_at, self._pos, data)
        self._pos += size
        if size > MAX_BEHIND:
            self._wait()
        return size

    def seek(self, offset, whence=io.SEEK_SET):
        self._check_open()
        if whence == io.SEEK_SET:
            if offset < 0:
                raise ValueError('negative seek position %d' % offset)
            self._raise_failure()
            self._pos = offset
            return offset
        # Relative to the end, or anything else: the target answers once
        # it has every write.
        self._wait()
        self._target.seek(self._pos)
        self._pos = self._target.seek(offset, whence)
        return self._pos

    def tell(self):
        return self._pos

    def flush(self):
        """Raise the error of a finished write; does not wait for one."""
        self._check_open()
        self._raise_failure()

    def fileno(self):
        raise io.UnsupportedOperation(
            'writes behind are not synced object by object')

    def close(self):
        """Wait for the last write; raise its error, if any."""
        if self._closed:
            return
        try:
            self._wait()
        finally:
            self._closed = True
            self._pool.shutdown(wait=True)

    # -- helpers -----------------------------------------------------------

    def _write_at(self, position, data):
        self._target.seek(position)
        self._target.write(data)

    def _wait(self):
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _raise_failure(self):
        if self._pending is not None and self._pending.done():
            self._wait()

    def _abandon(self):
        """Leaving on an error: wait quietly, the caller's error wins."""
        try:
            self.close()
        except Exception as exc:
            LOG.warning('A restore write failed too: %s', exc)

    def _check_open(self):
        if self._closed:
            raise ValueError('write to a closed WriteBehind')
