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
import time
from unittest import mock

import ddt
from eventlet import patcher
import fixtures
from oslotest import base

from cinder_vmdk_backup.backup import transfer

#: The test process may be monkey-patched by eventlet (Cinder's test
#: modules patch on import): the pipeline's threads are native, so are
#: the primitives the tests share with them.
threading = patcher.original('threading')


class RecordingSource(object):
    """A file-like source (``readinto``) that counts what was taken."""

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

    def readinto(self, view):
        self.calls += 1
        self.gate.wait()
        if self.closed:
            raise AssertionError('read after close')
        size = len(view)
        if self._fail_at is not None and self.taken >= self._fail_at:
            raise IOError('export broke at %d' % self.taken)
        if self._fail_at is not None:
            size = min(size, self._fail_at - self.taken)
        if self._most:
            size = min(size, self._most)
        count = self._data.readinto(view[:size])
        self.taken += count
        self.reads += 1
        return count


class FillSource(object):
    """A source with the whole protocol: fill, finish, report, interrupt."""

    def __init__(self, data, finish_error=None):
        self._data = data
        self._pos = 0
        self._finish_error = finish_error
        self.fill_threads = set()
        self.reports = []
        self.finished = 0
        self.interrupted = 0
        self.views_were_zero = True
        self.block = threading.Event()
        self.block.set()

    def fill(self, view):
        self.fill_threads.add(threading.get_ident())
        self.views_were_zero &= not any(bytes(view))
        if not self.block.wait(10):
            raise AssertionError('never unblocked')
        if self.interrupted:
            raise OSError('connection shut down')
        n = len(view)
        view[:] = self._data[self._pos:self._pos + n]
        self._pos += n

    def finish(self):
        self.finished += 1
        if self._finish_error is not None:
            raise self._finish_error

    def report(self, position):
        self.reports.append((position, threading.get_ident()))

    def interrupt(self):
        self.interrupted += 1
        self.block.set()


