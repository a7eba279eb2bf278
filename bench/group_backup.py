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

"""Group backup of a running KVM instance's volumes against three singles.

Issue 22's benchmark. Three qcow2 volumes of the plugin's
``Qcow2VolumeDriver`` (default 1 GiB each; realistic content: 40 % data,
half random, half log-like text, the rest never written) are the disks
vda, vdb and vdc of ONE running TCG domain under libvirt: the guest of
:mod:`tests.functional.kvm.guest`, unpaced, writing a TSC-stamped record
to each disk in turn, so that its own records time any stall it sees (as
in :mod:`bench.qcow2_backup`). Cinder's real backup manager (the plugin's
``BackupManager``) and posix backup driver store the backups in a
temporary directory; the volume service is not running and its RPC
methods are the boundary, as in tests/functional/kvm/test_manager.py.

In interleaved pairs (``--pairs``, default 3):

* **group**: one ``backup_volumes(context, [3 requests],
  all_or_nothing=True, facts=facts)`` of the qcow2 driver the manager
  loaded (the call the instance-group endpoint makes for a backup set);
* **singles**: three ordinary driver-owned backups of the same volumes one
  after the other, each through the manager's ``create_backup`` and
  ``continue_backup`` (what Cinder does for ``cinder backup-create``).

Each step runs in its own process (peak RSS from ``os.wait4``: the
bench's own memory does not count). Reported: median wall time of each
and the median of the pairs' group/singles ratios (target <= 1.15); the
spread of the members' points in time (group: from the freezes' recorded
times, target 0, one snapshot; singles: first to last freeze); the
guest-visible pause at the group's snapshot and during the rest of the
group backup (largest gap between the guest's consecutive records,
target < 100 ms) with the driver's own ``pause_ms``; peak RSS of each
step (target < 300 MB).

Usage: ``python -m bench group_backup [--pairs N] [--size-mib 1024]
[--quick]`` (needs libvirtd: tools/libvirt/install.sh; started here with
tools/libvirt/start.sh, as the functional tests do).
"""

import argparse
import json
import os
import random
import shutil
import subprocess  # nosec B404: runs the bench's own steps and qemu-img
import sys
import tempfile
import time

from bench import vmdk_backup
from bench import vmdk_codec

MIB = 1 << 20
HOST = 'bench@qcow2#qcow2'
BACKUP_HOST = 'bench-backup'
INSTANCE = 'b3c4d5e6-0f1a-4b2c-9d3e-4f5a6b7c8d9e'
USER = 'c0ffee00-0000-4000-8000-00000000b001'
PROJECT = 'c0ffee00-0000-4000-8000-00000000b002'
#: Records around the cut whose gaps count as "at the snapshot".
AROUND = 50
#: Share of each volume holding data (the rest is never written).
DATA = 0.4


# -- the volumes ------------------------------------------------------------

def _make_volume(path, size, ring, seed):
    """A qcow2 image of ``size`` bytes with realistic content.

    1 MiB extents: ``DATA`` of them hold data, half random bytes, half
    log-like text; the others are never written (unallocated). The
    guest's ring (sectors 1..ring) is allocated with a fill pattern so
    that its clusters keep their place while the guest runs (its records
    can then be read from the image, see :func:`_read_ring`).
    """
    rng = random.Random(seed)
    pool = vmdk_codec.text_pool(seed=seed, size=4 * MIB)
    raw = path + '.raw'
    extents = size // MIB
    first = -(-(ring + 1) * 512 // MIB)
    with open(raw, 'wb') as f:
        f.truncate(size)
        chosen = rng.sample(range(first, extents),
                            int((extents - first) * DATA))
        for index, extent in enumerate(sorted(chosen)):
            f.seek(extent * MIB)
            if index % 2:
                at = rng.randrange(len(pool) - MIB)
                f.write(pool[at:at + MIB])
            else:
                f.write(rng.randbytes(MIB))
    try:
        subprocess.run(['qemu-img', 'convert', '-q', '-O', 'qcow2',  # nosec
                        raw, path], check=True)
    finally:
        os.unlink(raw)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c',  # nosec B603
                    'write -q -P 0xee 0 %d' % ((ring + 1) * 512), path],
                   check=True, stdout=subprocess.DEVNULL)


