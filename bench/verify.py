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

"""Verification of a backup against a restore of it into a scratch file.

Issue 20's benchmark. A 1 GiB volume (``--size-mib``) of realistic
content (:func:`bench.vmdk_codec.make_disk`: log-like text, random bytes,
zeros written as data and holes) is backed up by Cinder's own posix
driver (``backup()``, Cinder's defaults: zlib, ``backup_file_size``
1999994880, 32 KiB hash blocks), then 2 % of it changed in scattered
64 KiB writes and an incremental taken on top. Then, in interleaved pairs
(``--pairs``, the order alternating), each in a process of its own:

* **verify**: :func:`cinder_vmdk_backup.verification.verifier.verify` of
  the incremental (its chain: both backups read, inflated, md5 and every
  block checked, the chain composed);
* **restore**: Cinder's stock ``restore()`` of the incremental into a
  sparse scratch file (what a check by restoring costs: the full backup
  then the incremental written, fsync'd per object as Cinder does), the
  file removed afterwards.

Reported: wall time of each, the median of the pairs' ratios (target:
verify at least 2x faster), the peak RSS of each process (``VmHWM``) and
its RSS once Cinder is imported (target for verify: under 200 MB peak).
The load average is printed: the machine's 2 cores are shared.

Usage: ``python -m bench verify [--pairs N] [--size-mib N]
[--compression zlib]``.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess  # nosec B404: runs the bench's own steps
import sys
import tempfile
import time

from bench import vmdk_backup
from bench import vmdk_codec

MIB = 1024 * 1024
KIB = 1024


def _rss(field):
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * KIB
    return 0


def _conf(workdir, compression):
    path = os.path.join(workdir, 'cinder.conf')
    with open(path, 'w') as conf:
        conf.write('[DEFAULT]\n'
                   'host = bench\n'
                   'backup_driver = cinder.backup.drivers.posix.'
                   'PosixBackupDriver\n'
                   'backup_posix_path = %s\n'
                   'backup_compression_algorithm = %s\n'
                   'backup_enable_progress_timer = false\n'
                   'state_path = %s\n'
                   '[database]\n'
                   'connection = sqlite:///%s\n'
                   '[backup_verification]\n'
                   'scratch_dir = %s\n'
                   % (os.path.join(workdir, 'backups'), compression,
                      workdir, os.path.join(workdir, 'cinder.sqlite'),
                      os.path.join(workdir, 'scratch')))
    return path


def _cinder(workdir):
    vmdk_backup._cinder(os.path.join(workdir, 'cinder.conf'))
    from cinder.backup.drivers import posix
    from cinder import context

    from cinder_vmdk_backup import opts  # noqa: F401 (the plugin's options)
    return context.get_admin_context(), posix


def _prepare(workdir, size, compression):
    """The disk, the full backup and the incremental; their ids."""
    for name in ('backups', 'scratch'):
        os.makedirs(os.path.join(workdir, name))
    _conf(workdir, compression)
    ctx, posix = _cinder(workdir)
    from cinder.db import migration
    from cinder.objects import fields
    from cinder.tests.unit import utils as test_utils
    migration.db_sync()
    disk = os.path.join(workdir, 'disk.raw')
    counts = vmdk_codec.make_disk(disk, size)
    volume = test_utils.create_volume(ctx, size=max(1, size // 1024 // MIB))
    ids = []
    parent = None
    for step in ('full', 'incremental'):
        if step == 'incremental':
            rng = random.Random(20)
            pool = vmdk_codec.text_pool(seed=20, size=MIB)
            with open(disk, 'r+b') as f:
                for _ in range(size * 2 // 100 // (64 * KIB)):
                    f.seek(rng.randrange(size // (64 * KIB)) * 64 * KIB)
                    f.write(pool[:64 * KIB] if rng.random() < 0.5
                            else rng.randbytes(64 * KIB))
        backup = test_utils.create_backup(
            ctx, volume.id, status=fields.BackupStatus.CREATING,
            parent_id=parent, size=volume.size)
        started = time.monotonic()
        with open(disk, 'rb') as f:
            posix.PosixBackupDriver(ctx).backup(backup, f)
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        print('%s backup: %.1f s' % (step, time.monotonic() - started))
        ids.append(backup.id)
        parent = backup.id
    os.unlink(disk)
    print('content: %s' % ', '.join('%s %d MiB' % (k, v // MIB)
                                    for k, v in counts.items()))
    return ids


def _child(mode, workdir, backup_id):
    """One step in this process; print its figures as JSON."""
    ctx, posix = _cinder(workdir)
    from cinder import objects
    from cinder.objects import fields
    from cinder_vmdk_backup.verification import verifier
    imported = _rss('VmRSS')
    backup = objects.Backup.get_by_id(ctx, backup_id)
    service = posix.PosixBackupDriver(ctx)
    started = time.monotonic()
    out = {'mode': mode}
    if mode == 'verify':
        report = verifier.verify(service, backup)
        out['ok'] = report.ok
        out['summary'] = report.summary()
    else:
        path = os.path.join(workdir, 'scratch', 'restore-%s' % backup_id)
        size = backup.size * 1024 * MIB
        backup.status = fields.BackupStatus.RESTORING
        backup.save()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'r+b') as scratch:
                scratch.truncate(size)
                service.restore(backup, backup.volume_id, scratch, True)
        finally:
            os.unlink(path)
            backup.status = fields.BackupStatus.AVAILABLE
            backup.save()
        out['ok'] = True
    out['seconds'] = time.monotonic() - started
    out['rss_imported'] = imported
    out['rss_peak'] = _rss('VmHWM')
    print('RESULT ' + json.dumps(out))


def _run_child(mode, workdir, backup_id):
    run = subprocess.run(  # nosec B603: the bench itself
        [sys.executable, '-m', 'bench.verify', '--child', mode, workdir,
         backup_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        check=False, text=True)
    for line in run.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    raise RuntimeError('%s failed: %s' % (mode, run.stderr[-3000:]))


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench verify')
    parser.add_argument('--pairs', type=int, default=3)
    parser.add_argument('--size-mib', type=int, default=1024)
    parser.add_argument('--compression', default='zlib')
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    workdir = tempfile.mkdtemp(prefix='cvb-bench-verify-',
                               dir=args.workdir)
    try:
        ids = _prepare(workdir, args.size_mib * MIB, args.compression)
        incremental = ids[-1]
        ratios, runs = [], {'verify': [], 'restore': []}
        for pair in range(args.pairs):
            order = ('verify', 'restore') if pair % 2 == 0 else (
                'restore', 'verify')
            got = {}
            for mode in order:
                got[mode] = _run_child(mode, workdir, incremental)
                runs[mode].append(got[mode])
            if not got['verify']['ok']:
                raise RuntimeError('verification failed: %s'
                                   % got['verify']['summary'])
            ratio = got['restore']['seconds'] / got['verify']['seconds']
            ratios.append(ratio)
            print('pair %d (%s first): verify %.2f s (peak %d MB), '
                  'restore %.2f s (peak %d MB), ratio %.2fx; load %.2f'
                  % (pair + 1, order[0], got['verify']['seconds'],
                     got['verify']['rss_peak'] // 10**6,
                     got['restore']['seconds'],
                     got['restore']['rss_peak'] // 10**6, ratio,
                     os.getloadavg()[0]))
        print(runs['verify'][-1]['summary'])
        verify_peak = max(r['rss_peak'] for r in runs['verify'])
        print('verify: median %.2f s, peak RSS %d MB (%d MB after '
              'imports); restore: median %.2f s, peak RSS %d MB'
              % (statistics.median(r['seconds'] for r in runs['verify']),
                 verify_peak // 10**6,
                 runs['verify'][0]['rss_imported'] // 10**6,
                 statistics.median(r['seconds'] for r in runs['restore']),
                 max(r['rss_peak'] for r in runs['restore']) // 10**6))
        ratio = statistics.median(ratios)
        print('ratio restore/verify (median of pairs): %.2fx (target >= '
              '2x: %s); verify peak RSS target < 200 MB: %s'
              % (ratio, 'met' if ratio >= 2 else 'NOT met',
                 'met' if verify_peak < 200 * 10**6 else 'NOT met'))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
