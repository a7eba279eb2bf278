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

from unittest import mock

import ddt
from novaclient import exceptions as nova_exceptions
from oslo_config import fixture as config_fixture
from oslotest import base

from cinder.compute import nova as cinder_nova
from cinder import context
from cinder import objects

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.group import nova
from cinder_vmdk_backup.group import records

INSTANCE = '3d1c6c0e-77f4-4b53-9a3e-2b6f0b1d2c11'


@ddt.ddt
class NovaTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(nova.CONF))
        self.ctxt = context.RequestContext('user', 'project', is_admin=False)
        patcher = mock.patch.object(cinder_nova, 'novaclient', autospec=True)
        self.novaclient = patcher.start()
        self.addCleanup(patcher.stop)
        self.client = self.novaclient.return_value

    def test_not_configured_asks_nobody(self):
        self.assertIsNone(nova.power_state(self.ctxt, INSTANCE))
        self.novaclient.assert_not_called()

    @ddt.data(('SHUTOFF', 'shutoff'), ('ACTIVE', 'running'),
              ('PAUSED', 'running'), ('ERROR', 'unknown'),
              ('SHELVED_OFFLOADED', 'unknown'))
    @ddt.unpack
    def test_status_mapping(self, status, state):
        self.conf.config(token_auth_url='http://keystone:5000/v3',
                         group='nova')
        self.client.servers.get.return_value = mock.Mock(status=status)
        found, who = nova.power_state(self.ctxt, INSTANCE)
        self.assertEqual(state, found)
        self.assertIn(status, who)
        self.novaclient.assert_called_once_with(
            self.ctxt, privileged_user=False, timeout=30)

    def test_unreachable_or_unknown_server_leaves_it_to_the_driver(self):
        self.conf.config(token_auth_url='http://keystone:5000/v3',
                         group='nova')
        self.client.servers.get.side_effect = nova_exceptions.NotFound(404)
        self.assertIsNone(nova.power_state(self.ctxt, INSTANCE))

    def _backup(self, id_, mountpoint, boot):
        return objects.Backup(id=id_, metadata={
            records.MOUNTPOINT_KEY: mountpoint,
            records.BOOT_KEY: str(boot)})

    def test_boot_maps_restored_volumes(self):
        self.conf.config(token_auth_url='http://keystone:5000/v3',
                         group='nova')
        data = self._backup('b0000000-0000-4000-8000-000000000002',
                            '/dev/vdb', False)
        root = self._backup('b0000000-0000-4000-8000-000000000001',
                            '/dev/vda', True)
        new = {data.id: objects.Volume(id='a0000000-0000-4000-8000-'
                                          '00000000000b'),
               root.id: objects.Volume(id='a0000000-0000-4000-8000-'
                                          '00000000000a')}
        self.client.servers.create.return_value = mock.Mock(id='server-1')
        self.assertEqual('server-1', nova.boot(
            self.ctxt, {'name': 'copy', 'flavor': 'f1'}, [data, root], new))
        (name, image, flavor), kwargs = self.client.servers.create.call_args
        self.assertEqual(('copy', None, 'f1'), (name, image, flavor))
        self.assertEqual([
            {'uuid': new[root.id].id, 'source_type': 'volume',
             'destination_type': 'volume', 'delete_on_termination': False,
             'boot_index': 0, 'device_name': '/dev/vda'},
            {'uuid': new[data.id].id, 'source_type': 'volume',
             'destination_type': 'volume', 'delete_on_termination': False,
             'boot_index': -1, 'device_name': '/dev/vdb'}],
            kwargs['block_device_mapping_v2'])

    def test_boot_with_the_instances_flavor_by_default(self):
        self.conf.config(token_auth_url='http://keystone:5000/v3',
                         group='nova')
        root = objects.Backup(id='b0000000-0000-4000-8000-000000000001',
                              metadata={records.MOUNTPOINT_KEY: '/dev/vda',
                                        records.BOOT_KEY: 'True',
                                        records.INSTANCE_KEY: INSTANCE})
        new = {root.id: objects.Volume(id='a0000000-0000-4000-8000-'
                                          '00000000000a')}
        self.client.servers.get.return_value = mock.Mock(
            flavor={'id': 'flavor-of-the-instance', 'links': []})
        self.client.servers.create.return_value = mock.Mock(id='server-1')
        self.assertEqual('server-1', nova.boot(self.ctxt, {'name': 'copy'},
                                               [root], new))
        self.client.servers.get.assert_called_once_with(INSTANCE)
        (name, image, flavor), _kw = self.client.servers.create.call_args
        self.assertEqual(('copy', None, 'flavor-of-the-instance'),
                         (name, image, flavor))

    def test_boot_without_flavor_of_a_deleted_instance(self):
        self.conf.config(token_auth_url='http://keystone:5000/v3',
                         group='nova')
        root = objects.Backup(id='b0000000-0000-4000-8000-000000000001',
                              metadata={records.BOOT_KEY: 'True',
                                        records.INSTANCE_KEY: INSTANCE})
        self.client.servers.get.side_effect = nova_exceptions.NotFound(404)
        exc = self.assertRaises(
            cvb_exception.InstanceGroupInvalid, nova.boot, self.ctxt,
            {'name': 'copy'}, [root], {root.id: objects.Volume(
                id='a0000000-0000-4000-8000-00000000000a')})
        self.assertIn('flavor of instance %s is unknown (NotFound)'
                      % INSTANCE, str(exc))
        self.client.servers.create.assert_not_called()

    def test_boot_refused_by_nova(self):
        self.conf.config(token_auth_url='http://keystone:5000/v3',
                         group='nova')
        self.client.servers.create.side_effect = nova_exceptions.Forbidden(
            403)
        self.assertRaises(cvb_exception.InstanceGroupInvalid, nova.boot,
                          self.ctxt, {'name': 'x', 'flavor': 'f'}, [], {})

    def test_boot_without_nova(self):
        self.assertIsNone(nova.boot(self.ctxt, {'name': 'x'}, [], {}))
