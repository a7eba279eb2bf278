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

"""The backup-plan API through Cinder's own v3 router.

Every request goes through :class:`cinder.api.v3.router.APIRouter` with
Cinder's :class:`~cinder.api.extensions.ExtensionManager` loading the
extension from ``osapi_volume_extension``: routes, JSON schemas, status
codes and error mapping are Cinder's machinery running the plugin's code;
the plugin's policies run in the real :mod:`oslo_policy` enforcer. Only
:class:`cinder_vmdk_backup.plans.api.API` is replaced (autospec).
"""

import datetime
import os
from unittest import mock

from cinder import objects

objects.register_all()

from cinder.api import extensions  # noqa: E402
from cinder.api.openstack import wsgi  # noqa: E402
from cinder.api.v3 import router  # noqa: E402
from cinder import context  # noqa: E402
from cinder.tests.unit import test  # noqa: E402
import ddt  # noqa: E402
import fixtures  # noqa: E402
from oslo_serialization import jsonutils  # noqa: E402

from cinder_vmdk_backup.api.contrib import backup_plans  # noqa: E402
from cinder_vmdk_backup import exception as cvb_exception  # noqa: E402
from cinder_vmdk_backup.plans import api as plans_api  # noqa: E402
from cinder_vmdk_backup import policies  # noqa: E402
from tests.unit.api.contrib import test_instance_groups as groups  # noqa

EXTENSION = 'cinder_vmdk_backup.api.contrib.backup_plans.Backup_plans'

PROJECT = groups.PROJECT
OTHER_PROJECT = groups.OTHER_PROJECT
USER = groups.USER
PLAN_ID = '7e57a1a0-1b2c-4d3e-8f4a-5b6c7d8e9f00'
RUN_ID = '7e57a1a0-2222-4333-8444-555555555555'
VOL_A = groups.VOL_A
VOL_B = groups.VOL_B
UTC = datetime.timezone.utc
NEXT = datetime.datetime(2026, 12, 7, 2, 30, tzinfo=UTC)


def plan_dict(**changes):
    plan = {
        'id': PLAN_ID, 'project_id': PROJECT, 'user_id': USER,
        'name': 'nightly', 'description': None,
        'target_type': 'volume', 'target_id': VOL_A,
        'minute': '30', 'hour': '2', 'day_of_month': '*', 'month': '*',
        'day_of_week': '*', 'timezone': 'Europe/Berlin', 'active': True,
        'keep': 7, 'full_every': 7, 'bandwidth_mib_s': None, 'exclude': [],
        'next_run_at': NEXT, 'runs_since_full': 0,
        'created_at': datetime.datetime(2026, 12, 6, 8, 0, tzinfo=UTC),
        'updated_at': None,
    }
    plan.update(changes)
    return plan


def run_dict(**changes):
    run = {
        'id': RUN_ID, 'plan_id': PLAN_ID, 'project_id': PROJECT,
        'kind': 'manual', 'status': 'queued',
        'scheduled_for': datetime.datetime(2026, 12, 6, 9, 0, tzinfo=UTC),
        'started_at': None, 'finished_at': None, 'heartbeat_at': None,
        'host': None, 'full': None, 'backup_ids': [],
        'group_snapshot_ids': [], 'deleted_backup_ids': [], 'error': None,
    }
    run.update(changes)
    return run


def create_body(**changes):
    plan = {'name': 'nightly', 'target': {'volume_id': VOL_A},
            'schedule': {'minute': '30', 'hour': '2',
                         'timezone': 'Europe/Berlin'},
            'keep': 7}
    plan.update(changes)
    return {'backup_plan': plan}


