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

"""The backup-verification API through Cinder's own v3 router.

As the instance-group API's tests: Cinder's router and extension manager
load the extensions from ``osapi_volume_extension``, schemas, status codes
and error mapping are Cinder's machinery running our code, the plugin's
policies run in the real oslo.policy enforcer. Only
``verification.api.API`` is replaced, by an autospec of
:class:`StubVerificationAPI` (the contract's signatures; compared with the
real class below).
"""

import inspect
from unittest import mock

from cinder import objects

objects.register_all()

from cinder.api.openstack import wsgi  # noqa: E402
from cinder.api.v3 import router  # noqa: E402
from cinder import context  # noqa: E402
from cinder import exception  # noqa: E402
from cinder.tests.unit import test  # noqa: E402
import ddt  # noqa: E402
from oslo_serialization import jsonutils  # noqa: E402
from oslo_utils import importutils  # noqa: E402

from cinder_vmdk_backup.api.contrib import backup_verifications  # noqa
from cinder_vmdk_backup.api.views import backup_verifications as views  # noqa
from cinder_vmdk_backup import exception as vmdk_exception  # noqa: E402
from cinder_vmdk_backup import policies  # noqa: E402
from tests.unit.api.contrib import test_instance_groups as ig  # noqa: E402

EXTENSION = ('cinder_vmdk_backup.api.contrib.backup_verifications.'
             'Backup_verifications')
PROJECT = ig.PROJECT
OTHER_PROJECT = ig.OTHER_PROJECT
BACKUP = 'c0c0c0c0-1111-4111-8111-111111111111'
PARENT = 'c0c0c0c0-2222-4222-8222-222222222222'
VOLUME = 'aaaaaaaa-0000-4000-8000-00000000000a'
VERIFICATION = 'f00dfeed-3333-4333-8333-333333333333'


class StubVerificationAPI(object):
    """The signatures of ``cinder_vmdk_backup.verification.api.API``."""

    def verify(self, context, backup_id, deep=False):
        raise NotImplementedError()

    def get(self, context, backup_id):
        raise NotImplementedError()

    def get_all(self, context, filters=None):
        raise NotImplementedError()

    def verify_set(self, context, group_id, instance_id,
                   group_snapshot_id=None, name=None, deep=False):
        raise NotImplementedError()


def entry(**changes):
    """A record as verification.api answers it."""
    value = {
        'backup_id': BACKUP, 'backup_name': 'nightly',
        'backup_status': 'available', 'volume_id': VOLUME,
        'project_id': PROJECT, 'created_at': '2026-12-06T08:00:00.000000',
        'status': 'failed', 'verification_id': VERIFICATION, 'deep': False,
        'started_at': '2026-12-06T09:00:00.000000',
        'finished_at': '2026-12-06T09:01:00.000000', 'progress': 100,
        'summary': '1 problem in 12 objects',
        'problems': [{'backup_id': PARENT,
                      'object': 'volume_%s/x-00003' % VOLUME,
                      'offset': 4194304, 'length': 1048576,
                      'reason': 'md5_mismatch', 'internal': 'x'}],
        'internal_field': 'not shown'}
    value.update(changes)
    return value


def scoped_get(ctx, backup_id):
    # As verification.api.API.get: another project's backup is not found
    # unless the caller is an admin.
    if backup_id == BACKUP and (ctx.project_id == PROJECT or ctx.is_admin):
        return entry()
    raise exception.BackupNotFound(backup_id=backup_id)


class VerificationRouterTestCase(ig.RouterTestCase):
    """Both extensions; ``self.verifications`` is verification.api."""

    extensions = [ig.EXTENSION, EXTENSION]

    def setUp(self):
        super().setUp()
        self.verifications = mock.create_autospec(
            StubVerificationAPI, instance=True, spec_set=True)
        self.verifications.get.side_effect = scoped_get
        self.load_api = self.patch(
            'cinder_vmdk_backup.api.contrib.backup_verifications.'
            'load_verification_api', autospec=True,
            return_value=self.verifications)

    def call(self, method, path='', body=None, project_id=PROJECT,
             roles=('member', 'reader'), query=''):
        url = '/%s/backup-verifications%s%s' % (project_id, path, query)
        req = wsgi.Request.blank(url, method=method)
        if body is not None:
            req.body = jsonutils.dump_as_bytes(body)
            req.content_type = 'application/json'
        req.environ['cinder.context'] = context.RequestContext(
            ig.USER, project_id, roles=list(roles),
            is_admin='admin' in roles)
        return req.get_response(self.router)


