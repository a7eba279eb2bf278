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

"""Incremental backups of qcow2 volumes: cost of the change, not the disk.

Issue 21's benchmark. qcow2 volumes of the plugin's ``Qcow2VolumeDriver``
of 1 GiB and 16 GiB (``--sizes``) hold the same 256 MiB of data
(``--data-mib``): 1 MiB extents, 40 % log-like text, 40 % random bytes,
20 % zeros written as data (allocated clusters that read as zeros),
scattered over the whole capacity (the same extents in the same order,
each at a place chosen for that capacity); the rest is never written.
Cinder's real backup manager (the plugin's ``BackupManager``) and posix
backup driver store the backups in a temporary directory; the volume
service is not running and its RPC methods are the boundary, as in
tests/functional/kvm/test_manager.py. The volumes are not attached
(offline freeze: qemu-img overlay and commit, no libvirt).

For each size, in interleaved pairs (``--pairs``, default 3; each pair
starts from a copy of the same pristine image):

1. a full backup through **today's** path (the whole volume streamed
   through the posix driver's own ``backup()``:
   ``driver_owned_backup_extent_handoff = False``, ``qcow2_dirty_bitmaps =
   False``; first pair only unless ``--today-full-every-pair``: it is the
   parent of every pair's incremental through today's path, the data being
   the same), then a full backup through the **new** path (extent
   hand-off, dirty bitmaps on: holes never read, a bitmap left in the
   image);
2. 1 % of the data changed (``--change``): scattered 64 KiB writes (text
   or random) into the data extents, by ``qemu-io`` (qemu tracks them in
   the image's persistent dirty bitmaps);
3. three incrementals: **new** (parent: the new full; reads what the
   parent's bitmap marks), then, in an order that rotates with the pair,
   **hand-off, whole read** (same parent, ``qcow2_dirty_bitmaps = False``:
   every allocated extent read and hashed, holes still skipped) and
   **today** (parent: today's full; the whole volume streamed). The new
   path runs first: a backup with ``qcow2_dirty_bitmaps = False`` removes
   the image's bitmaps, the parent's included.

Each backup runs in its own process (the bench's own memory does not
count): wall time from the manager's ``create_backup`` to the end of
``continue_backup``; peak RSS of that process (``VmHWM``) and of it with
the qemu-img/qemu-nbd children it waited for (``os.wait4``); CPU time;
stored bytes (data objects, and metadata: the ``_metadata`` and
``_sha256file`` files). The block size of each backup's sha256 file shows
which path wrote it (Cinder's stream: the posix driver's 32 KiB; the
hand-off: ``driver_owned_backup_hash_block_kb``), and a log line "reads
the whole volume: <why>" of the plugin is shown with its step. The new
and the hand-off whole-read incrementals of a pair share their parent:
their sha256 lists must be identical (checked).

Then (``--tib``, default on when the tree has the hand-off) a 1 TiB thin
qcow2 volume with the same data: full and incremental through the new
path, and the hand-off whole read; today's path is not run there (it would
stream 1 TiB of zeros and hold 32 million digests).

Finally (``--memory``, default on) peak RSS with posix's default
``backup_file_size`` (1999994880): a 1 GiB volume with the 256 MiB of
data, full, incremental and restore of the incremental onto a new volume
(compared with the source by ``qemu-img compare``), through the new path
(target < 300 MB), and today's full for comparison.

Medians of the pairs are reported, and ratios as the median of the
pairs' ratios, against the issue's targets. The machine's load average is
printed with every figure: on a shared 2-core machine the speed drifts.

Usage: ``python -m bench incremental [--pairs N] [--quick] [--sizes 1,16]
[--no-tib] [--no-memory]``. ``--quick`` (1 and 2 GiB volumes, 32 MiB of
data, one pair, no TiB) checks that the bench works.
"""

import argparse
import importlib.util
import json
import os
import random
import resource
import shutil
import subprocess  # nosec B404: runs the bench's own steps and qemu tools
import sys
import tempfile
import time

from bench import vmdk_codec

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
HOST = 'bench@qcow2#qcow2'
#: posix's default ``backup_file_size``.
POSIX_DEFAULT_FILE_SIZE = 1999994880
#: Size of one data extent of the volumes.
EXTENT = MIB
#: Size of one write of the change.
PIECE = 64 * KIB
#: Share of each kind in the data extents (the same order for every size).
KINDS = (('text', 0.4), ('random', 0.4), ('zero', 0.2))
#: 300 MB, the issue's memory target.
RSS_TARGET = 300e6

