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

"""InstanceGroupClient against a real keystoneauth1 session and HTTP."""

import ddt
from keystoneauth1 import access
from keystoneauth1 import fixture as ks_fixture
from keystoneauth1.identity import access as access_plugin
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
import testtools

from cinder_vmdk_backup.client import exceptions
from cinder_vmdk_backup.client import instance_groups
from tests.unit.client import http_peer

TOKEN = 'tok-secret-0123456789'
PROJECT = 'f0e1d2c3b4a5968778695a4b3c2d1e0f'
GROUP = '9b0c4b6e-44a5-4bd2-8c39-0d2c7a6b1f10'
INSTANCE = '3f8a1c2e-5d6b-4e7f-8091-a2b3c4d5e6f7'
SET = '1d2e3f40-5a6b-4c7d-8e9f-a0b1c2d3e4f5'
PREFIX = '/v3/%s/instance-groups' % PROJECT

GROUP_DICT = {
    'id': GROUP, 'name': 'instance-%s' % INSTANCE, 'description': None,
    'status': 'available', 'project_id': PROJECT, 'user_id': 'u1',
    'group_type_id': 'gt1', 'instance_id': INSTANCE,
    'availability_zone': 'nova', 'created_at': '2026-12-06T08:00:00.000000',
    'volumes': [{'id': 'v1', 'mountpoint': '/dev/vda', 'boot': True},
                {'id': 'v2', 'mountpoint': '/dev/vdb', 'boot': False}]}

RESULT = {'operation': 'backup', 'success': True, 'instance_id': INSTANCE,
          'group_id': GROUP, 'group_snapshot_id': SET,
          'volume_id': ['v1', 'v2'], 'volume_snapshot_id': ['s1', 's2'],
          'backup_id': ['b1', 'b2']}


class ClientTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.peer = self.useFixture(http_peer.HttpPeer())
        session = ks_session.Session(auth=token_endpoint.Token(
            self.peer.url + '/v3/' + PROJECT, TOKEN))
        self.client = instance_groups.InstanceGroupClient(session=session)

    def assert_request(self, method, path, body=None, query=None):
        self.assertEqual(1, len(self.peer.requests))
        req = self.peer.requests[0]
        self.assertEqual((method, path, body, query or {}),
                         (req.method, req.path, req.body, req.query))
        self.assertEqual(TOKEN, req.headers.get('X-Auth-Token'))
        self.assertEqual('application/json', req.headers.get('Accept'))


