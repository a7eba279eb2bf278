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

"""HotAdd + CBT incremental against the NFC full-read one and Cinder's.

One volume (default 1 GiB, realistic content: ``bench.vmdk_codec``) on a
vcsim started with HotAdd on (patch 0017) and change tracking (patch
0015); a proxy VM stands for this host. After a full backup, 1 % of the
disk (``--change``) is overwritten in scattered 64 KiB pieces through
vcsim's tracked write endpoint (``seed_disk``: vcsim records the changes,
as a guest's writes). Then incrementals, each a child of the **same full
backup** and so of the same changed data, in interleaved pairs
(``--pairs``, default 3):

* **(a) HotAdd + CBT**: ``vmware_backup_transports = hotadd``, change
  tracking on: a snapshot of the backing, ``QueryChangedDiskAreas`` since
  the full's changeId, the snapshot's disk hot-added to the proxy and only
  the changed areas read;
* **(b) NFC full read**: ``vmware_backup_transports = nbd``,
  ``vmware_backup_change_tracking = False`` (the plugin before CBT): the
  whole disk exported and hashed, only changed blocks stored;

and once **(c) Cinder's stock path** as ``bench.vmdk_backup`` measures it
(os-brick's VmdkConnector download of the whole disk, Cinder's chunked
driver incremental against a stock full made before the change).

Each backup runs in a process of its own through ``bench.vmdk_backup``'s
steps (time from the driver set up to the backup's end: for (a) it holds
the snapshot, the query, the hot-add and the removals). The last
incremental of (a) is restored (full + incremental) onto a new volume and
compared with the source. HotAdd against NFC full backup and restore:
``python -m bench hotadd``.

What bounds the ratio here (measured at 1 GiB, Dec 2026): (a) spends about
2 s per backup in vCenter calls whatever the change (vcsim's snapshot
copies the whole disk and deletes it, where vSphere makes a delta disk;
the hot-add reconfigure; one ``QueryChangedDiskAreas`` loop), while (b)
exports this half-empty disk on the loopback in 4-9 s. Each 64 KiB change
also costs a whole hash block (``driver_owned_backup_hash_block_kb``,
1 MiB by default) read, compressed and stored; ``CVB_BENCH_DEFAULT_OPTS=
driver_owned_backup_hash_block_kb=64`` shows the change's own cost.
"""

import argparse
import os
import shutil
import sys
import tempfile

from bench import hotadd as hotadd_bench
from bench import vmdk_backup
from bench import vmdk_codec

GIB = 1 << 30
MIB = 1 << 20
PIECE = 64 << 10


def merged_runs(offsets, piece):
    """Sorted ``(offset, length)`` runs covering pieces at ``offsets``.

    Overlapping or adjacent pieces merge into one run (one tracked write).
    """
    runs = []
    for offset in sorted(set(offsets)):
        if runs and offset <= runs[-1][0] + runs[-1][1]:
            start, length = runs[-1]
            runs[-1] = (start, max(length, offset + piece - start))
        else:
            runs.append((offset, piece))
    return runs


