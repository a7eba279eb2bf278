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

"""Reading a backup source ahead of the backup service.

A backup service reads its source, then hashes, compresses and stores what
it read, then reads again: with a source that has to fetch and decode its
data (an NFC export), nothing would fetch while the service works.
:class:`ReadAhead` keeps a bounded number of pieces ready, read by a thread
of its own: a green thread under eventlet (the source's socket stays on the
hub; the decoding runs on native threads, see
:mod:`cinder_vmdk_backup.native_threads`), an OS thread otherwise.
"""

import queue
import threading

from oslo_log import log as logging
from oslo_utils import units

LOG = logging.getLogger(__name__)

#: Bytes asked of the source at a time.
PIECE_SIZE = 4 * units.Mi

#: Pieces kept ready at most (memory: DEPTH x PIECE_SIZE).
DEPTH = 8

#: Seconds between checks for a consumer that went away.
_POLL = 0.5


class _Failure(object):
    """The exception the source raised, handed to the consumer."""

    def __init__(self, exc):
        self.exc = exc


class ReadAhead(object):
    """A stream read ahead by a thread, ``DEPTH`` pieces at most.

    ``read(n)`` returns up to ``n`` bytes (less at a piece's end), ``b''``
    at the end; an exception of the source is raised by the ``read`` that
    reaches the point where it happened. :meth:`close` (or leaving the
    ``with`` block) stops the thread.

    :param stream: object with ``read(n)``, read by the thread only
    :param name: what is read, for the thread's name and logs
    """

    def __init__(self, stream, name='stream', piece_size=PIECE_SIZE,
                 depth=DEPTH):
        self._stream = stream
        self._name = name
        self._piece_size = piece_size
        self._pieces = queue.Queue(depth)
        self._stopping = threading.Event()
        self._current = b''
        self._offset = 0
        self._finished = False
        self._thread = threading.Thread(target=self._fill, daemon=True,
                                        name='cvb-readahead-%s' % name)
        self._thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- the reading thread -------------------------------------------------

    def _fill(self):
        try:
            while not self._stopping.is_set():
                data = self._stream.read(self._piece_size)
                if not self._put(data) or not data:
                    return
        except BaseException as exc:  # handed over, raised by read()
            self._put(_Failure(exc))

    def _put(self, item):
        """Queue ``item``; False when the consumer went away."""
        while not self._stopping.is_set():
            try:
                self._pieces.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    # -- the consumer -------------------------------------------------------

    def readable(self):
        return True

    def read(self, n=-1):
        if self._finished:
            return b''
        if self._offset >= len(self._current):
            item = self._pieces.get()
            if isinstance(item, _Failure):
                self._finished = True
                raise item.exc
            if not item:
                self._finished = True
                return b''
            self._current, self._offset = item, 0
        available = len(self._current) - self._offset
        if n is None or n < 0 or n >= available:
            data = (self._current if self._offset == 0
                    else self._current[self._offset:])
            self._current, self._offset = b'', 0
            return data
        data = self._current[self._offset:self._offset + n]
        self._offset += n
        return data

    def close(self):
        """Stop the reading thread and drop what it read ahead."""
        self._stopping.set()
        self._finished = True
        while True:
            try:
                self._pieces.get_nowait()
            except queue.Empty:
                break
        # A thread blocked in the source's read (a stalled transfer) is not
        # waited for: it ends when the source's owner closes the source.
        self._thread.join(timeout=_POLL * 2)
        if self._thread.is_alive():
            LOG.debug('Read-ahead of %s still waits for its source; it ends '
                      'when the source is closed.', self._name)
