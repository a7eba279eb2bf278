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

"""The backup-plan API in-process over the real databases, nothing mocked.

Cinder's v3 router loads the plan and instance-group extensions from
``osapi_volume_extension`` as cinder-api does; the controller imports the
real :mod:`cinder_vmdk_backup.plans.api`, which checks targets against
Cinder's objects on its test database (SQLite, Cinder's TestCase), the
instance group through the real group API, schedules with the real cron
code, and stores in the plans database (an SQLite file migrated by
``db_sync``, tests/plans_db.py). The plugin's and Cinder's policies run in
the real enforcers.
"""

import datetime
import os

from cinder import objects

objects.register_all()

from cinder.api import extensions  # noqa: E402
from cinder.api.openstack import wsgi  # noqa: E402
from cinder import context  # noqa: E402
from cinder.tests.unit import test  # noqa: E402
from cinder.tests.unit import utils as cinder_utils  # noqa: E402
import fixtures  # noqa: E402
from oslo_serialization import jsonutils  # noqa: E402
from oslo_utils import timeutils  # noqa: E402

from cinder_vmdk_backup.plans.db import api as plans_db_api  # noqa: E402
from cinder_vmdk_backup import policies  # noqa: E402
from tests import plans_db  # noqa: E402
from tests.unit.api.contrib import test_backup_plans as base  # noqa
from tests.unit.api.contrib import test_instance_groups as groups  # noqa

PROJECT = groups.PROJECT
OTHER_PROJECT = groups.OTHER_PROJECT
USER = groups.USER
INSTANCE_ID = groups.INSTANCE_ID
MISSING = '00000000-0000-4000-8000-0000000000ff'
#: 2026-12-06 09:00:30 UTC, a Sunday; 10:00:30 in Berlin (CET).
NOW = datetime.datetime(2026, 12, 6, 9, 0, 30)


class PlansApiOverDatabasesTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(plans_db.PlansDatabase())
        timeutils.set_time_override(NOW)
        self.addCleanup(timeutils.clear_time_override)
        policy_file = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'policy.yaml')
        with open(policy_file, 'w') as f:
            f.write('{}')
        self.override_config('policy_file', policy_file,
                             group='oslo_policy')
        policies.reset()
        self.addCleanup(policies.reset)
        self.override_config('osapi_volume_extension',
                             [groups.EXTENSION, base.EXTENSION])
        self.router = groups.ExtensionRouter(extensions.ExtensionManager())

        self.ctx = context.RequestContext(USER, PROJECT,
                                          roles=['member', 'reader'])
        admin = context.get_admin_context()
        self.vtype = cinder_utils.create_volume_type(admin, name='fast')
        self.volumes = {}
        for mountpoint in ('/dev/vda', '/dev/vdb'):
            volume = cinder_utils.create_volume(
                self.ctx, status='in-use', volume_type_id=self.vtype.id,
                host='node1@fast#pool1', availability_zone='nova')
            cinder_utils.attach_volume(self.ctx, volume.id, INSTANCE_ID,
                                       'node1', mountpoint)
            self.volumes[mountpoint] = volume.id
        self.vol_a = self.volumes['/dev/vda']
        self.vol_b = self.volumes['/dev/vdb']
        self.other_volume = cinder_utils.create_volume(
            context.RequestContext(USER, OTHER_PROJECT),
            volume_type_id=self.vtype.id).id

    def request(self, method, path='', body=None, project_id=PROJECT,
                roles=('member', 'reader'), query='',
                resource='backup-plans'):
        url = '/%s/%s%s%s' % (project_id, resource, path, query)
        req = wsgi.Request.blank(url, method=method)
        if body is not None:
            req.body = jsonutils.dump_as_bytes(body)
            req.content_type = 'application/json'
        req.environ['cinder.context'] = context.RequestContext(
            USER, project_id, roles=list(roles), is_admin='admin' in roles)
        return req.get_response(self.router)

    def json(self, response, status):
        self.assertEqual(status, response.status_int, response.body)
        return jsonutils.loads(response.body) if response.body else None

    def refused(self, response, status, *words):
        fault = self.json(response, status)
        (message,) = [v['message'] for v in fault.values()]
        for word in words:
            self.assertIn(word, message)
        return message

    def create(self, status=201, **changes):
        return self.json(self.request('POST', body=self.body(**changes)),
                         status)

    def test_volume_plan_life(self):
        plan = self.create(full_every=7, bandwidth_mib_s=40)['backup_plan']
        plan_id = plan['id']
        # 02:30 in Berlin (CET, UTC+1) after Sunday 10:00 local: Monday.
        self.assertEqual('2026-12-07T01:30:00Z', plan['next_run_at'])
        self.assertEqual({'volume_id': self.vol_a}, plan['target'])
        self.assertEqual((PROJECT, USER, 7, 7, 40.0, True, []),
                         (plan['project_id'], plan['user_id'], plan['keep'],
                          plan['full_every'], plan['bandwidth_mib_s'],
                          plan['active'], plan['exclude']))

        shown = self.json(self.request('GET', '/' + plan_id,
                                       roles=('reader',)), 200)
        self.assertEqual([], shown['backup_plan'].pop('runs'))
        self.assertEqual(plan, shown['backup_plan'])
        listed = self.json(self.request('GET'), 200)['backup_plans']
        self.assertEqual([plan_id], [p['id'] for p in listed])
        self.assertEqual([], self.json(self.request(
            'GET', project_id=OTHER_PROJECT), 200)['backup_plans'])
        self.refused(self.request('GET', '/' + plan_id,
                                  project_id=OTHER_PROJECT), 404, plan_id)
        everyone = self.json(self.request(
            'GET', query='?all_tenants=1', project_id=OTHER_PROJECT,
            roles=('admin', 'member', 'reader')), 200)['backup_plans']
        self.assertEqual([plan_id], [p['id'] for p in everyone])

        # A partial change: the schedule's other fields stay, the next
        # slot follows the new hour; a volume plan has nothing to exclude.
        changed = self.json(self.request('PUT', '/' + plan_id, body={
            'backup_plan': {'keep': 3, 'schedule': {'hour': '23'},
                            'bandwidth_mib_s': None}}), 200)['backup_plan']
        self.assertEqual((3, '30', '23', 'Europe/Berlin', None,
                          '2026-12-06T22:30:00Z'),
                         (changed['keep'], changed['schedule']['minute'],
                          changed['schedule']['hour'],
                          changed['schedule']['timezone'],
                          changed['bandwidth_mib_s'],
                          changed['next_run_at']))
        self.refused(self.request('PUT', '/' + plan_id, body={
            'backup_plan': {'exclude': [self.vol_b]}}), 400,
            'nothing to exclude')
        self.refused(self.request('PUT', '/' + plan_id, body={
            'backup_plan': {'schedule': {'day_of_month': '32'}}}), 400,
            'day_of_month')
        self.refused(self.request('PUT', '/' + plan_id, roles=('reader',),
                                  body={'backup_plan': {'keep': 1}}),
                     403, policies.PLAN_UPDATE)

        # Run now: a queued run; a second one is refused while it waits;
        # a runner claims it, it ends; then another may be queued.
        run = self.json(self.request('POST', '/%s/run' % plan_id),
                        202)['backup_plan_run']
        self.assertEqual(('manual', 'queued', plan_id, PROJECT),
                         (run['kind'], run['status'], run['plan_id'],
                          run['project_id']))
        self.refused(self.request('POST', '/%s/run' % plan_id), 409,
                     run['id'], 'queued')
        self.assertIsNotNone(plans_db_api.run_claim(run['id'], 'node1'))
        self.refused(self.request('POST', '/%s/run' % plan_id), 409,
                     'running')
        plans_db_api.run_update(run['id'], {
            'status': 'failed', 'error': 'backup b1: no space left',
            'finished_at': timeutils.utcnow()})
        # (The clock is frozen: the second run comes a second later.)
        timeutils.advance_time_seconds(1)
        second = self.json(self.request('POST', '/%s/run' % plan_id),
                           202)['backup_plan_run']
        runs = self.json(self.request('GET', '/%s/runs' % plan_id,
                                      roles=('reader',)),
                         200)['backup_plan_runs']
        self.assertEqual([second['id'], run['id']], [r['id'] for r in runs])
        self.assertEqual(('failed', 'node1', 'backup b1: no space left'),
                         (runs[1]['status'], runs[1]['host'],
                          runs[1]['error']))
        self.assertEqual(2, len(self.json(self.request(
            'GET', '/' + plan_id), 200)['backup_plan']['runs']))

        # Deleted: gone from the API, its runs kept in the database.
        self.refused(self.request('DELETE', '/' + plan_id,
                                  roles=('reader',)), 403,
                     policies.PLAN_DELETE)
        self.assertEqual(204, self.request('DELETE',
                                           '/' + plan_id).status_int)
        self.refused(self.request('GET', '/' + plan_id), 404, plan_id)
        self.refused(self.request('POST', '/%s/run' % plan_id), 404)
        self.assertEqual(2, len(plans_db_api.run_get_all(
            context.get_admin_context(), plan_id)))

    def test_refusals_name_the_field(self):
        cases = [
            ({'schedule': {'minute': '61', 'hour': '2'}}, 'minute', '61'),
            ({'schedule': {'minute': '0', 'hour': '2',
                           'day_of_week': 'funday'}}, 'day_of_week'),
            ({'schedule': {'minute': '0', 'hour': '2',
                           'timezone': 'Mars/Olympus'}}, 'Mars/Olympus'),
            ({'keep': 0}, 'keep', 'minimum of 1'),
            ({'full_every': 0}, 'full_every'),
            ({'bandwidth_mib_s': 0}, 'bandwidth_mib_s'),
            ({'target': {'volume_id': MISSING}}, 'target volume', MISSING),
            ({'target': {'volume_id': self.other_volume}}, 'target volume',
             self.other_volume),
            ({'target': {'instance_group_id': MISSING}},
             'target instance group', MISSING),
            ({'target': {'volume_type': 'slow'}}, 'target volume type slow'),
        ]
        for changes, *words in cases:
            self.refused(self.request('POST', body=self.body(**changes)),
                         400, *words)
        self.assertEqual([], plans_db_api.plan_get_all(
            context.get_admin_context(), filters={'all_projects': True}))

    def body(self, **changes):
        changes.setdefault('target', {'volume_id': self.vol_a})
        return base.create_body(**changes)

    def test_group_plan_exclusions(self):
        group = self.json(self.request(
            'POST', resource='instance-groups', body={'instance_group': {
                'instance_id': INSTANCE_ID}}), 201)['instance_group']
        target = {'instance_group_id': group['id']}
        self.refused(self.request('POST', body=self.body(
            target=target, exclude=[self.other_volume])), 400,
            self.other_volume, 'not a volume of instance group')
        self.refused(self.request('POST', body=self.body(
            target=target, exclude=[self.vol_a, self.vol_b])), 400,
            'leaves no volume')
        plan = self.json(self.request('POST', body=self.body(
            target=target, exclude=[self.vol_b])), 201)['backup_plan']
        self.assertEqual((target, [self.vol_b]),
                         (plan['target'], plan['exclude']))

    def test_volume_type_plan_exclusions(self):
        target = {'volume_type': 'fast'}
        # A volume or an instance using volumes of the project.
        plan = self.json(self.request('POST', body=self.body(
            target=target, exclude=[self.vol_a, INSTANCE_ID])),
            201)['backup_plan']
        self.assertEqual(({'volume_type': self.vtype.id},
                          [self.vol_a, INSTANCE_ID]),
                         (plan['target'], plan['exclude']))
        self.refused(self.request('POST', body=self.body(
            target=target, exclude=[groups.OTHER_INSTANCE])), 400,
            groups.OTHER_INSTANCE)
        self.refused(self.request('POST', body=self.body(
            target=target, exclude=[self.other_volume])), 400,
            self.other_volume)
        by_id = self.json(self.request('POST', body=self.body(
            target={'volume_type': self.vtype.id})), 201)['backup_plan']
        self.assertEqual({'volume_type': self.vtype.id}, by_id['target'])
        listed = self.json(self.request(
            'GET', query='?target_type=volume_type'), 200)['backup_plans']
        self.assertEqual({plan['id'], by_id['id']},
                         {p['id'] for p in listed})