@ddt.ddt
class BackupVerificationRoutesTestCase(VerificationRouterTestCase):

    # -- POST /backup-verifications ---------------------------------------

    def test_verify(self):
        self.verifications.verify.return_value = entry(
            status='queued', progress=0, problems=[], finished_at=None)
        res = self.call('POST', body={'verification': {'backup_id': BACKUP}})
        self.assertEqual(202, res.status_int, res.body)
        body = jsonutils.loads(res.body)
        self.assertEqual(
            set(views.VERIFICATION_KEYS) | {'problems'},
            set(body['verification']))
        self.assertEqual('queued', body['verification']['status'])
        self.verifications.verify.assert_called_once_with(
            mock.ANY, BACKUP, deep=False)
        ctx = self.verifications.verify.call_args[0][0]
        self.assertEqual(PROJECT, ctx.project_id)
        self.load_api.assert_called_once_with()

    @ddt.data((True, True), (False, False), ('true', True), ('TRUE', True),
              ('false', False))
    @ddt.unpack
    def test_verify_deep(self, value, deep):
        self.verifications.verify.return_value = entry(status='queued')
        res = self.call('POST', body={'verification': {
            'backup_id': BACKUP, 'deep': value}})
        self.assertEqual(202, res.status_int, res.body)
        self.verifications.verify.assert_called_once_with(
            mock.ANY, BACKUP, deep=deep)

    @ddt.data(
        ({}, "'verification' is a required property"),
        ({'verification': {}}, "'backup_id' is a required property"),
        ({'verification': {'backup_id': 'nightly'}}, 'backup_id'),
        ({'verification': {'backup_id': BACKUP, 'deep': 'yes'}}, 'deep'),
        ({'verification': {'backup_id': BACKUP, 'deep': 1}}, 'deep'),
        ({'verification': {'backup_id': BACKUP, 'mode': 'x'}},
         "'mode' was unexpected"),
        ({'verification': {'backup_id': BACKUP}, 'x': 1},
         "'x' was unexpected"),
        ({'verification': [BACKUP]}, 'verification'),
    )
    @ddt.unpack
    def test_verify_bad_body(self, body, words):
        self.assertFault(self.call('POST', body=body), 400, words)
        self.assertEqual([], self.verifications.method_calls)

    def test_verify_no_body(self):
        self.assertFault(self.call('POST'), 400, 'JSON object')
        self.assertEqual([], self.verifications.method_calls)

    @ddt.data(
        (vmdk_exception.VerificationBusy(
            backup_id=BACKUP, verification_id=VERIFICATION,
            status='running'), 409, 'being verified already'),
        (exception.ServiceNotFound(service_id='cinder-backup'), 503,
         'cinder-backup'),
        (exception.InvalidBackup(reason='backup %s is creating' % PARENT),
         400, PARENT),
        (exception.BackupNotFound(backup_id=BACKUP), 404, BACKUP),
    )
    @ddt.unpack
    def test_verify_refused(self, error, status, words):
        self.verifications.verify.side_effect = error
        self.assertFault(self.call('POST', body={'verification': {
            'backup_id': BACKUP}}), status, words)

    def test_verify_other_project(self):
        res = self.call('POST', project_id=OTHER_PROJECT,
                        body={'verification': {'backup_id': BACKUP}})
        self.assertFault(res, 404, BACKUP)
        self.verifications.verify.assert_not_called()

    def test_verify_reader_forbidden(self):
        res = self.call('POST', roles=('reader',),
                        body={'verification': {'backup_id': BACKUP}})
        self.assertFault(res, 403, policies.VERIFY)
        self.verifications.verify.assert_not_called()

    def test_verify_admin_of_other_project(self):
        # Authorized on the backup's project: an admin may.
        self.verifications.verify.return_value = entry(status='queued')
        res = self.call('POST', project_id=OTHER_PROJECT,
                        roles=('admin', 'member', 'reader'),
                        body={'verification': {'backup_id': BACKUP}})
        self.assertEqual(202, res.status_int, res.body)

    # -- GET /backup-verifications/{backup_id} ----------------------------

    def test_show(self):
        res = self.call('GET', '/' + BACKUP, roles=('reader',))
        self.assertEqual(200, res.status_int, res.body)
        body = jsonutils.loads(res.body)['verification']
        self.assertEqual(set(views.VERIFICATION_KEYS) | {'problems'},
                         set(body))
        self.assertEqual('failed', body['status'])
        self.assertEqual([{'backup_id': PARENT,
                           'object': 'volume_%s/x-00003' % VOLUME,
                           'offset': 4194304, 'length': 1048576,
                           'reason': 'md5_mismatch'}], body['problems'])

    def test_show_unverified(self):
        self.verifications.get.side_effect = None
        self.verifications.get.return_value = {
            'backup_id': BACKUP, 'project_id': PROJECT,
            'status': 'unverified', 'problems': []}
        body = jsonutils.loads(self.call('GET', '/' + BACKUP).body)
        self.assertEqual('unverified', body['verification']['status'])
        self.assertIsNone(body['verification']['finished_at'])

    @ddt.data('nightly', PARENT)
    def test_show_not_found(self, backup):
        self.assertFault(self.call('GET', '/' + backup), 404, backup)

    def test_show_other_project(self):
        self.assertFault(self.call('GET', '/' + BACKUP,
                                   project_id=OTHER_PROJECT), 404, BACKUP)

    def test_show_needs_a_role(self):
        self.assertFault(self.call('GET', '/' + BACKUP, roles=()), 403,
                         policies.VERIFY_GET)

    # -- GET /backup-verifications ----------------------------------------

    def test_list(self):
        self.verifications.get_all.return_value = [
            entry(), entry(backup_id=PARENT, status='unverified')]
        res = self.call('GET', roles=('reader',))
        self.assertEqual(200, res.status_int, res.body)
        listed = jsonutils.loads(res.body)['verifications']
        self.assertEqual([BACKUP, PARENT], [e['backup_id'] for e in listed])
        self.assertNotIn('internal_field', listed[0])
        self.verifications.get_all.assert_called_once_with(mock.ANY, {})

    def test_list_filters(self):
        self.verifications.get_all.return_value = []
        res = self.call('GET', query='?status=failed&volume_id=%s'
                        '&all_tenants=true' % VOLUME)
        self.assertEqual(200, res.status_int, res.body)
        self.verifications.get_all.assert_called_once_with(
            mock.ANY, {'status': 'failed', 'volume_id': VOLUME,
                       'all_tenants': True})

    @ddt.data(('?status=broken', 'status broken'),
              ('?volume_id=v1', 'not a UUID'),
              ('?all_tenants=maybe', 'maybe'),
              ('?limit=3', 'Unknown query parameter(s): limit'))
    @ddt.unpack
    def test_list_bad_query(self, query, words):
        self.assertFault(self.call('GET', query=query), 400, words)
        self.verifications.get_all.assert_not_called()

    def test_list_needs_a_role(self):
        self.assertFault(self.call('GET', roles=()), 403,
                         policies.VERIFY_GET_ALL)
        self.verifications.get_all.assert_not_called()

    # -- routes that do not exist -----------------------------------------

    @ddt.data(('PUT', '/' + BACKUP), ('DELETE', '/' + BACKUP))
    @ddt.unpack
    def test_no_such_route(self, method, path):
        res = self.call(method, path, body={})
        self.assertIn(res.status_int, (404, 405))
        self.assertEqual([], [c for c in self.verifications.method_calls
                              if c[0] != 'get'])


