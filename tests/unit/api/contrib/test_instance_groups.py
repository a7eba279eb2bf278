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

"""The instance-group API through Cinder's own v3 router.

Every request goes through :class:`cinder.api.v3.router.APIRouter` built
with Cinder's :class:`~cinder.api.extensions.ExtensionManager` loading the
extension from ``osapi_volume_extension``: routes, JSON schemas, status
codes and error mapping are Cinder's machinery running our code. The
plugin's policies run in the real :mod:`oslo_policy` enforcer. Only
``group.api.API`` is replaced, by an autospec of :class:`StubGroupAPI`
(the contract's signatures).
"""

import inspect
import os
from unittest import mock

from cinder import objects

objects.register_all()

from cinder.api import extensions  # noqa: E402
from cinder.api.openstack import wsgi  # noqa: E402
from cinder.api.v3 import router  # noqa: E402
from cinder import context  # noqa: E402
from cinder import exception  # noqa: E402
from cinder.tests.unit import test  # noqa: E402
import ddt  # noqa: E402
import fixtures  # noqa: E402
from oslo_serialization import jsonutils  # noqa: E402
from oslo_utils import importutils  # noqa: E402
from paste import deploy as paste_deploy  # noqa: E402
import webob  # noqa: E402

from cinder_vmdk_backup.api.contrib import instance_groups  # noqa: E402
from cinder_vmdk_backup.api.views import instance_groups as views  # noqa
from cinder_vmdk_backup import exception as vmdk_exception  # noqa: E402
from cinder_vmdk_backup import policies  # noqa: E402

EXTENSION = 'cinder_vmdk_backup.api.contrib.instance_groups.Instance_groups'
STANDARD = 'cinder.api.contrib.standard_extensions'

PROJECT = '6f2b0b9e4c9a4d3e8f1a2b3c4d5e6f70'
OTHER_PROJECT = '0a1b2c3d4e5f40718293a4b5c6d7e8f9'
USER = 'c853ca26e8ea4797'
GROUP_ID = '3b1f7e0a-5c2d-4e8f-9a6b-7c1d2e3f4a5b'
INSTANCE_ID = '9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a'
OTHER_INSTANCE = '11111111-2222-4333-8444-555555555555'
SET_ID = '5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d'
VOL_A = 'aaaaaaaa-0000-4000-8000-00000000000a'
VOL_B = 'bbbbbbbb-0000-4000-8000-00000000000b'
BACKUP_A = 'aaaaaaaa-1111-4111-8111-11111111111a'


class StubGroupAPI(object):
    """The signatures of ``cinder_vmdk_backup.group.api.API`` (contract)."""

    def create(self, context, instance_id, name=None, description=None):
        raise NotImplementedError()

    def get(self, context, group_id):
        raise NotImplementedError()

    def get_all(self, context, instance_id=None):
        raise NotImplementedError()

    def list_sets(self, context, group_id):
        raise NotImplementedError()

    def backup(self, context, group_id, instance_id, name,
               description=None, wait=True, incremental=None, metadata=None,
               exclude_volumes=None):
        raise NotImplementedError()

    def restore(self, context, group_id, instance_id,
                group_snapshot_id=None, name=None, wait=True):
        raise NotImplementedError()

    def restore_new(self, context, group_id, instance_id,
                    group_snapshot_id=None, name=None, volume_type=None,
                    availability_zone=None, volumes=None, server=None,
                    wait=True):
        raise NotImplementedError()

    def delete_backup(self, context, group_id, instance_id,
                      group_snapshot_id=None, name=None):
        raise NotImplementedError()

    def update_members(self, context, group_id, instance_id,
                       add_volumes=None, remove_volumes=None):
        raise NotImplementedError()

    def delete(self, context, group_id):
        raise NotImplementedError()


def group_dict(**changes):
    group = {
        'id': GROUP_ID, 'name': 'instance-%s' % INSTANCE_ID,
        'description': None, 'status': 'available',
        'project_id': PROJECT, 'user_id': USER,
        'group_type_id': 'c0ffee00-0000-4000-8000-000000000001',
        'instance_id': INSTANCE_ID, 'availability_zone': 'nova',
        'created_at': '2026-12-06T08:00:00.000000',
        'volumes': [{'id': VOL_A, 'mountpoint': '/dev/vda', 'boot': True},
                    {'id': VOL_B, 'mountpoint': '/dev/vdb', 'boot': False}],
    }
    group.update(changes)
    return group


def result_dict(operation, **changes):
    result = {
        'operation': operation, 'success': True,
        'instance_id': INSTANCE_ID, 'group_id': GROUP_ID,
        'group_snapshot_id': SET_ID, 'volume_id': [VOL_A, VOL_B],
        'volume_snapshot_id': ['51000000-0000-4000-8000-000000000001',
                               '51000000-0000-4000-8000-000000000002'],
        'backup_id': [BACKUP_A, 'bbbbbbbb-1111-4111-8111-11111111111b'],
    }
    result.update(changes)
    return result


