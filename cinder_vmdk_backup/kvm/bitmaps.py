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

"""Persistent qcow2 dirty bitmaps: one per backup, named after it.

Each backup of a qcow2 volume leaves an enabled persistent dirty bitmap
``cvb-<backup id>`` in the image, created no later than the backup's point
in time; the next incremental reads only what that bitmap marks.

What QEMU 7.2 and libvirt 9.0 do (checked on this machine; the functional
tests in ``tests/functional/kvm/test_bitmaps.py`` hold them to it):

Offline (:mod:`.offline`: hard link, overlay, rename; ``qemu-img commit``)
    The bitmap is added with ``qemu-img bitmap --add`` before the hard
    link. While frozen, the overlay takes the writes and the frozen image
    (backing, opened read-only) is not touched. ``qemu-img commit`` opens
    the base read-write, which loads its enabled bitmaps for writing; the
    commit writes every cluster allocated in the overlay into the base
    through QEMU's block layer, so the base's bitmap marks each of them.
    No explicit propagation (a same-named bitmap in the overlay and
    ``qemu-img bitmap --merge``) is needed; it would mark the same
    clusters.

Online (a running libvirt domain; disk-only external snapshot, then
``blockcommit --active --pivot``)
    Libvirt has no API for a bare persistent bitmap (its checkpoints keep
    their own metadata per domain, which would then have to agree with
    bitmaps removed offline), and a disk-only snapshot cannot carry one.
    The bitmap is added through the monitor (QMP
    ``block-dirty-bitmap-add`` ``persistent: true`` on the active layer's
    node, via ``qemuMonitorCommand``; libvirt marks the domain tainted
    ``custom-monitor`` in its log, nothing else) just *before* the
    snapshot: the writes between the two are marked too (a superset).
    At the snapshot libvirt 9.0 itself creates a same-named bitmap in the
    new overlay (``query-named-block-nodes`` shows it there, recording);
    the base becomes a read-only backing node, QEMU stores the bitmap into
    the file (flags ``auto``, not ``in-use``), and it stops changing. The
    active commit reopens the base read-write, copies every cluster of
    the overlay into it and mirrors new guest writes into it until the
    pivot; after the pivot the guest writes the base directly, and the
    base's bitmap records it all (whether through the commit's own writes
    or libvirt merging the overlay's bitmap, the result is the same and
    is what is tested). Measured: a TCG guest writing without pause
    through two cycles; every sector that differs between the image
    frozen at one backup and the image frozen at the next lies in the
    first bitmap's dirty ranges, also when the overlay of a killed
    backup is merged by the leftover cleaner. While QEMU runs the image
    its bitmaps carry ``in-use`` (loaded for writing); a graceful stop
    clears it, a killed QEMU leaves it (inconsistent, see below).

Reading the dirty ranges (:func:`dirty_ranges`)
    ``qemu-nbd --read-only --bitmap NAME`` exports the frozen image with
    the bitmap as the ``qemu:dirty-bitmap:NAME`` meta context on a unix
    socket in a private 0700 directory; ``qemu-img map --output=json
    --image-opts driver=nbd,...,x-dirty-bitmap=qemu:dirty-bitmap:NAME``
    reports the bitmap in place of the allocation: a *dirty* extent is
    ``"data": false`` (and ``"present": false``), a clean one
    ``"data": true``. Online, the frozen image is the domain's read-only
    backing file: qemu-nbd opens it without ``--force-share`` (QEMU
    shares reading of a backing node). This needs nothing but qemu-utils
    (libvirt's backup API in pull mode would need a running domain and
    libvirt's checkpoints, and would not cover offline volumes), and it
    reads only the bitmap's metadata, a few MiB for a TiB: 0.2-0.3 s for
    a 1 TiB image with 201 dirty extents, qemu-nbd's start included.
    qemu-img's output is parsed line by line (one extent a line); more
    than :data:`MAX_RANGES` separate ranges is a doubt (memory bound).

Inconsistent bitmaps, resize, granularity
    A program that loaded a bitmap for writing and died without storing it
    (a QEMU killed with ``SIGKILL``) leaves the ``in-use`` flag in the
    file: the bitmap missed writes. ``qemu-nbd`` then refuses it
    ("Bitmap 'x' is inconsistent and cannot be used"); on a frozen image
    nobody writes, so ``in-use`` there always means inconsistent, and
    :func:`dirty_ranges` says so before trying. ``qemu-img bitmap
    --remove`` removes an inconsistent bitmap. ``qemu-img resize`` grows
    or shrinks an image with consistent bitmaps (they are resized; a grown
    area is not marked dirty, so a size change is a doubt) but refuses an
    image with an inconsistent one: :func:`.qemu_img.resize` removes
    inconsistent bitmaps of ours first.
    Granularity: 64 KiB (:data:`GRANULARITY`), qcow2's default cluster
    size: finer than the backup's hash block (32 KiB blocks are read in
    64 KiB pairs at worst), a bitmap of 2 MiB per TiB in the image, and
    the overhead of marking is per cluster anyway.
"""

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import subprocess  # nosec B404
import tempfile
import time

