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

"""The transfer pipeline: every thread a driver-owned transfer uses.

A backup is a producer and a consumer joined by a bounded queue. The
producer is one native thread of the transfer's own that fills chunk-sized
``bytes`` objects from a plain, synchronous *source* (the decoded VMware
export, a qcow2 image read as raw); the consumer is Cinder's backup driver,
which reads them with ``read(n)`` and hashes, compresses and stores each
while the producer fills the next (:class:`BackupReader`). A restore is the
mirror image: the backup driver writes each object into a
:class:`WriteBehind`, whose thread writes it into the staging file while
the driver reads and inflates the next; the staging file is then encoded on
a thread of its own (:class:`Ahead`) while the caller sends the encoded
chunks to the hypervisor. Where a codec gains from several cores it is
handed a :class:`NativeExecutor`; :func:`run` moves one blocking call off
the caller's thread.

Nothing else in the plugin starts a thread. The sources and sinks
(``vmdk/``, ``vmware/``, ``kvm/``) are plain synchronous code: they know
nothing of threads or eventlet.

The same code runs in two worlds:

* **eventlet** (cinder-backup as Cinder 29 starts it by default): the
  consumer is a green thread. Every thread here is a *native* thread and
  every lock, event and queue between them is a native one (eventlet's
  ``patcher.original``), so the producer really runs beside the hub. A green
  thread that must wait for one (a piece not produced yet, a write not done)
  waits on eventlet's native thread pool (``eventlet.tpool``), so only that
  green thread waits; a wait that needs no blocking (the usual case with a
  full queue) costs no round trip.
* **native threads** (``OS_CINDER_DISABLE_EVENTLET_PATCHING=1``, and
  wherever eventlet is not imported): the same primitives, waited on
  directly.

Rules for code that runs on these threads, enforced by this module's
design rather than by convention: a source or sink never reports to
vCenter or logs (progress is reported through ``source.report`` on the
consumer's thread, errors travel to the consumer and are raised and logged
there). Under eventlet a green socket read on a native thread waits on a
hub of that thread's own; the thread closes it when it ends
(:func:`_close_thread_hub`).
"""

import collections
import contextlib
import importlib
import os
import sys

from cinder_vmdk_backup.backup import filled_bytes

__all__ = ['Ahead', 'BackupReader', 'NativeExecutor', 'WriteBehind',
           'eventlet_patched', 'run']

#: Largest piece produced at once: a backup driver reading huge chunks
#: (Cinder's default backup_file_size is 1.86 GiB) gets them as pieces of
#: this size joined, and the read-ahead limit stays meaningful.
MAX_PIECE = 32 * 1024 * 1024

#: A restore write larger than this is waited for before ``write`` returns:
#: objects of Cinder's default ``backup_file_size`` (1.86 GiB) would
#: otherwise keep one more of them in memory.
MAX_BEHIND = 64 * 1024 * 1024


# -- the runtime: the only place that knows about eventlet -----------------

def eventlet_patched():
    """Tell whether eventlet has monkey-patched ``threading``.

    Asked of an eventlet already imported, never importing it: a service
    started without eventlet must not load it.
    """
    patcher = sys.modules.get('eventlet.patcher')
    return patcher is not None and patcher.is_monkey_patched('thread')


def _native(module_name):
    """``threading`` or ``queue`` as it was before eventlet patched it."""
    if eventlet_patched():
        return sys.modules['eventlet.patcher'].original(module_name)
    return importlib.import_module(module_name)


def _on_green_thread():
    """Tell whether the caller is a green thread of eventlet's hub.

    Under eventlet, cinder-backup's hub (and every green thread) runs in
    the process's main thread. Any other thread is native: one of the
    pipeline's, of ``eventlet.tpool``'s, or a caller's own.
    """
    if not eventlet_patched():
        return False
    threading = _native('threading')
    return threading.get_ident() == threading.main_thread().ident


