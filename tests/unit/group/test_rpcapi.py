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

"""The group RPC client and endpoint over oslo.messaging's fake transport.

A real RPC server (Cinder's ``rpc.get_server``, topic ``cinder-backup``,
this host) dispatches to the endpoint by namespace and version, as
cinder-backup's service does with the manager's additional endpoints.
"""

import threading
from unittest import mock

from cinder.common import constants
from cinder import context
from cinder.objects import base as objects_base
from cinder import rpc
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
import oslo_messaging as messaging

from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup.group import manager as group_manager
from cinder_vmdk_backup.group import rpcapi

HOST = 'backup-a'


class RpcRoundTripTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        backup_manager = mock.create_autospec(manager.BackupManager,
                                              instance=True)
        self.endpoint = group_manager.InstanceGroupEndpoint(backup_manager)
        self.called = threading.Event()
        self.calls = []

        def record(name):
            def method(ctxt, **kwargs):
                self.calls.append((name, kwargs))
                self.called.set()
                return ['shutoff', 'test']
            return method

        for name in ('backup_set', 'restore_set', 'restore_set_new',
                     'delete_set', 'instance_power_state'):
            patcher = mock.patch.object(self.endpoint, name,
                                        side_effect=record(name))
            patcher.start()
            self.addCleanup(patcher.stop)
        target = messaging.Target(topic=constants.BACKUP_TOPIC, server=HOST)
        self.server = rpc.get_server(
            target, [self.endpoint],
            objects_base.CinderObjectSerializer())
        self.server.start()
        self.addCleanup(self.server.wait)
        self.addCleanup(self.server.stop)
        self.client = rpcapi.InstanceGroupAPI()

    def test_endpoint_target(self):
        self.assertEqual('instance_groups', self.endpoint.target.namespace)
        self.assertEqual('1.0', self.endpoint.target.version)

    def test_call_power_state(self):
        self.assertEqual(['shutoff', 'test'],
                         self.client.instance_power_state(
                             self.ctxt, HOST, 'inst-1', ['v1']))
        self.assertEqual([('instance_power_state',
                           {'instance_id': 'inst-1', 'volume_ids': ['v1']})],
                         self.calls)

    def test_cast_backup_set(self):
        self.client.backup_set(self.ctxt, HOST, 'set-1')
        self.assertTrue(self.called.wait(10))
        self.assertEqual([('backup_set', {'group_snapshot_id': 'set-1'})],
                         self.calls)
