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

"""Backup and restore of a VMDK volume: Cinder's stock path against ours.

One volume (default 1 GiB: half zeros, a quarter log-like text, a quarter
random bytes, as in ``bench.vmdk_codec``) lives on a vcsim started for the
run. The same posix backup driver, with the same compression and chunk
size, backs it up and restores it through:

* **stock**: os-brick's ``VmdkConnector`` (what Cinder 29 uses): download
  of the whole stream-optimized VMDK to ``vmware_tmp_dir``, the backup
  driver reads that file; a restore writes the VMDK file back, uploads it
  to the datastore and copies it over the volume's disk;
* **plugin**: ``VMwareVcVmdkBackupDriver.backup_volume`` /
  ``restore_backup`` (export lease decoded on the fly; import upload);
* **local**: the backup driver alone reading the raw disk from a local file
  (what the plugin's full backup should come close to).

The local and the plugin's full backups run in interleaved pairs
(``--pairs``, default 3), and so do the two restores; each ratio is the
median of the pairs' ratios: on a small shared machine the speed drifts
by up to 1.5x within minutes, which one run of each would show as a ratio
of its own.

Measured: full backup time, incremental backup time and stored bytes after
1 % of the disk changed, restore time (onto a new volume), and of each the
time spent inside the backup driver, CPU time (and vcsim's, on the same
cores), peak local temporary disk space, peak RSS (each step runs in its
own process; RSS from ``os.wait4``) and the peak RSS once set up, before
any data moved. Both restored disks
are compared with the source. Printed as ratios; targets from the
project's issue are checked and shown.

The plugin's steps tune glibc's malloc as the plugin's backup manager does
in cinder-backup (``driver_owned_backup_tune_malloc``); the stock steps run
with glibc's defaults, as under Cinder's own manager. Set
``CVB_BENCH_NO_MALLOC_TUNING=1`` to run the plugin untuned too.

With zlib compression, driver-owned backups and restores have the backup
driver's zlib done by ISA-L (``driver_owned_backup_zlib_implementation``,
:mod:`cinder_vmdk_backup.backup.fast_zlib`); so does the local-file step,
which stands for the backup driver as the plugin runs it (digests of
zeros from a cache too, :mod:`cinder_vmdk_backup.backup.zero_hashing`).
The stock steps
use Python's zlib, as Cinder does. ``--zlib-implementation zlib`` runs the
plugin and the local file with Python's zlib too.

``--restore-checks`` measures what ``driver_owned_restore_check_digests``
costs: a backup by Cinder's own ``backup()`` of the raw disk and one
through the plugin, each restored by the plugin streaming and staged,
checks on and off in interleaved pairs (``--chunk 1999994880``, posix's
default, gives Cinder's one object for the whole disk).

``--size`` runs a smaller disk (the volume is still whole GiB in Cinder;
the rest reads as zeros): a smoke run, the ratios are meant at 1 GiB.
"""

import argparse
import functools
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess  # nosec B404: runs the bench's own steps
import sys
import tempfile
import threading
import time

from bench import vmdk_codec

GIB = 1 << 30
MIB = 1 << 20
VOLUME_HOST = 'bench@vmdk#pool'


# -- Cinder in a bench process ----------------------------------------------

def _cinder(conf_path):
    """Load Cinder with the bench's cinder.conf (sqlite file DB)."""
    from cinder import monkey_patch
    monkey_patch.patch()
    from cinder import objects
    objects.register_all()
    from cinder.backup.drivers import posix  # noqa: F401 (options)
    from cinder.common import config  # noqa: F401
    from cinder import rpc
    from oslo_config import cfg
    import oslo_messaging
    cfg.CONF(['--config-file', conf_path], project='cinder')
    if rpc.NOTIFIER is None:
        transport = oslo_messaging.get_notification_transport(
            cfg.CONF, url='fake:/')
        rpc.TRANSPORT = rpc.NOTIFICATION_TRANSPORT = transport
        rpc.NOTIFIER = oslo_messaging.Notifier(transport, driver='noop')
    return cfg.CONF


def _driver():
    from cinder.volume import configuration
    from cinder.volume.drivers.vmware import vmdk as stock_vmdk

    from cinder_vmdk_backup.volume.drivers import vmdk

    conf = configuration.Configuration(stock_vmdk.vmdk_opts,
                                       config_group='vmdk')
    driver = vmdk.VMwareVcVmdkBackupDriver(configuration=conf,
                                           host='bench@vmdk')
    from cinder import context
    driver.do_setup(context.get_admin_context())
    return driver