#: Variant name: ([DEFAULT] driver_owned_backup_extent_handoff,
#: [qcow2] qcow2_dirty_bitmaps, label).
VARIANTS = {
    'new': (True, True, 'hand-off + dirty bitmap'),
    'whole': (True, False, 'hand-off, whole read'),
    'today': (False, False, "today's stream"),
}
INCREMENTALS = ('new', 'whole', 'today')


# -- pure helpers -------------------------------------------------------------

def data_layout(size, data_bytes, seed=21):
    """Where the data extents of a ``size`` volume go, and their kinds.

    The kinds come in the same order for every size (the same data); the
    places are scattered over the whole capacity.

    :returns: ``[(offset, kind)]`` ascending by offset, ``data_bytes //
        EXTENT`` of them
    :raises ValueError: the data does not fit
    """
    count = data_bytes // EXTENT
    slots = size // EXTENT
    if count < 1 or count > slots:
        raise ValueError('%d MiB of data in a %d MiB volume'
                         % (data_bytes // MIB, size // MIB))
    kinds = []
    for kind, share in KINDS:
        kinds += [kind] * int(round(count * share))
    kinds = (kinds + [KINDS[0][0]] * count)[:count]
    random.Random(seed).shuffle(kinds)
    places = sorted(random.Random('%d-%d' % (seed, size)).sample(
        range(slots), count))
    return [(place * EXTENT, kind) for place, kind in zip(places, kinds)]


def change_offsets(layout, fraction, seed=11):
    """Offsets of the ``PIECE`` writes changing ``fraction`` of the data.

    The same extents (by index) and places in them for every size.

    :returns: ascending offsets, at least one
    """
    per_extent = EXTENT // PIECE
    pieces = len(layout) * per_extent
    count = min(pieces, max(1, int(round(len(layout) * EXTENT * fraction /
                                         PIECE))))
    chosen = sorted(random.Random(seed).sample(range(pieces), count))
    return sorted(layout[p // per_extent][0] + (p % per_extent) * PIECE
                  for p in chosen)


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def ratios(tops, bottoms):
    """Pairwise ratios ``top / bottom`` (inf where a bottom is 0)."""
    return [top / bottom if bottom else float('inf')
            for top, bottom in zip(tops, bottoms)]


def pair_summary(values):
    """The median of the pairs' ratios, and each of them."""
    return '%.2f (pairs: %s)' % (median(values),
                                 ', '.join('%.2f' % v for v in values))


def verdict(value, target, at_least=False):
    """``met`` or ``NOT met`` for a figure against its target."""
    good = value >= target if at_least else value <= target
    return 'met' if good else 'NOT met'


def stored_bytes(names_sizes, prefix):
    """Bytes of a backup's data objects and of its metadata files.

    :param names_sizes: ``(file name, size)`` of the container's files
    :param prefix: the backup's object prefix (``service_metadata``)
    :returns: ``(data, metadata)``
    """
    data = meta = 0
    for name, size in names_sizes:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        if rest.startswith('-'):
            data += size
        elif rest in ('_metadata', '_sha256file'):
            meta += size
    return data, meta


def rotated(items, by):
    """``items`` rotated left by ``by`` (orders that change every pair)."""
    by %= len(items)
    return tuple(items[by:]) + tuple(items[:by])


def load():
    """The 1-minute and 5-minute load averages, as text."""
    one, five, _ = os.getloadavg()
    return 'load %.2f/%.2f' % (one, five)


# -- a step, in its own process ----------------------------------------------

def _rchar():
    """Bytes this process has read so far (cache hits included)."""
    with open('/proc/self/io') as io:
        for line in io:
            if line.startswith('rchar:'):
                return int(line.split()[1])
    return 0


def _hwm():
    """This process's peak RSS in bytes (VmHWM)."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * KIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB


class _PluginLog(object):
    """Keeps the plugin's warnings and its "reads the whole volume" lines."""

    def __init__(self):
        import logging
        self.lines = []
        outer = self

        class Handler(logging.Handler):
            def emit(self, record):
                text = record.getMessage()
                if (record.levelno >= logging.WARNING or
                        'whole volume' in text):
                    outer.lines.append('%s %s' % (record.levelname, text))

        logger = logging.getLogger('cinder_vmdk_backup')
        logger.setLevel(logging.INFO)
        logger.addHandler(Handler())


def _worker(argv):
    """One step; prints a JSON result on its last line."""
    step, conf_path, payload = argv[0], argv[1], json.loads(argv[2])
    from bench import group_backup
    group_backup._cinder(conf_path)
    from cinder import objects
    from cinder.objects import fields

    log = _PluginLog()
    ctx, manager = group_backup._manager()
    backup = objects.Backup.get_by_id(ctx, payload['backup'])
    ready = _hwm()
    read = _rchar()
    start = time.perf_counter()
    if step == 'backup':
        volume = objects.Volume.get_by_id(ctx, backup.volume_id)
        volume.previous_status = volume.status
        volume.status = 'backing-up'
        volume.save()
        manager.create_backup(ctx, backup)
        device = objects.BackupDeviceInfo()
        device.volume = volume
        manager.continue_backup(ctx, backup, device)
    elif step == 'restore':
        backup.status = fields.BackupStatus.RESTORING
        backup.restore_volume_id = payload['volume']
        backup.save()
        manager.restore_backup(ctx, backup, payload['volume'], True)
    else:
        raise SystemExit('unknown step %s' % step)
    seconds = time.perf_counter() - start
    read = _rchar() - read
    backup.refresh()
    if backup.status != fields.BackupStatus.AVAILABLE:
        raise SystemExit('%s of backup %s ended %s: %s\n%s' % (
            step, backup.id, backup.status, backup.fail_reason,
            '\n'.join(log.lines)))
    print(json.dumps({'seconds': seconds, 'hwm': _hwm(), 'ready': ready,
                      'read': read, 'log': log.lines}))
    return 0


#: Forks the step from a small process (Linux counts a forked child's
#: pre-exec memory in its ru_maxrss); reports the child's peak RSS (with
#: the children it waited for) and its CPU seconds.
_LAUNCHER = (
    'import os, sys\n'
    'pid = os.fork()\n'
    'if pid == 0:\n'
    '    os.execv(sys.argv[1], sys.argv[1:])\n'
    '_, status, usage = os.wait4(pid, 0)\n'
    'sys.stdout.flush()\n'
    'print("\\n%d %d %.3f" % (usage.ru_maxrss, '
    'os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime))\n')


def _step(step, conf_path, payload):
    """Run a step in its own process; its result with peak RSS and CPU."""
    run = subprocess.run(  # nosec B603
        [sys.executable, '-S', '-c', _LAUNCHER, sys.executable, '-m',
         'bench.incremental', '--worker', step, conf_path,
         json.dumps(payload)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    out, _, report = run.stdout.rstrip(b'\n').rpartition(b'\n')
    try:
        maxrss, status, cpu = report.split()[:3]
        maxrss, status, cpu = int(maxrss), int(status), float(cpu)
    except ValueError:
        status = run.returncode or 1
    if status or run.returncode:
        sys.stderr.write(run.stderr.decode('utf-8', 'replace')[-8000:])
        sys.stderr.write(out.decode('utf-8', 'replace')[-4000:])
        raise RuntimeError('step %s %s failed (%d)' % (step, payload,
                                                       status))
    result = json.loads(out.splitlines()[-1])
    result.update(rss=maxrss * KIB, cpu=cpu)
    return result


# -- images -------------------------------------------------------------------

def _qemu_io(path, commands):
    """Run qemu-io commands on an image, in batches of 200."""
    for at in range(0, len(commands), 200):
        argv = ['qemu-io', '-f', 'qcow2']
        for command in commands[at:at + 200]:
            argv += ['-c', command]
        subprocess.run(argv + [path], check=True,  # nosec B603
                       stdout=subprocess.DEVNULL)


def _extent_data(index, kind, pool):
    rng = random.Random(index)
    if kind == 'random':
        return rng.randbytes(EXTENT)
    parts = []
    for _ in range(0, EXTENT, 4 * KIB):
        at = rng.randrange(len(pool) - 4 * KIB)
        parts.append(pool[at:at + 4 * KIB])
    return b''.join(parts)


def make_image(path, size, layout, pool):
    """A qcow2 image of ``size`` bytes holding the layout's data."""
    raw = path + '.raw'
    with open(raw, 'wb') as f:
        f.truncate(size)
        for index, (offset, kind) in enumerate(layout):
            if kind != 'zero':
                f.seek(offset)
                f.write(_extent_data(index, kind, pool))
    try:
        subprocess.run(['qemu-img', 'convert', '-q', '-O', 'qcow2',  # nosec
                        raw, path], check=True)
    finally:
        os.unlink(raw)
    # Zeros written as data: allocated clusters (convert would leave holes).
    _qemu_io(path, ['write -q -P 0 %d %d' % (offset, EXTENT)
                    for offset, kind in layout if kind == 'zero'])


def apply_change(path, offsets, pool, scratch):
    """Write a ``PIECE`` of text or random bytes at each offset."""
    commands = []
    rng = random.Random(7)
    os.makedirs(scratch, exist_ok=True)
    for index, offset in enumerate(offsets):
        if index % 2:
            at = rng.randrange(len(pool) - PIECE)
            data = pool[at:at + PIECE]
        else:
            data = rng.randbytes(PIECE)
        piece = os.path.join(scratch, 'piece-%d' % index)
        with open(piece, 'wb') as f:
            f.write(data)
        commands.append('write -q -s %s %d %d' % (piece, offset, PIECE))
    _qemu_io(path, commands)
    shutil.rmtree(scratch)


# -- the run ------------------------------------------------------------------

def _write_conf(path, workdir, handoff, bitmaps, file_size, compression,
                hash_block_kb=None):
    with open(path, 'w') as conf:
        conf.write('[DEFAULT]\n')
        if hash_block_kb is not None:
            conf.write('driver_owned_backup_hash_block_kb = %d\n'
                       % hash_block_kb)
        conf.write('host = bench\n'
                   'enabled_backends = qcow2\n'
                   'backup_driver = cinder.backup.drivers.posix.'
                   'PosixBackupDriver\n'
                   'backup_posix_path = %s\n'
                   'backup_file_size = %d\n'
                   'backup_compression_algorithm = %s\n'
                   'backup_enable_progress_timer = false\n'
                   'driver_owned_backup_extent_handoff = %s\n'
                   'service_down_time = 3600\n'
                   'quota_backups = -1\n'
                   'quota_backup_gigabytes = -1\n'
                   'state_path = %s\n'
                   '[database]\n'
                   'connection = sqlite:///%s\n'
                   '[qcow2]\n'
                   'volume_driver = cinder_vmdk_backup.volume.drivers.'
                   'qcow2.Qcow2VolumeDriver\n'
                   'volume_backend_name = qcow2\n'
                   'qcow2_volumes_dir = %s\n'
                   'qcow2_libvirt_uri =\n'
                   'qcow2_dirty_bitmaps = %s\n'
                   % (os.path.join(workdir, 'backups'), file_size,
                      compression, handoff, workdir,
                      os.path.join(workdir, 'cinder.sqlite'),
                      os.path.join(workdir, 'volumes'), bitmaps))


def _capabilities():
    """Which parts of issue 21 this tree has (module present or not)."""
    def has(name):
        return importlib.util.find_spec(name) is not None
    return {'hand-off': has('cinder_vmdk_backup.backup.handoff'),
            'dirty bitmaps': has('cinder_vmdk_backup.kvm.bitmaps')}


class _Bench(object):
    """The volumes, the steps and their results."""

    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.volumes_dir = os.path.join(workdir, 'volumes')
        self.backups_dir = os.path.join(workdir, 'backups')
        for name in (self.volumes_dir, self.backups_dir):
            os.makedirs(name)
        self.confs = {}
        for variant, (handoff, bitmaps, _label) in VARIANTS.items():
            self.confs[variant] = self._conf(variant, handoff, bitmaps,
                                             args.backup_file_size)
        self.confs['memory'] = self._conf('memory', True, True,
                                          POSIX_DEFAULT_FILE_SIZE)
        self.confs['memory-today'] = self._conf(
            'memory-today', False, False, POSIX_DEFAULT_FILE_SIZE)
        from bench import group_backup
        group_backup._cinder(self.confs['new'])
        from cinder import context
        from cinder.db import migration
        from cinder.tests.unit import utils as test_utils
        migration.db_sync()
        self.ctx = context.get_admin_context()
        self.test_utils = test_utils
        self.volume_type = test_utils.create_volume_type(
            self.ctx, name='qcow2-bench')
        self.pool = vmdk_codec.text_pool(seed=21, size=4 * MIB)
        self.results = {}
        # Backups whose files stay: today's fulls, parents in later pairs.
        self.kept = []

    def _conf(self, name, handoff, bitmaps, file_size):
        path = os.path.join(self.workdir, 'cinder-%s.conf' % name)
        _write_conf(path, self.workdir, handoff, bitmaps, file_size,
                    self.args.compression, self.args.hash_block_kb)
        return path

    # -- volumes and backups --

    def volume(self, gib, status='available'):
        """A volume row and its (pristine) image; ``(volume, path)``."""
        volume = self.test_utils.create_volume(
            self.ctx, host=HOST, size=gib, status=status,
            volume_type_id=self.volume_type.id)
        return volume, os.path.join(self.volumes_dir, volume.name)

    def backup(self, volume, parent=None):
        return self.test_utils.create_backup(
            self.ctx, volume.id, status='creating', size=volume.size,
            parent_id=parent and parent.id, container='bench')

    def stored(self, backup):
        backup.refresh()
        container = os.path.join(self.backups_dir, backup.container)
        files = [(name, os.path.getsize(os.path.join(container, name)))
                 for name in os.listdir(container)]
        return stored_bytes(files, backup.service_metadata)

    def sha_list(self, backup):
        """``(chunk_size, sha256s)`` of a backup's sha256 file."""
        path = os.path.join(self.backups_dir, backup.container,
                            backup.service_metadata + '_sha256file')
        with open(path) as f:
            data = json.load(f)
        return data['chunk_size'], data['sha256s']

    def run(self, label, step, conf, payload, backup=None):
        """Run one step, print its line; its result."""
        before = load()
        result = _step(step, conf, payload)
        result['load'] = '%s -> %s' % (before, load())
        if backup is not None:
            result['data'], result['meta'] = self.stored(backup)
            result['block'] = self.sha_list(backup)[0]
        line = ('  %-38s %7.2f s  CPU %7.2f s  RSS %6.1f MiB (own %6.1f, '
                'set up %5.1f)  read %7.1f MiB' % (
                    label, result['seconds'], result['cpu'],
                    result['rss'] / MIB, result['hwm'] / MIB,
                    result['ready'] / MIB, result['read'] / MIB))
        if backup is not None:
            line += ('  stored %8.2f MiB + meta %6.2f MiB  block %4d KiB'
                     % (result['data'] / MIB, result['meta'] / MIB,
                        result['block'] // KIB))
        line += '  [%s]' % result['load']
        print(line, flush=True)
        for text in result['log']:
            print('      plugin log: %s' % text[:300], flush=True)
        return result

    def clean_backups(self, keep=()):
        """Remove the stored backups but ``keep`` (figures are taken)."""
        kept = tuple(b.service_metadata for b in keep)
        for root, _dirs, files in os.walk(self.backups_dir):
            for name in files:
                if not kept or not name.startswith(kept):
                    os.unlink(os.path.join(root, name))

    # -- one chain: fulls, change, incrementals --

    def prepare(self, gib):
        """A volume of ``gib`` GiB, its pristine image and its change."""
        size = gib * GIB
        layout = data_layout(size, self.args.data_mib * MIB)
        volume, path = self.volume(gib)
        pristine = os.path.join(self.workdir, 'pristine-%d.qcow2' % gib)
        start = time.monotonic()
        make_image(pristine, size, layout, self.pool)
        print('  (%d GiB image made in %.1f s: %d MiB in the qcow2 file)'
              % (gib, time.monotonic() - start,
                 os.stat(pristine).st_blocks * 512 // MIB), flush=True)
        return {'gib': gib, 'volume': volume, 'path': path,
                'pristine': pristine,
                'change': change_offsets(layout, self.args.change)}

    def reset(self, vol):
        """The volume's image back to the pristine one (no bitmaps)."""
        for name in os.listdir(self.volumes_dir):
            if name.startswith(vol['volume'].name):
                os.unlink(os.path.join(self.volumes_dir, name))
        subprocess.run(['cp', '--sparse=always', vol['pristine'],  # nosec
                        vol['path']], check=True)

    def chain(self, vol, pair, fulls, incrementals):
        """Full(s), the change, incrementals; results by (kind, variant)."""
        gib, volume = vol['gib'], vol['volume']
        self.reset(vol)
        parents = {}
        out = {}
        if 'today' in vol:
            # Today's full of the first pair (the same pristine data) is
            # the parent of every pair's incremental through today's path.
            parents['today'] = vol['today']
            fulls = tuple(v for v in fulls if v != 'today')
        for variant in fulls:
            backup = self.backup(volume)
            out[('full', variant)] = self.run(
                '%d GiB full, %s' % (gib, VARIANTS[variant][2]), 'backup',
                self.confs[variant], {'backup': backup.id}, backup)
            parents[variant] = backup
        if 'today' in parents and not self.args.today_full_every_pair:
            vol['today'] = parents['today']
        apply_change(vol['path'], vol['change'], self.pool,
                     os.path.join(self.workdir, 'pieces'))
        made = {}
        # The new path first: a backup with qcow2_dirty_bitmaps = False
        # removes the image's bitmaps (the parent's included).
        first = tuple(v for v in incrementals if v == 'new')
        others = tuple(v for v in incrementals if v != 'new')
        for variant in first + (rotated(others, pair) if others else ()):
            parent = parents['today' if variant == 'today' else 'new']
            backup = self.backup(volume, parent)
            out[('incr', variant)] = self.run(
                '%d GiB incr, %s' % (gib, VARIANTS[variant][2]), 'backup',
                self.confs[variant], {'backup': backup.id}, backup)
            made[variant] = backup
        if 'new' in made and 'whole' in made:
            same = self.sha_list(made['new']) == self.sha_list(made['whole'])
            out['same digests'] = same
            print('  %d GiB: sha256 lists of the new and the whole-read '
                  'incremental %s' % (gib, 'identical' if same else
                                      'DIFFER'), flush=True)
        if 'today' in vol and vol['today'] not in self.kept:
            self.kept.append(vol['today'])
        self.clean_backups(keep=self.kept)
        return out

    def record(self, gib, out):
        for key, value in out.items():
            self.results.setdefault((gib,) + (key if isinstance(key, tuple)
                                              else (key,)), []).append(value)

    # -- the parts --

    def sizes(self):
        args = self.args
        vols = [self.prepare(gib) for gib in args.sizes]
        fulls = ('today', 'new')
        for pair in range(args.pairs):
            print('pair %d of %d' % (pair + 1, args.pairs), flush=True)
            for vol in (vols if pair % 2 == 0 else vols[::-1]):
                self.record(vol['gib'], self.chain(vol, pair, fulls,
                                                   INCREMENTALS))
        for vol in vols:
            os.unlink(vol['pristine'])

    def tib(self):
        vol = self.prepare(1024)
        for pair in range(self.args.tib_pairs):
            self.record(1024, self.chain(vol, pair, ('new',),
                                         ('new', 'whole')))
        os.unlink(vol['pristine'])

    def memory(self):
        """Peak RSS with posix's default backup_file_size (1 GiB volume)."""
        print('memory: 1 GiB volume, %d MiB of data, backup_file_size %d '
              '(posix default)' % (self.args.data_mib,
                                   POSIX_DEFAULT_FILE_SIZE), flush=True)
        vol = self.prepare(1)
        self.reset(vol)
        conf = self.confs['memory']
        out = {}
        full = self.backup(vol['volume'])
        new = VARIANTS['new'][2]
        out['full'] = self.run('1 GiB full, %s' % new, 'backup', conf,
                               {'backup': full.id}, full)
        apply_change(vol['path'], vol['change'], self.pool,
                     os.path.join(self.workdir, 'pieces'))
        incr = self.backup(vol['volume'], full)
        out['incr'] = self.run('1 GiB incr, %s' % new, 'backup', conf,
                               {'backup': incr.id}, incr)
        target, target_path = self.volume(1, status='creating')
        from cinder_vmdk_backup.kvm import qemu_img
        qemu_img.create(target_path, GIB)
        out['restore'] = self.run('restore of that incr', 'restore', conf,
                                  {'backup': incr.id,
                                   'volume': target.id})
        compare = subprocess.run(  # nosec B603
            ['qemu-img', 'compare', '-q', vol['path'], target_path],
            check=False)
        out['same'] = compare.returncode == 0
        print('  restored volume identical to the source: %s'
              % out['same'], flush=True)
        if self.args.memory_today:
            today = self.backup(vol['volume'])
            out['today full'] = self.run(
                "1 GiB full, today's stream", 'backup',
                self.confs['memory-today'], {'backup': today.id}, today)
        self.clean_backups()
        os.unlink(vol['pristine'])
        return out


def _figures(results, gib, kind, variant, key):
    return [r[key] for r in results.get((gib, kind, variant), [])]


def _report(bench, memory):
    """Medians, ratios and targets."""
    results = bench.results
    args = bench.args
    print('\nresults (medians over pairs; RSS: peak of the backup process '
          'with the qemu tools it ran; %s at the end):' % load())
    sizes = sorted({key[0] for key in results})
    for gib in sizes:
        for kind in ('full', 'incr'):
            for variant in VARIANTS:
                runs = results.get((gib, kind, variant))
                if not runs:
                    continue
                print('  %5d GiB %-4s %-24s %8.2f s  stored %8.2f MiB + '
                      'meta %6.2f MiB  RSS %6.1f MiB  read %7.1f MiB  '
                      'block %d KiB  (%d run%s)' % (
                          gib, kind, VARIANTS[variant][2],
                          median([r['seconds'] for r in runs]),
                          median([r['data'] for r in runs]) / MIB,
                          median([r['meta'] for r in runs]) / MIB,
                          max(r['rss'] for r in runs) / MIB,
                          median([r['read'] for r in runs]) / MIB,
                          runs[0]['block'] // KIB, len(runs),
                          '' if len(runs) == 1 else 's'))
    rows = []

    def ratio_row(text, tops, bottoms, target=None, at_least=False):
        if not tops or not bottoms:
            return
        values = ratios(tops, bottoms)
        mid = median(values)
        rows.append((text, pair_summary(values),
                     '' if target is None else '%s %s: %s' % (
                         '>=' if at_least else '<=', target,
                         verdict(mid, target, at_least))))

    small, big = (min(args.sizes), max(args.sizes)) if args.sizes else (0, 0)
    for key, what in (('seconds', 'time'),):
        ratio_row('%d GiB incr: today / new, %s' % (big, what),
                  _figures(results, big, 'incr', 'today', key),
                  _figures(results, big, 'incr', 'new', key), 10, True)
        ratio_row('%d GiB incr: hand-off whole read / new, %s' % (big, what),
                  _figures(results, big, 'incr', 'whole', key),
                  _figures(results, big, 'incr', 'new', key))
        ratio_row('%d GiB incr: today / new, %s' % (small, what),
                  _figures(results, small, 'incr', 'today', key),
                  _figures(results, small, 'incr', 'new', key))
    for key, what in (('seconds', 'time'), ('stored', 'stored bytes'),
                      ('rss', 'peak RSS')):
        def fig(gib, kind, variant, key=key):
            if key == 'stored':
                return [r['data'] + r['meta'] for r in
                        results.get((gib, kind, variant), [])]
            return _figures(results, gib, kind, variant, key)
        ratio_row('new incr %s, %d GiB / %d GiB' % (what, big, small),
                  fig(big, 'incr', 'new'), fig(small, 'incr', 'new'), 1.5)
        ratio_row('new full %s, %d GiB / %d GiB' % (what, big, small),
                  fig(big, 'full', 'new'), fig(small, 'full', 'new'),
                  1.5 if key == 'seconds' else None)
        ratio_row("today's full %s, %d GiB / %d GiB" % (what, big, small),
                  fig(big, 'full', 'today'), fig(small, 'full', 'today'))
    if results.get((1024, 'incr', 'new')) and small != 1024:
        for key, what in (('seconds', 'time'), ('rss', 'peak RSS')):
            ratio_row('new incr %s, 1 TiB / %d GiB' % (what, small),
                      _figures(results, 1024, 'incr', 'new', key),
                      _figures(results, small, 'incr', 'new', key))
            ratio_row('new full %s, 1 TiB / %d GiB' % (what, small),
                      _figures(results, 1024, 'full', 'new', key),
                      _figures(results, small, 'full', 'new', key))
    print()
    for text, value, target in rows:
        print('  %-46s %-36s %s' % (text, value, target))
    same = results.get((big, 'same digests'), []) + results.get(
        (small, 'same digests'), [])
    if same:
        print('  sha256 lists, new incr == hand-off whole-read incr: %s'
              % ('all identical' if all(same) else 'DIFFER in %d of %d'
                 % (len(same) - sum(same), len(same))))
    tib = results.get((1024, 'incr', 'new'))
    if tib:
        secs = median([r['seconds'] for r in tib])
        print('  1 TiB: full %.2f s, incr %.2f s (target < 5 s: %s), incr '
              'stored %.2f MiB + meta %.2f MiB, peak RSS full %.0f MiB, '
              'incr %.0f MiB' % (
                  median(_figures(results, 1024, 'full', 'new', 'seconds')),
                  secs, verdict(secs, 5),
                  median([r['data'] for r in tib]) / MIB,
                  median([r['meta'] for r in tib]) / MIB,
                  max(_figures(results, 1024, 'full', 'new', 'rss')) / MIB,
                  max(r['rss'] for r in tib) / MIB))
    if memory:
        peak = max(memory[k]['rss'] for k in ('full', 'incr', 'restore'))
        print('  posix default backup_file_size, 1 GiB: peak RSS full %.1f, '
              'incr %.1f, restore %.1f MiB (target < 300 MB = %.1f MiB: %s)'
              '%s; restore identical: %s' % (
                  memory['full']['rss'] / MIB, memory['incr']['rss'] / MIB,
                  memory['restore']['rss'] / MIB, RSS_TARGET / MIB,
                  verdict(peak, RSS_TARGET),
                  '; today\'s full %.1f MiB' % (
                      memory['today full']['rss'] / MIB)
                  if 'today full' in memory else '', memory['same']))
    return 0 if all(same) and (not memory or memory['same']) else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == '--worker':
        profile_dir = os.environ.get('CVB_BENCH_PROFILE')
        if profile_dir:
            # A profile of each step: CVB_BENCH_PROFILE=<directory>.
            import cProfile
            path = os.path.join(profile_dir, '%s-%d.prof' % (argv[1],
                                                             os.getpid()))
            return cProfile.runctx('_worker(argv[1:])', globals(),
                                   {'argv': argv}, path)
        return _worker(argv[1:])
    parser = argparse.ArgumentParser(prog='python -m bench incremental',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--pairs', type=int, default=3,
                        help='chains (fulls, change, incrementals) per size, '
                             'interleaved between the sizes (default 3); '
                             'medians are reported')
    parser.add_argument('--sizes', default='1,16',
                        help='volume sizes in GiB, comma-separated '
                             '(default 1,16)')
    parser.add_argument('--data-mib', type=int, default=256,
                        help='data in each volume, MiB (default 256)')
    parser.add_argument('--change', type=float, default=0.01,
                        help='fraction of the data changed before the '
                             'incrementals (default 0.01)')
    parser.add_argument('--backup-file-size', type=int, default=32 * MIB,
                        help='backup_file_size of the size comparison '
                             '(default 32 MiB, the hand-off\'s object size; '
                             'the memory part uses posix\'s default)')
    parser.add_argument('--hash-block-kb', type=int, default=None,
                        help='driver_owned_backup_hash_block_kb of every '
                             'step (default: the plugin\'s)')
    parser.add_argument('--compression', default='zlib',
                        help='backup_compression_algorithm (default zlib)')
    parser.add_argument('--today-full-every-pair', action='store_true',
                        help='run today\'s full in every pair (default: in '
                             'the first only, the parent of every pair\'s '
                             'incremental through today\'s path; it '
                             'streams the whole volume)')
    parser.add_argument('--tib', dest='tib', action='store_true',
                        default=None,
                        help='run the 1 TiB volume (default: when the tree '
                             'has the hand-off)')
    parser.add_argument('--no-tib', dest='tib', action='store_false')
    parser.add_argument('--tib-pairs', type=int, default=1)
    parser.add_argument('--no-memory', dest='memory', action='store_false',
                        help='skip the RSS check with posix\'s default '
                             'backup_file_size')
    parser.add_argument('--memory-only', action='store_true',
                        help='only the RSS check with posix\'s default '
                             'backup_file_size')
    parser.add_argument('--no-memory-today', dest='memory_today',
                        action='store_false',
                        help='skip today\'s full in the memory part (it '
                             'holds a 1 GiB object in memory)')
    parser.add_argument('--quick', action='store_true',
                        help='1 and 2 GiB volumes, 32 MiB of data, one '
                             'pair, no TiB: checks that the bench works')
    parser.add_argument('--workdir', default=None)
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(',') if s})
    except ValueError:
        parser.error('--sizes takes GiB numbers, e.g. 1,16')
    if args.quick:
        args.sizes, args.data_mib, args.pairs = [1, 2], 32, 1
        if args.tib is None:
            args.tib = False
    if args.pairs < 1 or args.data_mib < 1 or not args.sizes:
        parser.error('--pairs and --data-mib must be >= 1, --sizes given')
    workdir = tempfile.mkdtemp(prefix='cvb-bench-', dir=args.workdir)
    try:
        return _bench(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(args, workdir):
    has = _capabilities()
    print('incremental: qcow2 volumes of %s GiB, %d MiB of data each (text, '
          'random, zeros written), %.1f %% of it changed in %d KiB writes; '
          '%d pair(s); backup_file_size %d, %s, hash block %s; %s'
          % (', '.join(map(str, args.sizes)), args.data_mib,
             args.change * 100, PIECE // KIB, args.pairs,
             args.backup_file_size, args.compression,
             'default' if args.hash_block_kb is None
             else '%d KiB' % args.hash_block_kb, load()), flush=True)
    print('this tree: %s' % ', '.join('%s %s' % (k, 'yes' if v else 'NO')
                                      for k, v in has.items()), flush=True)
    if not has['hand-off']:
        print('  NOTE: without the hand-off every variant runs today\'s '
              'stream path (block 32 KiB below); the ratios compare the '
              'same path with itself', flush=True)
    if args.tib is None:
        args.tib = has['hand-off']
    bench = _Bench(args, workdir)
    if args.memory_only:
        return _report(bench, bench.memory())
    bench.sizes()
    if args.tib:
        print('1 TiB thin volume (new path and hand-off whole read only; '
              'today\'s path would stream 1 TiB)', flush=True)
        bench.tib()
    else:
        print('1 TiB thin volume: skipped%s' % (
            '' if has['hand-off'] else ' (no hand-off in this tree: '
            'today\'s path would stream 1 TiB)'), flush=True)
    memory = bench.memory() if args.memory else None
    return _report(bench, memory)


if __name__ == '__main__':
    sys.exit(main())