from oslo_log import log as logging
from oslo_serialization import jsonutils
from oslo_utils import units

from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import qemu_img

LOG = logging.getLogger(__name__)

PREFIX = qemu_img.OUR_BITMAP_PREFIX
#: Bytes of guest data one bit of a bitmap stands for.
GRANULARITY = 64 * units.Ki
QEMU_NBD = 'qemu-nbd'
#: Private directories of the qemu-nbd servers, in the lock directory.
NBD_DIR_PREFIX = 'cvb-nbd-'
_SOCKET = 'sock'
_PIDFILE = 'pid'
_LOCKFILE = 'lock'
#: Seconds a qemu-nbd has to end after SIGTERM before SIGKILL.
_STOP_TIMEOUT = 5.0


class BitmapUnusable(errors.KvmError):
    """A bitmap cannot tell what changed: read everything.

    :ivar reason: why, for the one log line of the backup
    """

    def __init__(self, reason, path=None):
        super().__init__(reason, path=path)
        self.reason = reason


def name_for(backup_id):
    """The bitmap name of a backup."""
    return '%s%s' % (PREFIX, backup_id)


def list_ours(path):
    """Names of the driver's bitmaps in the image (any state), sorted."""
    return sorted(b['name'] for b in qemu_img.bitmaps(path)
                  if b.get('name', '').startswith(PREFIX))


def dirty_ranges(frozen_read_path, name, size):
    """Return the ranges the bitmap ``name`` marks, ``[(offset, length)]``.

    Ascending, merged, within ``[0, size)``, aligned to the bitmap's
    granularity (the last one may end at ``size``).

    :param frozen_read_path: the frozen image (nobody writes it)
    :param size: the volume's size the caller expects; another virtual
        size means the volume was resized since
    :raises BitmapUnusable: missing, inconsistent, size changed, or
        qemu-nbd/qemu-img failed; the reason says which
    """
    try:
        data = qemu_img.info(frozen_read_path)
    except errors.QemuImgError as exc:
        raise BitmapUnusable('cannot read the image: %s' % exc,
                             path=frozen_read_path)
    found = [b for b in ((data.get('format-specific') or {}).get('data')
                         or {}).get('bitmaps') or []
             if b.get('name') == name]
    if not found:
        raise BitmapUnusable('the image has no dirty bitmap %s' % name,
                             path=frozen_read_path)
    if 'in-use' in found[0].get('flags', ()):
        raise BitmapUnusable(
            'the dirty bitmap %s is marked in use: inconsistent (the '
            'image was written by a program that did not store the bitmap '
            'back), or loaded by a QEMU that runs the image' % name,
            path=frozen_read_path)
    if 'auto' not in found[0].get('flags', ()):
        raise BitmapUnusable('the dirty bitmap %s is disabled' % name,
                             path=frozen_read_path)
    virtual = int(data.get('virtual-size', -1))
    if virtual != int(size):
        raise BitmapUnusable(
            'the image is %d bytes, not %d: it was resized since the '
            'dirty bitmap %s was made' % (virtual, size, name),
            path=frozen_read_path)
    try:
        with _nbd_server(frozen_read_path, name) as (directory, socket):
            # closing(): qemu-img map is stopped before qemu-nbd also when
            # the ranges are refused half-way.
            with contextlib.closing(_map_extents(
                    frozen_read_path, directory, socket, name)) as extents:
                return _ranges(extents, int(size), name, frozen_read_path)
    except BitmapUnusable:
        raise
    except (errors.KvmError, OSError, ValueError, KeyError,
            TypeError) as exc:
        raise BitmapUnusable('reading the dirty bitmap %s failed: %s'
                             % (name, exc), path=frozen_read_path)