def _timed(method):
    """Wrap a backup driver method to add its seconds to ``self.seconds``."""

    @functools.wraps(method)
    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    return timed


def _service(context):
    from cinder.backup.drivers import posix

    class TimedPosix(posix.PosixBackupDriver):
        """The posix driver, counting the seconds spent in it."""

        seconds = 0.0
        backup = _timed(posix.PosixBackupDriver.backup)
        restore = _timed(posix.PosixBackupDriver.restore)

    return TimedPosix(context)


def _objects(ids):
    from cinder import context
    from cinder import objects
    ctx = context.get_admin_context()
    return ctx, [objects.Backup.get_by_id(ctx, i) if kind == 'backup'
                 else objects.Volume.get_by_id(ctx, i)
                 for kind, i in ids]


class _NullService(object):
    """A backup service that reads the whole source and stores nothing."""

    seconds = 0.0

    def backup(self, backup, volume_file):
        while volume_file.read(32 * MIB):
            pass


# -- measurements -----------------------------------------------------------

class DiskPeak(object):
    """Peak bytes allocated under a directory, sampled every 20 ms."""

    def __init__(self, directory):
        self._dir = directory
        self.peak = 0
        # A native thread even when eventlet patched ``threading``: it must
        # sample while the step computes, not only when it waits.
        try:
            from eventlet import patcher
            native = patcher.original('threading')
        except ImportError:
            native = threading
        self._stop = native.Event()
        self._thread = native.Thread(target=self._run, daemon=True)

    def _usage(self):
        total = 0
        for root, _dirs, files in os.walk(self._dir):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_blocks
                except OSError:
                    pass
        return total * 512

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._usage())
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._usage())


