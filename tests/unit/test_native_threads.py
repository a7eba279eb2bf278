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

import concurrent.futures
import os
import subprocess  # nosec B404: runs this interpreter
import sys
import time
from unittest import mock

from eventlet import patcher
import fixtures
import testtools

from cinder_vmdk_backup import native_threads

# The unit tests run monkey-patched (tests/unit/vmware imports Cinder's
# monkey_patch); these are the real OS-thread primitives.
_os_threading = patcher.original('threading')


class TpoolExecutorTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if not native_threads.threading_is_green():
            self.skipTest('threading is not monkey-patched in this run')
        self.pool = native_threads.executor(2)
        self.addCleanup(self.pool.shutdown)

    def test_under_eventlet_jobs_get_a_tpool_executor(self):
        self.assertIsInstance(self.pool, native_threads.TpoolExecutor)

    def test_jobs_run_at_the_same_time_on_os_threads(self):
        # Each job waits for the other at an OS-level barrier: jobs run
        # one after the other on the hub would break it after the timeout.
        barrier = _os_threading.Barrier(2, timeout=10)
        main = _os_threading.get_ident()

        def job():
            barrier.wait()
            return _os_threading.get_ident()

        idents = [f.result(timeout=20) for f in
                  [self.pool.submit(job), self.pool.submit(job)]]
        self.assertNotIn(main, idents)
        self.assertEqual(2, len(set(idents)))

    def test_result_and_exception_reach_the_future(self):
        self.assertEqual(5, self.pool.submit(lambda a, b: a + b, 2,
                                             b=3).result())
        future = self.pool.submit(int, 'not a number')
        self.assertRaises(ValueError, future.result)

    def test_submit_after_shutdown_is_refused(self):
        self.pool.shutdown()
        self.assertRaises(RuntimeError, self.pool.submit, int, '1')

    def test_cancelled_job_never_runs(self):
        ran = []
        gate = _os_threading.Event()
        self.addCleanup(gate.set)
        pool = native_threads.executor(1)
        self.addCleanup(pool.shutdown)
        first = pool.submit(gate.wait, 10)
        second = pool.submit(ran.append, 'ran')
        self.assertTrue(second.cancel())
        gate.set()
        self.assertTrue(first.result(timeout=20))
        pool.shutdown(wait=True)
        self.assertEqual([], ran)


class ExecutorChoiceTestCase(testtools.TestCase):

    @mock.patch.object(native_threads, 'threading_is_green', autospec=True,
                       return_value=False)
    def test_plain_thread_pool_without_eventlet(self, _green):
        pool = native_threads.executor(3, 'cvb-test')
        self.addCleanup(pool.shutdown)
        self.assertIsInstance(pool, concurrent.futures.ThreadPoolExecutor)
        self.assertEqual(3, pool._max_workers)

    @mock.patch.object(patcher, 'is_monkey_patched', autospec=True)
    def test_green_means_thread_module_patched(self, is_patched):
        is_patched.return_value = True
        self.assertTrue(native_threads.threading_is_green())
        is_patched.assert_called_once_with('thread')


