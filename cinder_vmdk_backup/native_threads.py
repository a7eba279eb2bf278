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
which is how :func:`call` reads a VMware export off the hub. A job must not
log either: logging's module lock is a green lock once ``threading`` is
patched, and a job waiting for it while the hub's thread holds it (or the
other way round) hangs both.

A job holds one of eventlet's native threads until it returns, waits on
the network included (``backend_native_threads_pool_size``, 20 by
default, shared with Cinder's own blocking work); each of those threads
that ran a green socket read keeps a hub of its own (one ``epoll`` file
descriptor).
"""

import concurrent.futures

__all__ = ['call', 'executor', 'threading_is_green']


def threading_is_green():
    """Tell whether eventlet has monkey-patched ``threading``."""
    try:
        from eventlet import patcher
    except ImportError:  # pragma: no cover - eventlet comes with Cinder
        return False
    return patcher.is_monkey_patched('thread')


def call(fn, /, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` on a native thread; return its result.

    Under eventlet only the calling green thread waits (on
    ``eventlet.tpool``); the hub goes on with the others. Without eventlet
    the caller's own thread is native already and runs ``fn`` itself.
    Exceptions of ``fn`` are raised to the caller.
    """
    if threading_is_green():
        from eventlet import tpool
        return tpool.execute(fn, *args, **kwargs)
    return fn(*args, **kwargs)


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


def executor(max_workers, thread_name_prefix=''):
    """A pool of ``max_workers`` threads that run in parallel.

    :param thread_name_prefix: names the native threads where there are
        threads of our own (no effect under eventlet)
    """
    if threading_is_green():
        return TpoolExecutor(max_workers)
    return concurrent.futures.ThreadPoolExecutor(
        max_workers, thread_name_prefix=thread_name_prefix)