def _read_ring(path, ring, out):
    """The guest's records in ``path`` (an image in use: read shared)."""
    try:
        _read_ring_to(path, ring, out)
        with open(out, 'rb') as f:
            return f.read()
    finally:
        os.unlink(out)


def _newest(path, ring):
    """The newest record counter in a raw copy of the ring (0: none)."""
    from tests.functional.kvm import guest
    newest = 0
    with open(path, 'rb') as f:
        f.seek(512)
        while True:
            chunk = f.read(MIB)
            if not chunk:
                return newest
            for at in range(0, len(chunk), 512):
                if chunk[at:at + 4] == guest.MAGIC:
                    newest = max(newest, int.from_bytes(
                        chunk[at + 4:at + 8], 'little'))


# -- a step, in its own process ----------------------------------------------

def _cinder(conf_path):
    conf = vmdk_backup._cinder(conf_path)
    from cinder_vmdk_backup import opts  # noqa: F401 (the plugin's options)
    return conf


def _manager():
    """The plugin's BackupManager; the volume service is the boundary."""
    from unittest import mock

    from cinder import context
    from cinder.volume import volume_utils

    from cinder_vmdk_backup.backup import manager as backup_manager

    ctx = context.get_admin_context()
    manager = backup_manager.BackupManager(host=BACKUP_HOST)
    try:
        manager._setup_backup_driver(ctx)
    except Exception:  # nosec B110: LoopingCallDone ends the set-up loop
        pass
    rpcapi = manager.volume_rpcapi
    for name in ('get_backup_device', 'terminate_connection',
                 'remove_export', 'delete_volume'):
        mock.patch.object(rpcapi, name, autospec=True).start()
    mock.patch.object(rpcapi, 'secure_file_operations_enabled',
                      autospec=True, return_value=True).start()
    # os-brick's host probing runs privileged commands (privsep).
    mock.patch.object(volume_utils, 'brick_get_connector_properties',
                      autospec=True,
                      return_value={'host': BACKUP_HOST}).start()
    return ctx, manager


def _record_freezes(ring_copy):
    """Wrap ``freezer.freeze_all`` to record each freeze's facts.

    For a group, the first image's ring is copied from its frozen image
    (``ring_copy``: ``(ring, path)``): the guest's newest record there is
    the cut. The copy's time is reported apart, to be subtracted.
    """
    from cinder_vmdk_backup.kvm import freezer

    calls = []
    original = freezer.freeze_all

    def freeze_all(paths, *args, **kwargs):
        facts = kwargs.get('facts')
        if facts is None:
            facts = kwargs['facts'] = {}
        results = original(paths, *args, **kwargs)
        entry = {'paths': list(paths), 'returned_at': time.time(),
                 'frozen_at': facts['frozen_at'].timestamp()
                 if facts.get('frozen_at') else None,
                 'pause_ms': facts.get('pause_ms'),
                 'consistency': facts.get('consistency'), 'copy_s': 0.0}
        if ring_copy and not calls:
            start = time.perf_counter()
            ring, out = ring_copy
            frozen = results.get(paths[0])
            if frozen is not None and not isinstance(frozen, Exception):
                _read_ring_to(frozen.read_path, ring, out)
            entry['copy_s'] = time.perf_counter() - start
        calls.append(entry)
        return results

    freezer.freeze_all = freeze_all
    return calls


def _read_ring_to(path, ring, out):
    from cinder_vmdk_backup.kvm import qemu_img
    with open(out, 'wb') as f:
        f.truncate((ring + 1) * 512)
    qemu_img.convert_window(path, 'qcow2', 0, (ring + 1) * 512, out)