class CallTestCase(testtools.TestCase):

    def test_under_eventlet_runs_on_another_os_thread(self):
        if not native_threads.threading_is_green():
            self.skipTest('threading is not monkey-patched in this run')
        main = _os_threading.get_ident()
        self.assertNotEqual(main, native_threads.call(
            _os_threading.get_ident))

    def test_under_eventlet_the_hub_runs_meanwhile(self):
        # A green thread must get to run while call() waits: the job
        # returns only once it has.
        if not native_threads.threading_is_green():
            self.skipTest('threading is not monkey-patched in this run')
        import eventlet
        ran = _os_threading.Event()
        eventlet.spawn(ran.set)
        self.assertTrue(native_threads.call(ran.wait, 10))

    def test_green_socket_read_on_the_native_thread(self):
        # A green socket read by a job waits on a hub of the job's thread
        # (what the VMware export does), timeouts included.
        if not native_threads.threading_is_green():
            self.skipTest('threading is not monkey-patched in this run')
        import socket
        left, right = socket.socketpair()
        self.addCleanup(left.close)
        self.addCleanup(right.close)
        left.settimeout(0.2)
        self.assertRaises(TimeoutError, native_threads.call, left.recv, 10)
        right.sendall(b'data')
        self.assertEqual(b'data', native_threads.call(left.recv, 10))

    def test_result_and_exception_reach_the_caller(self):
        self.assertEqual(5, native_threads.call(lambda a, b: a + b, 2, b=3))
        self.assertRaises(ValueError, native_threads.call, int, 'x')

    @mock.patch.object(native_threads, 'threading_is_green', autospec=True,
                       return_value=False)
    def test_without_eventlet_runs_in_the_caller(self, _green):
        self.assertEqual(_os_threading.get_ident(),
                         native_threads.call(_os_threading.get_ident))


def _own_niceness():
    """The nice value of the calling OS thread."""
    return os.getpriority(os.PRIO_PROCESS, _os_threading.get_native_id())