@ddt.ddt
class VerifySetRouteTestCase(VerificationRouterTestCase):
    """POST /instance-groups/{group_id}/verify_backup."""

    def verify_set(self, body, **kwargs):
        return self.request('POST', '/%s/verify_backup' % ig.GROUP_ID,
                            body=body, **kwargs)

    def _result(self):
        return {'verification_id': VERIFICATION, 'group_id': ig.GROUP_ID,
                'group_snapshot_id': ig.SET_ID,
                'backups': [entry(status='queued', problems=[]),
                            entry(backup_id=PARENT, status='queued',
                                  problems=[])]}

    @ddt.data(({'name': 'nightly'}, None, 'nightly', False),
              ({'group_snapshot_id': ig.SET_ID, 'deep': 'true'}, ig.SET_ID,
               None, True))
    @ddt.unpack
    def test_verify_set(self, selector, set_id, name, deep):
        self.verifications.verify_set.return_value = self._result()
        res = self.verify_set(dict(selector, instance_id=ig.INSTANCE_ID))
        self.assertEqual(202, res.status_int, res.body)
        body = jsonutils.loads(res.body)['verification']
        self.assertEqual(VERIFICATION, body['verification_id'])
        self.assertEqual(ig.SET_ID, body['group_snapshot_id'])
        self.assertEqual([BACKUP, PARENT],
                         [b['backup_id'] for b in body['backups']])
        self.verifications.verify_set.assert_called_once_with(
            mock.ANY, ig.GROUP_ID, ig.INSTANCE_ID, group_snapshot_id=set_id,
            name=name, deep=deep)

    @ddt.data(
        ({'instance_id': ig.INSTANCE_ID},
         "give 'group_snapshot_id' or 'name'"),
        ({'name': 'b'}, "'instance_id' is a required property"),
        ({'instance_id': ig.INSTANCE_ID, 'name': 'b', 'deep': 'yes'},
         'deep'),
        ({'instance_id': ig.INSTANCE_ID, 'name': 'b', 'async': 'true'},
         "'async' was unexpected"),
    )
    @ddt.unpack
    def test_verify_set_bad_body(self, body, words):
        self.assertFault(self.verify_set(body), 400, words)
        self.verifications.verify_set.assert_not_called()

    def test_verify_set_no_body(self):
        self.assertFault(self.request(
            'POST', '/%s/verify_backup' % ig.GROUP_ID), 400, 'JSON object')

    def test_verify_set_other_instance(self):
        res = self.verify_set({'instance_id': ig.OTHER_INSTANCE,
                               'name': 'b'})
        self.assertFault(res, 400, ig.OTHER_INSTANCE)
        self.verifications.verify_set.assert_not_called()

    def test_verify_set_other_project(self):
        res = self.verify_set({'instance_id': ig.INSTANCE_ID, 'name': 'b'},
                              project_id=OTHER_PROJECT)
        self.assertFault(res, 404, ig.GROUP_ID)
        self.verifications.verify_set.assert_not_called()

    def test_verify_set_reader_forbidden(self):
        res = self.verify_set({'instance_id': ig.INSTANCE_ID, 'name': 'b'},
                              roles=('reader',))
        self.assertFault(res, 403, policies.VERIFY_SET)
        self.verifications.verify_set.assert_not_called()

    @ddt.data(
        (vmdk_exception.VerificationBusy(
            backup_id=BACKUP, verification_id=VERIFICATION,
            status='running'), 409, 'being verified already'),
        (vmdk_exception.BackupSetNotFound(name='b', group_id=ig.GROUP_ID),
         404, ig.GROUP_ID),
        (exception.ServiceNotFound(service_id='cinder-backup'), 503,
         'cinder-backup'),
        (exception.InvalidBackup(reason='backup %s is deleting' % BACKUP),
         400, BACKUP),
    )
    @ddt.unpack
    def test_verify_set_refused(self, error, status, words):
        self.verifications.verify_set.side_effect = error
        self.assertFault(self.verify_set(
            {'instance_id': ig.INSTANCE_ID, 'name': 'b'}), status, words)


