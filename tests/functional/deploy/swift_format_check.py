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

"""The store-format check of test_store_formats, on a real Swift.

Run with Cinder's virtualenv from the source tree, against a deployment's
Swift (tools/deploy/swift.sh)::

    python tests/functional/deploy/swift_format_check.py INFRA_ENV WORKDIR

Cinder's SwiftBackupDriver logs in as the deployment's cinder-backup does
(single_user, Keystone v3) and writes into the container
``cvb-format-check``; Cinder's database is an sqlite file in WORKDIR (0700,
made by the caller). For each of the plugin's paths (the hand-off reading
at offsets, the hand-off fed by the read-ahead reader, the driver's own
backup() fed by it), the same data is backed up by Cinder's own
``backup()`` and by the plugin: what the two stored must be the same
(object names relative to the prefix, metadata, inflated objects, sha256
file) and Cinder's ``restore()`` must give the data back from the
plugin's backup. Every backup is deleted again. Prints one JSON line
(``{"path": "same", ...}``); exits 1 naming what differs.
"""

import io
import json
import os
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
PATHS = ('handoff', 'handoff_stream', 'stream')


def _read_env(path):
    values = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.strip().partition('=')
            if sep:
                values[key] = value
    return values


def _conf(path, workdir, env):
    lines = [
        '[DEFAULT]', 'state_path = %s' % workdir,
        'backup_compression_algorithm = zlib',
        'driver_owned_backup_hash_block_kb = 32',
        'driver_owned_backup_object_mb = 1',
        'backup_driver = cinder.backup.drivers.swift.SwiftBackupDriver',
        'backup_swift_auth = single_user',
        'backup_swift_auth_version = 3',
        'backup_swift_auth_url = http://127.0.0.1:%s/v3'
        % env['KEYSTONE_PORT'],
        'backup_swift_user = cinder',
        'backup_swift_key = %s' % env['CINDER_SERVICE_PASSWORD'],
        'backup_swift_project = service',
        'backup_swift_user_domain = Default',
        'backup_swift_project_domain = Default',
        'backup_swift_container = cvb-format-check',
        'backup_swift_object_size = %d' % (1 << 20),
        'backup_swift_block_size = 32768',
        'backup_swift_enable_progress_timer = false',
        '[database]',
        'connection = sqlite:///%s' % os.path.join(workdir, 'cinder.sqlite')]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def main(argv):
    env_path, workdir = argv[1:3]
    sys.path.insert(0, TOP)
    conf_path = os.path.join(workdir, 'cinder.conf')
    _conf(conf_path, workdir, _read_env(env_path))
    from cinder import objects
    objects.register_all()
    from cinder.common import config  # noqa: F401
    from cinder import rpc
    from oslo_config import cfg
    import oslo_messaging
    cfg.CONF(['--config-file', conf_path], project='cinder')
    transport = oslo_messaging.get_notification_transport(cfg.CONF,
                                                          url='fake:/')
    rpc.TRANSPORT = rpc.NOTIFICATION_TRANSPORT = transport
    rpc.NOTIFIER = oslo_messaging.Notifier(transport, driver='noop')
    from cinder.backup.drivers import swift
    from cinder import context
    from cinder.db import migration
    from cinder.objects import fields
    from cinder.tests.unit import fake_constants as fake
    from cinder.tests.unit import utils as test_utils

    # (The plugin's options, registered by the module that reads them.)
    from cinder_vmdk_backup.backup import driver_owned  # noqa: F401
    from tests.unit.backup import test_store_formats as formats
    migration.db_sync()
    ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                  is_admin=True)
    volume = test_utils.create_volume(ctxt, size=1)
    service = swift.SwiftBackupDriver(ctxt)
    data = formats.data()
    result, problems = {}, []

    def new_backup():
        return test_utils.create_backup(ctxt, volume.id, size=1,
                                        status=fields.BackupStatus.CREATING)

    for path in PATHS:
        cfg.CONF.set_override('driver_owned_backup_extent_handoff',
                              path != 'stream')
        stock = new_backup()
        service.backup(stock, io.BytesIO(data))
        stock.refresh()
        ours = formats.plugin_backup(ctxt, service, new_backup(), data, path)
        try:
            expected = formats.stored(service, stock)
            actual = formats.stored(service, ours)
            different = sorted(key for key in expected
                               if expected[key] != actual[key])
            ours.status = fields.BackupStatus.RESTORING
            ours.save()
            restored = io.BytesIO(bytes(len(data)))
            service.restore(ours, volume.id, restored, False)
            if restored.getvalue() != data:
                different.append('restored data')
        finally:
            for backup in (stock, ours):
                service.delete_backup(backup)
        result[path] = 'same' if not different else different
        if different:
            problems.append('%s: %s differ' % (path, ', '.join(different)))
    print(json.dumps(result))
    if problems:
        sys.stderr.write('; '.join(problems) + '\n')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
