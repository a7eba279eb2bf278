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

"""A thin wrapper of the qemu-img commands the qcow2 driver uses.

qemu-img is the reference implementation of qcow2: the driver never parses
or writes qcow2 structures itself. Every command runs without a shell;
commands that parse an image header (``info``, ``map``, ``check``) run
under resource limits, as Cinder's image_utils does, so that a hostile or
damaged image cannot exhaust the host.
"""

import os
import shutil

from oslo_concurrency import processutils
from oslo_serialization import jsonutils
from oslo_utils import units

from cinder_vmdk_backup.kvm import errors

QEMU_IMG = 'qemu-img'

#: Limits for commands that parse an image's metadata.
_PARSE_LIMITS = processutils.ProcessLimits(cpu_time=60,
                                           address_space=2 * units.Gi)

#: util-linux's prlimit applies the same limits without starting a Python
#: interpreter per command (oslo's prlimit wrapper costs ~0.1 s a call).
_PRLIMIT = shutil.which('prlimit')

#: Text qemu-img prints for images whose metadata it refuses.
_CORRUPT_MARKERS = ('corrupt', 'Image is not in qcow2 format',
                    'Unsupported qcow2 version', 'invalid',
                    'Could not read L1 table', 'Could not read snapshots')


#: processutils' log level for commands that must not log: below every
#: level a service logs at.
_UNLOGGED = 1


def _run(path, *args, limits=None, quiet=False):
    """Run ``qemu-img *args`` and return its standard output.

    :param path: the image the command is about, named in errors
    :param quiet: log nothing (for a command run on the transfer
        pipeline's producer thread, which must not log)
    :raises ImageCorruptError: qemu-img refuses the image's metadata
    :raises QemuImgError: any other failure
    """
    cmd = (QEMU_IMG,) + tuple(str(a) for a in args)
    try:
        out, _err = _execute(cmd, limits,
                             loglevel=_UNLOGGED if quiet else None)
    except processutils.ProcessExecutionError as exc:
        raise _error(path, args[0], exc.stderr or exc.stdout or str(exc),
                     exc.exit_code)
    except OSError as exc:
        raise errors.QemuImgError(
            'qemu-img %s of %s could not run: %s' % (args[0], path, exc),
            path=path)
    return out


def _execute(cmd, limits, check_exit_code=0, loglevel=None):
    if limits is not None and _PRLIMIT:
        cmd = (_PRLIMIT, '--as=%d' % limits.address_space,
               '--cpu=%d' % limits.cpu_time) + tuple(cmd)
        limits = None
    kwargs = {} if loglevel is None else {'loglevel': loglevel}
    return processutils.execute(*cmd, prlimit=limits,
                                check_exit_code=check_exit_code, **kwargs)


def _error(path, command, text, exit_code=None):
    text = ' '.join((text or '').split()) or 'exit code %s' % exit_code
    cls = errors.QemuImgError
    if any(marker.lower() in text.lower() for marker in _CORRUPT_MARKERS):
        cls = errors.ImageCorruptError
    return cls('qemu-img %s of %s failed: %s' % (command, path, text),
               path=path)


def limited(cmd):
    """``cmd`` under the metadata-parsing limits (for a long-running one).

    :raises QemuImgError: util-linux's prlimit is missing
    """
    if not _PRLIMIT:
        raise errors.QemuImgError('prlimit (util-linux) is missing; it is '
                                  'needed to run %s' % cmd[0])
    limits = _PARSE_LIMITS
    return [_PRLIMIT, '--as=%d' % limits.address_space,
            '--cpu=%d' % limits.cpu_time] + list(cmd)


def info(path, backing_chain=False):
    """Return ``qemu-img info`` of ``path`` as a dict (a list with a chain).

    Runs with ``--force-share``: reading an image's header is safe while a
    QEMU process has the image open, and the driver needs to look at images
    that running domains use.
    """
    args = ['info', '--output=json', '--force-share']
    if backing_chain:
        args.append('--backing-chain')
    return jsonutils.loads(_run(path, *(args + [path]),
                                limits=_PARSE_LIMITS))


def virtual_size(path):
    """Return the guest-visible size of the image at ``path`` in bytes."""
    return int(info(path)['virtual-size'])


def backing_file(path):
    """Return the absolute path of the image's backing file, or None."""
    data = info(path)
    name = data.get('full-backing-filename') or data.get('backing-filename')
    if not name:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(path), name))


def check(path):
    """Check the image's consistency; leaked clusters are not an error.

    :raises ImageCorruptError: when qemu-img finds corruption
    """
    cmd = ['check', '--output=json', '--force-share', path]
    try:
        _execute((QEMU_IMG,) + tuple(cmd), _PARSE_LIMITS,
                 check_exit_code=[0, 3])
    except processutils.ProcessExecutionError as exc:
        if exc.exit_code == 2:
            raise errors.ImageCorruptError(
                'qemu-img check of %s found corruption: %s'
                % (path, _corruptions(exc.stdout)), path=path)
        raise _error(path, 'check', exc.stderr or exc.stdout,
                     exc.exit_code)