class ExtensionRouter(router.APIRouter):
    """Cinder's v3 router without its core resources (quicker to build).

    Extension routes, the extension list and controller extensions are set
    up by Cinder's own code; :class:`StandardExtensionsTestCase` builds the
    whole router.
    """

    def _setup_routes(self, mapper, ext_mgr):
        pass


class RouterTestCase(test.TestCase):
    """A v3 router with the extension; ``self.api`` is group.api."""

    extensions = [EXTENSION]
    router_class = ExtensionRouter

    def setUp(self):
        super(RouterTestCase, self).setUp()
        # An own policy file (empty: the defaults) rather than Cinder's
        # test one, so the defaults are what is tested.
        self.policy_file = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'policy.yaml')
        self.write_policy('{}')
        policies.reset()
        self.addCleanup(policies.reset)
        self.override_config('osapi_volume_extension', self.extensions)
        self.ext_mgr = extensions.ExtensionManager()
        self.router = self.router_class(self.ext_mgr)

        self.api = mock.create_autospec(StubGroupAPI, instance=True,
                                        spec_set=True)
        self.api.get.side_effect = self._get
        self.load_group_api = self.patch(
            'cinder_vmdk_backup.api.contrib.instance_groups.load_group_api',
            autospec=True, return_value=self.api)

    def write_policy(self, text):
        with open(self.policy_file, 'w') as f:
            f.write(text)
        self.override_config('policy_file', self.policy_file,
                             group='oslo_policy')

    @staticmethod
    def _get(ctx, group_id):
        # Scoped as group.api.API.get is: another project's group is not
        # found, unless the caller is an admin.
        if group_id == GROUP_ID and (ctx.project_id == PROJECT or
                                     ctx.is_admin):
            return group_dict()
        raise vmdk_exception.InstanceGroupNotFound(group_id=group_id)

    def request(self, method, path='', body=None, project_id=PROJECT,
                roles=('member', 'reader'), query='', system_scope=None):
        url = '/%s/instance-groups%s%s' % (project_id, path, query)
        req = wsgi.Request.blank(url, method=method)
        if body is not None:
            req.body = jsonutils.dump_as_bytes(body)
            req.content_type = 'application/json'
        req.environ['cinder.context'] = context.RequestContext(
            USER, project_id, roles=list(roles), is_admin='admin' in roles,
            system_scope=system_scope)
        return req.get_response(self.router)

    def assertFault(self, response, status, *words):
        self.assertEqual(status, response.status_int, response.body)
        fault = jsonutils.loads(response.body)
        (message,) = [v['message'] for v in fault.values()]
        for word in words:
            self.assertIn(word, message)
        return message