def _wait_until(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('condition not met in %s s' % timeout)
        time.sleep(0.005)


def _read_all(reader, size):
    got = []
    while True:
        piece = reader.read(size)
        if not piece:
            return got
        got.append(piece)


@ddt.ddt
class BackupReaderTestCase(base.BaseTestCase):

    @ddt.data((1000, None, 100), (1000, 64, 100), (4096, None, 4096),
              (333, 7, 1000), (1, None, 10), (1000, None, 0))
    @ddt.unpack
    def test_reads_give_the_source_data_in_full_reads(self, size, most,
                                                      limit):
        data = os.urandom(10 * 1000 + 17)
        source = RecordingSource(data, most=most)
        with transfer.BackupReader(source, len(data), limit) as reader:
            got = _read_all(reader, size)
            self.assertEqual(len(data), reader.tell())
            self.assertEqual(b'', reader.read(size))
        self.assertEqual(data, b''.join(got))
        # Only the last read may be short.
        self.assertTrue(all(len(p) == size for p in got[:-1]))
        self.assertTrue(all(type(p) is bytes for p in got))

    def test_a_whole_piece_is_handed_on_without_a_copy(self):
        data = os.urandom(128)
        reader = transfer.BackupReader(FillSource(data), 128, 64)
        with reader:
            first = reader.read(64)
            # The producer made the very object handed on: only it and
            # this test hold it.
            self.assertEqual(1, sys.getrefcount(first) - 1)
            self.assertEqual(data[:64], first)

    def test_source_gets_zeroed_buffers_on_its_own_thread(self):
        data = os.urandom(256 * 1024)
        source = FillSource(data)
        with transfer.BackupReader(source, len(data), 0) as reader:
            self.assertEqual(data, b''.join(_read_all(reader, 64 * 1024)))
        self.assertTrue(source.views_were_zero)
        self.assertNotIn(threading.get_ident(), source.fill_threads)
        self.assertEqual(1, len(source.fill_threads))

    def test_progress_is_reported_on_the_consumers_thread(self):
        data = os.urandom(3000)
        source = FillSource(data)
        with transfer.BackupReader(source, len(data), 1000) as reader:
            _read_all(reader, 1000)
        me = threading.get_ident()
        self.assertEqual([(1000, me), (2000, me), (3000, me)],
                         source.reports)

    def test_the_tail_is_checked_before_the_last_read_returns(self):
        source = FillSource(bytes(2000))
        with transfer.BackupReader(source, 2000, 1000) as reader:
            reader.read(1000)
            reader.read(1000)
            self.assertEqual(1, source.finished)

    def test_a_bad_tail_fails_the_last_read(self):
        source = FillSource(bytes(2000), finish_error=ValueError('footer'))
        with transfer.BackupReader(source, 2000, 1000) as reader:
            reader.read(1000)
            error = self.assertRaises(ValueError, reader.read, 1000)
        self.assertEqual('footer', str(error))

    def test_an_empty_source_has_its_tail_checked(self):
        source = FillSource(b'', finish_error=ValueError('no footer'))
        with transfer.BackupReader(source, 0, 1000) as reader:
            self.assertRaises(ValueError, reader.read, 1000)

    def test_reads_at_most_limit_ahead(self):
        source = RecordingSource(bytes(100 * 1000))
        with transfer.BackupReader(source, 100 * 1000, 3000) as reader:
            self.assertEqual(1000, len(reader.read(1000)))
            _wait_until(lambda: source.taken >= 4000)
            time.sleep(0.05)
            # What the caller took, plus the limit: nothing more.
            self.assertEqual(4000, source.taken)
            reader.read(2000)
            _wait_until(lambda: source.taken >= 6000)
            time.sleep(0.05)
            self.assertEqual(6000, source.taken)

    def test_without_read_ahead_pieces_are_made_when_asked(self):
        source = RecordingSource(bytes(10 * 1000))
        with transfer.BackupReader(source, 10 * 1000, 0) as reader:
            reader.read(1000)
            time.sleep(0.05)
            self.assertEqual(1000, source.taken)

    def test_large_reads_come_in_bounded_pieces(self):
        data = os.urandom(10000)
        source = RecordingSource(data)
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.backup.transfer.MAX_PIECE', 1000))
        with transfer.BackupReader(source, len(data), 1000) as reader:
            self.assertEqual(data, reader.read(20000))
        self.assertEqual(10, source.reads)

    def test_error_is_raised_after_the_data_before_it(self):
        data = os.urandom(5000)
        source = RecordingSource(data, fail_at=2500)
        with transfer.BackupReader(source, len(data), 500) as reader:
            self.assertEqual(data[:500], reader.read(500))
            self.assertEqual(data[500:1000], reader.read(500))
            self.assertEqual(data[1000:1500], reader.read(500))
            self.assertEqual(data[1500:2000], reader.read(500))
            self.assertEqual(data[2000:2500], reader.read(500))
            error = self.assertRaises(IOError, reader.read, 500)
            self.assertIn('export broke at 2500', str(error))

    def test_an_error_stays(self):
        source = FillSource(bytes(2000), finish_error=ValueError('footer'))
        with transfer.BackupReader(source, 2000, 2000) as reader:
            self.assertRaises(ValueError, reader.read, 2000)
            self.assertRaises(ValueError, reader.read, 2000)

    def test_a_source_ending_early_is_an_error(self):
        source = RecordingSource(bytes(1500))
        with transfer.BackupReader(source, 3000, 1000) as reader:
            reader.read(1000)
            error = self.assertRaises(EOFError, reader.read, 1000)
        self.assertIn('500 bytes early', str(error))

    def test_close_interrupts_a_blocked_source_and_joins(self):
        source = FillSource(bytes(10 * 1000))
        reader = transfer.BackupReader(source, 10 * 1000, 1000)
        reader.read(1000)
        source.block.clear()
        _wait_until(lambda: not source.block.is_set() and
                    len(source.fill_threads) == 1)
        time.sleep(0.05)  # the producer now waits in fill
        reader.close()
        self.assertEqual(1, source.interrupted)
        self.assertFalse(reader._thread.is_alive())
        self.assertRaises(ValueError, reader.read, 10)

    def test_close_after_the_end_interrupts_nothing(self):
        source = FillSource(bytes(1000))
        with transfer.BackupReader(source, 1000, 1000) as reader:
            reader.read(1000)
        self.assertEqual(0, source.interrupted)

    def test_reads_of_changing_sizes(self):
        rng = random.Random(3)
        data = os.urandom(3 * 1000 * 1000 + 11)
        source = RecordingSource(data, most=rng.choice((None, 5000)))
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.backup.transfer.MAX_PIECE', 64 * 1024))
        got = []
        with transfer.BackupReader(source, len(data), 100 * 1000) as reader:
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
            'cinder_vmdk_backup.backup.transfer.MAX_PIECE', 32))
        self.assertEqual(piece, transfer.piece_size(size))

    def test_close_without_reading_starts_nothing(self):
        source = RecordingSource(b'data')
        transfer.BackupReader(source, 4, 10).close()
        self.assertEqual(0, source.reads)

    @mock.patch.object(os, 'setpriority', autospec=True,
                       side_effect=PermissionError('not allowed'))
    def test_priority_not_lowered_is_reported(self, _setpriority):
        with transfer.BackupReader(FillSource(bytes(10)), 10, 10,
                                   niceness=5) as reader:
            reader.read(10)
            self.assertIsInstance(reader.niceness_error, PermissionError)

    def test_producer_runs_below_the_callers_priority(self):
        seen = []

        class Source(object):
            def fill(self, view):
                seen.append(os.getpriority(
                    os.PRIO_PROCESS, threading.get_native_id()))

        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        with transfer.BackupReader(Source(), 10, 10, niceness=3) as reader:
            reader.read(10)
        self.assertEqual([min(19, mine + 3)], seen)