def _cpu_seconds():
    """User + system CPU time of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_seconds(pid):
    """User + system CPU time of another process (vcsim), from /proc.

    vcsim runs on the same cores as the step: its CPU time (encoding an
    export, decoding an import) is time the step could not use.
    """
    with open('/proc/%d/stat' % pid) as stat:
        fields = stat.read().rpartition(')')[2].split()
    # utime and stime are fields 14 and 15 of stat(5) (counted from 1),
    # indexes 11 and 12 of what follows the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _ready():
    """Time, CPU time and peak RSS once set up, before data moves."""
    return (time.perf_counter(), _cpu_seconds(),
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _worker(argv):
    """One step in its own process; prints a JSON result."""
    step, conf_path, tmp_dir, raw_path, ids = (
        argv[0], argv[1], argv[2], argv[3], json.loads(argv[4]))
    if step.startswith('plugin') and not os.environ.get(
            'CVB_BENCH_NO_MALLOC_TUNING'):
        # What the plugin's BackupManager does in cinder-backup
        # (driver_owned_backup_tune_malloc); Cinder's own does not.
        from cinder_vmdk_backup import malloc_tuning
        malloc_tuning.apply()
    _cinder(conf_path)
    ctx, objs = _objects(ids)
    service = _service(ctx)
    start, cpu_start, ready_rss = _ready()
    with DiskPeak(tmp_dir) as peak:
        if step == 'local-backup':
            # The backup driver as driver-owned backups configure it (its
            # zlib done by ISA-L unless the run says zlib, zeros not hashed).
            from cinder_vmdk_backup.backup import driver_owned
            backup, = objs
            with open(raw_path, 'rb') as source, \
                    driver_owned.tuned_for_raw_data(service):
                service.backup(backup, source)
        elif step == 'plugin-backup':
            backup, = objs
            driver = _driver()
            start, cpu_start, ready_rss = _ready()
            driver.backup_volume(ctx, backup, service)
        elif step == 'plugin-read':
            # The export and decoding alone: a backup service that only
            # reads (what the plugin's full backup cannot beat).
            backup, = objs
            driver = _driver()
            start, cpu_start, ready_rss = _ready()
            driver.backup_volume(ctx, backup, _NullService())
        elif step == 'stock-backup':
            backup, volume = objs
            driver = _driver()
            start, cpu_start, ready_rss = _ready()
            try:
                _stock_backup(driver, service, backup, volume)
            except Exception as exc:
                # Cinder's chunked drivers index the parent's hash list by
                # block: a VMDK file that grew makes them fail.
                print(json.dumps({'error': '%s: %s' % (
                    type(exc).__name__, exc)}))
                return 0
        elif step == 'plugin-restore':
            backup, volume = objs
            _restore_variant()
            driver = _driver()
            start, cpu_start, ready_rss = _ready()
            driver.restore_backup(ctx, backup, volume, service,
                                  volume_is_new=True)
        elif step == 'stock-restore':
            backup, volume = objs
            driver = _driver()
            start, cpu_start, ready_rss = _ready()
            _stock_restore(driver, service, backup, volume)
        else:
            raise SystemExit('unknown step %s' % step)
        seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    print(json.dumps({'seconds': seconds, 'tmp_peak': peak.peak,
                      'cpu': cpu, 'service': service.seconds,
                      'ready_rss': ready_rss}))
    return 0


_CONNECTOR = {'platform': 'x86_64', 'os_type': 'linux', 'host': 'bench'}


def _restore_variant():
    """``--restore-checks``: the variant a plugin-restore step runs.

    ``CVB_BENCH_RESTORE_CHECKS`` (``driver_owned_restore_check_digests``)
    and ``CVB_BENCH_RESTORE_STREAMING`` (``vmware_backup_restore_
    streaming``), ``0`` or ``1``; unset: the configuration's.
    """
    from oslo_config import cfg

    from cinder_vmdk_backup.backup import restore_checks  # noqa: F401
    from cinder_vmdk_backup import opts
    checks = os.environ.get('CVB_BENCH_RESTORE_CHECKS')
    if checks is not None:
        cfg.CONF.set_override('driver_owned_restore_check_digests',
                              checks == '1')
    streaming = os.environ.get('CVB_BENCH_RESTORE_STREAMING')
    if streaming is not None:
        cfg.CONF.register_opts(opts.vmdk_backup_opts, group='vmdk')
        cfg.CONF.set_override('vmware_backup_restore_streaming',
                              streaming == '1', group='vmdk')


def _connector(driver):
    """os-brick's VmdkConnector, as Cinder's backup manager builds it.

    vcsim serves no WSDL at the default URL; the connector (which has no
    WSDL option) is given the one Cinder's driver uses. Nothing else
    changes.
    """
    from os_brick.initiator.connectors import vmware
    from oslo_vmware import api

    wsdl = driver.configuration.vmware_wsdl_location

    class Connector(vmware.VmdkConnector):
        def _create_session(self):
            return api.VMwareAPISession(
                self._ip, self._username, self._password,
                self._api_retry_count, self._task_poll_interval,
                port=self._port, cacert=self._ca_file,
                insecure=self._insecure, wsdl_loc=wsdl)

    return Connector(None)


def _stock_backup(driver, service, backup, volume):
    """What Cinder 29 does: os-brick's VmdkConnector, then the service."""
    info = driver.initialize_connection(volume, _CONNECTOR)
    connector = _connector(driver)
    device = connector.connect_volume(info['data'])
    try:
        with open(device['path'], 'rb') as volume_file:
            service.backup(backup, volume_file)
    finally:
        connector.disconnect_volume(info['data'], device)


def _stock_restore(driver, service, backup, volume):
    info = driver.initialize_connection(volume, _CONNECTOR)
    connector = _connector(driver)
    device = connector.connect_volume(info['data'])
    try:
        with open(device['path'], 'wb') as volume_file:
            # An existing volume (volume_is_new=True would drop the VMDK's
            # all-zero end-of-stream sector: Cinder's bug, not measured).
            service.restore(backup, volume.id, volume_file, False)
    except Exception:
        os.unlink(device['path'])
        raise
    # The upload to the datastore and the disk copy happen here.
    connector.disconnect_volume(info['data'], device)


# -- the run ----------------------------------------------------------------

#: Forks the step from a small process: Linux counts a forked child's
#: pre-exec memory in its ru_maxrss, so the parent must be small.
_LAUNCHER = (
    'import os, sys\n'
    'pid = os.fork()\n'
    'if pid == 0:\n'
    '    os.execv(sys.argv[1], sys.argv[1:])\n'
    '_, status, usage = os.wait4(pid, 0)\n'
    'sys.stdout.flush()\n'
    'print("\\n%d %d" % (usage.ru_maxrss, '
    'os.waitstatus_to_exitcode(status)))\n')