@ddt.ddt
class InstanceGroupsRoutesTestCase(RouterTestCase):

    # -- GET /instance-groups -------------------------------------------

    def test_index(self):
        self.api.get_all.return_value = [group_dict()]
        res = self.request('GET', roles=('reader',))
        self.assertEqual(200, res.status_int)
        self.assertEqual(
            {'instance_groups': [views.ViewBuilder().group(group_dict())]},
            jsonutils.loads(res.body))
        self.api.get_all.assert_called_once_with(mock.ANY, instance_id=None)
        self.load_group_api.assert_called_once_with()

    def test_index_by_instance(self):
        self.api.get_all.return_value = []
        res = self.request('GET', query='?instance_id=%s' % INSTANCE_ID)
        self.assertEqual(200, res.status_int)
        self.assertEqual({'instance_groups': []}, jsonutils.loads(res.body))
        self.api.get_all.assert_called_once_with(
            mock.ANY, instance_id=INSTANCE_ID)

    @ddt.data(('?instance_id=vm1', 'not a UUID'),
              ('?host=x', "Unknown query parameter(s): host"))
    @ddt.unpack
    def test_index_bad_query(self, query, words):
        res = self.request('GET', query=query)
        self.assertFault(res, 400, words)
        self.api.get_all.assert_not_called()

    def test_index_needs_a_role(self):
        res = self.request('GET', roles=())
        self.assertFault(res, 403, policies.GET_ALL)
        self.api.get_all.assert_not_called()

    # -- POST /instance-groups ------------------------------------------

    def test_create(self):
        self.api.create.return_value = group_dict(name='web')
        res = self.request('POST', body={'instance_group': {
            'instance_id': INSTANCE_ID, 'name': 'web',
            'description': 'the web server'}})
        self.assertEqual(201, res.status_int, res.body)
        body = jsonutils.loads(res.body)
        self.assertEqual('web', body['instance_group']['name'])
        self.assertEqual(
            [{'id': VOL_A, 'mountpoint': '/dev/vda', 'boot': True},
             {'id': VOL_B, 'mountpoint': '/dev/vdb', 'boot': False}],
            body['instance_group']['volumes'])
        self.api.create.assert_called_once_with(
            mock.ANY, INSTANCE_ID, name='web', description='the web server')
        ctx = self.api.create.call_args[0][0]
        self.assertEqual(PROJECT, ctx.project_id)

    def test_create_defaults(self):
        self.api.create.return_value = group_dict()
        res = self.request('POST', body={'instance_group': {
            'instance_id': INSTANCE_ID}})
        self.assertEqual(201, res.status_int, res.body)
        self.api.create.assert_called_once_with(
            mock.ANY, INSTANCE_ID, name=None, description=None)

    @ddt.data(
        ({}, "'instance_group' is a required property"),
        ({'instance_group': {}}, "'instance_id' is a required property"),
        ({'instance_group': {'instance_id': 'vm1'}}, 'instance_id'),
        ({'instance_group': {'instance_id': INSTANCE_ID, 'size': 1}},
         "'size' was unexpected"),
        ({'instance_group': {'instance_id': INSTANCE_ID}, 'x': 1},
         "'x' was unexpected"),
        ({'instance_group': {'instance_id': INSTANCE_ID, 'name': ''}},
         'name'),
    )
    @ddt.unpack
    def test_create_bad_body(self, body, words):
        self.assertFault(self.request('POST', body=body), 400, words)
        self.api.create.assert_not_called()

    @ddt.data(
        (vmdk_exception.InstanceGroupInvalid(
            reason='instance %s has no volume' % INSTANCE_ID), 400,
         'has no volume'),
        (exception.NotFound('Instance %s was not found.' % INSTANCE_ID), 404,
         INSTANCE_ID),
    )
    @ddt.unpack
    def test_create_refused(self, error, status, words):
        self.api.create.side_effect = error
        self.assertFault(self.request('POST', body={'instance_group': {
            'instance_id': INSTANCE_ID}}), status, words)

    def test_create_reader_forbidden(self):
        res = self.request('POST', roles=('reader',), body={
            'instance_group': {'instance_id': INSTANCE_ID}})
        self.assertFault(res, 403, policies.CREATE)
        self.api.create.assert_not_called()

    # -- GET /instance-groups/{id}: the list of sets --------------------

    def _set(self):
        backup = {key: None for key in views.BACKUP_KEYS}
        backup.update(id=BACKUP_A, volume_id=VOL_A, status='available',
                      size=1, internal_field='not shown',
                      metadata={'instance_group_id': GROUP_ID,
                                'group_snapshot_id': SET_ID,
                                'instance_id': INSTANCE_ID,
                                'mountpoint': '/dev/vda'})
        return {'id': SET_ID, 'group_id': GROUP_ID, 'project_id': PROJECT,
                'user_id': USER, 'name': 'backup2', 'description': None,
                'status': 'available', 'group_type_id': 'gt',
                'created_at': '2026-12-06T08:00:00.000000',
                'backups': [backup], 'volumes': 'not shown'}

    def test_list_sets(self):
        self.api.list_sets.return_value = [self._set()]
        res = self.request('GET', '/' + GROUP_ID, roles=('reader',))
        self.assertEqual(200, res.status_int, res.body)
        body = jsonutils.loads(res.body)
        self.assertIsInstance(body, list)
        (entry,) = body
        self.assertEqual(set(views.SET_KEYS) | {'backups'}, set(entry))
        self.assertEqual(SET_ID, entry['id'])
        (backup,) = entry['backups']
        self.assertEqual(set(views.BACKUP_KEYS) | {'metadata'}, set(backup))
        self.assertEqual('/dev/vda', backup['metadata']['mountpoint'])
        self.api.list_sets.assert_called_once_with(mock.ANY, GROUP_ID)

    def test_list_sets_empty(self):
        self.api.list_sets.return_value = []
        res = self.request('GET', '/' + GROUP_ID)
        self.assertEqual(200, res.status_int)
        self.assertEqual([], jsonutils.loads(res.body))

    def test_list_sets_unknown_group(self):
        other = '00000000-0000-4000-8000-000000000000'
        self.assertFault(self.request('GET', '/' + other), 404, other)
        self.api.list_sets.assert_not_called()

    def test_list_sets_other_project(self):
        res = self.request('GET', '/' + GROUP_ID, project_id=OTHER_PROJECT)
        self.assertFault(res, 404, GROUP_ID)
        self.api.list_sets.assert_not_called()

    def test_list_sets_admin_of_other_project(self):
        self.api.list_sets.return_value = []
        res = self.request('GET', '/' + GROUP_ID, project_id=OTHER_PROJECT,
                           roles=('admin', 'member', 'reader'))
        self.assertEqual(200, res.status_int, res.body)

    def test_system_scope_refused(self):
        # The rules are project-scoped: a system-scoped token is refused
        # even with the admin role.
        res = self.request('GET', '/' + GROUP_ID, roles=('admin',),
                           system_scope='all')
        self.assertFault(res, 403, policies.GET)

    # -- DELETE /instance-groups/{id} -----------------------------------

    def test_delete(self):
        self.api.delete.return_value = None
        res = self.request('DELETE', '/' + GROUP_ID)
        self.assertEqual(200, res.status_int)
        self.assertEqual(b'', res.body)
        self.api.delete.assert_called_once_with(mock.ANY, GROUP_ID)

    def test_delete_while_sets_exist(self):
        self.api.delete.side_effect = vmdk_exception.InstanceGroupInvalid(
            reason='2 backup sets exist; delete them first')
        self.assertFault(self.request('DELETE', '/' + GROUP_ID), 400,
                         'delete them first')

    def test_delete_other_project(self):
        res = self.request('DELETE', '/' + GROUP_ID,
                           project_id=OTHER_PROJECT)
        self.assertFault(res, 404, GROUP_ID)
        self.api.delete.assert_not_called()

    def test_delete_reader_forbidden(self):
        res = self.request('DELETE', '/' + GROUP_ID, roles=('reader',))
        self.assertFault(res, 403, policies.DELETE)
        self.api.delete.assert_not_called()

    def test_delete_busy(self):
        self.api.delete.side_effect = vmdk_exception.InstanceGroupBusy(
            group_id=GROUP_ID, status='updating')
        self.assertFault(self.request('DELETE', '/' + GROUP_ID), 409,
                         'busy', 'updating')

    # -- POST /instance-groups/{id}/backup ------------------------------

    def backup(self, body, **kwargs):
        return self.request('POST', '/%s/backup' % GROUP_ID, body=body,
                            **kwargs)

    def test_backup_sync(self):
        self.api.backup.return_value = result_dict('backup')
        res = self.backup({'instance_id': INSTANCE_ID, 'name': 'backup2',
                           'description': 'nightly'})
        self.assertEqual(201, res.status_int, res.body)
        self.assertEqual(result_dict('backup'), jsonutils.loads(res.body))
        self.api.backup.assert_called_once_with(
            mock.ANY, GROUP_ID, INSTANCE_ID, 'backup2',
            description='nightly', wait=True)

    @ddt.data(('true', False), ('TRUE', False), (True, False),
              ('false', True), ('False', True), (False, True))
    @ddt.unpack
    def test_backup_async_flag(self, flag, wait):
        answer = ({'msg': 'Backup request submitted'} if not wait
                  else result_dict('backup'))
        self.api.backup.return_value = answer
        res = self.backup({'instance_id': INSTANCE_ID, 'name': 'b',
                           'async': flag})
        self.assertEqual(201, res.status_int, res.body)
        self.assertEqual(answer, jsonutils.loads(res.body))
        self.api.backup.assert_called_once_with(
            mock.ANY, GROUP_ID, INSTANCE_ID, 'b', description=None,
            wait=wait)

    def test_backup_still_running(self):
        self.api.backup.return_value = {
            'still_running': True,
            'msg': 'Backup of set b still running; see the list'}
        res = self.backup({'instance_id': INSTANCE_ID, 'name': 'b'})
        self.assertEqual(202, res.status_int, res.body)
        self.assertEqual({'msg': 'Backup of set b still running; see the '
                                 'list'}, jsonutils.loads(res.body))

    @ddt.data(
        ({'name': 'b'}, "'instance_id' is a required property"),
        ({'instance_id': INSTANCE_ID}, "'name' is a required property"),
        ({'instance_id': INSTANCE_ID, 'name': 'b', 'async': 'yes'},
         'async'),
        ({'instance_id': INSTANCE_ID, 'name': 'b', 'async': 1}, 'async'),
        ({'instance_id': INSTANCE_ID, 'name': 'b', 'async': None},
         'async'),
        ({'instance_id': INSTANCE_ID, 'name': 'b', 'incremental': True},
         "'incremental' was unexpected"),
        ({'instance_id': 'not-a-uuid', 'name': 'b'}, 'instance_id'),
        ({'instance_id': INSTANCE_ID, 'name': '  '}, 'name'),
        ({'instance_id': INSTANCE_ID, 'name': 'x' * 256}, 'name'),
        ({'instance_id': OTHER_INSTANCE, 'name': 'b'},
         'is not the instance of instance group'),
        ([INSTANCE_ID], 'is not of type'),
    )
    @ddt.unpack
    def test_backup_bad_body(self, body, words):
        self.assertFault(self.backup(body), 400, words)
        self.api.backup.assert_not_called()

    def test_backup_reader_forbidden(self):
        res = self.backup({'instance_id': INSTANCE_ID, 'name': 'b'},
                          roles=('reader',))
        self.assertFault(res, 403, policies.BACKUP)
        self.api.backup.assert_not_called()

    def test_backup_other_project(self):
        res = self.backup({'instance_id': INSTANCE_ID, 'name': 'b'},
                          project_id=OTHER_PROJECT)
        self.assertFault(res, 404, GROUP_ID)
        self.api.backup.assert_not_called()

    @ddt.data(
        (vmdk_exception.InstanceGroupBusy(group_id=GROUP_ID,
                                          status='updating'), 409, 'busy'),
        (exception.BackupLimitExceeded(allowed=10), 413, 'exceeded'),
        (exception.ServiceNotFound(service_id='cinder-backup'), 503,
         'cinder-backup'),
        (vmdk_exception.InstanceGroupInvalid(reason='volume %s is in '
                                             'error' % VOL_B), 400, VOL_B),
    )
    @ddt.unpack
    def test_backup_refused(self, error, status, words):
        self.api.backup.side_effect = error
        self.assertFault(self.backup({'instance_id': INSTANCE_ID,
                                      'name': 'b'}), status, words)

    # -- PUT /instance-groups/{id}/restore ------------------------------

    def restore(self, body, **kwargs):
        return self.request('PUT', '/%s/restore' % GROUP_ID, body=body,
                            **kwargs)

    @ddt.data({'group_snapshot_id': SET_ID, 'name': 'backup2'},
              {'group_snapshot_id': SET_ID}, {'name': 'backup2'})
    def test_restore(self, selector):
        result = result_dict('restore')
        self.api.restore.return_value = result
        res = self.restore(dict(selector, instance_id=INSTANCE_ID))
        self.assertEqual(201, res.status_int, res.body)
        self.assertEqual(result, jsonutils.loads(res.body))
        self.api.restore.assert_called_once_with(
            mock.ANY, GROUP_ID, INSTANCE_ID,
            group_snapshot_id=selector.get('group_snapshot_id'),
            name=selector.get('name'), wait=True)

    def test_restore_async(self):
        self.api.restore.return_value = {'msg': 'Restore request submitted'}
        res = self.restore({'instance_id': INSTANCE_ID, 'name': 'b',
                            'async': 'true'})
        self.assertEqual(201, res.status_int, res.body)
        self.assertEqual({'msg': 'Restore request submitted'},
                         jsonutils.loads(res.body))
        self.assertFalse(self.api.restore.call_args[1]['wait'])

    @ddt.data(
        ({'instance_id': INSTANCE_ID}, "give 'group_snapshot_id' or 'name'"),
        ({'instance_id': INSTANCE_ID, 'group_snapshot_id': 'backup2'},
         'group_snapshot_id'),
        ({'instance_id': INSTANCE_ID, 'name': 'b', 'async': 'no'}, 'async'),
        ({'instance_id': INSTANCE_ID, 'name': 'b', 'force': True},
         "'force' was unexpected"),
        ({'name': 'b'}, "'instance_id' is a required property"),
    )
    @ddt.unpack
    def test_restore_bad_body(self, body, words):
        self.assertFault(self.restore(body), 400, words)
        self.api.restore.assert_not_called()

    @ddt.data(
        (vmdk_exception.InstanceNotShutDown(
            instance_id=INSTANCE_ID, state='running',
            who='libvirt domain instance-0001'), 400, 'not shut down'),
        (vmdk_exception.InstanceGroupInvalid(
            reason='group_snapshot_id %s and name b name different sets'
            % SET_ID), 400, 'different sets'),
        (vmdk_exception.InstanceGroupInvalid(
            reason='name b is ambiguous, give group_snapshot_id'), 400,
         'ambiguous'),
        (vmdk_exception.BackupSetNotFound(name='b', group_id=GROUP_ID),
         404, 'Backup set b'),
        (vmdk_exception.InstanceGroupBusy(group_id=GROUP_ID,
                                          status='updating'), 409, 'busy'),
    )
    @ddt.unpack
    def test_restore_refused(self, error, status, words):
        self.api.restore.side_effect = error
        self.assertFault(self.restore({'instance_id': INSTANCE_ID,
                                       'name': 'b'}), status, words)

    def test_restore_reader_forbidden(self):
        res = self.restore({'instance_id': INSTANCE_ID, 'name': 'b'},
                           roles=('reader',))
        self.assertFault(res, 403, policies.RESTORE)
        self.api.restore.assert_not_called()

    # -- PUT /instance-groups/{id}/restore_new --------------------------

    def restore_new(self, body, **kwargs):
        return self.request('PUT', '/%s/restore_new' % GROUP_ID, body=body,
                            **kwargs)

    def test_restore_new(self):
        result = result_dict('restore_new', new_volume_id=[VOL_B, VOL_A],
                             server_id=OTHER_INSTANCE)
        self.api.restore_new.return_value = result
        volumes = {VOL_A: {'volume_type': 'fast', 'name': 'root-copy',
                           'availability_zone': 'az2'},
                   VOL_B: {}}
        server = {'name': 'web-copy', 'flavor': 'm1.small'}
        res = self.restore_new({
            'instance_id': INSTANCE_ID, 'group_snapshot_id': SET_ID,
            'volume_type': 'slow', 'availability_zone': 'az1',
            'volumes': volumes, 'server': server, 'async': False})
        self.assertEqual(201, res.status_int, res.body)
        self.assertEqual(result, jsonutils.loads(res.body))
        self.api.restore_new.assert_called_once_with(
            mock.ANY, GROUP_ID, INSTANCE_ID, group_snapshot_id=SET_ID,
            name=None, volume_type='slow', availability_zone='az1',
            volumes=volumes, server=server, wait=True)

    def test_restore_new_minimal(self):
        self.api.restore_new.return_value = {'msg': 'Restore request '
                                                    'submitted'}
        res = self.restore_new({'instance_id': INSTANCE_ID, 'name': 'b',
                                'async': 'True'})
        self.assertEqual(201, res.status_int, res.body)
        self.api.restore_new.assert_called_once_with(
            mock.ANY, GROUP_ID, INSTANCE_ID, group_snapshot_id=None,
            name='b', volume_type=None, availability_zone=None,
            volumes=None, server=None, wait=False)

    @ddt.data(
        ({'volumes': {'vda': {}}}, 'volumes'),
        ({'volumes': {VOL_A: {'size': 2}}}, "'size' was unexpected"),
        ({'volumes': {VOL_A: 'fast'}}, 'is not of type'),
        ({'server': {'name': 'x', 'networks': []}},
         "'networks' was unexpected"),
        ({'volume_type': ''}, 'volume_type'),
        ({}, "give 'group_snapshot_id' or 'name'"),
    )
    @ddt.unpack
    def test_restore_new_bad_body(self, extra, words):
        body = {'instance_id': INSTANCE_ID}
        if extra:
            body['name'] = 'b'
        body.update(extra)
        self.assertFault(self.restore_new(body), 400, words)
        self.api.restore_new.assert_not_called()

    def test_restore_new_reader_forbidden(self):
        res = self.restore_new({'instance_id': INSTANCE_ID, 'name': 'b'},
                               roles=('reader',))
        self.assertFault(res, 403, policies.RESTORE_NEW)

    # -- PUT /instance-groups/{id}/delete_backup ------------------------

    def delete_backup(self, body, **kwargs):
        return self.request('PUT', '/%s/delete_backup' % GROUP_ID,
                            body=body, **kwargs)

    def test_delete_backup(self):
        result = result_dict('delete_backup')
        self.api.delete_backup.return_value = result
        res = self.delete_backup({'instance_id': INSTANCE_ID,
                                  'group_snapshot_id': SET_ID,
                                  'name': 'backup2'})
        self.assertEqual(201, res.status_int, res.body)
        self.assertEqual(result, jsonutils.loads(res.body))
        self.api.delete_backup.assert_called_once_with(
            mock.ANY, GROUP_ID, INSTANCE_ID, group_snapshot_id=SET_ID,
            name='backup2')

    @ddt.data(
        ({'instance_id': INSTANCE_ID}, "give 'group_snapshot_id' or 'name'"),
        ({'instance_id': INSTANCE_ID, 'name': 'b', 'async': 'true'},
         "'async' was unexpected"),
    )
    @ddt.unpack
    def test_delete_backup_bad_body(self, body, words):
        self.assertFault(self.delete_backup(body), 400, words)
        self.api.delete_backup.assert_not_called()

    def test_delete_backup_unknown_set(self):
        self.api.delete_backup.side_effect = (
            vmdk_exception.BackupSetNotFound(name=SET_ID, group_id=GROUP_ID))
        res = self.delete_backup({'instance_id': INSTANCE_ID,
                                  'group_snapshot_id': SET_ID})
        self.assertFault(res, 404, SET_ID)

    def test_delete_backup_reader_forbidden(self):
        res = self.delete_backup({'instance_id': INSTANCE_ID, 'name': 'b'},
                                 roles=('reader',))
        self.assertFault(res, 403, policies.DELETE_BACKUP)
        self.api.delete_backup.assert_not_called()

    # -- PUT /instance-groups/{id}/members ------------------------------

    def members(self, body, **kwargs):
        return self.request('PUT', '/%s/members' % GROUP_ID, body=body,
                            **kwargs)

    @ddt.data({}, {'add_volumes': [VOL_B]}, {'remove_volumes': [VOL_B]},
              {'add_volumes': [VOL_A], 'remove_volumes': [VOL_B]})
    def test_members(self, change):
        self.api.update_members.return_value = group_dict()
        res = self.members(dict(change, instance_id=INSTANCE_ID))
        self.assertEqual(200, res.status_int, res.body)
        self.assertEqual(views.ViewBuilder().detail(group_dict()),
                         jsonutils.loads(res.body))
        self.api.update_members.assert_called_once_with(
            mock.ANY, GROUP_ID, INSTANCE_ID,
            add_volumes=change.get('add_volumes'),
            remove_volumes=change.get('remove_volumes'))

    @ddt.data(
        ({'add_volumes': [VOL_A], 'remove_volumes': [VOL_A]},
         'both added and removed'),
        ({'add_volumes': []}, 'add_volumes'),
        ({'add_volumes': ['vdb']}, "'vdb' is not a 'uuid'"),
        ({'add_volumes': [VOL_A, VOL_A]}, 'add_volumes'),
        ({'volumes': [VOL_A]}, "'volumes' was unexpected"),
    )
    @ddt.unpack
    def test_members_bad_body(self, change, words):
        res = self.members(dict(change, instance_id=INSTANCE_ID))
        self.assertFault(res, 400, words)
        self.api.update_members.assert_not_called()

    def test_members_busy(self):
        self.api.update_members.side_effect = (
            vmdk_exception.InstanceGroupBusy(group_id=GROUP_ID,
                                             status='updating'))
        self.assertFault(self.members({'instance_id': INSTANCE_ID}), 409,
                         GROUP_ID)

    def test_members_reader_forbidden(self):
        res = self.members({'instance_id': INSTANCE_ID}, roles=('reader',))
        self.assertFault(res, 403, policies.UPDATE_MEMBERS)

    # -- bodies that are not JSON objects -------------------------------

    @ddt.data(('POST', '/%s/backup' % GROUP_ID),
              ('PUT', '/%s/restore' % GROUP_ID),
              ('PUT', '/%s/restore_new' % GROUP_ID),
              ('PUT', '/%s/delete_backup' % GROUP_ID),
              ('PUT', '/%s/members' % GROUP_ID),
              ('POST', ''))
    @ddt.unpack
    def test_no_body(self, method, path):
        self.assertFault(self.request(method, path), 400, 'JSON object')
        self.assertEqual([], [c for c in self.api.method_calls
                              if c[0] != 'get'])

    def test_not_json(self):
        url = '/%s/instance-groups/%s/backup' % (PROJECT, GROUP_ID)
        req = wsgi.Request.blank(url, method='POST')
        req.body = b'{"instance_id": '
        req.content_type = 'application/json'
        req.environ['cinder.context'] = context.RequestContext(
            USER, PROJECT, roles=['member'], is_admin=False)
        res = req.get_response(self.router)
        self.assertFault(res, 400, 'Malformed request body')

    # -- routes that do not exist ---------------------------------------

    @ddt.data(('GET', '/%s/backup' % GROUP_ID),
              ('POST', '/%s/restore' % GROUP_ID),
              ('PUT', '/%s/backup' % GROUP_ID))
    @ddt.unpack
    def test_no_such_route(self, method, path):
        res = self.request(method, path, body={})
        self.assertEqual(404, res.status_int)
        self.assertEqual([], [c for c in self.api.method_calls
                              if c[0] != 'get'])