@ddt.ddt
class AheadTestCase(base.BaseTestCase):

    def test_items_in_order(self):
        with transfer.Ahead(iter(range(100)), depth=3) as items:
            self.assertEqual(list(range(100)), list(items))

    def test_error_after_the_items_before_it(self):
        def items():
            yield 1
            yield 2
            raise ValueError('encoder broke')

        got = []
        with transfer.Ahead(items()) as ahead:
            error = self.assertRaises(ValueError,
                                      lambda: [got.append(i) for i in ahead])
        self.assertEqual([1, 2], got)
        self.assertEqual('encoder broke', str(error))

    def test_at_most_depth_ahead_and_close_stops_it(self):
        made = []
        closed = threading.Event()

        def items():
            try:
                for i in range(1000):
                    made.append(i)
                    yield i
            finally:
                closed.set()

        ahead = transfer.Ahead(items(), depth=2)
        it = iter(ahead)
        self.assertEqual(0, next(it))
        _wait_until(lambda: len(made) >= 3)
        time.sleep(0.05)
        # one taken, two waiting, one made and waiting for room
        self.assertLessEqual(len(made), 4)
        ahead.close()
        self.assertTrue(closed.is_set())
        self.assertLess(len(made), 10)


class NativeExecutorTestCase(base.BaseTestCase):

    def test_jobs_run_in_parallel(self):
        barrier = threading.Barrier(3, timeout=5)
        with transfer.NativeExecutor(3) as pool:
            jobs = [pool.submit(barrier.wait) for _ in range(3)]
            self.assertEqual({0, 1, 2}, {job.result() for job in jobs})

    def test_errors_are_raised_by_result(self):
        with transfer.NativeExecutor(1) as pool:
            job = pool.submit(int, 'x')
            self.assertRaises(ValueError, job.result)

    def test_leaving_cancels_jobs_not_started(self):
        gate = threading.Event()
        started = threading.Event()
        pool = transfer.NativeExecutor(1)
        first = pool.submit(lambda: started.set() or gate.wait(5))
        second = pool.submit(lambda: 'ran')
        self.assertTrue(started.wait(5))
        closer = threading.Thread(target=pool.shutdown,
                                  kwargs={'cancel_futures': True})
        closer.start()
        time.sleep(0.05)
        gate.set()
        closer.join(5)
        self.assertTrue(first.result())
        self.assertTrue(second.cancelled())
        self.assertRaises(RuntimeError, second.result)
        self.assertRaises(RuntimeError, pool.submit, int)

    def test_shutdown_cancels_while_workers_take_jobs(self):
        # Draining the queue must not wait for a job a worker took.
        for _ in range(200):
            pool = transfer.NativeExecutor(4)
            jobs = [pool.submit(len, 'x') for _ in range(20)]
            pool.shutdown(cancel_futures=True)
            self.assertTrue(all(job.done() for job in jobs))

    def test_map(self):
        with transfer.NativeExecutor(2) as pool:
            self.assertEqual([1, 4, 9], list(pool.map(lambda x: x * x,
                                                      [1, 2, 3])))