def _map_extents(path, directory, socket, name):
    """Yield the extents ``qemu-img map`` reports, one dict each.

    qemu-img prints one extent a line; they are parsed as they come, so
    that a bitmap of millions of extents never sits in memory as text.
    """
    cmd = qemu_img.limited([
        qemu_img.QEMU_IMG, 'map', '--output=json', '--image-opts',
        'driver=nbd,server.type=unix,server.path=%s,'
        'x-dirty-bitmap=qemu:dirty-bitmap:%s' % (socket, name)])
    with open(os.path.join(directory, 'map-stderr'), 'w+b') as err:
        try:
            # No shell: the arguments go to qemu-img as they are.
            proc = subprocess.Popen(  # nosec B603
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=err, cwd=directory)
        except OSError as exc:
            raise errors.QemuImgError('qemu-img map of %s could not run: '
                                      '%s' % (path, exc), path=path)
        try:
            for line in proc.stdout:
                text = line.strip().lstrip(b'[').rstrip(b',').rstrip(b']')
                if text:
                    yield jsonutils.loads(text)
            if proc.wait() != 0:
                err.seek(0)
                raise errors.QemuImgError('qemu-img map of %s failed: %s' % (
                    path, ' '.join(err.read().decode(errors='replace')
                                   .split()) or proc.returncode), path=path)
        finally:
            _stop_child(proc)
            proc.stdout.close()


#: More separate dirty ranges than this: read everything (memory bound).
MAX_RANGES = 1 << 18


def _ranges(extents, size, name, path):
    out = []
    at = 0
    for extent in extents:
        start, length = int(extent['start']), int(extent['length'])
        if start != at:
            raise BitmapUnusable('the map of dirty bitmap %s has a gap at '
                                 '%d' % (name, at), path=path)
        at = start + length
        if extent.get('data', True):
            continue        # clean
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + length)
        elif len(out) >= MAX_RANGES:
            raise BitmapUnusable('the dirty bitmap %s has more than %d '
                                 'separate dirty ranges' % (name, MAX_RANGES),
                                 path=path)
        else:
            out.append((start, length))
    if at < size:
        raise BitmapUnusable('the map of dirty bitmap %s ends at %d, not '
                             '%d' % (name, at, size), path=path)
    return [(o, min(length, size - o)) for o, length in out if o < size]