class PlanRouterTestCase(test.TestCase):
    """A v3 router with the extension; ``self.api`` is plans.api."""

    extensions = [EXTENSION]
    router_class = groups.ExtensionRouter

    def setUp(self):
        super(PlanRouterTestCase, self).setUp()
        self.policy_file = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'policy.yaml')
        with open(self.policy_file, 'w') as f:
            f.write('{}')
        self.override_config('policy_file', self.policy_file,
                             group='oslo_policy')
        policies.reset()
        self.addCleanup(policies.reset)
        self.override_config('osapi_volume_extension', self.extensions)
        self.ext_mgr = extensions.ExtensionManager()
        self.router = self.router_class(self.ext_mgr)

        self.api = mock.create_autospec(plans_api.API, instance=True,
                                        spec_set=True)
        self.api.get.side_effect = self._get
        self.load_api = self.patch(
            'cinder_vmdk_backup.api.contrib.backup_plans.load_plans_api',
            autospec=True, return_value=self.api)

    @staticmethod
    def _get(ctx, plan_id):
        # Scoped as the DB API is: another project's plan is not found,
        # unless the caller is an admin.
        if plan_id == PLAN_ID and (ctx.project_id == PROJECT or
                                   ctx.is_admin):
            return plan_dict()
        raise cvb_exception.BackupPlanNotFound(plan_id=plan_id)

    def request(self, method, path='', body=None, project_id=PROJECT,
                roles=('member', 'reader'), query='', system_scope=None):
        url = '/%s/backup-plans%s%s' % (project_id, path, query)
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
class BackupPlanRoutesTestCase(PlanRouterTestCase):

    # -- POST /backup-plans -------------------------------------------

    def test_create(self):
        self.api.create.return_value = plan_dict()
        res = self.request('POST', body=create_body(
            description='every night', full_every=7, bandwidth_mib_s=50.5,
            active=True))
        self.assertEqual(201, res.status_int, res.body)
        plan = jsonutils.loads(res.body)['backup_plan']
        self.assertEqual(PLAN_ID, plan['id'])
        self.assertEqual({'volume_id': VOL_A}, plan['target'])
        self.assertEqual({'minute': '30', 'hour': '2', 'day_of_month': '*',
                          'month': '*', 'day_of_week': '*',
                          'timezone': 'Europe/Berlin'}, plan['schedule'])
        self.assertEqual('2026-12-07T02:30:00Z', plan['next_run_at'])
        self.assertNotIn('runs', plan)
        ctx, request = self.api.create.call_args[0]
        self.assertEqual(PROJECT, ctx.project_id)
        self.assertEqual(create_body(
            description='every night', full_every=7, bandwidth_mib_s=50.5,
            active=True)['backup_plan'], request)
        self.load_api.assert_called_once_with()

    @ddt.data({'volume_type': 'fast'},
              {'instance_group_id': groups.GROUP_ID})
    def test_create_other_targets(self, target):
        self.api.create.return_value = plan_dict()
        res = self.request('POST', body=create_body(target=target))
        self.assertEqual(201, res.status_int, res.body)
        self.assertEqual(target, self.api.create.call_args[0][1]['target'])

    @ddt.data(
        ({}, "'backup_plan' is a required property"),
        ({'backup_plan': {}}, "'target' is a required property"),
        (create_body(keep=0), 'keep', '0 is less than the minimum of 1'),
        (create_body(keep=-1), 'keep'),
        (create_body(keep='7'), 'keep'),
        (create_body(keep=None), 'keep'),
        (create_body(full_every=0), 'full_every'),
        (create_body(bandwidth_mib_s=0), 'bandwidth_mib_s'),
        (create_body(bandwidth_mib_s=-5), 'bandwidth_mib_s'),
        (create_body(bandwidth_mib_s='fast'), 'bandwidth_mib_s'),
        (create_body(target={}), 'target'),
        (create_body(target={'volume_id': VOL_A, 'volume_type': 'x'}),
         'target'),
        (create_body(target={'volume_id': 'vol-1'}), 'volume_id'),
        (create_body(target={'server': VOL_A}), "'server' was unexpected"),
        (create_body(schedule={'minute': '0'}),
         "'hour' is a required property"),
        (create_body(schedule={'minute': '0', 'hour': '2', 'second': 1}),
         "'second' was unexpected"),
        (create_body(schedule={'minute': '0 2', 'hour': '2'}), 'minute'),
        (create_body(schedule={'minute': '', 'hour': '2'}), 'minute'),
        (create_body(schedule={'minute': '0', 'hour': '2',
                               'timezone': 'Europe/Ber lin'}), 'timezone'),
        (create_body(exclude=['vol-1']), "'vol-1' is not a 'uuid'"),
        (create_body(exclude=[VOL_A, VOL_A]), 'exclude'),
        (create_body(active='yes'), 'active'),
        (create_body(size=1), "'size' was unexpected"),
        (create_body(name=''), 'name'),
    )
    @ddt.unpack
    def test_create_bad_body(self, body, *words):
        self.assertFault(self.request('POST', body=body), 400, *words)
        self.api.create.assert_not_called()

    def test_create_without_body(self):
        self.assertFault(self.request('POST'), 400, 'JSON object')

    @ddt.data(
        (cvb_exception.InvalidBackupPlan(
            reason='minute: 61 is above 59'), 'minute', '61'),
        (cvb_exception.InvalidBackupPlan(
            reason='target volume %s not found' % VOL_A), VOL_A,
         'not found'),
    )
    @ddt.unpack
    def test_create_refused_by_the_api(self, error, *words):
        self.api.create.side_effect = error
        self.assertFault(self.request('POST', body=create_body()), 400,
                         *words)

    def test_create_reader_forbidden(self):
        res = self.request('POST', roles=('reader',), body=create_body())
        self.assertFault(res, 403, policies.PLAN_CREATE)
        self.api.create.assert_not_called()

    # -- GET /backup-plans --------------------------------------------

    def test_index(self):
        self.api.get_all.return_value = [plan_dict()]
        res = self.request('GET', roles=('reader',))
        self.assertEqual(200, res.status_int, res.body)
        (plan,) = jsonutils.loads(res.body)['backup_plans']
        self.assertEqual(PLAN_ID, plan['id'])
        self.api.get_all.assert_called_once_with(
            mock.ANY, filters={}, marker=None, limit=None)

    def test_index_filters(self):
        self.api.get_all.return_value = []
        res = self.request(
            'GET', query='?active=false&target_type=volume&target_id=%s'
            '&limit=10&marker=%s' % (VOL_A, PLAN_ID))
        self.assertEqual(200, res.status_int, res.body)
        self.api.get_all.assert_called_once_with(
            mock.ANY, filters={'active': False, 'target_type': 'volume',
                               'target_id': VOL_A},
            marker=PLAN_ID, limit=10)

    def test_index_all_tenants_admin(self):
        self.api.get_all.return_value = [
            plan_dict(), plan_dict(id=RUN_ID, project_id=OTHER_PROJECT)]
        res = self.request('GET', query='?all_tenants=1',
                           roles=('admin', 'member', 'reader'))
        self.assertEqual(200, res.status_int, res.body)
        self.assertEqual(2, len(jsonutils.loads(res.body)['backup_plans']))
        self.api.get_all.assert_called_once_with(
            mock.ANY, filters={'all_projects': True}, marker=None,
            limit=None)

    def test_index_all_tenants_ignored_for_a_member(self):
        # As Cinder's own lists: a non-admin's all_tenants is ignored.
        self.api.get_all.return_value = []
        res = self.request('GET', query='?all_tenants=1')
        self.assertEqual(200, res.status_int, res.body)
        self.api.get_all.assert_called_once_with(
            mock.ANY, filters={}, marker=None, limit=None)

    @ddt.data(('?host=x', 'Unknown query parameter(s): host'),
              ('?active=maybe', 'active=maybe'),
              ('?target_type=server', 'target_type=server'),
              ('?limit=0', 'limit=0'), ('?limit=x', 'limit=x'),
              ('?marker=p1', 'marker p1 is not a UUID'))
    @ddt.unpack
    def test_index_bad_query(self, query, words):
        self.assertFault(self.request('GET', query=query), 400, words)
        self.api.get_all.assert_not_called()

    def test_index_needs_a_role(self):
        self.assertFault(self.request('GET', roles=()), 403,
                         policies.PLAN_GET_ALL)
        self.api.get_all.assert_not_called()

    # -- GET /backup-plans/{id} ---------------------------------------

    def test_show_with_runs(self):
        self.api.runs.return_value = [run_dict(
            status='succeeded', kind='scheduled', host='node1',
            full=True, backup_ids=['b1'],
            started_at=datetime.datetime(2026, 12, 6, 9, 0, 1,
                                         tzinfo=UTC))]
        res = self.request('GET', '/' + PLAN_ID, roles=('reader',))
        self.assertEqual(200, res.status_int, res.body)
        plan = jsonutils.loads(res.body)['backup_plan']
        (run,) = plan['runs']
        self.assertEqual('succeeded', run['status'])
        self.assertEqual(['b1'], run['backup_ids'])
        self.assertEqual('2026-12-06T09:00:01Z', run['started_at'])
        self.api.runs.assert_called_once_with(
            mock.ANY, PLAN_ID, limit=backup_plans.SHOW_RUNS)

    def test_show_other_project(self):
        res = self.request('GET', '/' + PLAN_ID, project_id=OTHER_PROJECT)
        self.assertFault(res, 404, PLAN_ID)
        self.api.runs.assert_not_called()

    def test_show_admin_of_other_project(self):
        self.api.runs.return_value = []
        res = self.request('GET', '/' + PLAN_ID, project_id=OTHER_PROJECT,
                           roles=('admin', 'member', 'reader'))
        self.assertEqual(200, res.status_int, res.body)

    def test_system_scope_refused(self):
        res = self.request('GET', '/' + PLAN_ID, roles=('admin',),
                           system_scope='all')
        self.assertFault(res, 403, policies.PLAN_GET)

    # -- PUT /backup-plans/{id} ---------------------------------------

    def test_update(self):
        self.api.update.return_value = plan_dict(keep=3, active=False)
        res = self.request('PUT', '/' + PLAN_ID, body={'backup_plan': {
            'keep': 3, 'active': False, 'schedule': {'hour': '3'}}})
        self.assertEqual(200, res.status_int, res.body)
        self.assertEqual(3, jsonutils.loads(res.body)['backup_plan']['keep'])
        self.api.update.assert_called_once_with(
            mock.ANY, PLAN_ID, {'keep': 3, 'active': False,
                                'schedule': {'hour': '3'}})

    @ddt.data(({'backup_plan': {}}, 'backup_plan'),
              ({'backup_plan': {'keep': 0}}, 'keep'),
              ({'backup_plan': {'schedule': {}}}, 'schedule'),
              ({'backup_plan': {'id': PLAN_ID}}, "'id' was unexpected"))
    @ddt.unpack
    def test_update_bad_body(self, body, words):
        self.assertFault(self.request('PUT', '/' + PLAN_ID, body=body), 400,
                         words)
        self.api.update.assert_not_called()

    def test_update_other_project(self):
        res = self.request('PUT', '/' + PLAN_ID, project_id=OTHER_PROJECT,
                           body={'backup_plan': {'keep': 3}})
        self.assertFault(res, 404, PLAN_ID)
        self.api.update.assert_not_called()

    def test_update_reader_forbidden(self):
        res = self.request('PUT', '/' + PLAN_ID, roles=('reader',),
                           body={'backup_plan': {'keep': 3}})
        self.assertFault(res, 403, policies.PLAN_UPDATE)
        self.api.update.assert_not_called()

    # -- DELETE /backup-plans/{id} ------------------------------------

    def test_delete(self):
        self.api.delete.return_value = None
        res = self.request('DELETE', '/' + PLAN_ID)
        self.assertEqual(204, res.status_int, res.body)
        self.assertEqual(b'', res.body)
        self.api.delete.assert_called_once_with(mock.ANY, PLAN_ID)

    def test_delete_unknown(self):
        other = '00000000-0000-4000-8000-000000000000'
        self.assertFault(self.request('DELETE', '/' + other), 404, other)
        self.api.delete.assert_not_called()

    def test_delete_reader_forbidden(self):
        self.assertFault(self.request('DELETE', '/' + PLAN_ID,
                                      roles=('reader',)),
                         403, policies.PLAN_DELETE)
        self.api.delete.assert_not_called()

    # -- POST /backup-plans/{id}/run, GET .../runs --------------------

    def test_run_now(self):
        self.api.run_now.return_value = run_dict()
        res = self.request('POST', '/%s/run' % PLAN_ID)
        self.assertEqual(202, res.status_int, res.body)
        run = jsonutils.loads(res.body)['backup_plan_run']
        self.assertEqual({'id': RUN_ID, 'status': 'queued',
                          'kind': 'manual'},
                         {k: run[k] for k in ('id', 'status', 'kind')})
        self.api.run_now.assert_called_once_with(mock.ANY, PLAN_ID)

    def test_run_now_busy(self):
        self.api.run_now.side_effect = cvb_exception.BackupPlanBusy(
            plan_id=PLAN_ID, run_id=RUN_ID, status='running')
        self.assertFault(self.request('POST', '/%s/run' % PLAN_ID), 409,
                         PLAN_ID, RUN_ID, 'running')

    def test_run_now_with_body(self):
        self.assertFault(self.request('POST', '/%s/run' % PLAN_ID,
                                      body={'full': True}), 400, 'no body')
        self.api.run_now.assert_not_called()

    def test_run_now_reader_forbidden(self):
        self.assertFault(self.request('POST', '/%s/run' % PLAN_ID,
                                      roles=('reader',)),
                         403, policies.PLAN_RUN)
        self.api.run_now.assert_not_called()

    def test_runs(self):
        self.api.runs.return_value = [
            run_dict(status='failed', error='backup b1 failed: no space'),
            run_dict(id=PLAN_ID, status='skipped', kind='scheduled')]
        res = self.request('GET', '/%s/runs' % PLAN_ID, query='?limit=50',
                           roles=('reader',))
        self.assertEqual(200, res.status_int, res.body)
        runs = jsonutils.loads(res.body)['backup_plan_runs']
        self.assertEqual(['failed', 'skipped'], [r['status'] for r in runs])
        self.assertEqual('backup b1 failed: no space', runs[0]['error'])
        self.api.runs.assert_called_once_with(mock.ANY, PLAN_ID, limit=50)

    @ddt.data('?limit=0', '?status=failed')
    def test_runs_bad_query(self, query):
        self.assertFault(self.request('GET', '/%s/runs' % PLAN_ID,
                                      query=query), 400)
        self.api.runs.assert_not_called()

    def test_runs_other_project(self):
        self.assertFault(self.request('GET', '/%s/runs' % PLAN_ID,
                                      project_id=OTHER_PROJECT), 404)
        self.api.runs.assert_not_called()