class RunTestCase(base.BaseTestCase):

    def test_result_and_error(self):
        self.assertEqual(3, transfer.run(len, 'abc'))
        self.assertRaises(ValueError, transfer.run, int, 'x')


#: Under eventlet (as in cinder-backup), the producer must progress while
#: the backup driver's green thread waits for a native thread (its
#: compression), and the hub must go on while the consumer waits for a
#: piece; without eventlet the same code runs on plain threads. The source
#: reads a (green, under eventlet) socket, as the VMware export does.
_PIPELINE = """
import os, sys
if sys.argv[1] == 'eventlet':
    import eventlet
    eventlet.monkey_patch()
import socket
import threading

from cinder_vmdk_backup.backup import transfer

left, right = socket.socketpair()
data = os.urandom(256 * 1024)


class Source(object):
    def fill(self, view):
        got = 0
        while got < len(view):
            count = left.recv_into(view[got:])
            if not count:
                raise OSError('connection closed')
            got += count

    def interrupt(self):
        left.shutdown(socket.SHUT_RDWR)


def feed():
    right.sendall(data)


if sys.argv[1] == 'eventlet':
    feeder = eventlet.spawn(feed)
    ticks = []
    ticker = eventlet.spawn(lambda: [ticks.append(eventlet.sleep(0.01))
                                     for _ in range(20)])
else:
    feeder = threading.Thread(target=feed)
    feeder.start()
with transfer.BackupReader(Source(), len(data), 64 * 1024) as reader:
    got = b''.join(iter(lambda: reader.read(32 * 1024), b''))
assert got == data, 'data differs'
# An early close while the source blocks in recv: interrupted, joined.
reader = transfer.BackupReader(Source(), 1024, 1024)
if sys.argv[1] == 'eventlet':
    closer = eventlet.spawn_after(0.2, reader.close)
else:
    closer = threading.Timer(0.2, reader.close)
    closer.start()
try:
    reader.read(1024)
    raise AssertionError('read despite no data')
except (OSError, ValueError):
    pass
closer.wait() if sys.argv[1] == 'eventlet' else closer.join()
assert not reader._thread.is_alive()
if sys.argv[1] == 'eventlet':
    ticker.wait()
    assert len(ticks) == 20
print('ok', transfer.eventlet_patched(), threading.active_count())
"""


@ddt.ddt
class PipelineModesTestCase(base.BaseTestCase):
    """The pipeline under eventlet and with native threads only."""

    @ddt.data('eventlet', 'threads')
    def test_pipeline_moves_data_and_ends_its_threads(self, mode):
        out = subprocess.run(  # nosec B603
            [sys.executable, '-c', _PIPELINE, mode], check=True,
            stdout=subprocess.PIPE, text=True, timeout=120).stdout
        self.assertEqual('ok %s' % (mode == 'eventlet'),
                         out.split('\n')[-2].rsplit(' ', 1)[0])