def pair_ratios(slow, fast):
    """``slow[i] / fast[i]`` for each pair (the runs of one pair)."""
    if len(slow) != len(fast):
        raise ValueError('%d against %d runs' % (len(slow), len(fast)))
    return [s / f for s, f in zip(slow, fast)]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog='python -m bench vmware_cbt',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--size', default='1G',
                        help='data size of the volume (default 1G)')
    parser.add_argument('--change', type=float, default=0.01,
                        help='fraction of the disk changed (default 0.01)')
    parser.add_argument('--pairs', type=int, default=3)
    parser.add_argument('--compression', default='zlib')
    parser.add_argument('--chunk', default='32M')
    parser.add_argument('--no-stock', action='store_true',
                        help="skip Cinder's stock path (c)")
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--profile', default=None, metavar='DIR',
                        help='cProfile each step into DIR/<run>/<step>.prof')
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error('--pairs must be at least 1')
    args.zlib_implementation = 'isal'
    size = vmdk_codec.parse_size(args.size)
    workdir = tempfile.mkdtemp(prefix='cvb-bench-cbt-', dir=args.workdir)
    try:
        return _bench(args, size, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(args, size, workdir):
    from tests.functional import vcsim as vcsim_fixture

    raw, counts = vmdk_backup.prepare_workdir(workdir, size)
    vcsim = vcsim_fixture.VcsimFixture(hotadd=True)
    vcsim.setUp()
    try:
        confs = {}
        for name, transport, tracking in (('cbt', 'hotadd', True),
                                          ('nfc', 'nbd', False)):
            confs[name] = os.path.join(workdir, 'cinder-%s.conf' % name)
            vmdk_backup._write_conf(confs[name], workdir, vcsim, args)
            with open(confs[name], 'a') as conf:
                conf.write('vmware_backup_proxy_vm = %s\n'
                           'vmware_backup_hotadd_device_dir = %s\n'
                           'vmware_backup_transports = %s\n'
                           'vmware_backup_change_tracking = %s\n'
                           % (hotadd_bench.PROXY_UUID, vcsim.hotadd_dir,
                              transport, tracking))
        print('disk: %s (%s); %.1f %% changed in 64 KiB pieces; chunk %s, '
              'compression %s'
              % (args.size, ', '.join('%s %d MiB' % (k, v // MIB)
                                      for k, v in counts.items()),
                 args.change * 100, args.chunk, args.compression),
              flush=True)
        return _run(args, size, workdir, raw, vcsim, confs)
    finally:
        vcsim.cleanUp()


def _run(args, size, workdir, raw, vcsim, confs):
    vmdk_backup._cinder(confs['cbt'])
    from cinder import context
    from cinder.db import migration
    from cinder.tests.unit import utils as test_utils
    from tests.functional import vcsim as vcsim_fixture

    from cinder_vmdk_backup.vmware import cbt

    migration.db_sync()
    ctx = context.get_admin_context()
    gib = -(-size // GIB)
    volume_type = test_utils.create_volume_type(ctx, name='vmdk-bench')

    def new_volume(status):
        return test_utils.create_volume(ctx, host=vmdk_backup.VOLUME_HOST,
                                        size=gib, status=status,
                                        volume_type_id=volume_type.id)

    def backup_of(parent=None):
        return test_utils.create_backup(ctx, source.id, status='creating',
                                        size=gib,
                                        parent_id=parent and parent.id)

    # The bench's own driver (in this process): set-up, checks.
    driver = vmdk_backup._driver()
    session = driver.session
    hotadd_bench._make_proxy(session, vcsim.datastore_name)
    source = new_volume('available')
    backing = driver._create_backing(source)
    vmdk_path = driver.volumeops.get_vmdk_path(backing)
    with open(raw, 'rb') as f:
        vcsim_fixture.seed_disk(vcsim, vmdk_path, f.read())
    print('change tracking on the backing: %s'
          % cbt.is_enabled(session, backing), flush=True)
    tmp = os.path.join(workdir, 'tmp')
    results = {}

    def run(name, step, conf, ids):
        if args.profile:
            # bench.vmdk_backup's worker writes <dir>/<step>.prof.
            directory = os.path.join(args.profile, '%s-%d' % (
                name.replace(' ', '-'), len(results.get(name, []))))
            os.makedirs(directory, exist_ok=True)
            os.environ['CVB_BENCH_PROFILE'] = directory
        peer_cpu = vmdk_backup._process_cpu_seconds(vcsim.pid)
        result = vmdk_backup._step(step, conf, tmp, raw, ids)
        if 'error' in result:
            print('  %-16s failed: %s' % (name, result['error']))
            results.setdefault(name, []).append(result)
            return result
        result['vcsim_cpu'] = (vmdk_backup._process_cpu_seconds(vcsim.pid) -
                               peer_cpu)
        results.setdefault(name, []).append(result)
        print('  %-16s %7.2f s (backup driver %6.2f s)  CPU %6.2f s '
              '(vcsim %5.2f s)  peak RSS %6.1f MiB'
              % (name, result['seconds'], result['service'], result['cpu'],
                 result['vcsim_cpu'], result['rss'] / MIB), flush=True)
        return result

    stored = {}

    def store(name, backup):
        backup.refresh()
        stored.setdefault(name, []).append(
            vmdk_backup._stored_bytes(workdir, backup))

    # The fulls, before the change: Cinder's (parent of (c)) and the
    # plugin's over HotAdd with change tracking (parent of (a) and (b)).
    if not args.no_stock:
        stock_full = backup_of()
        run('stock full', 'stock-backup', confs['cbt'],
            [('backup', stock_full.id), ('volume', source.id)])
        store('stock full', stock_full)
    full = backup_of()
    run('hotadd+cbt full', 'plugin-backup', confs['cbt'],
        [('backup', full.id)])
    store('hotadd+cbt full', full)
    full.refresh()
    if not (full.metadata or {}).get(cbt.CHANGE_ID_KEY):
        print('the full backup has no changeId: change tracking did not '
              'run', file=sys.stderr)
        return 1

    # 1 % changed, in the raw file (the reference) and through vcsim's
    # tracked write endpoint (the change vSphere would report).
    changed = vmdk_backup._change(raw, args.change)
    runs = merged_runs(changed, PIECE)
    with open(raw, 'rb') as f:
        for offset, length in runs:
            f.seek(offset)
            vcsim_fixture.seed_disk(vcsim, vmdk_path, f.read(length),
                                    offset=offset)
    print('changed: %d pieces of 64 KiB, %d runs, %.2f MiB'
          % (len(changed), len(runs), sum(n for _o, n in runs) / MIB),
          flush=True)

    last = None
    for index in range(args.pairs):
        order = (('hotadd+cbt incr', 'cbt'), ('nfc incr', 'nfc'))
        if index % 2:
            order = order[::-1]
        for name, conf in order:
            child = backup_of(parent=full)
            run(name, 'plugin-backup', confs[conf], [('backup', child.id)])
            store(name, child)
            if conf == 'cbt':
                last = child

    if not args.no_stock:
        stock_incr = backup_of(parent=stock_full)
        result = run('stock incr', 'stock-backup', confs['cbt'],
                     [('backup', stock_incr.id), ('volume', source.id)])
        if 'error' in result:
            # As bench.vmdk_backup: Cinder's chunked drivers index the
            # parent's hash list by block, and the downloaded VMDK grew.
            print('  note: stock incremental FAILED; a stock full backup '
                  'of the changed disk stands in for it', flush=True)
            results.pop('stock incr')
            stock_incr = backup_of()
            run('stock incr', 'stock-backup', confs['cbt'],
                [('backup', stock_incr.id), ('volume', source.id)])
        store('stock incr', stock_incr)

    # Restore (a)'s last incremental (its chain: the full and it).
    last.refresh()
    last.status = 'restoring'
    last.save()
    target = new_volume('creating')
    run('hotadd restore', 'plugin-restore', confs['cbt'],
        [('backup', last.id), ('volume', target.id)])
    same = vmdk_backup._restored_same(driver, vcsim, raw, gib,
                                      {'a': target})['a']
    return _report(results, stored, same)


def _report(results, stored, same):
    def seconds(name):
        return [r['seconds'] for r in results.get(name, [])
                if 'error' not in r]

    cbt_times, nfc_times = seconds('hotadd+cbt incr'), seconds('nfc incr')
    print('\nstored bytes: ' + ', '.join(
        '%s %.2f MiB' % (name, vmdk_backup._median(values) / MIB)
        for name, values in stored.items()))
    print('incremental time: HotAdd+CBT median %.2f s (%s), NFC full read '
          'median %.2f s (%s)'
          % (vmdk_backup._median(cbt_times),
             ', '.join('%.2f' % t for t in cbt_times),
             vmdk_backup._median(nfc_times),
             ', '.join('%.2f' % t for t in nfc_times)))
    ratios = pair_ratios(nfc_times, cbt_times)
    print('incremental time, NFC full read/HotAdd+CBT %s   target >= 10'
          % vmdk_backup._pair_summary(ratios))
    stock = seconds('stock incr')
    if stock:
        print('incremental time, stock/HotAdd+CBT %.2f (stock %.2f s '
              'against the HotAdd+CBT median)'
              % (stock[0] / vmdk_backup._median(cbt_times), stock[0]))
    print('restored (full + last HotAdd+CBT incremental) identical to the '
          'source: %s' % same)
    return 0 if same else 1


if __name__ == '__main__':
    sys.exit(main())