@ddt.ddt
class TestRoutes(ClientTestCase):

    def test_create_group(self):
        self.peer.answer(201, {'instance_group': GROUP_DICT})
        group = self.client.create_group(INSTANCE, name='web',
                                         description='the web VM')
        self.assertEqual(GROUP_DICT, group)
        self.assert_request('POST', PREFIX, {'instance_group': {
            'instance_id': INSTANCE, 'name': 'web',
            'description': 'the web VM'}})

    def test_create_group_defaults(self):
        self.peer.answer(201, {'instance_group': GROUP_DICT})
        self.client.create_group(INSTANCE)
        self.assert_request('POST', PREFIX,
                            {'instance_group': {'instance_id': INSTANCE}})

    def test_list_groups_of_instance(self):
        self.peer.answer(200, {'instance_groups': [GROUP_DICT]})
        self.assertEqual([GROUP_DICT],
                         self.client.list_groups(instance_id=INSTANCE))
        self.assert_request('GET', PREFIX, query={'instance_id': [INSTANCE]})

    def test_list_groups_all(self):
        self.peer.answer(200, {'instance_groups': []})
        self.assertEqual([], self.client.list_groups())
        self.assert_request('GET', PREFIX)

    def test_list_backup_sets(self):
        sets = [{'id': SET, 'group_id': GROUP, 'name': 'b1',
                 'status': 'available', 'backups': []}]
        self.peer.answer(200, sets)
        self.assertEqual(sets, self.client.list_backup_sets(GROUP))
        self.assert_request('GET', PREFIX + '/' + GROUP)

    @ddt.data((True, {}), (False, {'async': 'true'}))
    @ddt.unpack
    def test_backup(self, wait, extra):
        answer = RESULT if wait else {'msg': 'Backup request submitted'}
        self.peer.answer(201, answer)
        self.assertEqual(answer, self.client.backup(
            GROUP, INSTANCE, 'nightly', description='before upgrade',
            wait=wait))
        body = {'instance_id': INSTANCE, 'name': 'nightly',
                'description': 'before upgrade'}
        body.update(extra)
        self.assert_request('POST', PREFIX + '/' + GROUP + '/backup', body)

    def test_backup_still_running(self):
        # A synchronous request that outlived the server's wait: 202.
        answer = {'msg': 'Backup still running; see the list'}
        self.peer.answer(202, answer)
        self.assertEqual(answer, self.client.backup(GROUP, INSTANCE, 'n'))
        self.assert_request('POST', PREFIX + '/' + GROUP + '/backup',
                            {'instance_id': INSTANCE, 'name': 'n'})

    @ddt.data(
        ({'group_snapshot_id': SET}, True, {'group_snapshot_id': SET}),
        ({'name': 'nightly'}, True, {'name': 'nightly'}),
        ({'group_snapshot_id': SET, 'name': 'nightly'}, False,
         {'group_snapshot_id': SET, 'name': 'nightly', 'async': 'true'}))
    @ddt.unpack
    def test_restore(self, select, wait, extra):
        self.peer.answer(201, dict(RESULT, operation='restore'))
        result = self.client.restore(GROUP, INSTANCE, wait=wait, **select)
        self.assertEqual('restore', result['operation'])
        body = {'instance_id': INSTANCE}
        body.update(extra)
        self.assert_request('PUT', PREFIX + '/' + GROUP + '/restore', body)

    def test_restore_new(self):
        answer = dict(RESULT, operation='restore_new',
                      new_volume_id=['n1', 'n2'], server_id='srv')
        self.peer.answer(201, answer)
        volumes = {'v1': {'volume_type': 'fast', 'name': 'root'}}
        server = {'name': 'clone', 'flavor': 'm1.small'}
        self.assertEqual(answer, self.client.restore_new(
            GROUP, INSTANCE, name='nightly', volume_type='std',
            availability_zone='az2', volumes=volumes, server=server,
            wait=False))
        self.assert_request('PUT', PREFIX + '/' + GROUP + '/restore_new', {
            'instance_id': INSTANCE, 'name': 'nightly',
            'volume_type': 'std', 'availability_zone': 'az2',
            'volumes': volumes, 'server': server, 'async': 'true'})

    def test_restore_new_minimal(self):
        self.peer.answer(201, {'msg': 'Restore request submitted'})
        self.client.restore_new(GROUP, INSTANCE, group_snapshot_id=SET)
        self.assert_request('PUT', PREFIX + '/' + GROUP + '/restore_new', {
            'instance_id': INSTANCE, 'group_snapshot_id': SET})

    def test_delete_backup(self):
        answer = {'operation': 'delete_backup', 'success': True,
                  'instance_id': INSTANCE, 'group_id': GROUP,
                  'group_snapshot_id': SET, 'backup_id': ['b1']}
        self.peer.answer(201, answer)
        self.assertEqual(answer, self.client.delete_backup(
            GROUP, INSTANCE, group_snapshot_id=SET))
        self.assert_request('PUT', PREFIX + '/' + GROUP + '/delete_backup',
                            {'instance_id': INSTANCE,
                             'group_snapshot_id': SET})

    @ddt.data('restore', 'restore_new', 'delete_backup')
    def test_set_not_named(self, method):
        self.assertRaises(ValueError, getattr(self.client, method),
                          GROUP, INSTANCE)
        self.assertEqual([], self.peer.requests)

    @ddt.data(
        ({'add_volumes': ['v3']}, {'add_volumes': ['v3']}),
        ({'remove_volumes': ('v2',)}, {'remove_volumes': ['v2']}),
        ({'add_volumes': ['v3'], 'remove_volumes': ['v2']},
         {'add_volumes': ['v3'], 'remove_volumes': ['v2']}),
        ({}, {}))
    @ddt.unpack
    def test_update_members(self, changes, extra):
        self.peer.answer(200, {'instance_group': GROUP_DICT})
        self.assertEqual(GROUP_DICT, self.client.update_members(
            GROUP, INSTANCE, **changes))
        body = {'instance_id': INSTANCE}
        body.update(extra)
        self.assert_request('PUT', PREFIX + '/' + GROUP + '/members', body)

    def test_delete_group(self):
        self.peer.answer(200)
        self.assertIsNone(self.client.delete_group(GROUP))
        self.assert_request('DELETE', PREFIX + '/' + GROUP)

    def test_group_id_is_one_segment(self):
        self.peer.answer(200, [])
        self.client.list_backup_sets('../volumes?x=1')
        self.assertEqual(PREFIX + '/..%2Fvolumes%3Fx%3D1',
                         self.peer.requests[0].path)
        self.assertEqual({}, self.peer.requests[0].query)


