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

"""Thread pools whose jobs really run in parallel, under eventlet too.

Cinder's services monkey-patch ``threading``: a
:class:`concurrent.futures.ThreadPoolExecutor` created there is a pool of
green threads, all running on the hub's one OS thread, so the codec's
(de)compression, which releases the GIL, would no longer overlap with
anything. :func:`executor` gives a pool that runs each job on eventlet's
native thread pool (``eventlet.tpool``, sized by Cinder's
``backend_native_threads_pool_size``) when ``threading`` is patched, and a
plain thread pool otherwise. Waiting for a job's result only blocks the
green thread that waits.

A job runs outside the hub's thread: it must not start green threads nor
wait on the hub thread's green primitives (events, locks, futures). It may
read a socket that no other thread uses meanwhile: a green socket then
waits on a hub of the job's own thread (eventlet's hubs are per thread),
which is how a VMware export is read off the hub. A job must not
log either: logging's module lock is a green lock once ``threading`` is
patched, and a job waiting for it while the hub's thread holds it (or the
other way round) hangs both.

:class:`LowPriorityThread` is one native thread of a caller's own, at a
lower CPU priority, for a pipeline stage that works ahead of a slower one.

A job holds one of eventlet's native threads until it returns (a job on a
:class:`LowPriorityThread` holds one while its caller waits), waits on
the network included (``backend_native_threads_pool_size``, 20 by
default, shared with Cinder's own blocking work); each of those threads
that ran a green socket read keeps a hub of its own (one ``epoll`` file
descriptor).
"""

import concurrent.futures
import importlib
import os

__all__ = ['LowPriorityThread', 'call', 'executor', 'threading_is_green']


def threading_is_green():
    """Tell whether eventlet has monkey-patched ``threading``."""
    try:
        from eventlet import patcher
    except ImportError:  # pragma: no cover - eventlet comes with Cinder
        return False
    return patcher.is_monkey_patched('thread')


#: Native idents of the running :class:`LowPriorityThread` threads.
_own_threads = set()


def _on_own_thread():
    """Tell whether this is a :class:`LowPriorityThread`'s thread.

    Such a thread is native: it runs jobs inline, as eventlet does on its
    own pool's threads (the hub's green events cannot wake it).
    """
    return _original('threading').get_ident() in _own_threads


def _waits_green():
    return threading_is_green() and not _on_own_thread()