class PolicyFileTestCase(RouterTestCase):
    """The operator's policy file (Cinder's) overrides the defaults."""

    def test_override_in_cinder_policy_file(self):
        self.write_policy('"instance_group:backup": "role:reader"\n')
        policies.reset()
        self.api.backup.return_value = result_dict('backup')
        res = self.request('POST', '/%s/backup' % GROUP_ID,
                           roles=('reader',),
                           body={'instance_id': INSTANCE_ID, 'name': 'b'})
        self.assertEqual(201, res.status_int, res.body)

    def test_cinder_base_rule_override_applies(self):
        # The defaults are Cinder's base rules: overriding one of them in
        # the one policy file changes ours too.
        self.write_policy(
            '"xena_system_admin_or_project_reader": "role:auditor"\n')
        policies.reset()
        self.api.list_sets.return_value = []
        self.assertEqual(403, self.request(
            'GET', '/' + GROUP_ID, roles=('reader',)).status_int)
        self.assertEqual(200, self.request(
            'GET', '/' + GROUP_ID, roles=('auditor',)).status_int)


class StandardExtensionsTestCase(RouterTestCase):
    """Loaded next to Cinder's standard extensions, as deployed."""

    extensions = [STANDARD, EXTENSION]
    router_class = router.APIRouter

    def test_listed_and_routed(self):
        self.assertIn('instance-groups', self.ext_mgr.extensions)
        self.assertIn('backups', self.ext_mgr.extensions)
        resource = self.router.resources['instance-groups']
        self.assertIsInstance(resource.controller,
                              instance_groups.InstanceGroupsController)

        req = wsgi.Request.blank('/%s/extensions' % PROJECT)
        req.environ['cinder.context'] = context.RequestContext(
            USER, PROJECT, roles=['reader'], is_admin=False)
        res = req.get_response(self.router)
        self.assertEqual(200, res.status_int)
        listed = {e['alias']: e for e in
                  jsonutils.loads(res.body)['extensions']}
        self.assertEqual('InstanceGroups', listed['instance-groups']['name'])
        self.assertIn('backups', listed)

        self.api.list_sets.return_value = []
        self.assertEqual(200, self.request('GET', '/' + GROUP_ID).status_int)

    def test_routes(self):
        mapper = self.router.map
        expected = [
            ('GET', '', 'index'), ('POST', '', 'create'),
            ('GET', '/' + GROUP_ID, 'show'),
            ('DELETE', '/' + GROUP_ID, 'delete'),
            ('POST', '/%s/backup' % GROUP_ID, 'backup'),
            ('PUT', '/%s/restore' % GROUP_ID, 'restore'),
            ('PUT', '/%s/restore_new' % GROUP_ID, 'restore_new'),
            ('PUT', '/%s/delete_backup' % GROUP_ID, 'delete_backup'),
            ('PUT', '/%s/members' % GROUP_ID, 'members'),
            ('POST', '/%s/verify_backup' % GROUP_ID, 'verify_backup'),
        ]
        resource = self.router.resources['instance-groups']
        for prefix in ('/%s' % PROJECT, ''):
            for method, path, action in expected:
                url = '%s/instance-groups%s' % (prefix, path)
                match = mapper.match(url, environ={'REQUEST_METHOD': method})
                self.assertIsNotNone(match, '%s %s' % (method, url))
                self.assertIs(resource, match['controller'])
                self.assertEqual(action, match['action'], url)
                if path.startswith('/'):
                    self.assertEqual(GROUP_ID, match['id'])