@ddt.ddt
class TestErrors(ClientTestCase):

    @ddt.data((400, 'badRequest', exceptions.BadRequest),
              (403, 'forbidden', exceptions.Forbidden),
              (404, 'itemNotFound', exceptions.NotFound),
              (409, 'conflictingRequest', exceptions.Conflict),
              (413, 'overLimit', exceptions.OverLimit),
              (500, 'computeFault', exceptions.ClientException))
    @ddt.unpack
    def test_cinder_fault(self, status, kind, cls):
        message = 'Instance group %s is busy' % GROUP
        self.peer.answer(status, {kind: {'message': message,
                                         'code': status}},
                         {'x-openstack-request-id': 'req-abc'})
        exc = self.assertRaises(cls, self.client.backup, GROUP, INSTANCE,
                                'n')
        self.assertIs(type(exc), cls)
        self.assertEqual((status, message, 'req-abc', 'POST'),
                         (exc.code, exc.message, exc.request_id, exc.method))
        self.assertEqual('%s (HTTP %d) (Request-ID: req-abc)'
                         % (message, status), str(exc))
        self.assertNotIn(TOKEN, str(exc) + repr(exc.__dict__))

    def test_text_body(self):
        self.peer.answer(502, 'Bad gateway\n' + 'x' * 2000)
        exc = self.assertRaises(exceptions.ClientException,
                                self.client.list_groups)
        self.assertEqual(502, exc.code)
        self.assertTrue(exc.message.startswith('Bad gateway'))
        self.assertLess(len(exc.message), 600)

    def test_empty_body(self):
        self.peer.answer(404)
        exc = self.assertRaises(exceptions.NotFound,
                                self.client.delete_group, GROUP)
        self.assertEqual('Not Found', exc.message)

    def test_success_not_json(self):
        self.peer.answer(200, 'not json')
        exc = self.assertRaises(exceptions.ClientException,
                                self.client.list_groups)
        self.assertIn('not JSON', exc.message)
        self.assertEqual(200, exc.code)

    def test_needs_session_or_adapter(self):
        self.assertRaises(ValueError, instance_groups.InstanceGroupClient)


class TestFindGroup(ClientTestCase):

    def _groups(self, *groups):
        self.peer.answer(200, {'instance_groups': list(groups)})

    def test_uuid_used_as_is(self):
        self.assertEqual(GROUP, self.client.resolve_group_id(GROUP))
        self.assertEqual([], self.peer.requests)

    def test_by_name(self):
        self._groups(dict(GROUP_DICT, id='g0', name='db'), GROUP_DICT)
        self.assertEqual(GROUP, self.client.resolve_group_id(
            GROUP_DICT['name']))
        self.assert_request('GET', PREFIX)

    def test_by_id_before_name(self):
        # An id wins over another group's name equal to it.
        self._groups(dict(GROUP_DICT, id='g0', name='g1'),
                     dict(GROUP_DICT, id='g1', name='other'))
        self.assertEqual('other', self.client.find_group('g1')['name'])

    def test_not_found(self):
        self._groups(GROUP_DICT)
        exc = self.assertRaises(exceptions.NotFound,
                                self.client.find_group, 'nope')
        self.assertEqual(404, exc.code)
        self.assertIn('nope', str(exc))

    def test_ambiguous(self):
        self._groups(dict(GROUP_DICT, id='g0', name='db'),
                     dict(GROUP_DICT, id='g1', name='db'))
        exc = self.assertRaises(exceptions.NoUniqueMatch,
                                self.client.find_group, 'db')
        self.assertIsNone(exc.code)
        self.assertIn('give its ID', str(exc))


class TestCatalog(testtools.TestCase):
    """The endpoint comes from the catalog by alias, region, interface."""

    def setUp(self):
        super().setUp()
        self.peer = self.useFixture(http_peer.HttpPeer())
        token = ks_fixture.V3Token(project_id=PROJECT)
        for region in ('RegionOne', 'RegionTwo'):
            service = token.add_service('volumev3')
            for interface in ('public', 'internal', 'admin'):
                service.add_endpoint(
                    interface, '%s/%s-%s/v3/%s' % (
                        self.peer.url, region, interface, PROJECT),
                    region=region)
        auth_ref = access.create(body=token, auth_token=TOKEN)
        self.session = ks_session.Session(
            auth=access_plugin.AccessInfoPlugin(auth_ref))

    def _path(self, **kwargs):
        self.peer.answer(200, {'instance_groups': []})
        client = instance_groups.InstanceGroupClient(session=self.session,
                                                     **kwargs)
        client.list_groups()
        return self.peer.requests[-1].path

    def test_region_and_interface(self):
        self.assertEqual(
            '/RegionTwo-internal/v3/%s/instance-groups' % PROJECT,
            self._path(region_name='RegionTwo', interface='internal'))
        self.assertEqual(
            '/RegionOne-public/v3/%s/instance-groups' % PROJECT,
            self._path(region_name='RegionOne', interface='public'))

    def test_endpoint_override(self):
        self.assertEqual(
            '/elsewhere/v3/p/instance-groups',
            self._path(endpoint_override=self.peer.url + '/elsewhere/v3/p'))
