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

import io
import os
import random
import subprocess  # nosec B404: runs this interpreter
import sys
import threading
import time

import ddt
import fixtures
from oslotest import base

from cinder_vmdk_backup.backup import read_ahead


class RecordingSource(object):
    """A source that counts what was taken from it, short reads allowed."""

    def __init__(self, data, most=None, fail_at=None):
        self._data = io.BytesIO(data)
        self._most = most
        self._fail_at = fail_at
        self.taken = 0
        self.reads = 0
        self.calls = 0
        self.closed = False
        self.gate = threading.Event()
        self.gate.set()

    def read(self, size):
        self.calls += 1
        self.gate.wait()
        if self.closed:
            raise AssertionError('read after close')
        if self._fail_at is not None and self.taken >= self._fail_at:
            raise IOError('export broke at %d' % self.taken)
        if self._fail_at is not None:
            size = min(size, self._fail_at - self.taken)
        if self._most:
            size = min(size, self._most)
        data = self._data.read(size)
        self.taken += len(data)
        self.reads += 1
        return data


def _wait_until(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('condition not met in %s s' % timeout)
        time.sleep(0.005)


@ddt.ddt
class ReadAheadTestCase(base.BaseTestCase):

    @ddt.data((1000, None, 100), (1000, 64, 100), (4096, None, 4096),
              (333, 7, 1000), (1, None, 10))
    @ddt.unpack
    def test_reads_give_the_source_data(self, size, most, limit):
        data = os.urandom(10 * 1000 + 17)
        source = RecordingSource(data, most=most)
        got = []
        with read_ahead.ReadAhead(source, limit) as reader:
            while True:
                piece = reader.read(size)
                if not piece:
                    break
                self.assertLessEqual(len(piece), size)
                got.append(piece)
            self.assertEqual(b'', reader.read(size))
        self.assertEqual(data, b''.join(got))
        # Only the last read may be short.
        self.assertTrue(all(len(p) == size for p in got[:-1]))

    def test_a_whole_piece_is_handed_on_without_a_copy(self):
        pieces = [os.urandom(64), os.urandom(64)]

        class Source(object):
            def read(self, size):
                return pieces.pop(0) if pieces else b''

        expected = list(pieces)
        with read_ahead.ReadAhead(Source(), 64) as reader:
            self.assertIs(expected[0], reader.read(64))
            self.assertIs(expected[1], reader.read(64))
            self.assertEqual(b'', reader.read(64))

    def test_reads_at_most_limit_ahead(self):
        source = RecordingSource(bytes(100 * 1000))
        with read_ahead.ReadAhead(source, 3000) as reader:
            self.assertEqual(1000, len(reader.read(1000)))
            _wait_until(lambda: source.taken >= 4000)
            time.sleep(0.05)
            # What the caller took, plus the limit: nothing more.
            self.assertEqual(4000, source.taken)
            reader.read(2000)
            _wait_until(lambda: source.taken >= 6000)
            time.sleep(0.05)
            self.assertEqual(6000, source.taken)

    def test_large_reads_come_in_bounded_pieces(self):
        data = os.urandom(10000)
        source = RecordingSource(data)
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.backup.read_ahead.MAX_PIECE', 1000))
        with read_ahead.ReadAhead(source, 1000) as reader:
            self.assertEqual(data, reader.read(20000))
        self.assertEqual(11, source.reads)

    def test_error_is_raised_after_the_data_before_it(self):
        data = os.urandom(5000)
        source = RecordingSource(data, fail_at=2500)
        with read_ahead.ReadAhead(source, 1000) as reader:
            self.assertEqual(data[:1000], reader.read(1000))
            self.assertEqual(data[1000:2000], reader.read(1000))
            self.assertEqual(data[2000:2500], reader.read(1000))
            error = self.assertRaises(IOError, reader.read, 1000)
            self.assertIn('export broke at 2500', str(error))
            self.assertRaises(IOError, reader.read, 1000)

    def test_close_stops_reading_before_the_source_is_closed(self):
        source = RecordingSource(bytes(100 * 1000))
        reader = read_ahead.ReadAhead(source, 1000)
        reader.read(1000)
        _wait_until(lambda: source.reads == 2)
        source.gate.clear()
        reader.read(1000)
        # The thread is now blocked in the source; close() must wait for
        # it, and no read may follow.
        _wait_until(lambda: source.calls == 3)
        closer = threading.Thread(target=reader.close)
        closer.start()
        time.sleep(0.05)
        self.assertTrue(closer.is_alive())
        source.gate.set()
        closer.join(5)
        self.assertFalse(closer.is_alive())
        source.closed = True
        calls = source.calls
        time.sleep(0.05)
        # Not even an attempt to read the closed source.
        self.assertEqual(calls, source.calls)
        self.assertIsNone(reader._error)
        self.assertRaises(ValueError, reader.read, 10)

    def test_reads_of_changing_sizes(self):
        rng = random.Random(3)
        data = os.urandom(3 * 1000 * 1000 + 11)
        source = RecordingSource(data, most=rng.choice((None, 5000)))
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.backup.read_ahead.MAX_PIECE', 64 * 1024))
        got = []
        with read_ahead.ReadAhead(source, 100 * 1000) as reader:
            while True:
                size = rng.choice((1, 7, 4096, 65536, 100000, 250000))
                piece = reader.read(size)
                if not piece:
                    break
                self.assertEqual(min(size, len(data) - len(b''.join(got))),
                                 len(piece))
                got.append(piece)
        self.assertEqual(data, b''.join(got))

    @ddt.data((1, 1), (32, 32), (33, 17), (64, 32), (65, 22), (100, 25))
    @ddt.unpack
    def test_piece_size(self, size, piece):
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.backup.read_ahead.MAX_PIECE', 32))
        self.assertEqual(piece, read_ahead.piece_size(size))

    def test_close_without_reading_starts_nothing(self):
        source = RecordingSource(b'data')
        read_ahead.ReadAhead(source, 10).close()
        self.assertEqual(0, source.reads)

    def test_read_needs_a_size(self):
        with read_ahead.ReadAhead(RecordingSource(b'x'), 10) as reader:
            self.assertRaises(ValueError, reader.read)
            self.assertEqual(b'', reader.read(0))


#: Under eventlet (as in cinder-backup), the read-ahead must progress while
#: the backup driver's green thread waits for a native thread (its
#: compression): that native job here waits until the source has been read
#: again, which can only happen in the read-ahead's green thread.
_EVENTLET_OVERLAP = """
import eventlet
eventlet.monkey_patch()
from eventlet import patcher
from eventlet import tpool

from cinder_vmdk_backup.backup import read_ahead

native_event = patcher.original('threading').Event()


class Source(object):
    reads = 0
    left = 30

    def read(self, size):
        self.reads += 1
        if self.reads == 2:
            native_event.set()
        size = min(size, self.left)
        self.left -= size
        return b'x' * size


with read_ahead.ReadAhead(Source(), 10) as reader:
    reader.read(10)
    overlapped = tpool.execute(native_event.wait, 60)
    rest = reader.read(100)
print(overlapped, len(rest))
"""


class ReadAheadUnderEventletTestCase(base.BaseTestCase):

    def test_reads_while_the_service_waits_on_a_native_thread(self):
        out = subprocess.run(  # nosec B603
            [sys.executable, '-c', _EVENTLET_OVERLAP], check=True,
            stdout=subprocess.PIPE, text=True, timeout=120).stdout
        self.assertEqual('True 20', out.split('\n')[-2])