PASTE_INI = """
[composite:osapi_volume]
use = call:cinder.api:root_app_factory
/v3: openstack_volume_api_v3

[pipeline:openstack_volume_api_v3]
pipeline = request_id faultwrap sizelimit keystonecontext apiv3

[filter:request_id]
paste.filter_factory = cinder.api.middleware.request_id:RequestId.factory

[filter:faultwrap]
paste.filter_factory = cinder.api.middleware.fault:FaultWrapper.factory

[filter:sizelimit]
paste.filter_factory = oslo_middleware.sizelimit:RequestBodySizeLimiter.factory

[filter:keystonecontext]
paste.filter_factory = cinder.api.middleware.auth:CinderKeystoneContext.factory

[app:apiv3]
paste.app_factory = cinder.api.v3.router:APIRouter.factory
"""


class PastePipelineTestCase(RouterTestCase):
    """cinder-api's WSGI pipeline as a keystone deployment has it.

    Cinder's middlewares (request id, fault wrapper, body size limit, the
    keystone context from the headers keystonemiddleware sets) and its
    router loaded by paste as cinder-api does; only keystonemiddleware's
    token check is left out.
    """

    extensions = [STANDARD, EXTENSION]

    def setUp(self):
        super(PastePipelineTestCase, self).setUp()
        ini = os.path.join(self.useFixture(fixtures.TempDir()).path,
                           'api-paste.ini')
        with open(ini, 'w') as f:
            f.write(PASTE_INI)
        self.app = paste_deploy.loadapp('config:%s' % ini,
                                        name='osapi_volume')

    def call(self, method, path, body=None, roles='member,reader'):
        req = webob.Request.blank('/v3/%s%s' % (PROJECT, path),
                                  method=method)
        req.headers.update({'X-Identity-Status': 'Confirmed',
                            'X-User-Id': USER, 'X-Project-Id': PROJECT,
                            'X-Roles': roles})
        if body is not None:
            req.body = jsonutils.dump_as_bytes(body)
            req.content_type = 'application/json'
        return req.get_response(self.app)

    def test_through_the_pipeline(self):
        res = self.call('GET', '/extensions', roles='reader')
        self.assertEqual(200, res.status_int, res.body)
        self.assertIn('instance-groups', [
            e['alias'] for e in jsonutils.loads(res.body)['extensions']])

        self.api.list_sets.return_value = []
        res = self.call('GET', '/instance-groups/' + GROUP_ID,
                        roles='reader')
        self.assertEqual(200, res.status_int, res.body)
        self.assertEqual([], jsonutils.loads(res.body))
        self.assertTrue(res.headers['x-openstack-request-id'].startswith(
            'req-'))

        self.assertEqual(403, self.call(
            'POST', '/instance-groups/%s/backup' % GROUP_ID, roles='reader',
            body={'instance_id': INSTANCE_ID, 'name': 'b'}).status_int)

        self.api.backup.return_value = {'msg': 'Backup request submitted'}
        res = self.call('POST', '/instance-groups/%s/backup' % GROUP_ID,
                        body={'instance_id': INSTANCE_ID, 'name': 'b',
                              'async': 'true'})
        self.assertEqual(201, res.status_int, res.body)
        self.assertEqual({'msg': 'Backup request submitted'},
                         jsonutils.loads(res.body))

    def test_unexpected_error_text_not_shown(self):
        # An error group.api did not foresee is a 500 whose text (it may
        # name a host or a credential) stays in the log.
        self.api.restore.side_effect = RuntimeError('password=s3cret')
        res = self.call('PUT', '/instance-groups/%s/restore' % GROUP_ID,
                        body={'instance_id': INSTANCE_ID, 'name': 'b'})
        self.assertEqual(500, res.status_int)
        self.assertNotIn(b's3cret', res.body)