@contextlib.contextmanager
def _nbd_server(path, name):
    """Run a read-only qemu-nbd of ``path`` exporting bitmap ``name``.

    Yields ``(directory, socket path)``. The private (0700) directory
    holds the socket, the pid file, qemu-nbd's error output and a lock
    held meanwhile: the leftover cleaner (:func:`stop_leftover_servers`)
    stops a server whose owner died, never a server in use. It lives in
    the volume's lock directory, or in the system's temporary directory
    when the socket's path would be too long there (107 bytes at most).

    qemu-nbd runs as this process's child (so that it is reaped; not
    ``--fork``, whose daemon only init reaps) and writes its pid file
    once it has opened the image and exported it: that is when it is
    ready. It ends by itself when the one client disconnects; it is
    stopped by its PID on every path anyway.
    """
    directory = tempfile.mkdtemp(prefix=NBD_DIR_PREFIX,
                                 dir=_server_parent(path))
    lock_fd = None
    proc = None
    try:
        lock_fd = os.open(os.path.join(directory, _LOCKFILE),
                          os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        pidfile = os.path.join(directory, _PIDFILE)
        socket = os.path.join(directory, _SOCKET)
        cmd = [QEMU_NBD, '--read-only', '--format=qcow2',
               '--bitmap=%s' % name, '--socket=%s' % socket,
               '--pid-file=%s' % pidfile, path]
        with open(os.path.join(directory, 'stderr'), 'w+b') as err:
            os.chmod(err.name, 0o600)
            try:
                # No shell: the arguments go to qemu-img as they are.
                proc = subprocess.Popen(  # nosec B603
                    qemu_img.limited(cmd), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, cwd=directory)
            except OSError as exc:
                raise errors.QemuImgError('qemu-nbd of %s could not run: %s'
                                          % (path, exc), path=path)
            try:
                _wait_ready(proc, pidfile, err, path)
                yield directory, socket
            finally:
                _stop_child(proc)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)


def _wait_ready(proc, pidfile, err, path):
    deadline = time.monotonic() + _START_TIMEOUT
    while not os.path.exists(pidfile):
        if proc.poll() is not None:
            err.seek(0)
            text = ' '.join(err.read().decode(errors='replace').split())
            raise errors.QemuImgError('qemu-nbd of %s failed: %s' % (
                path, text or 'exit code %s' % proc.returncode), path=path)
        if time.monotonic() > deadline:
            raise errors.QemuImgError('qemu-nbd of %s did not start within '
                                      '%s s' % (path, _START_TIMEOUT),
                                      path=path)
        time.sleep(0.005)


def _stop_child(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: Longest socket path that fits ``sockaddr_un`` with room to spare.
_MAX_SOCKET_PATH = 100
#: Seconds qemu-nbd has to open the image and export it.
_START_TIMEOUT = 60.0


def _server_parent(path):
    locks = os.path.dirname(naming.lock_path(os.path.abspath(path)))
    longest = os.path.join(locks, NBD_DIR_PREFIX + 'x' * 8, _SOCKET)
    if len(longest.encode()) <= _MAX_SOCKET_PATH:
        os.makedirs(locks, mode=0o700, exist_ok=True)
        return locks
    return tempfile.gettempdir()


def _stop(directory):
    """Stop the qemu-nbd whose pid file is in ``directory``, if it runs."""
    pid = _server_pid(directory)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + _STOP_TIMEOUT
        time.sleep(0.01)


def _server_pid(directory):
    """The PID in the pid file, if that process is qemu-nbd serving it."""
    pidfile = os.path.join(directory, _PIDFILE)
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip() or 0)
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            cmdline = f.read().split(b'\0')
    except (OSError, ValueError):
        return None
    if (not pid or QEMU_NBD.encode() not in [os.path.basename(c)
                                             for c in cmdline]
            or ('--pid-file=%s' % pidfile).encode() not in cmdline):
        return None
    return pid