def _wait(blocking_call, *args):
    """Make a blocking native call.

    Under eventlet only the calling green thread waits (on
    ``eventlet.tpool``); the hub goes on with the others.
    """
    if _on_green_thread():
        from eventlet import tpool
        return tpool.execute(blocking_call, *args)
    return blocking_call(*args)


def _close_thread_hub():
    """Close the hub a green socket read made on this native thread.

    Eventlet keeps a thread's hub (and its ``epoll`` descriptor) in a
    thread-local that only the garbage collector frees once the thread is
    gone; eventlet has no public call to close it.
    """
    if not eventlet_patched():
        return
    hubs = sys.modules.get('eventlet.hubs')
    local = getattr(hubs, '_threadlocal', None)
    hub = getattr(local, 'hub', None)
    if hub is None:
        return
    del local.hub
    with contextlib.suppress(Exception):
        hub.poll.close()


class _Thread(object):
    """One native thread running ``target()``; its error kept for the owner.

    :param niceness: steps below the creator's CPU priority (0 keeps it).
        Linux gives each thread its own nice value; an unprivileged process
        cannot raise it again, so such a thread is never reused.
    """

    def __init__(self, target, name, niceness=0):
        self.error = None
        self.niceness_error = None
        self._target = target
        self._niceness = niceness
        self._thread = _native('threading').Thread(
            target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            if self._niceness:
                self._lower_priority(_native('threading').get_native_id())
            self._target()
        except BaseException as exc:
            self.error = exc
        finally:
            self._target = None
            _close_thread_hub()

    def _lower_priority(self, tid):
        try:
            nice = os.getpriority(os.PRIO_PROCESS, tid) + self._niceness
            os.setpriority(os.PRIO_PROCESS, tid, min(nice, 19))
        except OSError as exc:
            self.niceness_error = exc

    def is_alive(self):
        return self._thread.is_alive()

    def join(self):
        """Wait for the thread to end, whatever happens to the waiter.

        A green thread killed while it waits (a service stop) still waits,
        natively: the thread uses resources (file descriptors, a socket)
        that its owner releases once it returns, and it ends soon once its
        source or sink is closed or interrupted.
        """
        try:
            _wait(self._thread.join)
        except BaseException:
            self._thread.join()
            raise


def run(fn, /, *args, name='cvb-call', **kwargs):
    """Call ``fn(*args, **kwargs)`` on a native thread; return its result.

    For one blocking call (a measuring pass over a staging file) that must
    not hold up the caller's hub. Without eventlet ``fn`` runs in the
    caller's thread, which is native already.
    """
    if not _on_green_thread():
        return fn(*args, **kwargs)
    outcome = []
    thread = _Thread(lambda: outcome.append(fn(*args, **kwargs)), name)
    thread.join()
    if thread.error is not None:
        raise thread.error
    return outcome[0]


# -- a pool for codecs ------------------------------------------------------

class _Future(object):
    """The outcome of a job of a :class:`NativeExecutor`.

    Not a :class:`concurrent.futures.Future`: under eventlet its condition
    is green, and a native thread setting it could not wake a waiter
    reliably. This one has the part of that interface the codec uses.
    """

    def __init__(self, fn, args, kwargs):
        self._call = (fn, args, kwargs)
        self._result = None
        self._error = None
        self._cancelled = False
        self._done = _native('threading').Event()
        self._lock = _native('threading').Lock()

    def _run(self):
        with self._lock:
            if self._cancelled:
                return
            fn, args, kwargs = self._call
            self._call = None
        try:
            self._result = fn(*args, **kwargs)
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()

    def cancel(self):
        with self._lock:
            if self._call is None:
                return self._cancelled
            self._call = None
            self._cancelled = True
        self._done.set()
        return True

    def cancelled(self):
        return self._cancelled

    def done(self):
        return self._done.is_set()

    def exception(self, timeout=None):
        if not self._done.is_set():
            _wait(self._done.wait, timeout)
        return self._error

    def result(self, timeout=None):
        if not self._done.is_set():
            _wait(self._done.wait, timeout)
        if self._cancelled:
            raise RuntimeError('the job was cancelled')
        if self._error is not None:
            raise self._error
        return self._result


class NativeExecutor(object):
    """``workers`` native threads that run jobs in parallel.

    The pool a codec's deflate or inflate is handed where it gains from
    several cores. ``submit`` returns at once; jobs beyond ``workers`` wait
    their turn. Use it as a context manager: leaving cancels the jobs not
    started and ends the threads.

    :param workers: threads, at least 1
    :param name: the threads' name
    """

    def __init__(self, workers, name='cvb-pool'):
        self._jobs = _native('queue').SimpleQueue()
        self._threads = [_Thread(self._serve, '%s-%d' % (name, i))
                         for i in range(max(1, workers))]
        self._shut_down = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.shutdown(cancel_futures=True)

    def _serve(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job._run()

    def submit(self, fn, /, *args, **kwargs):
        if self._shut_down:
            raise RuntimeError('cannot submit to a shut down pool')
        job = _Future(fn, args, kwargs)
        self._jobs.put(job)
        return job

    def map(self, fn, *iterables):
        jobs = [self.submit(fn, *args) for args in zip(*iterables)]
        return (job.result() for job in jobs)

    def shutdown(self, wait=True, *, cancel_futures=False):
        if self._shut_down:
            return
        self._shut_down = True
        if cancel_futures:
            queue = _native('queue')
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.cancel()
        for _thread in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


# -- backup: a source read ahead of the backup driver -----------------------

def piece_size(size):
    """The piece a read of ``size`` bytes is produced in.

    A read of at most :data:`MAX_PIECE` is one piece; a larger one is made
    of equal pieces of at most that size, so that it takes whole pieces.
    """
    count = -(-size // MAX_PIECE)
    return -(-size // count)


def _fill_from_file(fileobj):
    """A ``fill`` for a file-like source: ``readinto``, else ``read``."""
    readinto = getattr(fileobj, 'readinto', None)

    def read_into(view):
        data = fileobj.read(len(view))
        view[:len(data)] = data
        return len(data)

    def fill(view):
        done = 0
        while done < len(view):
            count = (readinto or read_into)(view[done:])
            if not count:
                raise EOFError('the source ended %d bytes early'
                               % (len(view) - done))
            done += count
    return fill


class BackupReader(object):
    """``size`` bytes of ``source``, produced ahead on a native thread.

    The file object Cinder's backup driver reads: ``read(n)`` returns
    exactly ``n`` bytes until the end (the chunked drivers hash fixed
    blocks of each read, so a short read would shift every later block
    and spoil incremental backups), ``tell()`` the position.

    The source is plain synchronous code, called on the producer thread
    only, except where noted:

    * ``fill(view)`` (or a file's ``readinto`` or ``read``): fill all of
      ``view`` with the next ``len(view)`` bytes. ``view`` is new memory
      that reads as zeros, so a source may leave runs of zeros unwritten:
      their pages are then never touched (a thin disk costs no memory for
      its holes).
    * ``finish()``, optional: called once every byte was filled; checks
      the source's tail (a VMDK's footer) and raises if it is wrong.
    * ``report(position)``, optional: called on the *consumer's* thread
      after each read, to report progress (a vSphere lease).
    * ``interrupt()``, optional: called on the consumer's thread when the
      reader is closed early while the producer may be blocked in ``fill``
      (a network read): make that call return (shut the socket down).

    Pieces are sized for the consumer's latest read (:func:`piece_size`),
    so a backup driver reading fixed-size chunks gets each chunk as the
    very object the producer filled (no copy). An error of the source is
    raised by the ``read`` that reaches it, after the data before it.

    Memory: at most ``limit`` bytes wait for the consumer (at least one
    piece), plus the piece being filled. With ``limit`` 0 a piece is only
    produced when the consumer asks for it (no read-ahead).

    :param source: see above
    :param size: bytes to deliver
    :param limit: bytes produced ahead at most
    :param niceness: how far below the service's CPU priority the
        producer runs: where it competes for a core with the backup
        driver's compression, the driver gets the larger share
    :param name: the producer thread's name
    """

    def __init__(self, source, size, limit, niceness=0, name='cvb-backup'):
        self._source = source
        self._fill = (getattr(source, 'fill', None) or
                      _fill_from_file(source))
        self.size = size
        self._limit = max(0, limit)
        self._niceness = niceness
        self._name = name
        self._position = 0
        threading = _native('threading')
        self._changed = threading.Condition(threading.Lock())
        self._ready = collections.deque()
        self._head = 0  # bytes of the first ready piece already taken
        self._buffered = 0
        self._wanted = 0
        self._piece = None
        self._error = None
        self._at_end = False
        self._stopping = False
        self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def niceness_error(self):
        """Why the producer runs at the service's priority, or None."""
        return self._thread.niceness_error if self._thread else None

    def readable(self):
        return True

    def seekable(self):
        return False

    def tell(self):
        return self._position

    def read(self, size=-1):
        if size is None or size < 0:
            size = self.size - self._position
        size = min(size, self.size - self._position)
        if size <= 0:
            self._wait_for_end()
            return b''
        with self._changed:
            if self._stopping:
                raise ValueError('read of a closed BackupReader')
            self._piece = piece_size(size)
            if self._thread is None:
                self._thread = _Thread(self._produce, self._name,
                                       self._niceness)
        pieces = []
        wanted = size
        while wanted > 0:
            piece = self._take(wanted)
            pieces.append(piece)
            wanted -= len(piece)
        data = pieces[0] if len(pieces) == 1 else b''.join(pieces)
        self._position += len(data)
        report = getattr(self._source, 'report', None)
        if report is not None:
            report(self._position)
        if self._position >= self.size:
            self._wait_for_end()
        return data

    def close(self):
        """Stop producing; return once the producer thread has ended."""
        with self._changed:
            self._stopping = True
            self._ready.clear()
            self._buffered = 0
            self._changed.notify_all()
            busy = (self._thread is not None and not self._at_end and
                    self._error is None)
        if self._thread is None:
            return
        if busy:
            interrupt = getattr(self._source, 'interrupt', None)
            if interrupt is not None:
                interrupt()
        self._thread.join()

    # -- consumer side -------------------------------------------------------

    def _take(self, wanted):
        """Up to ``wanted`` bytes of the first ready piece."""
        with self._changed:
            ready = self._has_piece()
            if not ready:
                self._wanted = wanted
                self._changed.notify_all()
        if not ready:
            _wait(self._wait_for_piece)
        with self._changed:
            self._wanted = 0
            if self._stopping:
                raise ValueError('read of a closed BackupReader')
            if not self._ready:
                raise self._error or EOFError(
                    'the source ended at byte %d of %d' % (
                        self._position, self.size))
            taken = self._split(wanted)
            # Room for the producer.
            self._changed.notify_all()
            return taken

    def _has_piece(self):
        return (bool(self._ready) or self._at_end or
                self._error is not None or self._stopping)

    def _wait_for_piece(self):
        with self._changed:
            while not self._has_piece():
                self._changed.wait()

    def _split(self, wanted):
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

    def _wait_for_end(self):
        """After the last byte: wait for the source's tail check."""
        if self._thread is None:
            if self.size:
                return
            # Nothing to read: the source's tail is still to be checked.
            self._thread = _Thread(self._produce, self._name)
        with self._changed:
            done = self._at_end or self._error is not None
        if not done:
            _wait(self._wait_for_piece)
        with self._changed:
            if self._error is not None:
                raise self._error

    # -- producer side -------------------------------------------------------

    def _may_produce(self, piece):
        if self._stopping:
            return True
        if self._limit:
            return (not self._buffered or
                    self._buffered + piece <= self._limit)
        return not self._buffered and self._wanted > 0

    def _produce(self):
        produced = 0
        try:
            while produced < self.size:
                with self._changed:
                    while True:
                        # The consumer's read size may change meanwhile.
                        piece = min(self._piece, self.size - produced)
                        if self._may_produce(piece):
                            break
                        self._changed.wait()
                    if self._stopping:
                        return
                data = filled_bytes.filled(piece, self._fill)
                produced += piece
                with self._changed:
                    if self._stopping:
                        return
                    self._ready.append(data)
                    self._buffered += piece
                    self._changed.notify_all()
                del data
            finish = getattr(self._source, 'finish', None)
            if finish is not None:
                finish()
            with self._changed:
                self._at_end = True
                self._changed.notify_all()
        except BaseException as exc:
            with self._changed:
                self._error = exc
                self._changed.notify_all()


# -- restore: writes behind the backup driver, encoding ahead of the upload --

class WriteBehind(object):
    """A file-like writer that writes into ``target`` on a native thread.

    The backup driver's restore writes each object here and goes on
    reading and inflating the next while this writes it. At most one write
    is in flight: its data stays referenced until it is written, so the
    caller must not change it (a write of more than :data:`MAX_BEHIND`
    bytes is waited for). Writes keep their order, and each lands where
    the position was when it was made. An error of a write is raised by
    the call that finds it: the next ``write``, ``seek`` or ``flush``, or
    :meth:`close`, which waits for the last write.

    ``flush`` does not wait (Cinder's drivers call it after every object):
    only :meth:`close` promises the data is in the target. ``fileno()``
    raises :class:`io.UnsupportedOperation`, so backup drivers skip their
    ``fsync`` per object.

    :param target: file-like object with ``seek``, ``write`` and ``tell``
        (a :class:`~.staging.SparseStagingWriter`)
    """

    def __init__(self, target, name='cvb-restore-write'):
        self._target = target
        self._pos = target.tell()
        self._pool = NativeExecutor(1, name)
        self._pending = None
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            # The caller's error wins; the write's, if any, is dropped.
            with contextlib.suppress(Exception):
                self.close()

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

    def seek(self, offset, whence=os.SEEK_SET):
        self._check_open()
        if whence == os.SEEK_SET:
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
        import io
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

    def _check_open(self):
        if self._closed:
            raise ValueError('write to a closed WriteBehind')


class Ahead(object):
    """The items of ``iterable``, produced ahead on a native thread.

    For an encoder (the VMDK writer's ``iter_chunks()``) that works while
    the caller sends what it made. At most ``depth`` items wait. Iterate
    it inside its context: leaving stops the producer (after the item it
    is making) and waits for it. An error of the iterable is raised where
    the iteration reaches it.

    :param iterable: any iterable; iterated on the producer thread only
    :param depth: items made ahead at most (at least 1)
    :param niceness: see :class:`BackupReader`
    """

    def __init__(self, iterable, depth=4, niceness=0, name='cvb-ahead'):
        self._iterable = iterable
        self._depth = max(1, depth)
        threading = _native('threading')
        self._changed = threading.Condition(threading.Lock())
        self._ready = collections.deque()
        self._error = None
        self._at_end = False
        self._stopping = False
        self._thread = _Thread(self._produce, name, niceness)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __iter__(self):
        while True:
            with self._changed:
                ready = bool(self._ready) or self._at_end or self._error
            if not ready:
                _wait(self._wait_for_item)
            with self._changed:
                if self._ready:
                    item = self._ready.popleft()
                    self._changed.notify_all()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield item

    def close(self):
        with self._changed:
            self._stopping = True
            self._ready.clear()
            self._changed.notify_all()
        self._thread.join()

    def _wait_for_item(self):
        with self._changed:
            while not (self._ready or self._at_end or self._error):
                self._changed.wait()

    def _produce(self):
        try:
            for item in self._iterable:
                with self._changed:
                    while (len(self._ready) >= self._depth and
                           not self._stopping):
                        self._changed.wait()
                    if self._stopping:
                        return
                    self._ready.append(item)
                    self._changed.notify_all()
                del item
            with self._changed:
                self._at_end = True
                self._changed.notify_all()
        except BaseException as exc:
            with self._changed:
                self._error = exc
                self._changed.notify_all()
        finally:
            close = getattr(self._iterable, 'close', None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