def _worker(argv):
    """One step; prints a JSON result on its last line."""
    step, conf_path, backup_ids, ring, ring_out = (
        argv[0], argv[1], json.loads(argv[2]), int(argv[3]), argv[4])
    _cinder(conf_path)
    from cinder import objects
    from cinder.objects import fields

    ctx, manager = _manager()
    calls = _record_freezes(None if step == 'singles' else (ring, ring_out))
    backups = ([] if step == 'set' else
               [objects.Backup.get_by_id(ctx, i) for i in backup_ids])
    result = {}
    start = time.perf_counter()
    if step == 'set':
        _backup_set(ctx, manager, backup_ids[0], result)
    elif step == 'group':
        volume = objects.Volume.get_by_id(ctx, backups[0].volume_id)
        driver = manager._driver_for(volume)
        service = manager.service(ctx)
        for backup in backups:
            backup.service = manager.driver_name
            backup.save()
        facts = {}
        outcome = driver.backup_volumes(
            ctx, [(b, service, None) for b in backups],
            all_or_nothing=True, facts=facts)
        failed = {k: str(v) for k, v in outcome.items()
                  if isinstance(v, Exception)}
        if failed:
            raise SystemExit('group backup failed: %s' % failed)
        result['facts'] = {
            # (The driver alone sets no data_timestamp: the endpoint does.)
            'frozen_at': facts['frozen_at'].timestamp(), 'data_spread': None,
            'pause_ms': facts.get('pause_ms'),
            'consistency': facts.get('consistency')}
    elif step == 'singles':
        for backup in backups:
            volume = objects.Volume.get_by_id(ctx, backup.volume_id)
            volume.previous_status = volume.status
            volume.status = 'backing-up'
            volume.save()
            manager.create_backup(ctx, backup)
            device = objects.BackupDeviceInfo()
            device.volume = volume
            manager.continue_backup(ctx, backup, device)
            backup.refresh()
            if backup.status != fields.BackupStatus.AVAILABLE:
                raise SystemExit('single backup %s ended %s: %s' % (
                    backup.id, backup.status, backup.fail_reason))
    else:
        raise SystemExit('unknown step %s' % step)
    seconds = time.perf_counter() - start
    if calls and 'facts' in result and result['facts']['pause_ms'] is None:
        # (The endpoint keeps the driver's facts: the freeze's own.)
        result['facts']['pause_ms'] = calls[0]['pause_ms']
    result.update(seconds=seconds - sum(c['copy_s'] for c in calls),
                  freezes=calls)
    print(json.dumps(result))
    return 0


