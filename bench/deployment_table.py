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

"""Issue 21's VMware table, measured in the project's deployment.

The deployment of ``tools/deploy`` in its ``plugin`` profile (cinder.conf
as the README tells an operator, vcsim as vCenter, Cinder's posix backup
driver with its default ``backup_file_size``, the deployment's zstd
compression), driven with the real ``openstack`` client as
``tools/demo.py`` does. For each size (1, 8 and 32 GiB thin volumes):

1. ``openstack volume create``; the same 256 MiB of data as
   ``bench.incremental`` (1 MiB extents, 40 % log-like text, 40 % random
   bytes, 20 % zeros, scattered over the capacity) written into the
   volume's disk on vcsim's datastore (zero extents stay holes);
2. ``openstack volume backup create`` (full), timed to ``available``;
3. 1 % of the data (41 pieces of 64 KiB, 2.5 MiB) changed, then
   ``openstack volume backup create --incremental``;
4. the incremental's stored bytes in the posix directory: every file of
   the backup (objects, ``_metadata``, ``_sha256file``) and of it the
   data objects;
5. ``openstack volume backup restore`` of the incremental onto a new
   volume, timed until backup and volume are available; the restored disk
   is compared with the expected bytes (its allocated regions read, holes
   skipped);
6. cinder-backup's peak RSS (VmHWM of its process and children, reset
   through ``/proc/PID/clear_refs`` before each step), the largest of the
   three steps, each step's shown too.

The table is printed with the issue's figures beside it, with the load
average of the machine at each step (the machine is shared).

Usage: ``python -m bench deployment_table [--sizes 1,8,32] [--passes N]
[--no-verify]``. ``CVB_TEST_DEPLOY_DIR`` (a ``%s`` for the profile) names
the deployment's directory, ``/var/tmp/cvb-table-%s`` by default; the
deployment is started afresh and stopped (``tools/deploy/down.sh``) at the
end.
"""

import argparse
import os
import random
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TOP not in sys.path:
    sys.path.insert(0, TOP)
os.environ.setdefault('CVB_TEST_DEPLOY_DIR', '/var/tmp/cvb-table-%s')

from bench import incremental  # noqa: E402
from bench import vmdk_codec  # noqa: E402
# (The tests package silences eventlet's deprecation banner before anything
# imports eventlet.)
from tests.functional.deploy import deployment  # noqa: E402

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
DATA = 256 * MIB
CHANGED = 0.01
ZEROS = bytes(MIB)

#: The issue's table (measured before the issue's work), by GiB:
#: full, incremental, incremental stored, restore, peak RSS.
ISSUE = {
    1: ('6.0-8.1 s', '2.8 s', '5.0 MB', '4.4 s', '1.5 GB'),
    8: ('24-27 s', '14 s', '21.5 MB', '8.5 s', '4.3 GB'),
    32: ('62-66 s', '44 s', '78 MB (2.6 data)', '24 s', '4.4 GB'),
}


def load():
    one, five, _ = os.getloadavg()
    return '%.1f/%.1f' % (one, five)


def flat_file(vcsim, vmdk_ds_path):
    """The local flat file of a vcsim disk (``[ds] dir/x.vmdk``)."""
    descriptor = vcsim.datastore_file(vmdk_ds_path)
    return descriptor[:-len('.vmdk')] + '-flat.vmdk'