def _corruptions(stdout):
    try:
        report = jsonutils.loads(stdout)
    except ValueError:
        return 'unreadable report'
    return '%s corrupt cluster(s)' % report.get('corruptions', '?')


def map_extents(path):
    """Return the image's extents as ``qemu-img map --output=json`` does.

    Each extent is a dict with ``start``, ``length``, ``depth`` (index in
    the backing chain), ``data``, ``zero`` and, where the data sits
    uncompressed in a file of the chain, ``offset`` (in that file).
    """
    return jsonutils.loads(_run(path, 'map', '--output=json',
                                '--force-share', path,
                                limits=_PARSE_LIMITS))


def create(path, size_bytes=None, backing=None, backing_format='qcow2'):
    """Create a qcow2 image, empty or as an overlay of ``backing``.

    :param backing: the backing image's file name; stored as given, so a
        bare file name keeps the chain valid when the directory moves
    """
    args = ['create', '-q', '-f', 'qcow2']
    if backing:
        args += ['-b', backing, '-F', backing_format]
    args.append(path)
    if size_bytes is not None:
        args.append(int(size_bytes))
    _run(path, *args)


def convert(source, dest, source_format, dest_format='qcow2',
            sparse=True, cluster_size=None):
    """Copy the guest data of ``source`` into a new image ``dest``.

    Zero regions of the source are not written (the new image is sparse).

    :param cluster_size: the new qcow2 image's cluster size in bytes
        (qemu-img's default, 64 KiB, when None)
    """
    args = ['convert', '-q', '-f', source_format, '-O', dest_format]
    if not sparse:
        args += ['-S', '0']
    if cluster_size:
        args += ['-o', 'cluster_size=%d' % int(cluster_size)]
    args += [source, dest]
    _run(dest, *args)


def convert_window(source, source_format, offset, length, dest):
    """Write ``length`` bytes of guest data at ``offset`` to raw ``dest``.

    Uses the ``raw`` format driver's offset/size window over the image, so
    that only that region is decoded (used for compressed or encrypted
    clusters, which have no plain host offset).
    """
    spec = {'driver': 'raw', 'offset': int(offset), 'size': int(length),
            'file': {'driver': source_format,
                     'file': {'driver': 'file', 'filename': source}}}
    _run(source, 'convert', '-q', '-U', '-O', 'raw', '-n',
         'json:' + jsonutils.dumps(spec), dest, quiet=True)


def commit(path, rate=None):
    """Commit the overlay at ``path`` into its backing file.

    :param rate: bytes per second at most (``-r``), or None for no limit
    """
    limit = () if rate is None else ('-r', str(int(rate)))
    _run(path, 'commit', '-q', '-f', 'qcow2', *limit, path)


def rebase_unsafe(path, backing, backing_format='qcow2'):
    """Rewrite the backing file name in the header of the image at ``path``.

    Only the name changes (``rebase -u``): ``backing`` must be the same
    data under another name (the same file by its local name, say).
    """
    _run(path, 'rebase', '-q', '-u', '-f', 'qcow2', '-F', backing_format,
         '-b', backing, path)


def resize(path, size_bytes):
    """Grow the image at ``path`` to ``size_bytes`` guest bytes.

    QEMU refuses to resize an image that holds an inconsistent persistent
    dirty bitmap. Such a bitmap of the driver's (``cvb-`` prefix) is of
    no use any more (a backup would read everything anyway), so it is
    removed and the resize retried; anybody else's is left, and the
    error raised.
    """
    try:
        _run(path, 'resize', '-q', '-f', 'qcow2', path, int(size_bytes))
        return
    except errors.QemuImgError as exc:
        if 'inconsistent' not in str(exc):
            raise
        ours = [b['name'] for b in bitmaps(path)
                if b['name'].startswith(OUR_BITMAP_PREFIX)
                and 'in-use' in b.get('flags', ())]
        if not ours:
            raise
    for name in ours:
        bitmap_remove(path, name)
    _run(path, 'resize', '-q', '-f', 'qcow2', path, int(size_bytes))


#: Names of the persistent dirty bitmaps the driver makes start with it.
OUR_BITMAP_PREFIX = 'cvb-'


def bitmaps(path):
    """Return the image's persistent dirty bitmaps as ``qemu-img info``.

    Each a dict with ``name``, ``granularity`` and ``flags`` (``auto``:
    enabled, records writes; ``in-use``: loaded for writing by a program
    that has not stored it back (a running QEMU), or inconsistent when
    nobody has the image open). A non-qcow2 image has none.
    """
    data = info(path).get('format-specific') or {}
    return list((data.get('data') or {}).get('bitmaps') or [])


def bitmap_add(path, name, granularity):
    """Add an enabled persistent dirty bitmap to the (unused) image."""
    _run(path, 'bitmap', '--add', '-g', int(granularity), '-f', 'qcow2',
         path, name)


def bitmap_remove(path, name):
    """Remove a persistent dirty bitmap from the (unused) image."""
    _run(path, 'bitmap', '--remove', '-f', 'qcow2', path, name)
