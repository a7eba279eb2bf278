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

"""The backup-plan commands, through the real client, against a scripted
Cinder."""

from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from osc_lib.test import base

from cinder_vmdk_backup.client import instance_groups as ig_client
from cinder_vmdk_backup.osc.v1 import backup_plans
from tests.unit.client import http_peer
from tests.unit.client import test_backup_plans as fixtures

PROJECT = fixtures.PROJECT
PLAN = fixtures.PLAN
RUN = fixtures.RUN
VOLUME = fixtures.VOLUME
GROUP = '9b0c4b6e-44a5-4bd2-8c39-0d2c7a6b1f10'
PREFIX = fixtures.PREFIX
PLAN_DICT = dict(fixtures.PLAN_DICT, description=None, full_every=1,
                 bandwidth_mib_s=None, exclude=[],
                 next_run_at='2026-12-07T02:30:00Z', runs_since_full=0,
                 project_id=PROJECT, user_id='u1',
                 created_at='2026-12-06T08:00:00Z', updated_at=None)
RUN_DICT = dict(fixtures.RUN_DICT, scheduled_for='2026-12-06T09:00:00Z',
                started_at=None, finished_at=None, heartbeat_at=None,
                host=None, full=None, backup_ids=[], group_snapshot_ids=[],
                deleted_backup_ids=[], error=None, project_id=PROJECT)