class _DirectRpc(object):
    """The group RPC client calling this process's endpoint (no broker)."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def backup_set(self, ctxt, host, group_snapshot_id):
        self.endpoint.backup_set(ctxt, group_snapshot_id)

    def instance_power_state(self, ctxt, host, instance_id, volume_ids):
        return self.endpoint.instance_power_state(ctxt, instance_id,
                                                  volume_ids)


def _backup_set(ctx, manager, group_id, result):
    """A backup set through group.api and the cinder-backup endpoint."""
    from cinder import context
    from cinder import objects

    from cinder_vmdk_backup.group import api as group_api

    user = context.RequestContext(USER, PROJECT, is_admin=True)
    api = group_api.API(rpcapi=_DirectRpc(manager.group_endpoint))
    answer = api.backup(user, group_id, INSTANCE,
                        'bench-%d' % time.time_ns(), wait=True)
    if not answer.get('success'):
        raise SystemExit('backup set failed: %s' % answer)
    backups = [objects.Backup.get_by_id(ctx, i)
               for i in answer['backup_id']]
    stamps = [b.data_timestamp.timestamp() for b in backups]
    result['backup_ids'] = [b.id for b in backups]
    result['facts'] = {
        'frozen_at': min(stamps), 'data_spread': max(stamps) - min(stamps),
        'pause_ms': None,
        'consistency': backups[0].metadata.get('consistency')}


def _step(step, conf_path, backup_ids, ring, ring_out):
    """Run a step in its own process; its result with its peak RSS."""
    run = subprocess.run(  # nosec B603
        [sys.executable, '-S', '-c', vmdk_backup._LAUNCHER, sys.executable,
         '-m', 'bench.group_backup', '--worker', step, conf_path,
         json.dumps(backup_ids), str(ring), ring_out],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    out, _, report = run.stdout.rstrip(b'\n').rpartition(b'\n')
    try:
        maxrss, status = map(int, report.split()[:2])
    except ValueError:
        status = run.returncode or 1
    if status or run.returncode:
        sys.stderr.write(run.stderr.decode('utf-8', 'replace'))
        sys.stderr.write(out.decode('utf-8', 'replace'))
        raise RuntimeError('step %s failed (%d)' % (step, status))
    result = json.loads(out.splitlines()[-1])
    result['rss'] = maxrss * 1024
    return result


# -- the run -----------------------------------------------------------------

def _write_conf(path, workdir):
    from tests.functional.kvm import guest
    with open(path, 'w') as conf:
        conf.write('[DEFAULT]\n'
                   'host = bench\n'
                   'enabled_backends = qcow2\n'
                   'backup_driver = cinder.backup.drivers.posix.'
                   'PosixBackupDriver\n'
                   'backup_posix_path = %s\n'
                   'backup_file_size = %d\n'
                   'backup_enable_progress_timer = false\n'
                   'service_down_time = 3600\n'
                   'quota_backups = -1\n'
                   'quota_backup_gigabytes = -1\n'
                   'state_path = %s\n'
                   '[instance_groups]\n'
                   'poll_interval = 0.05\n'
                   '[database]\n'
                   'connection = sqlite:///%s\n'
                   '[qcow2]\n'
                   'volume_driver = cinder_vmdk_backup.volume.drivers.'
                   'qcow2.Qcow2VolumeDriver\n'
                   'volume_backend_name = qcow2\n'
                   'qcow2_volumes_dir = %s\n'
                   'qcow2_libvirt_uri = %s\n'
                   % (os.path.join(workdir, 'backups'), 32 * MIB, workdir,
                      os.path.join(workdir, 'cinder.sqlite'),
                      os.path.join(workdir, 'volumes'),
                      guest.LibvirtFixture.URI))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == '--worker':
        return _worker(argv[1:])
    parser = argparse.ArgumentParser(prog='python -m bench group_backup',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--pairs', type=int, default=3,
                        help='(group, singles) pairs run one after the '
                             'other (default 3); medians are reported')
    parser.add_argument('--size-mib', type=int, default=1024,
                        help='size of each of the three volumes (default '
                             '1024)')
    parser.add_argument('--quick', action='store_true',
                        help='64 MiB volumes, one pair: checks that the '
                             'bench works (its figures mean little)')
    parser.add_argument('--via', choices=('set', 'driver'), default='set',
                        help='group backup as a backup set through '
                             "group.api and the cinder-backup endpoint "
                             '(default), or one backup_volumes call of the '
                             'qcow2 driver')
    parser.add_argument('--workdir', default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.pairs = 64, 1
    if args.pairs < 1 or args.size_mib < 16:
        parser.error('--pairs must be >= 1 and --size-mib >= 16')
    workdir = tempfile.mkdtemp(prefix='cvb-bench-', dir=args.workdir)
    try:
        return _bench(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(args, workdir):
    from tests.functional.kvm import guest

    size = args.size_mib * MIB
    # The guest's ring: a quarter of a small volume, at most 128 MiB (some
    # minutes of records at the guest's pace here): it must still hold the
    # records around the cut when the group step ends.
    ring = min(262144, size // 4 // 512)
    for name in ('volumes', 'backups'):
        os.makedirs(os.path.join(workdir, name))
    conf_path = os.path.join(workdir, 'cinder.conf')
    _write_conf(conf_path, workdir)
    _cinder(conf_path)
    from cinder import context
    from cinder.db import migration
    from cinder import objects
    from cinder.objects import fields
    from cinder.tests.unit import utils as test_utils

    migration.db_sync()
    ctx = context.RequestContext(USER, PROJECT, is_admin=True)
    gib = -(-size // (1 << 30))
    volume_type = test_utils.create_volume_type(ctx.elevated(),
                                                name='qcow2-bench')
    volumes = []
    for index in range(3):
        volume = test_utils.create_volume(ctx, host=HOST, size=gib,
                                          status='in-use',
                                          volume_type_id=volume_type.id)
        path = os.path.join(workdir, 'volumes', volume.name)
        _make_volume(path, size, ring, seed=index + 1)
        test_utils.attach_volume(ctx, volume.id, INSTANCE, 'bench',
                                 '/dev/vd%s' % 'abc'[index])
        volumes.append((volume, path))
    paths = [path for _v, path in volumes]
    group_id = _group(ctx) if args.via == 'set' else None
    print('group_backup: 3 qcow2 volumes of %d MiB (%d%% data: random and '
          'text; rest unallocated) on one running TCG domain; %d pair(s)'
          % (args.size_mib, DATA * 100, args.pairs), flush=True)

    # (Imported once Cinder has monkey patched: it imports the plugin.)
    from bench import qcow2_backup
    subprocess.run(['bash', os.path.join(qcow2_backup.TOP, 'tools',  # nosec
                                         'libvirt', 'start.sh')],
                   check=True, stdout=subprocess.DEVNULL)
    hz = qcow2_backup._tsc_hz()
    from cinder_vmdk_backup.kvm import domains
    conn = domains.connect(guest.LibvirtFixture.URI)
    boot = os.path.join(workdir, 'boot.bin')
    with open(boot, 'wb') as f:
        f.write(guest.boot_sector(disks=3, ring=ring))
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c',  # nosec B603
                    'write -q -s %s 0 512' % boot, paths[0]], check=True,
                   stdout=subprocess.DEVNULL)
    domain = conn.createXML(guest.domain_xml(
        'cvb-bench-group-%d' % os.getpid(), paths, kvm=False, bus='virtio',
        domain_uuid=INSTANCE), 0)
    try:
        scratch = os.path.join(workdir, 'ring.raw')
        deadline = time.monotonic() + 60
        while max(guest.records(_read_ring(paths[2], ring, scratch),
                                ring=ring)) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError('the guest wrote nothing to vdc in 60 s')
            time.sleep(0.5)

        def backups():
            out = []
            for volume, _path in volumes:
                backup = test_utils.create_backup(
                    ctx, volume.id, status=fields.BackupStatus.CREATING,
                    size=volume.size)
                out.append(backup.id)
            return out

        runs = {'group': [], 'singles': []}
        pauses = []
        for _pair in range(args.pairs):
            for step in ('group', 'singles'):
                cut_copy = os.path.join(workdir, 'cut.raw')
                if step == 'singles':
                    ids, kind = backups(), step
                elif args.via == 'set':
                    ids, kind = [group_id], 'set'
                else:
                    ids, kind = backups(), step
                result = _step(kind, conf_path, ids, ring, cut_copy)
                if kind == 'set':
                    # The next set is a full backup too, as the singles
                    # are: this set's backups are no parents.
                    for backup_id in result['backup_ids']:
                        objects.Backup.get_by_id(ctx, backup_id).destroy()
                if step == 'group':
                    live = _read_ring(paths[0], ring, scratch)
                    pauses.append(_pause(live, cut_copy, ring, hz,
                                         result))
                    os.unlink(cut_copy)
                runs[step].append(result)
                _print_step(step, result, pauses)
                # The stored backups are not needed: keep the disk free.
                for name in os.listdir(os.path.join(workdir, 'backups')):
                    shutil.rmtree(os.path.join(workdir, 'backups', name))
    finally:
        domain.destroyFlags(domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        conn.close()
    return _report(runs, pauses, args.via)


def _group(ctx):
    """The instance group of the volumes; a cinder-backup service row."""
    from cinder.backup import rpcapi as backup_rpcapi
    from cinder import objects
    from cinder.objects import base as objects_base
    from oslo_utils import timeutils

    from cinder_vmdk_backup.group import api as group_api

    # (Versions as a running cinder-backup reports them.)
    service = objects.Service(
        ctx, host=BACKUP_HOST, binary='cinder-backup', topic='cinder-backup',
        availability_zone='fake_az', report_count=1, disabled=False,
        rpc_current_version=backup_rpcapi.BackupAPI.RPC_API_VERSION,
        object_current_version=objects_base.OBJ_VERSIONS.get_current())
    service.create()
    service.updated_at = timeutils.utcnow()
    service.save()
    return group_api.API().create(ctx, INSTANCE)['id']


def _pause(live, cut_copy, ring, hz, result):
    """Guest-visible gaps at the group's snapshot and after it (ms)."""
    from tests.functional.kvm import guest
    cut = _newest(cut_copy, ring)
    stamps = guest.tscs(live, ring=ring)
    gaps = {c: (stamps[c] - stamps[c - 1]) / hz * 1e3 for c in stamps
            if c - 1 in stamps}
    if not cut or cut + 1 not in stamps:
        # The ring no longer holds the cut: the step outlasted it.
        print('  (the guest\'s ring of %d records no longer holds the cut '
              'when the step ends: no guest-side figure)' % ring)
        return {'at': None, 'after': None, 'before': None,
                'pause_ms': result['facts']['pause_ms']}

    def largest(values):
        return max(values) if values else None
    return {
        'at': largest([g for c, g in gaps.items() if abs(c - cut) <= AROUND]),
        'after': largest([g for c, g in gaps.items() if c > cut + AROUND]),
        'before': largest([g for c, g in gaps.items()
                           if cut - 20 * AROUND < c < cut - AROUND]),
        'pause_ms': result['facts']['pause_ms']}


