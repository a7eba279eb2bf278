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

"""One cinder-backup worker process, for the janitor's functional tests.

``python -m tests.functional.vmware.worker SPEC.json`` starts like a
cinder-backup worker does (eventlet monkey patching as ``cinder-backup``
does, the configuration file, the plugin's ``BackupManager`` with its
``process_number``, ``init_host``), then runs one request of the spec:

* ``start``: nothing more;
* ``restore``: the statuses the API sets, then
  ``restore_backup(backup_id, volume_id)``;
* ``backup``: ``create_backup`` + ``continue_backup`` of ``backup_id``.

The database is an sqlite file the test wrote (a copy of its own); the
volume service is not running, its RPC methods are mocks, as in the
in-process tests. The worker prints ``started`` when ``init_host`` is done
and ``done`` or ``failed: ...`` at the end; its log goes to
``SPEC['log']``.
"""

import sys

from cinder import monkey_patch

monkey_patch.patch()

import json  # noqa: E402
import logging  # noqa: E402
from unittest import mock  # noqa: E402


def _configure(spec):
    from cinder.common import config  # noqa: F401 (options)
    from cinder import objects
    from oslo_concurrency import lockutils
    from oslo_config import cfg
    from oslo_messaging import conffixture

    objects.register_all()
    conf = cfg.CONF
    conf([], project='cinder', default_config_files=[spec['conf']])
    messaging = conffixture.ConfFixture(conf)
    messaging.transport_url = 'fake:/'
    messaging.setUp()
    conf.set_override('driver', ['noop'],
                      group='oslo_messaging_notifications')
    lockutils.set_defaults(spec['lock_path'])
    logging.basicConfig(filename=spec['log'], level=logging.DEBUG,
                        format='%(asctime)s %(process)d %(name)s '
                               '%(levelname)s %(message)s', force=True)
    for name in ('suds', 'oslo_vmware.service', 'sqlalchemy', 'alembic',
                 'urllib3', 'oslo.service', 'oslo_vmware.api'):
        logging.getLogger(name).setLevel(logging.INFO)
    from cinder import rpc
    rpc.init(conf)


def _manager(spec):
    from cinder_vmdk_backup.backup import manager

    mgr = manager.BackupManager(host=spec['host'],
                                process_number=spec.get('process_number',
                                                        1))
    rpcapi = mgr.volume_rpcapi
    for name in ('get_backup_device', 'secure_file_operations_enabled',
                 'initialize_connection', 'terminate_connection',
                 'remove_export', 'delete_volume'):
        setattr(rpcapi, name, mock.Mock(name=name))
    return mgr


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    _configure(spec)
    from cinder import context
    from cinder import objects
    from oslo_service import loopingcall

    mgr = _manager(spec)
    ctxt = context.RequestContext(spec['user_id'], spec['project_id'],
                                  is_admin=True)
    mgr.init_host()
    if not mgr.is_initialized:
        try:
            mgr._setup_backup_driver(ctxt)
        except loopingcall.LoopingCallDone:
            pass
    print('started', flush=True)
    try:
        if spec['role'] == 'restore':
            # What the API does before it casts the request.
            backup = objects.Backup.get_by_id(ctxt, spec['backup_id'])
            volume = objects.Volume.get_by_id(ctxt, spec['volume_id'])
            volume.status = 'restoring-backup'
            volume.save()
            backup.status = 'restoring'
            backup.restore_volume_id = volume.id
            backup.save()
            mgr.restore_backup(ctxt, backup, volume.id, False)
        elif spec['role'] == 'backup':
            backup = objects.Backup.get_by_id(ctxt, spec['backup_id'])
            volume = objects.Volume.get_by_id(ctxt, spec['volume_id'])
            mgr.create_backup(ctxt, backup)
            device = objects.BackupDeviceInfo()
            device.volume = volume
            device.secure_enabled = True
            mgr.continue_backup(ctxt, backup, device)
    except Exception as exc:
        logging.getLogger(__name__).exception('request failed')
        print('failed: %s' % exc, flush=True)
        return 1
    print('done', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
