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

"""BackupPlanClient against a real keystoneauth1 session and HTTP."""

from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
import testtools

from cinder_vmdk_backup.client import backup_plans
from cinder_vmdk_backup.client import exceptions
from tests.unit.client import http_peer

TOKEN = 'tok-secret-0123456789'
PROJECT = 'f0e1d2c3b4a5968778695a4b3c2d1e0f'
PLAN = '7e57a1a0-1b2c-4d3e-8f4a-5b6c7d8e9f00'
RUN = '7e57a1a0-2222-4333-8444-555555555555'
VOLUME = 'aaaaaaaa-0000-4000-8000-00000000000a'
PREFIX = '/v3/%s/backup-plans' % PROJECT
PLAN_DICT = {'id': PLAN, 'name': 'nightly', 'target': {'volume_id': VOLUME},
             'schedule': {'minute': '30', 'hour': '2', 'day_of_month': '*',
                          'month': '*', 'day_of_week': '*',
                          'timezone': 'UTC'},
             'keep': 7, 'active': True}
RUN_DICT = {'id': RUN, 'plan_id': PLAN, 'kind': 'manual',
            'status': 'queued'}


class ClientTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.peer = self.useFixture(http_peer.HttpPeer())
        session = ks_session.Session(auth=token_endpoint.Token(
            self.peer.url + '/v3/' + PROJECT, TOKEN))
        self.client = backup_plans.BackupPlanClient(session=session)

    def sent(self):
        return [(r.method, r.path, r.body, r.query)
                for r in self.peer.requests]

    def test_needs_session_or_adapter(self):
        self.assertRaises(ValueError, backup_plans.BackupPlanClient)

    def test_create(self):
        self.peer.answer(201, {'backup_plan': PLAN_DICT})
        plan = self.client.create_plan(
            {'volume_id': VOLUME}, {'minute': '30', 'hour': '2',
                                    'timezone': None}, 7, name='nightly',
            full_every=None, bandwidth_mib_s=12.5, exclude=())
        self.assertEqual(PLAN_DICT, plan)
        self.assertEqual([('POST', PREFIX, {'backup_plan': {
            'target': {'volume_id': VOLUME},
            'schedule': {'minute': '30', 'hour': '2'}, 'keep': 7,
            'name': 'nightly', 'bandwidth_mib_s': 12.5}}, {})], self.sent())

    def test_refused_with_cinders_message(self):
        self.peer.answer(400, {'badRequest': {
            'message': 'Invalid input for field/attribute keep.',
            'code': 400}}, headers={'x-openstack-request-id': 'req-1'})
        exc = self.assertRaises(
            exceptions.BadRequest, self.client.create_plan,
            {'volume_id': VOLUME}, {'minute': '0', 'hour': '1'}, 0)
        self.assertEqual('Invalid input for field/attribute keep.',
                         exc.message)
        self.assertEqual('req-1', exc.request_id)
        self.assertNotIn(TOKEN, str(exc))

    def test_list(self):
        self.peer.answer(200, {'backup_plans': [PLAN_DICT]})
        self.assertEqual([PLAN_DICT], self.client.list_plans(
            all_projects=True, active=False, target_type=None))
        self.assertEqual([('GET', PREFIX, None,
                           {'all_tenants': ['true'], 'active': ['false']})],
                         self.sent())

    def test_find_by_name(self):
        self.peer.answer(200, {'backup_plans': [
            PLAN_DICT, dict(PLAN_DICT, id=RUN, name='other')]})
        self.peer.answer(200, {'backup_plan': dict(PLAN_DICT, runs=[])})
        self.assertEqual([], self.client.find_plan('nightly')['runs'])
        self.assertEqual(['GET', 'GET'], [s[0] for s in self.sent()])
        self.assertEqual('%s/%s' % (PREFIX, PLAN), self.sent()[1][1])

    def test_find_ambiguous_and_missing(self):
        self.peer.answer(200, {'backup_plans': [PLAN_DICT, dict(
            PLAN_DICT, id=RUN)]})
        self.assertRaises(exceptions.NoUniqueMatch, self.client.find_plan,
                          'nightly')
        self.peer.answer(200, {'backup_plans': []})
        exc = self.assertRaises(exceptions.NotFound, self.client.find_plan,
                                'weekly')
        self.assertIn('weekly', str(exc))

    def test_find_by_id(self):
        self.peer.answer(200, {'backup_plan': PLAN_DICT})
        self.assertEqual(PLAN, self.client.find_plan(PLAN)['id'])
        self.assertEqual(PLAN, self.client.resolve_plan_id(PLAN))
        self.assertEqual(1, len(self.peer.requests))

    def test_update(self):
        self.peer.answer(200, {'backup_plan': PLAN_DICT})
        self.client.update_plan(PLAN, schedule={'hour': '3'}, keep=3,
                                bandwidth_mib_s='none', exclude=[],
                                name=None)
        expected = [('PUT', '%s/%s' % (PREFIX, PLAN), {
            'backup_plan': {'schedule': {'hour': '3'}, 'keep': 3,
                            'bandwidth_mib_s': None, 'exclude': []}}, {})]
        self.assertEqual(expected, self.sent())

    def test_update_nothing(self):
        self.assertRaises(ValueError, self.client.update_plan, PLAN)
        self.assertEqual([], self.peer.requests)

    def test_delete_run_runs(self):
        self.peer.answer(204)
        self.peer.answer(202, {'backup_plan_run': RUN_DICT})
        self.peer.answer(200, {'backup_plan_runs': [RUN_DICT]})
        self.assertIsNone(self.client.delete_plan(PLAN))
        self.assertEqual(RUN_DICT, self.client.run_plan(PLAN))
        self.assertEqual([RUN_DICT], self.client.list_runs(PLAN, limit=5))
        self.assertEqual([
            ('DELETE', '%s/%s' % (PREFIX, PLAN), None, {}),
            ('POST', '%s/%s/run' % (PREFIX, PLAN), None, {}),
            ('GET', '%s/%s/runs' % (PREFIX, PLAN), None, {'limit': ['5']})],
            self.sent())

    def test_run_busy(self):
        self.peer.answer(409, {'conflictingRequest': {
            'message': 'Backup plan %s has a run running already' % PLAN,
            'code': 409}})
        exc = self.assertRaises(exceptions.Conflict, self.client.run_plan,
                                PLAN)
        self.assertIn('running already', str(exc))

    def test_resolve_volume(self):
        self.assertEqual(VOLUME, self.client.resolve_volume_id(VOLUME))
        self.peer.answer(200, {'volumes': [{'id': VOLUME, 'name': 'db'}]})
        self.assertEqual(VOLUME, self.client.resolve_volume_id('db'))
        self.assertEqual([('GET', '/v3/%s/volumes' % PROJECT, None,
                           {'name': ['db']})], self.sent())
        self.peer.answer(200, {'volumes': []})
        self.assertRaises(exceptions.NotFound,
                          self.client.resolve_volume_id, 'nope')
        self.peer.answer(200, {'volumes': [{'id': 1}, {'id': 2}]})
        self.assertRaises(exceptions.NoUniqueMatch,
                          self.client.resolve_volume_id, 'twice')
