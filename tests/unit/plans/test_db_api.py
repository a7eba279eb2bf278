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

"""The plans DB API on a real, migrated sqlite database."""

import datetime

from cinder import context
from oslo_utils import timeutils
from oslotest import base

from cinder_vmdk_backup import exception
from cinder_vmdk_backup.plans.db import api
from tests import plans_db

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 3, 1, 12, 0, 30)  # naive UTC, as Cinder's


def at(*args):
    return datetime.datetime(*args, tzinfo=UTC)


class DbApiTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(plans_db.PlansDatabase())
        timeutils.set_time_override(NOW)
        self.addCleanup(timeutils.clear_time_override)
        self.ctx = context.RequestContext('user-a', 'project-a',
                                          is_admin=False)
        self.other = context.RequestContext('user-b', 'project-b',
                                            is_admin=False)
        self.admin = context.RequestContext('admin', 'project-admin',
                                            is_admin=True)

    def plan(self, ctx=None, **values):
        values.setdefault('target_type', 'volume')
        values.setdefault('target_id', 'vol-1')
        return api.plan_create(ctx or self.ctx, values)

    # plans ---------------------------------------------------------------

    def test_create_defaults_and_keys(self):
        plan = self.plan()
        self.assertEqual(set(api.PLAN_KEYS), set(plan))
        self.assertEqual('project-a', plan['project_id'])
        self.assertEqual('user-a', plan['user_id'])
        self.assertEqual(('0', '0', '*', '*', '*', 'UTC'),
                         tuple(plan[k] for k in api.SCHEDULE_KEYS))
        self.assertTrue(plan['active'])
        self.assertEqual((1, 1, None, [], 0),
                         (plan['keep'], plan['full_every'],
                          plan['bandwidth_mib_s'], plan['exclude'],
                          plan['runs_since_full']))
        # the first firing after now, aware UTC
        self.assertEqual(at(2026, 3, 2, 0, 0), plan['next_run_at'])
        self.assertEqual(at(2026, 3, 1, 12, 0, 30), plan['created_at'])
        self.assertIsNone(plan['updated_at'])
        self.assertEqual(plan, api.plan_get(self.ctx, plan['id']))

    def test_create_keeps_values(self):
        plan = self.plan(name='nightly', description='d', minute='30',
                         hour='2', day_of_week='mon-fri',
                         timezone='Europe/Berlin', active=False, keep=7,
                         full_every=5, bandwidth_mib_s=20,
                         exclude=['v2', 'v3'], target_type='volume_type',
                         target_id='gold')
        got = api.plan_get(self.ctx, plan['id'])
        self.assertEqual(('nightly', 'd', 'volume_type', 'gold', False, 7, 5,
                          20.0, ['v2', 'v3']),
                         (got['name'], got['description'],
                          got['target_type'], got['target_id'],
                          got['active'], got['keep'], got['full_every'],
                          got['bandwidth_mib_s'], got['exclude']))
        self.assertIsInstance(got['bandwidth_mib_s'], float)
        # Monday 2 March 2026, 02:30 CET = 01:30 UTC
        self.assertEqual(at(2026, 3, 2, 1, 30), got['next_run_at'])

    def test_create_given_next_run_at_in_any_zone(self):
        berlin = datetime.timezone(datetime.timedelta(hours=1))
        plan = self.plan(next_run_at=datetime.datetime(2026, 5, 1, 9, 0,
                                                       tzinfo=berlin))
        self.assertEqual(at(2026, 5, 1, 8, 0), plan['next_run_at'])
        self.assertEqual(UTC, plan['next_run_at'].tzinfo)

    def test_create_invalid(self):
        cases = [
            ({'target_type': 'server'}, 'target type'),
            ({'target_id': ''}, 'target'),
            ({'keep': 0}, 'keep'),
            ({'full_every': 0}, 'full_every'),
            ({'keep': True}, 'keep'),
            ({'bandwidth_mib_s': 0}, 'bandwidth_mib_s'),
            ({'bandwidth_mib_s': -1.5}, 'bandwidth_mib_s'),
            ({'exclude': 'v1'}, 'exclude'),
            ({'minute': '61'}, 'minute'),
            ({'timezone': 'Mars/Olympus'}, 'timezone'),
            ({'colour': 'red'}, 'colour'),
            ({'created_at': NOW}, 'created_at'),
        ]
        for values, named in cases:
            with self.subTest(values=values):
                error = self.assertRaises(exception.InvalidBackupPlan,
                                          self.plan, **values)
                self.assertIn(named, str(error))
        self.assertEqual([], api.plan_get_all(self.admin,
                                              {'all_projects': True}))

    def test_create_in_another_project_only_for_admins(self):
        self.assertRaises(exception.InvalidBackupPlan, self.plan,
                          project_id='project-b')
        plan = self.plan(self.admin, project_id='project-b')
        self.assertEqual('project-b', plan['project_id'])
        self.assertEqual(plan['id'], api.plan_get(self.other,
                                                  plan['id'])['id'])

    def test_project_scoping(self):
        plan = self.plan()
        self.assertRaises(exception.BackupPlanNotFound, api.plan_get,
                          self.other, plan['id'])
        self.assertRaises(exception.BackupPlanNotFound, api.plan_update,
                          self.other, plan['id'], {'keep': 3})
        self.assertRaises(exception.BackupPlanNotFound, api.plan_delete,
                          self.other, plan['id'])
        self.assertEqual(plan, api.plan_get(self.admin, plan['id']))
        self.assertEqual(1, api.plan_get(self.ctx, plan['id'])['keep'])
        self.assertRaises(exception.BackupPlanNotFound, api.plan_get,
                          self.ctx, 'no-such-plan')

    def test_get_all_filters_and_scope(self):
        a1 = self.plan(target_id='v1')
        timeutils.advance_time_seconds(1)
        a2 = self.plan(target_type='instance_group', target_id='g1',
                       active=False)
        timeutils.advance_time_seconds(1)
        b1 = self.plan(self.other, target_id='v1')

        def ids(ctx, filters=None):
            return [p['id'] for p in api.plan_get_all(ctx, filters)]

        self.assertEqual([a1['id'], a2['id']], ids(self.ctx))
        # a non-admin never sees another project's, whatever it asks
        self.assertEqual([a1['id'], a2['id']],
                         ids(self.ctx, {'project_id': 'project-b',
                                        'all_projects': True}))
        self.assertEqual([a1['id']], ids(self.ctx, {'active': True}))
        self.assertEqual([a2['id']], ids(self.ctx, {'active': False}))
        self.assertEqual([a2['id']],
                         ids(self.ctx, {'target_type': 'instance_group'}))
        self.assertEqual([a1['id'], b1['id']],
                         ids(self.admin, {'target_id': 'v1',
                                          'all_projects': True}))
        self.assertEqual([], ids(self.admin))  # its own project: none
        self.assertEqual([b1['id']],
                         ids(self.admin, {'project_id': 'project-b'}))
        self.assertRaises(exception.InvalidBackupPlan, api.plan_get_all,
                          self.ctx, {'colour': 'red'})

    def test_get_all_pages(self):
        made = []
        for minute in range(5):
            timeutils.advance_time_seconds(1)
            made.append(self.plan(minute=str(minute))['id'])
        page = api.plan_get_all(self.ctx, limit=2)
        self.assertEqual(made[:2], [p['id'] for p in page])
        page = api.plan_get_all(self.ctx, marker=made[1], limit=2)
        self.assertEqual(made[2:4], [p['id'] for p in page])
        page = api.plan_get_all(self.ctx, marker=made[3])
        self.assertEqual(made[4:], [p['id'] for p in page])
        self.assertRaises(exception.BackupPlanNotFound, api.plan_get_all,
                          self.ctx, marker='no-such-plan')
        other = self.plan(self.other)
        self.assertRaises(exception.BackupPlanNotFound, api.plan_get_all,
                          self.ctx, marker=other['id'])

    def test_update(self):
        plan = self.plan()
        timeutils.advance_time_seconds(60)
        got = api.plan_update(self.ctx, plan['id'],
                              {'keep': 4, 'name': 'n', 'exclude': ['x'],
                               'bandwidth_mib_s': 2.5})
        self.assertEqual((4, 'n', ['x'], 2.5),
                         (got['keep'], got['name'], got['exclude'],
                          got['bandwidth_mib_s']))
        self.assertEqual(plan['next_run_at'], got['next_run_at'])
        self.assertEqual(at(2026, 3, 1, 12, 1, 30), got['updated_at'])
        self.assertEqual(got, api.plan_get(self.ctx, plan['id']))
        # a schedule change recomputes next_run_at from now
        got = api.plan_update(self.ctx, plan['id'], {'hour': '*/2'})
        self.assertEqual(at(2026, 3, 1, 14, 0), got['next_run_at'])
        # unless it is given
        got = api.plan_update(self.ctx, plan['id'],
                              {'minute': '5',
                               'next_run_at': at(2026, 4, 1, 0, 5)})
        self.assertEqual(at(2026, 4, 1, 0, 5), got['next_run_at'])
        got = api.plan_update(self.ctx, plan['id'], {'bandwidth_mib_s': None})
        self.assertIsNone(got['bandwidth_mib_s'])

    def test_update_invalid(self):
        plan = self.plan()
        for values in ({'keep': 0}, {'project_id': 'project-b'},
                       {'id': 'x'}, {'day_of_week': 'funday'},
                       {'target_type': 'x'}):
            with self.subTest(values=values):
                self.assertRaises(exception.InvalidBackupPlan,
                                  api.plan_update, self.ctx, plan['id'],
                                  values)
        self.assertEqual(plan, api.plan_get(self.ctx, plan['id']))

    def test_delete_is_soft_and_keeps_runs(self):
        plan = self.plan()
        run = api.run_create(plan['id'], {'kind': 'manual'})
        api.plan_delete(self.ctx, plan['id'])
        self.assertRaises(exception.BackupPlanNotFound, api.plan_get,
                          self.ctx, plan['id'])
        self.assertRaises(exception.BackupPlanNotFound, api.plan_delete,
                          self.ctx, plan['id'])
        self.assertEqual([], api.plan_get_all(self.ctx))
        self.assertEqual([], api.plans_due(at(2030, 1, 1)))
        self.assertEqual(run, api.run_get(self.ctx, run['id']))
        self.assertEqual([run], api.run_get_all(self.ctx, plan['id']))
        self.assertRaises(exception.BackupPlanNotFound, api.run_create,
                          plan['id'], {'kind': 'manual'})
        self.assertIsNone(api.plan_claim_slot(
            plan['id'], plan['next_run_at'], at(2030, 1, 1), {}))

    def test_plans_due(self):
        late = self.plan(next_run_at=at(2026, 3, 1, 11, 0))
        early = self.plan(self.other, next_run_at=at(2026, 3, 1, 10, 0))
        self.plan(next_run_at=at(2026, 3, 1, 11, 0), active=False)
        self.plan(next_run_at=at(2026, 3, 1, 12, 1))
        now = datetime.datetime(2026, 3, 1, 12, 0, 30)
        self.assertEqual([early['id'], late['id']],
                         [p['id'] for p in api.plans_due(now)])
        self.assertEqual([early['id']],
                         [p['id'] for p in api.plans_due(now, limit=1)])
        # exactly next_run_at is due; aware times in any zone work
        self.assertEqual([early['id']], [p['id'] for p in api.plans_due(
            at(2026, 3, 1, 10, 0).astimezone(
                datetime.timezone(datetime.timedelta(hours=-5))))])
        self.assertEqual([], api.plans_due(at(2026, 3, 1, 9, 59, 59)))

    # slots ---------------------------------------------------------------

    def test_claim_slot_once(self):
        plan = self.plan(full_every=3)
        slot = plan['next_run_at']
        following = at(2026, 3, 3, 0, 0)
        run = api.plan_claim_slot(plan['id'], slot, following,
                                  {'host': 'a', 'status': 'running',
                                   'full': True, 'started_at': NOW})
        self.assertEqual(set(api.RUN_KEYS), set(run))
        self.assertEqual((plan['id'], 'project-a', 'scheduled', slot,
                          'running', 'a', True, at(2026, 3, 1, 12, 0, 30)),
                         (run['plan_id'], run['project_id'], run['kind'],
                          run['scheduled_for'], run['status'], run['host'],
                          run['full'], run['started_at']))
        self.assertEqual(([], [], [], None),
                         (run['backup_ids'], run['group_snapshot_ids'],
                          run['deleted_backup_ids'], run['error']))
        # another node with the same view of the plan loses
        self.assertIsNone(api.plan_claim_slot(plan['id'], slot, following,
                                              {'host': 'b'}))
        got = api.plan_get(self.ctx, plan['id'])
        self.assertEqual((following, 0),
                         (got['next_run_at'], got['runs_since_full']))
        self.assertEqual([run], api.run_get_all(self.ctx, plan['id']))

    def test_claim_slot_counts_runs_since_full(self):
        plan = self.plan()
        slot = plan['next_run_at']
        counts = []
        for full in (False, False, None, True, False):
            following = slot + datetime.timedelta(days=1)
            self.assertIsNotNone(api.plan_claim_slot(
                plan['id'], slot, following, {'full': full}))
            slot = following
            counts.append(api.plan_get(self.ctx,
                                       plan['id'])['runs_since_full'])
        self.assertEqual([1, 2, 2, 0, 1], counts)

    def test_claim_slot_of_changed_or_inactive_plan(self):
        plan = self.plan()
        slot = plan['next_run_at']
        api.plan_update(self.ctx, plan['id'], {'active': False})
        self.assertIsNone(api.plan_claim_slot(plan['id'], slot,
                                              at(2027, 1, 1), {}))
        api.plan_update(self.ctx, plan['id'], {'active': True})
        # naive UTC and aware times compare equal
        self.assertIsNotNone(api.plan_claim_slot(
            plan['id'], slot.replace(tzinfo=None), at(2027, 1, 1),
            {'kind': 'catch_up'}))
        self.assertIsNone(api.plan_claim_slot('no-such-plan', slot,
                                              at(2027, 1, 1), {}))
        self.assertEqual([], api.run_get_all(self.ctx, 'no-such-plan'))

    def test_claim_slot_invalid_run(self):
        plan = self.plan()
        for values in ({'status': 'done'}, {'kind': 'nightly'},
                       {'plan_id': 'x'}, {'backup_ids': 'b'}):
            with self.subTest(values=values):
                self.assertRaises(exception.InvalidBackupPlan,
                                  api.plan_claim_slot, plan['id'],
                                  plan['next_run_at'], at(2027, 1, 1),
                                  values)
        self.assertEqual(plan['next_run_at'],
                         api.plan_get(self.ctx, plan['id'])['next_run_at'])
        self.assertEqual([], api.runs_unfinished())

    # runs ----------------------------------------------------------------

    def test_manual_run_claimed_once(self):
        plan = self.plan()
        run = api.run_create(plan['id'], {'kind': 'manual'})
        self.assertEqual(('manual', 'queued', None, None),
                         (run['kind'], run['status'], run['host'],
                          run['scheduled_for']))
        self.assertEqual([run], api.runs_unfinished())
        timeutils.advance_time_seconds(5)
        claimed = api.run_claim(run['id'], 'host-a')
        self.assertEqual(('running', 'host-a', at(2026, 3, 1, 12, 0, 35),
                          at(2026, 3, 1, 12, 0, 35)),
                         (claimed['status'], claimed['host'],
                          claimed['started_at'], claimed['heartbeat_at']))
        self.assertIsNone(api.run_claim(run['id'], 'host-b'))
        self.assertEqual('host-a', api.run_get(self.ctx, run['id'])['host'])
        self.assertEqual([claimed], api.runs_unfinished(plan['id']))
        self.assertRaises(exception.BackupPlanRunNotFound, api.run_claim,
                          'no-such-run', 'host-a')

    def test_run_update_and_get(self):
        plan = self.plan()
        run = api.run_create(plan['id'], {'status': 'skipped',
                                          'scheduled_for': NOW,
                                          'error': 'still running'})
        self.assertEqual([], api.runs_unfinished())
        self.assertEqual(at(2026, 3, 1, 12, 0, 30), run['scheduled_for'])
        got = api.run_update(run['id'], {
            'backup_ids': ['b1', 'b2'], 'group_snapshot_ids': ['g1'],
            'deleted_backup_ids': ['b0'], 'full': 1,
            'finished_at': at(2026, 3, 1, 13, 0), 'error': None})
        self.assertEqual((['b1', 'b2'], ['g1'], ['b0'], True,
                          at(2026, 3, 1, 13, 0), None),
                         (got['backup_ids'], got['group_snapshot_ids'],
                          got['deleted_backup_ids'], got['full'],
                          got['finished_at'], got['error']))
        self.assertEqual(got, api.run_get(self.ctx, run['id']))
        self.assertEqual(got, api.run_get(self.admin, run['id']))
        self.assertRaises(exception.BackupPlanRunNotFound, api.run_get,
                          self.other, run['id'])
        self.assertEqual([], api.run_get_all(self.other, plan['id']))
        self.assertRaises(exception.BackupPlanRunNotFound, api.run_update,
                          'no-such-run', {'status': 'failed'})
        for values in ({'status': 'ok'}, {'id': 'x'},
                       {'finished_at': 'yesterday'}):
            with self.subTest(values=values):
                self.assertRaises(exception.InvalidBackupPlan,
                                  api.run_update, run['id'], values)

    def test_run_get_all_newest_first(self):
        plan = self.plan()
        other_plan = self.plan(target_id='vol-2')
        made = []
        for _i in range(4):
            timeutils.advance_time_seconds(1)
            made.append(api.run_create(plan['id'], {'kind': 'manual'})['id'])
            api.run_create(other_plan['id'], {'kind': 'manual'})
        self.assertEqual(made[::-1], [r['id'] for r in api.run_get_all(
            self.ctx, plan['id'])])
        self.assertEqual(made[:1:-1], [r['id'] for r in api.run_get_all(
            self.ctx, plan['id'], limit=2)])
        self.assertEqual(4, len(api.run_get_all(self.ctx, plan['id'],
                                                limit=None)))
        self.assertEqual(made, [r['id'] for r in
                                api.runs_unfinished(plan['id'])])
        self.assertEqual(8, len(api.runs_unfinished()))
