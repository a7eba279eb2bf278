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

"""Reading a backup source ahead of the backup service, in bounded memory.

Cinder's chunked backup drivers work chunk by chunk: read, hash, compress,
store, then read the next. Without help, the source (an export being
decoded) sits idle while the driver compresses, and the driver waits while
the source decodes. :class:`ReadAhead` reads the source in a thread of its
own, at most ``limit`` bytes ahead of what the backup service took, so both
run at once.

Under eventlet (cinder-backup), ``threading`` is patched and the reader is
a green thread: it runs while the service's green thread waits on
eventlet's native threads (its compression), and the sources themselves
read on native threads (the VMware export with its HTTP body and codec,
the qcow2 driver's files), so the hub's thread is left to the service.
"""

import collections
import threading

__all__ = ['ReadAhead']

#: Largest piece read from the source at once: a service reading huge
#: chunks (Cinder's default backup_file_size is 1.86 GiB) gets them as
#: pieces of this size joined, and the read-ahead limit stays meaningful.
MAX_PIECE = 32 * 1024 * 1024


def piece_size(size):
    """The piece a read of ``size`` bytes is read ahead in.

    A read of at most :data:`MAX_PIECE` is one piece; a larger one is made
    of equal pieces of at most that size, so that it takes whole pieces.
    """
    count = -(-size // MAX_PIECE)
    return -(-size // count)


class ReadAhead(object):
    """A file-like reader over ``source`` that reads ahead in a thread.

    ``read(n)`` returns what ``source.read`` would have (a short read only
    at the end). The thread reads pieces sized for the caller's latest
    read (:func:`piece_size`), so a caller reading fixed-size chunks of up
    to :data:`MAX_PIECE` gets each chunk as the very object the source
    returned. An error of the source is raised by the ``read`` that reaches
    it, after the data before it was handed on.

    Memory: at most ``limit`` bytes wait for the caller (at least one
    piece, whatever the limit), plus the piece being read.

    Use it as a context manager: leaving stops the thread and waits for it
    (at most one piece, or the source's own timeout), so the source can be
    closed safely afterwards.

    :param source: object with ``read(n)``
    :param limit: bytes read ahead at most
    """

    def __init__(self, source, limit):
        self._source = source
        self._limit = max(1, limit)
        self._ready = collections.deque()
        self._head = 0  # bytes of the first ready piece already taken
        self._buffered = 0
        self._piece = None
        self._error = None
        self._at_end = False
        self._stopping = False
        self._changed = threading.Condition()
        self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def readable(self):
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            raise ValueError('ReadAhead reads in pieces; give a size')
        if size == 0:
            return b''
        pieces = []
        wanted = size
        with self._changed:
            if self._stopping:
                raise ValueError('read of a closed ReadAhead')
            self._piece = piece_size(size)
            if self._thread is None:
                self._start()
            while wanted > 0:
                while not self._ready and not (self._at_end or self._error):
                    self._changed.wait()
                if not self._ready:
                    if self._error is not None and not pieces:
                        raise self._error
                    break
                piece = self._take(wanted)
                pieces.append(piece)
                wanted -= len(piece)
                # Room for the thread: a read larger than the limit must
                # let it go on while this read collects the pieces.
                self._changed.notify_all()
        if len(pieces) == 1:
            return pieces[0]
        return b''.join(pieces)

    def close(self):
        """Stop reading ahead; return once the thread has ended."""
        with self._changed:
            self._stopping = True
            self._ready.clear()
            self._buffered = 0
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- helpers -----------------------------------------------------------

    def _take(self, wanted):
        """Up to ``wanted`` bytes of the first ready piece (lock held)."""
        piece = self._ready[0]
        rest = len(piece) - self._head
        if self._head == 0 and rest <= wanted:
            self._ready.popleft()
            taken = piece
        else:
            count = min(rest, wanted)
            with memoryview(piece) as view:
                taken = view[self._head:self._head + count].tobytes()
            self._head += count
            if self._head == len(piece):
                self._ready.popleft()
                self._head = 0
        self._buffered -= len(taken)
        return taken

    def _start(self):
        self._thread = threading.Thread(target=self._fill,
                                        name='cvb-read-ahead', daemon=True)
        self._thread.start()

    def _fill(self):
        while True:
            with self._changed:
                while (self._buffered and
                       self._buffered + self._piece > self._limit and
                       not self._stopping):
                    self._changed.wait()
                if self._stopping:
                    return
                piece = self._piece
            try:
                data = self._source.read(piece)
            except Exception as exc:
                self._finish(error=exc)
                return
            except BaseException as exc:
                # The thread itself is being stopped (eventlet's
                # GreenletExit, interpreter exit): the reader must not
                # wait for it, nor get the signal meant for this thread.
                self._finish(error=RuntimeError(
                    'reading ahead stopped: %s' % type(exc).__name__))
                raise
            with self._changed:
                if self._stopping:
                    return
                if data:
                    self._ready.append(data)
                    self._buffered += len(data)
                else:
                    self._at_end = True
                self._changed.notify_all()
                if not data:
                    return

    def _finish(self, error):
        with self._changed:
            self._error = error
            self._changed.notify_all()
