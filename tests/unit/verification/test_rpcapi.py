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

"""The verification RPC client and endpoint over oslo.messaging's fake
transport: a real RPC server (Cinder's ``rpc.get_server``, topic
``cinder-backup``, this host) dispatches the cast to the endpoint by
namespace and version, as cinder-backup's service does with the manager's
additional endpoints.
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
from cinder_vmdk_backup.verification import endpoint
from cinder_vmdk_backup.verification import rpcapi

HOST = 'backup-a'


class RpcRoundTripTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        backup_manager = mock.create_autospec(manager.BackupManager,
                                              instance=True)
        self.endpoint = endpoint.VerificationEndpoint(backup_manager)
        self.called = threading.Event()
        self.calls = []

        def record(ctxt, **kwargs):
            self.calls.append((ctxt.project_id, kwargs))
            self.called.set()

        patcher = mock.patch.object(self.endpoint, 'verify_backup',
                                    side_effect=record)
        patcher.start()
        self.addCleanup(patcher.stop)
        target = messaging.Target(topic=constants.BACKUP_TOPIC, server=HOST)
        self.server = rpc.get_server(target, [self.endpoint],
                                     objects_base.CinderObjectSerializer())
        self.server.start()
        self.addCleanup(self.server.wait)
        self.addCleanup(self.server.stop)

    def test_names_match_the_endpoint(self):
        self.assertEqual(rpcapi.NAMESPACE, self.endpoint.target.namespace)
        self.assertEqual(rpcapi.VERSION, self.endpoint.target.version)

    def test_cast_reaches_the_endpoint(self):
        rpcapi.VerificationAPI().verify_backup(
            self.ctxt, HOST, fake.BACKUP_ID, 'ver-1', 1)
        self.assertTrue(self.called.wait(10))
        self.assertEqual([(fake.PROJECT_ID, {
            'backup_id': fake.BACKUP_ID, 'verification_id': 'ver-1',
            'deep': True})], self.calls)

    def test_cast_to_another_host_is_not_received(self):
        rpcapi.VerificationAPI().verify_backup(
            self.ctxt, 'backup-b', fake.BACKUP_ID, 'ver-1')
        self.assertFalse(self.called.wait(0.5))