class ImportTestCase(test.TestCase):

    def test_group_api_class_path(self):
        # The controller's only dependency, named as the contract says.
        self.assertEqual('cinder_vmdk_backup.group.api.API',
                         instance_groups.GROUP_API_CLASS)

    def test_group_api_loaded_once_on_first_use(self):
        api = mock.create_autospec(StubGroupAPI, instance=True)
        with mock.patch.object(instance_groups.importutils, 'import_object',
                               autospec=True, return_value=api) as load:
            controller = instance_groups.InstanceGroupsController()
            load.assert_not_called()
            self.assertIs(api, controller.group_api)
            self.assertIs(api, controller.group_api)
        load.assert_called_once_with(instance_groups.GROUP_API_CLASS)

    def test_stub_has_the_signatures_of_group_api(self):
        # The stub stands for group.api.API in these tests: once that
        # module is there, its signatures must be the stub's.
        try:
            real = importutils.import_class(instance_groups.GROUP_API_CLASS)
        except ImportError:
            self.skipTest('cinder_vmdk_backup.group.api is not there yet')
        methods = inspect.getmembers(StubGroupAPI, inspect.isfunction)
        self.assertEqual(10, len(methods))
        for name, stub in methods:
            self.assertEqual(inspect.signature(stub),
                             inspect.signature(getattr(real, name)), name)