class CommandTestCase(base.TestCommand):

    def setUp(self):
        super().setUp()
        self.peer = self.useFixture(http_peer.HttpPeer())
        session = ks_session.Session(auth=token_endpoint.Token(
            self.peer.url + '/v3/' + PROJECT, 'tok'))
        self.app.client_manager.instance_groups = (
            ig_client.InstanceGroupClient(session=session))

    def take(self, cls, argv):
        cmd = cls(self.app, None)
        parsed = self.check_parser(cmd, argv, [])
        return cmd.take_action(parsed)

    def sent(self):
        return [(r.method, r.path, r.body) for r in self.peer.requests]

    def assert_parser_error(self, cls, argv):
        self.assertRaises(base.ParserException, self.check_parser,
                          cls(self.app, None), argv, [])

    def test_create_volume_plan(self):
        self.peer.answer(201, {'backup_plan': PLAN_DICT})
        titles, data = self.take(backup_plans.CreateBackupPlan, [
            '--volume', VOLUME, '--schedule', '30 2 * * *', '--timezone',
            'Europe/Berlin', '--keep', '7', '--full-every', '7',
            '--bandwidth', '20', '--name', 'nightly', '--disable'])
        shown = dict(zip(titles, data))
        self.assertEqual('volume %s' % VOLUME, shown['Target'])
        self.assertEqual('30 2 * * *', shown['Schedule'])
        self.assertNotIn('Latest Runs', shown)
        self.assertEqual([('POST', PREFIX, {'backup_plan': {
            'target': {'volume_id': VOLUME},
            'schedule': {'minute': '30', 'hour': '2', 'day_of_month': '*',
                         'month': '*', 'day_of_week': '*',
                         'timezone': 'Europe/Berlin'},
            'keep': 7, 'full_every': 7, 'bandwidth_mib_s': 20.0,
            'name': 'nightly', 'active': False}})], self.sent())

    def test_create_group_plan_by_name(self):
        self.peer.answer(200, {'instance_groups': [{'id': GROUP,
                                                    'name': 'web'}]})
        self.peer.answer(201, {'backup_plan': dict(
            PLAN_DICT, target={'instance_group_id': GROUP})})
        self.take(backup_plans.CreateBackupPlan, [
            '--instance-group', 'web', '--schedule', '0 1 * * sat,sun',
            '--keep', '2', '--exclude', VOLUME])
        (_m, _p, body), = [s for s in self.sent() if s[0] == 'POST']
        self.assertEqual({'instance_group_id': GROUP},
                         body['backup_plan']['target'])
        self.assertEqual([VOLUME], body['backup_plan']['exclude'])
        self.assertEqual('sat,sun',
                         body['backup_plan']['schedule']['day_of_week'])

    def test_create_parser_errors(self):
        good = ['--volume-type', 'fast', '--schedule', '0 1 * * *',
                '--keep', '1']
        self.check_parser(backup_plans.CreateBackupPlan(self.app, None),
                          good, [])
        for argv in (good[2:],                            # no target
                     ['--volume', 'v', '--volume-type', 't'] + good[2:],
                     good[:2] + ['--schedule', '0 1 * *', '--keep', '1'],
                     good[:4],                            # no keep
                     good + ['--bandwidth', '0'],
                     good + ['--bandwidth', 'fast'],
                     good + ['--enable', '--disable']):
            self.assert_parser_error(backup_plans.CreateBackupPlan, argv)

    def test_list(self):
        self.peer.answer(200, {'backup_plans': [PLAN_DICT]})
        titles, rows = self.take(backup_plans.ListBackupPlan,
                                 ['--all-projects', '--disabled'])
        self.assertEqual(('ID', 'Name', 'Target', 'Schedule', 'Timezone',
                          'Active', 'Keep', 'Next Run At'), titles)
        self.assertEqual([(PLAN, 'nightly', 'volume %s' % VOLUME,
                           '30 2 * * *', 'UTC', True, 7,
                           '2026-12-07T02:30:00Z')], rows)
        self.assertEqual({'all_tenants': ['true'], 'active': ['false']},
                         self.peer.requests[0].query)

    def test_show_with_runs(self):
        self.peer.answer(200, {'backup_plan': dict(PLAN_DICT, runs=[
            dict(RUN_DICT, status='failed', kind='scheduled')])})
        titles, data = self.take(backup_plans.ShowBackupPlan, [PLAN])
        shown = dict(zip(titles, data))
        self.assertEqual(
            '2026-12-06T09:00:00Z scheduled failed %s' % RUN,
            shown['Latest Runs'].human_readable())

    def test_set(self):
        self.peer.answer(200, {'backup_plan': PLAN_DICT})
        self.assertIsNone(self.take(backup_plans.SetBackupPlan, [
            PLAN, '--keep', '3', '--schedule', '0 3 * * *',
            '--no-bandwidth', '--no-exclude', '--enable']))
        expected = [('PUT', '%s/%s' % (PREFIX, PLAN), {'backup_plan': {
            'keep': 3, 'bandwidth_mib_s': None, 'exclude': [],
            'active': True,
            'schedule': {'minute': '0', 'hour': '3', 'day_of_month': '*',
                         'month': '*', 'day_of_week': '*'}}})]
        self.assertEqual(expected, self.sent())

    def test_set_parser_errors(self):
        self.assert_parser_error(backup_plans.SetBackupPlan, [
            PLAN, '--bandwidth', '5', '--no-bandwidth'])
        self.assert_parser_error(backup_plans.SetBackupPlan, [])

    def test_delete_by_name(self):
        self.peer.answer(200, {'backup_plans': [PLAN_DICT]})
        self.peer.answer(200, {'backup_plan': PLAN_DICT})
        self.peer.answer(204)
        self.take(backup_plans.DeleteBackupPlan, ['nightly'])
        self.assertEqual(('DELETE', '%s/%s' % (PREFIX, PLAN), None),
                         self.sent()[-1])

    def test_run_and_run_list(self):
        self.peer.answer(202, {'backup_plan_run': RUN_DICT})
        titles, data = self.take(backup_plans.RunBackupPlan, [PLAN])
        self.assertEqual('queued', dict(zip(titles, data))['Status'])
        self.peer.answer(200, {'backup_plan_runs': [
            dict(RUN_DICT, status='succeeded', backup_ids=['b1', 'b2'])]})
        titles, rows = self.take(backup_plans.ListBackupPlanRun,
                                 [PLAN, '--limit', '5'])
        (row,) = rows
        shown = dict(zip(titles, row))
        self.assertEqual(['b1', 'b2'], shown['Backup IDs'].machine_readable())
        self.assertEqual(('GET', '%s/%s/runs' % (PREFIX, PLAN), None),
                         self.sent()[-1])
        self.assertEqual({'limit': ['5']}, self.peer.requests[-1].query)