def call(fn, /, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` on a native thread; return its result.

    Under eventlet only the calling green thread waits (on
    ``eventlet.tpool``); the hub goes on with the others. Without eventlet
    the caller's own thread is native already and runs ``fn`` itself.
    Exceptions of ``fn`` are raised to the caller.
    """
    if _waits_green():
        from eventlet import tpool
        return tpool.execute(fn, *args, **kwargs)
    return fn(*args, **kwargs)


def _original(module_name):
    """``module_name`` as it was before eventlet patched it."""
    if threading_is_green():
        from eventlet import patcher
        return patcher.original(module_name)
    return importlib.import_module(module_name)


def _wait_natively(fn, *args):
    """Call the blocking ``fn``; under eventlet, on a native thread."""
    if _waits_green():
        from eventlet import tpool
        return tpool.execute(fn, *args)
    return fn(*args)


def _close_own_hub():
    """Close the hub a green socket read made on this native thread.

    Eventlet keeps it (and its ``epoll`` descriptor) in a thread-local
    that is only freed by the garbage collector once the thread is gone.
    """
    if not threading_is_green():
        return
    from eventlet import hubs
    hub = getattr(hubs._threadlocal, 'hub', None)
    if hub is None:
        return
    del hubs._threadlocal.hub
    poll = getattr(hub, 'poll', None)
    try:
        poll.close()
    except Exception:  # nosec B110: best effort, the GC would close it
        pass


class _Job(object):
    """One call handed to a :class:`LowPriorityThread`, and its outcome.

    Not a :class:`concurrent.futures.Future`: once ``threading`` is
    patched, a future's condition is green, and setting it from the native
    thread could not wake a waiter reliably. ``done`` is a native event.
    """

    def __init__(self, fn, args, kwargs):
        self._call = (fn, args, kwargs)
        self._result = None
        self._error = None
        self.done = _original('threading').Event()

    def run(self):
        fn, args, kwargs = self._call
        try:
            self._result = fn(*args, **kwargs)
        except BaseException as exc:
            self._error = exc
        finally:
            self._call = None
            self.done.set()

    def refuse(self, error):
        self._call = None
        self._error = error
        self.done.set()

    def outcome(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._result


class LowPriorityThread(object):
    """A native thread of one caller's own, below the process's CPU priority.

    :func:`call` borrows any native thread for each job. This keeps one
    thread for a stream of jobs of one caller and runs it ``niceness``
    steps above its creator's nice value (``setpriority(2)``; Linux gives
    each thread its own), that is at a lower priority. It is meant for a
    pipeline stage that works ahead of a slower one through a buffer, such
    as decoding a VMware export while the backup driver compresses and
    hashes: where both compete for the CPU, the slower stage gets the
    larger share (the kernel weighs nice 10 at about a tenth of nice 0),
    and the thread still takes all the CPU that stage leaves, so none goes
    unused. The thread is never shared because the step cannot be undone:
    an unprivileged process may lower a thread's priority, not raise it.

    Jobs follow the rules of :func:`call`'s (no green threads, no
    logging); :func:`call` and :func:`executor` run their jobs inline
    there.
    If the priority cannot be lowered, jobs run at the creator's and
    :attr:`niceness_error` says why (for the caller to log) once the
    constructor returned.

    :param niceness: steps below the creator's priority (0 to 19; 0 keeps
        it)
    :param name: the thread's name
    """

    def __init__(self, niceness, name):
        self._niceness = niceness
        self.niceness_error = None
        self._jobs = _original('queue').SimpleQueue()
        self._closed = False
        threading = _original('threading')
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,),
                                        name=name, daemon=True)
        self._thread.start()
        try:
            _wait_natively(started.wait)
        except BaseException:
            # The caller was killed meanwhile: nobody will close it.
            self._closed = True
            self._jobs.put(None)
            raise

    def _serve(self, started):
        ident = _original('threading').get_ident()
        _own_threads.add(ident)
        try:
            try:
                if self._niceness:
                    self._lower_priority()
            finally:
                started.set()
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                job.run()
            self._refuse_left_jobs()
        finally:
            _own_threads.discard(ident)
            _close_own_hub()

    def _refuse_left_jobs(self):
        # A job put after close() (a caller racing it on another native
        # thread) must not wait forever.
        while not self._jobs.empty():
            job = self._jobs.get()
            if job is not None:
                job.refuse(RuntimeError('the thread was closed'))

    def _lower_priority(self):
        tid = _original('threading').get_native_id()
        try:
            nice = os.getpriority(os.PRIO_PROCESS, tid) + self._niceness
            os.setpriority(os.PRIO_PROCESS, tid, min(nice, 19))
        except OSError as exc:
            self.niceness_error = exc

    def call(self, fn, /, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` on the thread; return its result.

        Under eventlet only the calling green thread waits. Exceptions of
        ``fn`` are raised to the caller.
        """
        if self._closed:
            raise RuntimeError('the thread was closed')
        job = _Job(fn, args, kwargs)
        self._jobs.put(job)
        _wait_natively(job.done.wait)
        return job.outcome()

    def close(self):
        """End the thread once its current job, if any, returned.

        A caller killed while its job runs leaves the job running: make
        the job return first (close the socket it reads), then close.
        """
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        _wait_natively(self._thread.join)

    def is_alive(self):
        return self._thread.is_alive()


class TpoolExecutor(concurrent.futures.Executor):
    """Run jobs on eventlet's native threads, at most ``max_workers`` at once.

    Each job gets a green thread that waits for a free slot, hands the job
    to ``eventlet.tpool`` and settles its future with the outcome; with
    ``threading`` patched, :class:`concurrent.futures.Future` waits
    cooperatively. As with :class:`~concurrent.futures.ThreadPoolExecutor`,
    ``submit`` never blocks: jobs beyond ``max_workers`` wait their turn.

    :param max_workers: jobs running at the same time
    """

    def __init__(self, max_workers):
        from eventlet import semaphore

        self._slots = semaphore.Semaphore(max_workers)
        self._running = set()
        self._shut_down = False

    def submit(self, fn, /, *args, **kwargs):
        if self._shut_down:
            raise RuntimeError('cannot submit to a shut down executor')
        import eventlet
        from eventlet import tpool

        future = concurrent.futures.Future()

        def run():
            with self._slots:
                if not future.set_running_or_notify_cancel():
                    return
                try:
                    result = tpool.execute(fn, *args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)

        thread = eventlet.spawn(run)
        self._running.add(thread)
        thread.link(self._running.discard)
        return future

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._shut_down = True
        if wait:
            for thread in list(self._running):
                thread.wait()


class _InlineExecutor(concurrent.futures.Executor):
    """Run each job at once, in the caller's thread."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def executor(max_workers, thread_name_prefix=''):
    """A pool of ``max_workers`` threads that run in parallel.

    On a :class:`LowPriorityThread` the jobs run one after the other, in
    that thread: a pool there could not hand results back.

    :param thread_name_prefix: names the native threads where there are
        threads of our own (no effect under eventlet)
    """
    if _on_own_thread():
        return _InlineExecutor()
    if threading_is_green():
        return TpoolExecutor(max_workers)
    return concurrent.futures.ThreadPoolExecutor(
        max_workers, thread_name_prefix=thread_name_prefix)