class StandardExtensionsTestCase(VerificationRouterTestCase):
    """Loaded next to Cinder's standard extensions, as deployed."""

    extensions = [ig.STANDARD, ig.EXTENSION, EXTENSION]
    router_class = router.APIRouter

    def test_listed_and_routed(self):
        self.assertIn('backup-verifications', self.ext_mgr.extensions)
        req = wsgi.Request.blank('/%s/extensions' % PROJECT)
        req.environ['cinder.context'] = context.RequestContext(
            ig.USER, PROJECT, roles=['reader'], is_admin=False)
        listed = {e['alias']: e for e in jsonutils.loads(
            req.get_response(self.router).body)['extensions']}
        self.assertEqual('BackupVerifications',
                         listed['backup-verifications']['name'])
        mapper = self.router.map
        resource = self.router.resources['backup-verifications']
        for method, path, action in (
                ('GET', '', 'index'), ('POST', '', 'create'),
                ('GET', '/' + BACKUP, 'show')):
            url = '/%s/backup-verifications%s' % (PROJECT, path)
            match = mapper.match(url, environ={'REQUEST_METHOD': method})
            self.assertIs(resource, match['controller'], url)
            self.assertEqual(action, match['action'], url)
        match = mapper.match(
            '/%s/instance-groups/%s/verify_backup' % (PROJECT, ig.GROUP_ID),
            environ={'REQUEST_METHOD': 'POST'})
        self.assertEqual('verify_backup', match['action'])
        # (Cinder's own backups resource is untouched.)
        self.assertIn('backups', self.router.resources)


class ImportTestCase(test.TestCase):

    def test_api_loaded_once_on_first_use(self):
        api = mock.create_autospec(StubVerificationAPI, instance=True)
        with mock.patch.object(backup_verifications.importutils,
                               'import_object', autospec=True,
                               return_value=api) as load:
            controller = backup_verifications.BackupVerificationsController()
            load.assert_not_called()
            self.assertIs(api, controller.verification_api)
            self.assertIs(api, controller.verification_api)
        load.assert_called_once_with(
            'cinder_vmdk_backup.verification.api.API')

    def test_stub_has_the_signatures_of_the_api(self):
        real = importutils.import_class(
            backup_verifications.VERIFICATION_API_CLASS)
        methods = inspect.getmembers(StubVerificationAPI, inspect.isfunction)
        self.assertEqual(4, len(methods))
        for name, stub in methods:
            self.assertEqual(inspect.signature(stub),
                             inspect.signature(getattr(real, name)), name)