def _step(step, conf_path, tmp_dir, raw_path, ids):
    """Run one step in its own process; its result with peak RSS."""
    # The step's log (warnings, the faults oslo.vmware logs for expected
    # answers) is shown only when the step fails.
    run = subprocess.run(
        [sys.executable, '-S', '-c', _LAUNCHER, sys.executable, '-m',
         'bench.vmdk_backup', '--worker', step, conf_path, tmp_dir,
         raw_path, json.dumps(ids)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        check=False)  # nosec B603
    out, _, report = run.stdout.rstrip(b'\n').rpartition(b'\n')
    try:
        maxrss, status = map(int, report.split()[:2])
    except ValueError:
        status = run.returncode or 1
    if status or run.returncode:
        sys.stderr.write(run.stderr.decode('utf-8', 'replace'))
        raise RuntimeError('step %s failed (%d)' % (step, status))
    result = json.loads(out.splitlines()[-1])
    result['rss'] = maxrss * 1024
    return result


def _write_conf(path, workdir, vcsim, args):
    options = dict(vcsim.cinder_backend_options())
    options.update({
        'volume_driver': 'cinder_vmdk_backup.volume.drivers.vmdk.'
                         'VMwareVcVmdkBackupDriver',
        'vmware_tmp_dir': os.path.join(workdir, 'tmp'),
        'vmware_lazy_create': True,
        'vmware_task_poll_interval': 0.2,
    })
    # Extra backend options, e.g. CVB_BENCH_BACKEND_OPTS=
    # 'vmware_backup_compression_threads=1' (experiments).
    for item in os.environ.get('CVB_BENCH_BACKEND_OPTS', '').split(','):
        if item.strip():
            key, _, value = item.partition('=')
            options[key.strip()] = value.strip()
    # Extra [DEFAULT] options, e.g. CVB_BENCH_DEFAULT_OPTS=
    # 'driver_owned_backup_read_ahead_mb=0' (experiments).
    defaults = ''.join(
        '%s = %s\n' % tuple(part.strip() for part in item.split('=', 1))
        for item in os.environ.get('CVB_BENCH_DEFAULT_OPTS', '').split(',')
        if '=' in item)
    with open(path, 'w') as conf:
        conf.write('[DEFAULT]\n' + defaults)
        conf.write('host = bench\n'
                   'enabled_backends = vmdk\n'
                   'backup_driver = cinder.backup.drivers.posix.'
                   'PosixBackupDriver\n'
                   'backup_posix_path = %s\n'
                   'backup_compression_algorithm = %s\n'
                   'backup_file_size = %d\n'
                   'backup_enable_progress_timer = false\n'
                   'driver_owned_backup_zlib_implementation = %s\n'
                   'state_path = %s\n'
                   '[database]\n'
                   'connection = sqlite:///%s\n'
                   '[vmdk]\n' % (os.path.join(workdir, 'backups'),
                                 args.compression,
                                 vmdk_codec.parse_size(args.chunk),
                                 args.zlib_implementation, workdir,
                                 os.path.join(workdir, 'cinder.sqlite')))
        for key, value in options.items():
            if isinstance(value, (list, tuple)):
                value = ','.join(value)
            conf.write('%s = %s\n' % (key, value))


def _stored_bytes(workdir, backup):
    container = os.path.join(workdir, 'backups', backup.container)
    prefix = backup.service_metadata + '-'
    return sum(os.path.getsize(os.path.join(container, name))
               for name in os.listdir(container) if name.startswith(prefix))


def _change(raw_path, fraction, seed=11):
    """Overwrite ``fraction`` of the disk in 64 KiB pieces (text/random)."""
    rng = random.Random(seed)
    pool = vmdk_codec.text_pool(seed=seed, size=4 * MIB)
    size = os.path.getsize(raw_path)
    piece = 64 << 10
    changed = []
    with open(raw_path, 'r+b') as disk:
        for _ in range(max(1, int(size * fraction) // piece)):
            offset = rng.randrange(size // piece) * piece
            if rng.random() < 0.5:
                pos = rng.randrange(len(pool) - piece)
                data = pool[pos:pos + piece]
            else:
                data = rng.randbytes(piece)
            disk.seek(offset)
            disk.write(data)
            changed.append(offset)
    return changed


def _file_digest(path, size):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            data = f.read(8 * MIB)
            if not data:
                break
            digest.update(data)
    digest.update(bytes(size - os.path.getsize(path)))
    return digest.hexdigest()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == '--worker':
        profile_dir = os.environ.get('CVB_BENCH_PROFILE')
        if profile_dir:
            import cProfile
            path = os.path.join(profile_dir, '%s.prof' % argv[1])
            return cProfile.runctx('_worker(argv[1:])', globals(),
                                   {'argv': argv}, path)
        return _worker(argv[1:])
    parser = argparse.ArgumentParser(prog='python -m bench vmdk_backup',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--size', default='1G',
                        help='data size of the volume (default 1G)')
    parser.add_argument('--compression', default='zlib',
                        help='backup_compression_algorithm of both paths')
    parser.add_argument('--chunk', default='32M',
                        help='backup_file_size of both paths (default 32M; '
                             "Cinder's default 1.86 GiB holds a whole chunk "
                             'in memory)')
    parser.add_argument('--zlib-implementation', default='isal',
                        choices=('isal', 'zlib'),
                        help='driver_owned_backup_zlib_implementation of '
                             'the plugin and the local file (default '
                             "isal, the plugin's default); the stock path "
                             "always uses Python's zlib, as in Cinder"),
    parser.add_argument('--change', type=float, default=0.01,
                        help='fraction changed before the incremental')
    parser.add_argument('--pairs', type=int, default=3,
                        help='full backups of the local file and through '
                             'the plugin, and the restores of both paths, '
                             'run in pairs this many times (default 3); '
                             'the median of the pairs\' ratios is reported')
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--full-only', action='store_true',
                        help='only the full backups (local, stock, plugin) '
                             'and their ratios: a quick check')
    parser.add_argument('--restore-checks', action='store_true',
                        help='only what the restore checks cost: a '
                             'backup by Cinder\'s own backup() of the raw '
                             'disk and one through the plugin, each '
                             'restored by the plugin streaming and staged, '
                             'checks on and off in pairs')
    parser.add_argument('--restore-only', action='store_true',
                        help='only the full backups of both paths and '
                             'their restores: a quick check of restores')
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error('--pairs must be at least 1')
    size = vmdk_codec.parse_size(args.size)
    workdir = tempfile.mkdtemp(prefix='cvb-bench-', dir=args.workdir)
    try:
        return _bench(args, size, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def prepare_workdir(workdir, size):
    """The bench's directories and its disk of realistic content.

    :returns: ``(path of the raw disk, its content counts)``
    """
    os.makedirs(os.path.join(workdir, 'tmp'))
    os.makedirs(os.path.join(workdir, 'backups'))
    raw = os.path.join(workdir, 'disk.raw')
    return raw, vmdk_codec.make_disk(raw, size)


def _bench(args, size, workdir):
    from tests.functional import vcsim as vcsim_fixture

    raw, counts = prepare_workdir(workdir, size)
    vcsim = vcsim_fixture.VcsimFixture()
    vcsim.setUp()
    try:
        conf_path = os.path.join(workdir, 'cinder.conf')
        _write_conf(conf_path, workdir, vcsim, args)
        return _run_steps(args, size, workdir, raw, counts, vcsim,
                          conf_path)
    finally:
        vcsim.cleanUp()


def _run_steps(args, size, workdir, raw, counts, vcsim, conf_path):
    conf = _cinder(conf_path)
    from cinder import context
    from cinder.db import migration
    from cinder.tests.unit import utils as test_utils

    from tests.functional import vcsim as vcsim_fixture

    migration.db_sync()
    ctx = context.get_admin_context()
    gib = -(-size // GIB)
    volume_type = test_utils.create_volume_type(ctx, name='vmdk-bench')

    def new_volume(status):
        return test_utils.create_volume(ctx, host=VOLUME_HOST, size=gib,
                                        status=status,
                                        volume_type_id=volume_type.id)

    source = new_volume('available')
    driver = _driver()
    backing = driver._create_backing(source)
    vmdk_path = driver.volumeops.get_vmdk_path(backing)

    def seed():
        with open(raw, 'rb') as f:
            vcsim_fixture.seed_disk(vcsim, vmdk_path, f.read())

    seed()

    def check(targets):
        return _restored_same(driver, vcsim, raw, gib, targets)

    tmp = os.path.join(workdir, 'tmp')

    def backup_of(volume, parent=None):
        return test_utils.create_backup(
            ctx, volume.id, status='creating', size=gib,
            parent_id=parent and parent.id)

    results = {}

    def run(name, step, ids):
        peer_cpu = _process_cpu_seconds(vcsim.pid)
        results[name] = _step(step, conf_path, tmp, raw, ids)
        if 'error' in results[name]:
            print('  %-16s failed: %s' % (name, results[name]['error']))
            return
        results[name]['vcsim_cpu'] = (_process_cpu_seconds(vcsim.pid) -
                                      peer_cpu)
        print('  %-16s %7.2f s (backup driver %6.2f s)  CPU %6.2f s '
              '(vcsim %5.2f s)  peak tmp %6.1f MiB  peak RSS %6.1f MiB '
              '(%5.1f set up)'
              % (name, results[name]['seconds'], results[name]['service'],
                 results[name]['cpu'], results[name]['vcsim_cpu'],
                 results[name]['tmp_peak'] / MIB,
                 results[name]['rss'] / MIB,
                 results[name]['ready_rss'] / MIB),
              flush=True)

    print('disk: %s (%s); chunk %s, compression %s (plugin and local: '
          'zlib by %s)'
          % (args.size, ', '.join('%s %d MiB' % (k, v // MIB)
                                  for k, v in counts.items()),
             args.chunk, args.compression, args.zlib_implementation),
          flush=True)
    stock_full = backup_of(source)
    run('stock full', 'stock-backup', [('backup', stock_full.id),
                                       ('volume', source.id)])
    if args.restore_checks:
        return _restore_checks(run, results, args.pairs, check, new_volume,
                               backup_of, source)
    if args.restore_only:
        plugin_full = backup_of(source)
        run('plugin full', 'plugin-backup', [('backup', plugin_full.id)])
        return _restores(run, results, args.pairs, check, new_volume,
                         stock_full, plugin_full)

    local = backup_of(source)
    plugin_full = backup_of(source)
    _full_pairs(run, results, args.pairs, local, plugin_full,
                lambda: backup_of(source))
    if args.full_only:
        run('plugin read', 'plugin-read', [('backup', backup_of(source).id)])
        print('  full backup time, plugin/stock %.2f, plugin/local %s'
              % (results['plugin full']['seconds'] /
                 results['stock full']['seconds'],
                 _pair_summary(results['full pairs'])))
        print('  ' + _cpu_floor(results['plugin full']))
        return 0

    _change(raw, args.change)
    seed()
    stock_incr = backup_of(source, parent=stock_full)
    run('stock incr', 'stock-backup', [('backup', stock_incr.id),
                                       ('volume', source.id)])
    notes = []
    if 'error' in results['stock incr']:
        notes.append('stock incremental FAILED (%s); a stock full backup '
                     'of the changed disk stands in for it'
                     % results['stock incr']['error'])
        stock_incr = backup_of(source)
        run('stock incr', 'stock-backup', [('backup', stock_incr.id),
                                           ('volume', source.id)])
    plugin_incr = backup_of(source, parent=plugin_full)
    run('plugin incr', 'plugin-backup', [('backup', plugin_incr.id)])

    same = _run_restores(run, results, args.pairs, new_volume, check,
                         stock_incr, plugin_incr)

    for backup in (stock_full, stock_incr, plugin_full, plugin_incr, local):
        backup.refresh()
    stored = {name: _stored_bytes(workdir, b) for name, b in (
        ('stock full', stock_full), ('stock incr', stock_incr),
        ('plugin full', plugin_full), ('plugin incr', plugin_incr),
        ('local full', local))}
    for note in notes:
        print('note: ' + note)
    return _report(results, stored, same, conf)


def _full_pairs(run, results, pairs, local, plugin, new_backup):
    """Full backups of the local file and through the plugin, in pairs.

    ``local`` and ``plugin`` are the backups of the first pair (``plugin``
    is the parent of the incremental); later pairs use new ones from
    ``new_backup``. The pairs' plugin/local ratios go to
    ``results['full pairs']`` (see :func:`_in_pairs`).
    """
    def run_pair(index):
        for name, step, backup in (('local full', 'local-backup', local),
                                   ('plugin full', 'plugin-backup', plugin)):
            run(name, step, [('backup', new_backup().id if index
                              else backup.id)])

    results['full pairs'] = _in_pairs(results, pairs, run_pair,
                                      'plugin full', 'local full')


def _in_pairs(results, pairs, run_pair, numerator, denominator):
    """Run two steps one after the other, ``pairs`` times; their ratios.

    A drift of the machine's speed (up to 1.5x within minutes on a shared
    2-core VM) then hits both members of a pair alike, and each pair gives
    a ratio. For each step, the run whose time is the median of its runs
    stands for it in ``results`` (its CPU figures; RSS and temp are the
    peaks of all runs).

    :param run_pair: runs both steps once, given the pair's index
    :returns: the time ratios ``numerator / denominator``, one per pair
    """
    runs = {numerator: [], denominator: []}
    for index in range(pairs):
        run_pair(index)
        for name, done in runs.items():
            done.append(results[name])
    for name, done in runs.items():
        done = sorted(done, key=lambda result: result['seconds'])
        results[name] = dict(done[len(done) // 2],
                             rss=max(r['rss'] for r in done),
                             tmp_peak=max(r['tmp_peak'] for r in done))
    return [top['seconds'] / bottom['seconds']
            for top, bottom in zip(runs[numerator], runs[denominator])]


def _median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _pair_summary(ratios):
    """The median of the pairs' ratios, and each of them."""
    return '%.2f (median of %d pairs: %s)' % (
        _median(ratios), len(ratios), ', '.join('%.2f' % r for r in ratios))


def _run_restores(run, results, pairs, new_volume, check, stock_backup,
                  plugin_backup):
    """Restore both backups onto new volumes, in pairs; check each disk.

    The pairs' stock/plugin ratios go to ``results['restore pairs']`` (see
    :func:`_in_pairs`).

    :param check: gives, for a ``{'stock': volume, 'plugin': volume}``, the
        same dict with whether each restored disk equals the source
    :returns: whether each path restored the source in every pair
    """
    same = {'stock': True, 'plugin': True}

    def run_pair(_index):
        for backup in (stock_backup, plugin_backup):
            backup.status = 'restoring'
            backup.save()
        stock_target = new_volume('available')
        run('stock restore', 'stock-restore', [('backup', stock_backup.id),
                                               ('volume', stock_target.id)])
        plugin_target = new_volume('creating')
        run('plugin restore', 'plugin-restore',
            [('backup', plugin_backup.id), ('volume', plugin_target.id)])
        for name, ok in check({'stock': stock_target,
                               'plugin': plugin_target}).items():
            same[name] = same[name] and ok

    results['restore pairs'] = _in_pairs(results, pairs, run_pair,
                                         'stock restore', 'plugin restore')
    return same


def _restored_same(driver, vcsim, raw, gib, targets):
    """Whether each restored volume's disk equals the source."""
    from tests.functional import vcsim as vcsim_fixture

    want = _file_digest(raw, gib * GIB)
    same = {}
    for name, volume in targets.items():
        volume.refresh()
        path = driver.volumeops.get_vmdk_path(
            driver.volumeops.get_backing(volume.name, volume.id))
        data = vcsim_fixture.read_disk(vcsim, path)
        data += bytes(gib * GIB - len(data))
        same[name] = hashlib.sha256(data).hexdigest() == want
        del data
    return same


def _restores(run, results, pairs, check, new_volume, stock_full,
              plugin_full):
    """``--restore-only``: restore the two full backups, compare."""
    same = _run_restores(run, results, pairs, new_volume, check, stock_full,
                         plugin_full)
    print('restored disks identical to the source: plugin %s, stock %s'
          % (same['plugin'], same['stock']))
    print('  restore time, stock/plugin ' +
          _pair_summary(results['restore pairs']))
    return 0 if all(same.values()) else 1


def _restore_checks(run, results, pairs, check, new_volume, backup_of,
                    source):
    """``--restore-checks``: restores with checks on and off, in pairs.

    The raw-disk backup is Cinder's own format (``backup()`` of the raw
    file: one object per ``--chunk``, Cinder's hash block); the plugin's
    is the extent hand-off's (zero objects, 1 MiB hash blocks).
    """
    local = backup_of(source)
    run('local full', 'local-backup', [('backup', local.id)])
    plugin = backup_of(source)
    run('plugin full', 'plugin-backup', [('backup', plugin.id)])
    same = True
    summary = []
    for label, backup in (('raw-disk backup', local),
                          ('plugin backup', plugin)):
        for streaming in ('1', '0'):
            os.environ['CVB_BENCH_RESTORE_STREAMING'] = streaming
            names = {'1': '%s checked' % label, '0': '%s unchecked' % label}

            def run_pair(index):
                nonlocal same
                targets = {}
                # The order swaps every pair: what runs second finds the
                # page cache warmed by the first.
                for checks in ('1', '0') if index % 2 == 0 else ('0', '1'):
                    os.environ['CVB_BENCH_RESTORE_CHECKS'] = checks
                    backup.status = 'restoring'
                    backup.save()
                    targets[checks] = new_volume('creating')
                    run(names[checks], 'plugin-restore',
                        [('backup', backup.id),
                         ('volume', targets[checks].id)])
                same = same and all(check(targets).values())

            ratios = _in_pairs(results, pairs, run_pair, names['1'],
                               names['0'])
            summary.append('  %s, %s: time checked/unchecked %s; CPU '
                           'checked %.2f s, unchecked %.2f s' % (
                               label, 'streaming' if streaming == '1'
                               else 'staged', _pair_summary(ratios),
                               results[names['1']]['cpu'],
                               results[names['0']]['cpu']))
            results['%s %s' % (label, streaming)] = dict(
                (checks, results[names[checks]]['seconds'])
                for checks in ('1', '0'))
    for key in ('CVB_BENCH_RESTORE_STREAMING', 'CVB_BENCH_RESTORE_CHECKS'):
        os.environ.pop(key, None)
    print('restored disks identical to the source: %s' % same)
    print('\n'.join(summary))
    for label in ('raw-disk backup', 'plugin backup'):
        print('  %s, checked: streaming %.2f s, staged %.2f s (medians)'
              % (label, results['%s 1' % label]['1'],
                 results['%s 0' % label]['1']))
    return 0 if same else 1


def _cpu_floor(result):
    """The wall time a step cannot go below on this machine's cores."""
    cpus = os.cpu_count() or 1
    busy = result['cpu'] + result['vcsim_cpu']
    return ('plugin full + vcsim: %.2f CPU seconds on %d cores, at least '
            '%.2f s of wall time' % (busy, cpus, busy / cpus))


def _report(results, stored, same, conf):
    def ratio(a, b):
        return a / b if b else float('inf')

    r = results
    rows = [
        ('full backup time, plugin/stock',
         ratio(r['plugin full']['seconds'], r['stock full']['seconds']),
         '<= 1.0'),
        ('full backup time, plugin/local file (median of pairs)',
         _median(r['full pairs']), '<= 1.15'),
        ('incremental time, stock/plugin',
         ratio(r['stock incr']['seconds'], r['plugin incr']['seconds']),
         '>= 3'),
        ('incremental stored, plugin incr/plugin full',
         ratio(stored['plugin incr'], stored['plugin full']), '<= 0.03'),
        ('incremental stored, stock incr/stock full',
         ratio(stored['stock incr'], stored['stock full']), '(info)'),
        ('restore time, stock/plugin (median of pairs)',
         _median(r['restore pairs']), '>= 2'),
    ]
    print('\nstored bytes: ' + ', '.join(
        '%s %.1f MiB' % (k, v / MIB) for k, v in stored.items()))
    print('peak local temp during backup: plugin %.1f MiB, stock %.1f MiB '
          '(target <= 64 MiB)' % (
              max(r['plugin full']['tmp_peak'],
                  r['plugin incr']['tmp_peak']) / MIB,
              max(r['stock full']['tmp_peak'],
                  r['stock incr']['tmp_peak']) / MIB))
    print('peak RSS: plugin %.0f MiB, stock %.0f MiB (target < 300 MB)' % (
        max(v['rss'] for k, v in r.items() if k.startswith('plugin ')) / MIB,
        max(v['rss'] for k, v in r.items() if k.startswith('stock ')) / MIB))
    print('restored disks identical to the source: plugin %s, stock %s'
          % (same['plugin'], same['stock']))
    print(_cpu_floor(r['plugin full']))
    print('full backup time, plugin/local file: ' +
          _pair_summary(r['full pairs']))
    print('restore time, stock/plugin: ' + _pair_summary(r['restore pairs']))
    print()
    for name, value, target in rows:
        print('  %-54s %7.2f   target %s' % (name, value, target))
    return 0 if same['plugin'] else 1


if __name__ == '__main__':
    sys.exit(main())