def _alive(pid):
    """Whether ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ('Z', 'X')


def stop_leftover_servers(volumes_dir):
    """Stop qemu-nbd servers whose owner died; remove their directories.

    :returns: human-readable lines of what was done
    """
    done = []
    for parent in (os.path.join(volumes_dir, naming.LOCK_DIR),
                   tempfile.gettempdir()):
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            continue
        done += _stop_leftovers_in(parent, names)
    return done


def _stop_leftovers_in(parent, names):
    done = []
    for entry in sorted(names):
        directory = os.path.join(parent, entry)
        if not (entry.startswith(NBD_DIR_PREFIX)
                and os.path.isdir(directory)):
            continue
        age = _age(directory)       # before the lock file is made here
        try:
            lock_fd = os.open(os.path.join(directory, _LOCKFILE),
                              os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    continue        # its owner reads the bitmap now
                raise
            pid = _server_pid(directory)
            if pid is None and age < _YOUNG:
                continue            # being set up: its owner locks it next
            _stop(directory)
            shutil.rmtree(directory, ignore_errors=True)
            done.append('qemu-nbd %s of a dead process stopped (%s)'
                        % (pid, directory) if pid else
                        'directory %s of a dead process removed'
                        % directory)
        finally:
            os.close(lock_fd)
    return done


#: Seconds during which a server directory without a server is left
#: alone by the leftover cleaner (its owner may be setting it up).
_YOUNG = 60.0


def _age(directory):
    try:
        return time.time() - os.stat(directory).st_mtime
    except OSError:
        return 0.0


def add(path, name, conn=None, path_map=None):
    """Add the enabled persistent bitmap ``name`` to the image now.

    Offline with qemu-img (nobody may have the image open), or through the
    monitor of the running domain whose active layer ``path`` is (in
    either view of ``path_map``, a :class:`~.paths.PathMap`). One of the
    same name is replaced.
    """
    use = _running_use(path, conn, path_map)
    if use is not None:
        domains.add_bitmap(use.domain, use.seen(path), name, GRANULARITY)
        return
    if name in list_ours(path):
        qemu_img.bitmap_remove(path, name)
    qemu_img.bitmap_add(path, name, GRANULARITY)


def remove(path, name, use=None):
    """Remove one bitmap of the image at ``path``.

    Through the monitor of ``use``'s domain when a running domain has the
    image open (``use``), else with qemu-img.

    :raises KvmError: it could not be removed
    """
    if use is not None:
        domains.remove_bitmap(use.domain, use.seen(path), name)
    else:
        qemu_img.bitmap_remove(path, name)


def prune(path, keep_names, conn=None, path_map=None):
    """Remove the driver's bitmaps of ``path`` not in ``keep_names``.

    Call it with the image not frozen (it takes the image's lock). A
    running domain's image is changed through its monitor, any other with
    qemu-img. ``path_map``: where the domains see it
    (:class:`~.paths.PathMap`; None: at its local path).

    :returns: the names removed
    :raises KvmError: one could not be removed (the others were)
    """
    keep = set(keep_names)
    removed = []
    failures = []
    with naming.image_lock(path, timeout=60) as taken:
        if not taken:
            raise errors.KvmError('Image %s is busy; its dirty bitmaps were '
                                  'not pruned' % path, path=path)
        use = _running_use(path, conn, path_map)
        if use is not None:
            names = sorted(b['name'] for b in domains.node_bitmaps(
                use.domain, use.seen(path))
                if b.get('name', '').startswith(PREFIX))
        else:
            names = list_ours(path)
        for name in names:
            if name in keep:
                continue
            try:
                remove(path, name, use)
            except errors.KvmError as exc:
                failures.append('%s: %s' % (name, exc))
                continue
            removed.append(name)
    if removed:
        LOG.debug('Removed dirty bitmaps %(names)s of %(path)s.',
                  {'names': ', '.join(removed), 'path': path})
    if failures:
        raise errors.KvmError('Could not remove dirty bitmap(s) of %s: %s'
                              % (path, '; '.join(failures)), path=path)
    return removed


def _running_use(path, conn, path_map=None):
    """The running domain's use of ``path`` as its active layer, or None.

    :raises ImageInUseError: a running domain uses it otherwise (as a
        backing file, or shared): its bitmaps are not ours to change now
    """
    if conn is None:
        return None
    uses = domains.users(conn, [path], path_map=path_map).get(path) or []
    if not uses:
        return None
    if len(uses) > 1 or uses[0].top != os.path.realpath(path):
        raise errors.ImageInUseError(
            'Image %s is used by domain(s) %s other than as the active '
            'layer of one disk; its dirty bitmaps are left alone'
            % (path, ', '.join(u.domain_name for u in uses)), path=path)
    return uses[0]