class StandardExtensionsTestCase(PlanRouterTestCase):
    """Loaded next to Cinder's standard extensions, as deployed."""

    extensions = [groups.STANDARD, groups.EXTENSION, EXTENSION]
    router_class = router.APIRouter

    def test_listed_and_routed(self):
        self.assertIn('backup-plans', self.ext_mgr.extensions)
        self.assertIn('instance-groups', self.ext_mgr.extensions)
        resource = self.router.resources['backup-plans']
        self.assertIsInstance(resource.controller,
                              backup_plans.BackupPlansController)
        req = wsgi.Request.blank('/%s/extensions' % PROJECT)
        req.environ['cinder.context'] = context.RequestContext(
            USER, PROJECT, roles=['reader'], is_admin=False)
        res = req.get_response(self.router)
        listed = {e['alias']: e for e in
                  jsonutils.loads(res.body)['extensions']}
        self.assertEqual('BackupPlans', listed['backup-plans']['name'])

    def test_routes(self):
        mapper = self.router.map
        expected = [
            ('GET', '', 'index'), ('POST', '', 'create'),
            ('GET', '/' + PLAN_ID, 'show'), ('PUT', '/' + PLAN_ID, 'update'),
            ('DELETE', '/' + PLAN_ID, 'delete'),
            ('POST', '/%s/run' % PLAN_ID, 'run'),
            ('GET', '/%s/runs' % PLAN_ID, 'runs'),
        ]
        for method, path, action in expected:
            match = mapper.routematch(
                '/%s/backup-plans%s' % (PROJECT, path),
                environ={'REQUEST_METHOD': method})
            self.assertIsNotNone(match, (method, path))
            self.assertEqual(action, match[0]['action'], (method, path))
