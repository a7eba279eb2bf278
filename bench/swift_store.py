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

"""Full backup time on the Swift store against the posix store.

The same raw disk (default 1 GiB: half zeros, a quarter log-like text, a
quarter random bytes, as in ``bench.vmdk_codec``) is backed up in full by
Cinder's PosixBackupDriver (into a local directory) and by Cinder's
SwiftBackupDriver (into the deployment's Swift: tools/deploy/swift.sh,
through Keystone, as cinder-backup's single_user login does), each as
driver-owned backups run them (:func:`cinder_vmdk_backup.backup.
driver_owned.tuned_for_raw_data`: ISA-L zlib when zlib, zero digests from
the cache), with the same compression and object size (32 MiB, the
driver-owned hand-off's default). Each backup runs in its own process and
is deleted after it is timed. The two run in interleaved pairs
(``--pairs``, default 3): the ratio is the median of the pairs' swift /
posix ratios (this machine's speed drifts within minutes).

Needs a deployment with Swift running::

    CVB_DEPLOY_BACKUP_STORE=swift tools/deploy/up.sh plugin
    python -m bench swift_store --deploy-dir /var/tmp/cvb-deploy
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess  # nosec B404: runs the bench's own steps
import sys
import tempfile
import time

from bench import vmdk_codec

GIB = 1 << 30
MIB = 1 << 20
OBJECT = 32 * MIB


def _read_env(path):
    values = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.strip().partition('=')
            if sep:
                values[key] = value
    return values


def _swift_alive(infra):
    for server in ('proxy', 'account', 'container', 'object'):
        try:
            with open(os.path.join(infra, 'swift-%s.pid' % server)) as f:
                os.kill(int(f.read().strip()), 0)
        except (OSError, ValueError):
            return False
    return True


def _write_conf(path, workdir, store, infra_env, compression):
    lines = ['[DEFAULT]', 'host = bench', 'state_path = %s' % workdir,
             'backup_compression_algorithm = %s' % compression,
             'backup_enable_progress_timer = false',
             'backup_swift_enable_progress_timer = false']
    if store == 'posix':
        lines += ['backup_driver = cinder.backup.drivers.posix.'
                  'PosixBackupDriver',
                  'backup_posix_path = %s' % os.path.join(workdir, 'backups'),
                  'backup_file_size = %d' % OBJECT]
    else:
        lines += ['backup_driver = cinder.backup.drivers.swift.'
                  'SwiftBackupDriver',
                  'backup_swift_auth = single_user',
                  'backup_swift_auth_version = 3',
                  'backup_swift_auth_url = http://127.0.0.1:%s/v3'
                  % infra_env['KEYSTONE_PORT'],
                  'backup_swift_user = cinder',
                  'backup_swift_key = %s'
                  % infra_env['CINDER_SERVICE_PASSWORD'],
                  'backup_swift_project = service',
                  'backup_swift_user_domain = Default',
                  'backup_swift_project_domain = Default',
                  'backup_swift_container = cvb-bench',
                  'backup_swift_object_size = %d' % OBJECT]
    lines += ['[database]',
              'connection = sqlite:///%s' % os.path.join(workdir,
                                                         'cinder.sqlite')]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def _cinder(conf_path):
    from cinder import objects
    objects.register_all()
    from cinder.backup import manager  # noqa: F401 (backup_driver)
    from cinder.common import config  # noqa: F401
    from cinder import rpc
    from oslo_config import cfg
    import oslo_messaging
    cfg.CONF(['--config-file', conf_path], project='cinder')
    if rpc.NOTIFIER is None:
        # The drivers' progress notifications go nowhere.
        transport = oslo_messaging.get_notification_transport(
            cfg.CONF, url='fake:/')
        rpc.TRANSPORT = rpc.NOTIFICATION_TRANSPORT = transport
        rpc.NOTIFIER = oslo_messaging.Notifier(transport, driver='noop')
    return cfg.CONF


def _worker(argv):
    """One full backup in its own process; prints its seconds (JSON)."""
    conf_path, raw_path, backup_id = argv
    conf = _cinder(conf_path)
    from cinder import context
    from cinder import objects
    from oslo_utils import importutils

    from cinder_vmdk_backup.backup import driver_owned
    backup = objects.Backup.get_by_id(context.get_admin_context(),
                                      backup_id)
    # A user in the context: the Swift driver connects only for one.
    ctxt = context.RequestContext(backup.user_id, backup.project_id,
                                  is_admin=True)
    service = importutils.import_object(conf.backup_driver, ctxt)
    start = time.perf_counter()
    with open(raw_path, 'rb') as source, \
            driver_owned.tuned_for_raw_data(service):
        service.backup(backup, source)
    seconds = time.perf_counter() - start
    backup.refresh()
    service.delete_backup(backup)
    print(json.dumps({'seconds': seconds}))
    return 0


def _step(conf_path, raw_path, backup_id):
    run = subprocess.run(  # nosec B603
        [sys.executable, '-m', 'bench.swift_store', '--worker', conf_path,
         raw_path, backup_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if run.returncode:
        sys.stderr.write(run.stderr.decode('utf-8', 'replace')[-4000:])
        raise RuntimeError('backup step failed (%d)' % run.returncode)
    return json.loads(run.stdout.decode().strip().splitlines()[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == '--worker':
        return _worker(argv[1:])
    parser = argparse.ArgumentParser(prog='python -m bench swift_store',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--size', default='1G', help='disk size (1G)')
    parser.add_argument('--pairs', type=int, default=3)
    parser.add_argument('--compression', default='zstd',
                        help="backup_compression_algorithm (the "
                             "deployment's: zstd)")
    parser.add_argument('--deploy-dir', default=os.environ.get(
        'CVB_DEPLOY_DIR', '/var/tmp/cvb-deploy'))
    parser.add_argument('--workdir', default=None)
    args = parser.parse_args(argv)
    infra = os.path.join(args.deploy_dir, 'infra')
    if not _swift_alive(infra):
        print('no Swift running in %s: start it with '
              'CVB_DEPLOY_BACKUP_STORE=swift CVB_DEPLOY_DIR=%s '
              'tools/deploy/up.sh plugin' % (args.deploy_dir,
                                             args.deploy_dir))
        return 2
    infra_env = _read_env(os.path.join(infra, 'env'))
    size = vmdk_codec.parse_size(args.size)
    workdir = tempfile.mkdtemp(prefix='cvb-bench-swift-',
                               dir=args.workdir)
    try:
        return _bench(args, size, workdir, infra_env)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(args, size, workdir, infra_env):
    os.makedirs(os.path.join(workdir, 'backups'))
    confs = {}
    for store in ('posix', 'swift'):
        confs[store] = os.path.join(workdir, '%s.conf' % store)
        _write_conf(confs[store], workdir, store, infra_env,
                    args.compression)
    raw = os.path.join(workdir, 'disk.raw')
    counts = vmdk_codec.make_disk(raw, size)
    print('disk: %.0f MiB (%s)' % (size / MIB, ', '.join(
        '%s %.0f MiB' % (k, v / MIB) for k, v in sorted(counts.items()))))
    _cinder(confs['posix'])
    from cinder import context
    from cinder.db import migration
    from cinder.tests.unit import utils as test_utils
    migration.db_sync()
    ctx = context.get_admin_context()
    gib = -(-size // GIB)
    volume = test_utils.create_volume(ctx, size=gib, status='backing-up')
    times = {'posix': [], 'swift': []}
    ratios = []
    for index in range(args.pairs):
        order = ('posix', 'swift') if index % 2 == 0 else ('swift', 'posix')
        pair = {}
        for store in order:
            backup = test_utils.create_backup(ctx, volume.id,
                                              status='creating', size=gib)
            pair[store] = _step(confs[store], raw, backup.id)['seconds']
            times[store].append(pair[store])
            print('  pair %d %-5s full backup %6.2f s' % (index + 1, store,
                                                          pair[store]))
        ratios.append(pair['swift'] / pair['posix'])
    result = {'size': size, 'compression': args.compression,
              'posix_seconds': times['posix'],
              'swift_seconds': times['swift'],
              'ratios': [round(r, 3) for r in ratios],
              'swift_over_posix': round(statistics.median(ratios), 3)}
    print('Swift / posix full backup time (median of %d pairs): %.2fx'
          % (args.pairs, result['swift_over_posix']))
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