class LowPriorityThreadTestCase(testtools.TestCase):

    def _thread(self, niceness=5):
        thread = native_threads.LowPriorityThread(niceness, 'cvb-test')
        self.addCleanup(thread.close)
        return thread

    def _green_socketpair(self):
        """Two connected green sockets (skips without eventlet)."""
        if not native_threads.threading_is_green():
            self.skipTest('threading is not monkey-patched in this run')
        import socket
        left, right = socket.socketpair()
        self.addCleanup(left.close)
        self.addCleanup(right.close)
        return left, right

    def test_jobs_run_on_its_own_lowered_os_thread(self):
        base = _own_niceness()
        thread = self._thread(5)
        ident, niceness = thread.call(
            lambda: (_os_threading.get_ident(), _own_niceness()))
        self.assertNotEqual(_os_threading.get_ident(), ident)
        self.assertEqual(min(base + 5, 19), niceness)
        self.assertIsNone(thread.niceness_error)
        # Every job of the caller gets the same thread.
        self.assertEqual(ident, thread.call(_os_threading.get_ident))
        # The caller's own priority is untouched.
        self.assertEqual(base, _own_niceness())

    def test_zero_keeps_the_process_priority(self):
        base = _own_niceness()
        self.assertEqual(base, self._thread(0).call(_own_niceness))

    def test_result_and_exception_reach_the_caller(self):
        thread = self._thread()
        self.assertEqual(5, thread.call(lambda a, b: a + b, 2, b=3))
        self.assertRaises(ValueError, thread.call, int, 'x')
        # The thread serves on after a job failed.
        self.assertEqual(7, thread.call(int, '7'))

    @mock.patch.object(os, 'setpriority', autospec=True,
                       side_effect=PermissionError(1, 'Operation not '
                                                   'permitted'))
    def test_priority_that_cannot_be_lowered_is_reported(self, _setpriority):
        thread = self._thread()
        self.assertIsInstance(thread.niceness_error, PermissionError)
        self.assertEqual(3, thread.call(int, '3'))

    def test_close_ends_the_thread_and_refuses_more_jobs(self):
        thread = self._thread()
        thread.call(int, '1')
        thread.close()
        self.assertFalse(thread.is_alive())
        self.assertRaises(RuntimeError, thread.call, int, '1')
        thread.close()  # twice is harmless

    def test_under_eventlet_the_hub_runs_meanwhile(self):
        if not native_threads.threading_is_green():
            self.skipTest('threading is not monkey-patched in this run')
        import eventlet
        ran = _os_threading.Event()
        eventlet.spawn(ran.set)
        self.assertTrue(self._thread().call(ran.wait, 10))

    def test_green_socket_read_on_the_thread(self):
        # What the VMware export does: the job reads a green socket, which
        # waits on a hub of the thread's own; closing the socket from the
        # caller's side ends a read that waits.
        import socket
        left, right = self._green_socketpair()
        thread = self._thread()
        right.sendall(b'data')
        self.assertEqual(b'data', thread.call(left.recv, 10))
        left.settimeout(0.2)
        self.assertRaises(TimeoutError, thread.call, left.recv, 10)
        # A read left waiting by a killed caller ends when the socket is
        # shut down; then the thread can be closed.
        import eventlet
        left.settimeout(30)
        waiter = eventlet.spawn(thread.call, left.recv, 10)
        eventlet.sleep(0.3)  # the job now waits in recv
        waiter.kill()
        started = time.monotonic()
        left.shutdown(socket.SHUT_RDWR)
        thread.close()
        self.assertLess(time.monotonic() - started, 10)
        self.assertFalse(thread.is_alive())

    def test_without_eventlet_in_a_fresh_interpreter(self):
        # The unit tests' process is monkey-patched; threading mode (the
        # benchmark's local steps, tools) gets the same thread.
        script = (
            'import os, threading\n'
            'from cinder_vmdk_backup import native_threads as n\n'
            'assert not n.threading_is_green()\n'
            't = n.LowPriorityThread(3, "x")\n'
            'me = threading.get_native_id\n'
            'tid, nice = t.call(\n'
            '    lambda: (me(), os.getpriority(os.PRIO_PROCESS, me())))\n'
            'assert tid != me(), tid\n'
            'assert nice == min(os.getpriority(os.PRIO_PROCESS, 0) + 3, 19)\n'
            't.close()\n'
            'assert not t.is_alive()\n'
            'print("ok")\n')
        result = subprocess.run(  # nosec B603: this interpreter
            [sys.executable, '-c', script], capture_output=True, text=True,
            timeout=60)
        self.assertEqual('ok\n', result.stdout, result.stderr)

    def test_pools_and_calls_inside_its_jobs_run_inline(self):
        # The hub's green events cannot wake the thread: a job that asks
        # for a pool (the codec's reader with threads > 1) or a native
        # call gets its work done in the thread itself, not a hang.
        self.useFixture(fixtures.Timeout(60, gentle=True))
        thread = self._thread()

        def job():
            pool = native_threads.executor(4)
            futures = [pool.submit(lambda i=i: (
                i, _os_threading.get_ident())) for i in range(3)]
            futures.append(pool.submit(int, 'x'))
            pool.shutdown(wait=True)
            return ([f.result() for f in futures[:3]],
                    type(futures[3].exception()),
                    native_threads.call(_os_threading.get_ident),
                    _os_threading.get_ident())

        results, error, called_in, own = thread.call(job)
        self.assertEqual([(0, own), (1, own), (2, own)], results)
        self.assertIs(ValueError, error)
        self.assertEqual(own, called_in)
        # Outside the thread, pools are pools again.
        self.assertNotIsInstance(native_threads.executor(2),
                                 native_threads._InlineExecutor)

    def test_job_queued_behind_the_close_is_refused(self):
        # A caller racing close() from another native thread gets an
        # error, not a wait without end.
        thread = self._thread()
        gate = _os_threading.Event()
        self.addCleanup(gate.set)
        first = native_threads._Job(gate.wait, (10,), {})
        thread._jobs.put(first)
        thread._jobs.put(None)
        late = native_threads._Job(int, ('1',), {})
        thread._jobs.put(late)
        gate.set()
        self.assertTrue(late.done.wait(10))
        self.assertRaises(RuntimeError, late.outcome)
        self.assertTrue(first.outcome())

    def test_the_hub_of_a_socket_read_is_closed_with_the_thread(self):
        from eventlet import hubs
        left, right = self._green_socketpair()
        thread = self._thread()
        right.sendall(b'x')

        def read():
            return left.recv(1), hubs.get_hub().poll

        data, poll = thread.call(read)
        self.assertEqual(b'x', data)
        self.assertFalse(poll.closed)
        thread.close()
        self.assertTrue(poll.closed)
