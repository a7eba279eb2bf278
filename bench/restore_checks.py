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

"""What the restore checks cost, without vCenter: CPU and wall time.

A 1 GiB disk (``bench.vmdk_codec``'s mix: half zeros and holes, a quarter
text, a quarter random) is backed up by Cinder's own ``backup()`` of the
posix driver (zlib; ``--chunk`` per object, Cinder's 32 KiB hash block),
then read back the two ways a driver-owned restore reads it, checks off and
on, in interleaved rounds:

* **streaming**: the chain's pieces (:class:`ChainReader`), each object's
  md5 checked (off), or every block checked against the SHA-256 list with
  no md5 and zero objects not read (on);
* **staged**: Cinder's ``restore()`` into a sparse staging file, checked
  (on) as the staging writer receives each object
  (:class:`staging_checks.StagingCheck`, what the driver-owned restore
  does);
* **file pass** (``--file-pass``): the same restore, then (on) the
  separate pass over the staging file (:func:`restore_checks.check_file`,
  what a chain the plugin cannot follow gets).

What the consumer does with the pieces (VMDK encoding, upload) is left
out: the figures are the reading side alone, so the checks' share of a
whole restore is smaller. Time and CPU time (all threads of the process)
are medians of ``--rounds``; under a loaded machine the CPU time is the
steadier figure.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

from bench import vmdk_backup
from bench import vmdk_codec

GIB = 1 << 30
MIB = 1 << 20


def _setup(workdir, chunk, compression):
    conf_path = os.path.join(workdir, 'cinder.conf')
    with open(conf_path, 'w') as conf:
        conf.write('[DEFAULT]\nbackup_posix_path = %s\n'
                   'backup_compression_algorithm = %s\n'
                   'backup_file_size = %d\n'
                   'backup_enable_progress_timer = false\n'
                   'state_path = %s\n[database]\n'
                   'connection = sqlite:///%s\n'
                   % (os.path.join(workdir, 'backups'), compression, chunk,
                      workdir, os.path.join(workdir, 'cinder.sqlite')))
    conf = vmdk_backup._cinder(conf_path)
    from cinder.db import migration
    migration.db_sync()
    return conf


def _measure(func):
    start, cpu = time.perf_counter(), time.process_time()
    func()
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench restore_checks',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--size', default='1G')
    parser.add_argument('--chunk', default='1999994880',
                        help="backup_file_size (default posix's: one "
                             'object for the whole disk)')
    parser.add_argument('--compression', default='zlib')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--file-pass', action='store_true',
                        help='also the staged restore checked by a pass '
                             'over the file after it')
    parser.add_argument('--only', choices=('streaming', 'staged'),
                        default=None, help='only this path')
    args = parser.parse_args(argv)
    size = vmdk_codec.parse_size(args.size)
    workdir = tempfile.mkdtemp(prefix='cvb-bench-checks-', dir=args.workdir)
    try:
        os.makedirs(os.path.join(workdir, 'backups'))
        return _bench(args, size, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(args, size, workdir):
    conf = _setup(workdir, vmdk_codec.parse_size(args.chunk),
                  args.compression)
    from cinder.backup.drivers import posix
    from cinder import context
    from cinder.tests.unit import utils as test_utils

    from cinder_vmdk_backup.backup import chain_reader
    from cinder_vmdk_backup.backup import fast_zlib
    from cinder_vmdk_backup.backup import restore_checks
    from cinder_vmdk_backup.backup import staging
    from cinder_vmdk_backup.backup import staging_checks
    from cinder_vmdk_backup.backup import transfer

    raw = os.path.join(workdir, 'disk.raw')
    counts = vmdk_codec.make_disk(raw, size)
    gib = -(-size // GIB)
    ctx = context.get_admin_context()
    volume = test_utils.create_volume(ctx, size=gib)
    backup = test_utils.create_backup(ctx, volume.id, status='creating',
                                      size=gib)
    service = posix.PosixBackupDriver(ctx)
    with open(raw, 'rb') as source:
        service.backup(backup, source)
    backup.status = 'restoring'
    backup.save()
    disk = size  # what the digest list covers
    print('disk %s (%s), Cinder backup(): %s, backup_file_size %s'
          % (args.size, ', '.join('%s %d MiB' % (k, v // MIB)
                                  for k, v in counts.items()),
             args.compression, args.chunk), flush=True)
    del conf

    def streaming(checked):
        def run():
            chain = chain_reader.ChainReader(service, backup, disk)
            chain.nonzero_grains(64 * 1024)
            pieces = chain.pieces(digests_checked=checked)
            if checked:
                pieces = restore_checks.checked_pieces(
                    pieces, restore_checks.BlockChecker(
                        service, backup, disk, describe=chain.describe))
            for _piece in pieces:
                pass
        return run

    def staged_restore(fd, observer=None):
        writer = staging.SparseStagingWriter(fd, observer=observer)
        with transfer.WriteBehind(writer) as behind, \
                fast_zlib.accelerated(service):
            service.restore(backup, volume.id, behind, False)
        os.ftruncate(fd, disk)

    def staged(checked, file_pass=False):
        def run():
            path = os.path.join(workdir, 'staging')
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if not checked:
                    staged_restore(fd)
                elif file_pass:
                    staged_restore(fd)
                    restore_checks.check_file(
                        fd, restore_checks.BlockChecker(service, backup,
                                                        disk))
                else:
                    chain = chain_reader.ChainReader(service, backup, disk)
                    with staging_checks.StagingCheck(
                            service, backup, disk, chain) as check:
                        staged_restore(fd, check.observe)
                        check.finish(fd)
            finally:
                os.close(fd)
                os.unlink(path)
        return run

    def file_pass(checked):
        return staged(checked, file_pass=True)

    paths = [('streaming', streaming), ('staged', staged)]
    if args.file_pass:
        paths.append(('file pass', file_pass))
    if args.only:
        paths = [(n, m) for n, m in paths if n.startswith(args.only)
                 or (args.only == 'staged' and n == 'file pass')]
    results = {}
    for _round in range(args.rounds):
        for name, make in paths:
            # Interleaved pairs, the order swapped every round.
            for checked in ((False, True) if _round % 2 == 0
                            else (True, False)):
                results.setdefault((name, checked), []).append(
                    _measure(make(checked)))
    for name, _make in paths:
        ratios = [on[0] / off[0] for off, on in zip(results[(name, False)],
                                                    results[(name, True)])]
        print('%-9s pairs: time on/off %s; median %.3f'
              % (name, ' '.join('%.3f' % r for r in ratios),
                 statistics.median(ratios)))
        off = [statistics.median(v) for v in zip(*results[(name, False)])]
        on = [statistics.median(v) for v in zip(*results[(name, True)])]
        print('%-9s checks off %6.2f s (CPU %6.2f s), on %6.2f s (CPU '
              '%6.2f s): time %+.1f %%, CPU %+.1f %%'
              % (name, off[0], off[1], on[0], on[1],
                 100 * (on[0] / off[0] - 1), 100 * (on[1] / off[1] - 1)))
    return 0