def _ms(value):
    return 'n/a' if value is None else '%.1f ms' % value


def _print_step(step, result, pauses):
    times = [c['frozen_at'] or c['returned_at'] for c in result['freezes']]
    line = '  %-8s %7.2f s  %d freeze(s), points in time spread %.3f s  ' \
           'peak RSS %.0f MiB' % (step, result['seconds'],
                                  len(result['freezes']),
                                  max(times) - min(times) if times else 0,
                                  result['rss'] / MIB)
    if step == 'group':
        p = pauses[-1]
        line += ('\n           guest gaps: at snapshot %s, rest of backup '
                 '%s, before %s; driver pause_ms %s (%s)') % (
                    _ms(p['at']), _ms(p['after']), _ms(p['before']),
                    _ms(p['pause_ms']), result['facts']['consistency'])
    print(line, flush=True)


def _spread(result):
    times = [c['frozen_at'] or c['returned_at'] for c in result['freezes']]
    return max(times) - min(times)


def _report(runs, pauses, via):
    median = vmdk_backup._median
    group = [r['seconds'] for r in runs['group']]
    singles = [r['seconds'] for r in runs['singles']]
    ratios = [g / s for g, s in zip(group, singles)]
    at = [p['at'] for p in pauses if p['at'] is not None]
    after = [p['after'] for p in pauses if p['after'] is not None]
    driver = [p['pause_ms'] for p in pauses if p['pause_ms'] is not None]
    rss = {k: max(r['rss'] for r in v) / MIB for k, v in runs.items()}
    print('results (group = %s; singles = 3 x the manager\'s '
          'create_backup, one after the other):' % (
              'a backup set through group.api and the cinder-backup '
              'endpoint' if via == 'set' else 'one backup_volumes('
              'all_or_nothing=True) of the qcow2 driver'))
    print('  wall time: group %.2f s, three singles %.2f s (medians); '
          'group/singles %s  target <= 1.15'
          % (median(group), median(singles),
             vmdk_backup._pair_summary(ratios)))
    stamped = [r['facts']['data_spread'] for r in runs['group']
               if r['facts']['data_spread'] is not None]
    print('  points in time spread: group %.3f s (%d snapshot; backups\' '
          'data_timestamp %s), singles %.2f s (medians)  target 0'
          % (median([_spread(r) for r in runs['group']]),
             max(len(r['freezes']) for r in runs['group']),
             '%.3f s' % max(stamped) if stamped else 'not set',
             median([_spread(r) for r in runs['singles']])))
    before = [p['before'] for p in pauses if p['before'] is not None]
    singles_pause = [c['pause_ms'] for r in runs['singles']
                     for c in r['freezes'] if c['pause_ms'] is not None]
    print('  guest-visible pause of the group at the snapshot: median %s, '
          'largest %s of %d; in the rest of the backup: largest %s; '
          'driver pause_ms: median %s, largest %s  target < 100 ms'
          % (_ms(median(at) if at else None), _ms(max(at) if at else None),
             len(pauses), _ms(max(after) if after else None),
             _ms(median(driver) if driver else None),
             _ms(max(driver) if driver else None)))
    print('    (the guest\'s own gaps before the snapshot, this machine\'s '
          'jitter: median %s, largest %s; singles\' driver pause_ms: '
          'largest %s)'
          % (_ms(median(before) if before else None),
             _ms(max(before) if before else None),
             _ms(max(singles_pause) if singles_pause else None)))
    print('  peak RSS of the backup process: group %.0f MiB, singles %.0f '
          'MiB  target < 300 MB (%.0f MiB)'
          % (rss['group'], rss['singles'], 300e6 / MIB))
    return 0


if __name__ == '__main__':
    sys.exit(main())