def process_tree(pid):
    """``pid`` and its descendants (by /proc's children lists)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open('/proc/%d/task/%d/children' % (current, current)) as f:
                todo += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return found


def reset_hwm(pid):
    for p in process_tree(pid):
        try:
            with open('/proc/%d/clear_refs' % p, 'w') as f:
                f.write('5')
        except OSError:
            pass


def hwm(pid):
    """The largest VmHWM (bytes) of ``pid`` and its descendants."""
    peak = 0
    for p in process_tree(pid):
        try:
            with open('/proc/%d/status' % p) as f:
                for line in f:
                    if line.startswith('VmHWM:'):
                        peak = max(peak, int(line.split()[1]) * KIB)
        except OSError:
            pass
    return peak


def cpu_seconds(pid):
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def change_data(offsets, pool):
    """The bytes of each changed piece (as ``incremental.apply_change``)."""
    rng = random.Random(7)
    out = []
    for index, offset in enumerate(offsets):
        if index % 2:
            at = rng.randrange(len(pool) - incremental.PIECE)
            data = pool[at:at + incremental.PIECE]
        else:
            data = rng.randbytes(incremental.PIECE)
        out.append((offset, data))
    return out


def compare(path, expected, size):
    """Compare a sparse disk file with ``{1 MiB offset: bytes}``.

    Only the file's data regions are read (SEEK_DATA/SEEK_HOLE); a hole
    reads as zeros.

    :returns: None when equal, else a description of the first difference
    """
    if os.path.getsize(path) != size:
        return 'size %d, expected %d' % (os.path.getsize(path), size)
    seen = set()
    with open(path, 'rb') as f:
        fd = f.fileno()
        at = 0
        while at < size:
            try:
                start = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            block = start - start % MIB
            while block < end:
                f.seek(block)
                got = f.read(MIB)
                want = expected.get(block, ZEROS)
                if got != want:
                    return 'MiB at %d differs' % block
                seen.add(block)
                block += MIB
            at = end
    for block, want in expected.items():
        if block not in seen and want != ZEROS:
            return 'MiB at %d is a hole, data expected' % block
    return None


class Table(object):

    def __init__(self, sizes, passes, verify):
        self.dep = deployment.Deployment('plugin')
        self.sizes = sizes
        self.passes = passes
        self.verify = verify
        self.pool = vmdk_codec.text_pool(seed=21, size=4 * MIB)
        self.rows = []

    def say(self, text):
        print(text, flush=True)

    @property
    def backup_pid(self):
        with open(os.path.join(self.dep.dir, 'cinder-backup.pid')) as f:
            return int(f.read().strip())

    def osc(self, *args):
        return self.dep.openstack(*args)

    def step(self, row, name, func, *args):
        """Run one step; its wall time, peak RSS, CPU and load in row."""
        pid, vcsim = self.backup_pid, self.dep.vcsim.pid
        reset_hwm(pid)
        cpu, vcsim_cpu = cpu_seconds(pid), cpu_seconds(vcsim)
        started = time.monotonic()
        result = func(*args)
        row[name] = time.monotonic() - started
        row['rss_' + name] = hwm(pid)
        row['cpu_' + name] = cpu_seconds(pid) - cpu
        row['vcsim_' + name] = cpu_seconds(vcsim) - vcsim_cpu
        row['load_' + name] = load()
        self.say('  %s %.1f s, cinder-backup peak RSS %.0f MB, CPU %.1f s '
                 '(vcsim %.1f s), load %s' % (
                     name, row[name], row['rss_' + name] / 1e6,
                     row['cpu_' + name], row['vcsim_' + name],
                     row['load_' + name]))
        return result

    def create_volume(self, name, gib):
        volume = self.osc('volume', 'create', '--size', str(gib), name)
        return self.dep.wait('volume', volume['id'], ('available',),
                             timeout=600)['id']

    def backup(self, name, volume_id, *extra):
        backup = self.osc('volume', 'backup', 'create', '--name', name,
                          *(extra + (volume_id,)))
        self.dep.wait('volume backup', backup['id'], ('available',),
                      timeout=1800)
        return backup['id']

    def restore(self, backup_id, name):
        result = self.osc('volume', 'backup', 'restore', backup_id, name)
        volume_id = result['volume_id']
        self.dep.wait('volume backup', backup_id, ('available',),
                      timeout=1800)
        self.dep.wait('volume', volume_id, ('available',), timeout=600,
                      failures=('error', 'error_restoring'))
        return volume_id

    def stored(self, backup_id):
        """``(all bytes, data bytes)`` of a backup in the posix store."""
        files = self.dep.backup_files(backup_id)
        total = sum(os.path.getsize(p) for p in files)
        data = sum(os.path.getsize(p) for p in files
                   if not p.endswith(('_metadata', '_sha256file')))
        return total, data

    def measure(self, gib, tag):
        size = gib * GIB
        layout = incremental.data_layout(size, DATA)
        offsets = incremental.change_offsets(layout, CHANGED)
        self.say('%d GiB (%s): %d extents of 1 MiB, %d pieces of 64 KiB '
                 'changed' % (gib, tag, len(layout), len(offsets)))
        volume = self.create_volume('table-%s-%d' % (tag, gib), gib)
        path = flat_file(self.dep.vcsim, self.dep.vcsim.disk_path(volume))
        expected = {}
        with open(path, 'r+b') as flat:
            for index, (offset, kind) in enumerate(layout):
                if kind == 'zero':
                    continue
                data = incremental._extent_data(index, kind, self.pool)
                flat.seek(offset)
                flat.write(data)
                expected[offset] = bytearray(data)
        row = {'gib': gib, 'tag': tag}
        full = self.step(row, 'full', self.backup,
                         'table-%s-%d-full' % (tag, gib), volume)
        with open(path, 'r+b') as flat:
            for offset, data in change_data(offsets, self.pool):
                flat.seek(offset)
                flat.write(data)
                block = offset - offset % MIB
                extent = expected.setdefault(block, bytearray(MIB))
                extent[offset - block:offset - block + len(data)] = data
        incr = self.step(row, 'incr', self.backup,
                         'table-%s-%d-incr' % (tag, gib), volume,
                         '--incremental')
        row['stored'], row['stored_data'] = self.stored(incr)
        row['full_stored'] = self.stored(full)[0]
        self.say('  incremental stored: %d bytes (%d of data objects)'
                 % (row['stored'], row['stored_data']))
        restored = self.step(row, 'restore', self.restore, incr,
                             'table-%s-%d-restored' % (tag, gib))
        if self.verify:
            rpath = flat_file(self.dep.vcsim,
                              self.dep.vcsim.disk_path(restored))
            expected = {k: bytes(v) for k, v in expected.items()}
            row['check'] = compare(rpath, expected, size) or 'identical'
            self.say('  restored disk: %s' % row['check'])
        else:
            row['check'] = 'not checked'
        # The volumes go (the 32 GiB ones take room); the backups stay.
        self.rows.append(row)
        # Gone before the next volume: vcsim's datastore must have room
        # for the next size (Cinder's VMware driver checks its free space).
        for vid in (restored, volume):
            self.dep.openstack('volume', 'delete', vid, json=False)
        for vid in (restored, volume):
            self.dep.wait_gone('volume', vid)

    def report(self):
        self.say('')
        self.say("Issue 21's VMware table, plugin profile, posix, default "
                 'backup_file_size, zstd; measured | issue')
        self.say('| volume | pass | full | incremental | incremental stored '
                 '(data) | restore | cinder-backup peak RSS (full/incr/'
                 'restore) | load 1/5 min | restored |')
        self.say('|---|---|---|---|---|---|---|---|---|')
        for row in self.rows:
            issue = ISSUE.get(row['gib'], ('-',) * 5)
            peak = max(row['rss_full'], row['rss_incr'], row['rss_restore'])
            self.say(
                '| %d GiB | %s | %.1f s \\| %s | %.1f s \\| %s | %.2f MB '
                '(%.2f) \\| %s | %.1f s \\| %s | %.0f MB (%.0f/%.0f/%.0f) '
                '\\| %s | %s/%s/%s | %s |' % (
                    row['gib'], row['tag'], row['full'], issue[0],
                    row['incr'], issue[1], row['stored'] / 1e6,
                    row['stored_data'] / 1e6, issue[2], row['restore'],
                    issue[3], peak / 1e6, row['rss_full'] / 1e6,
                    row['rss_incr'] / 1e6, row['rss_restore'] / 1e6,
                    issue[4], row['load_full'], row['load_incr'],
                    row['load_restore'], row['check']))
        self.say('CPU seconds of cinder-backup (vcsim) per step:')
        for row in self.rows:
            self.say('  %d GiB %s: full %.1f (%.1f), incremental %.1f (%.1f), '
                     'restore %.1f (%.1f)' % (
                         row['gib'], row['tag'], row['cpu_full'],
                         row['vcsim_full'], row['cpu_incr'],
                         row['vcsim_incr'], row['cpu_restore'],
                         row['vcsim_restore']))
        self.say('(full backups stored: %s)' % ', '.join(
            '%d GiB %s: %.1f MB' % (r['gib'], r['tag'], r['full_stored'] / 1e6)
            for r in self.rows))

    def run(self):
        if not self.dep.claim():
            raise SystemExit('another run holds %s' % self.dep.deploy_dir)
        try:
            started = time.monotonic()
            self.dep.start()
            self.say('deployment up in %.0f s (%s, load %s)'
                     % (time.monotonic() - started, self.dep.deploy_dir,
                        load()))
            for number in range(1, self.passes + 1):
                for gib in self.sizes:
                    self.measure(gib, 'run%d' % number)
        finally:
            if self.rows:
                self.report()
            self.say('stopping the deployment ...')
            self.dep.stop()
            self.dep.release()
        return 0 if all(r['check'] in ('identical', 'not checked')
                        for r in self.rows) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m bench deployment_table', description=__doc__.split(
            '\n\n')[0])
    parser.add_argument('--sizes', default='1,8,32',
                        help='volume sizes in GiB (default 1,8,32)')
    parser.add_argument('--passes', type=int, default=1,
                        help='measure every size this many times in the '
                        'same deployment (default 1)')
    parser.add_argument('--no-verify', dest='verify', action='store_false',
                        help='do not compare the restored disks')
    args = parser.parse_args(argv)
    missing = deployment.missing_prerequisites()
    if missing:
        # (``python -m bench`` runs every benchmark: the others still run.)
        print('deployment_table: missing %s (run tools/deploy/install.sh)'
              % ', '.join(missing), file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
    return Table(sizes, args.passes, args.verify).run()


if __name__ == '__main__':
    sys.exit(main())
