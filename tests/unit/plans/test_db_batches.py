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

"""The runner's batch calls of the plans DB API, on a real sqlite database."""

import collections
import datetime
import threading

from cinder import context
from oslotest import base
from sqlalchemy import event

from cinder_vmdk_backup.plans.db import api
from tests import plans_db

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
MINUTE = datetime.timedelta(minutes=1)


class BatchTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(plans_db.PlansDatabase())
        self.admin = context.RequestContext('admin', 'project-admin',
                                            is_admin=True)
        self.statements = collections.Counter()

        @event.listens_for(api.get_engine(), 'before_cursor_execute')
        def count(conn, cursor, statement, *args):
            # (Not the BEGIN that oslo.db sends to sqlite for each
            # transaction; MariaDB's are implicit.)
            if statement.strip().upper() != 'BEGIN':
                self.statements[threading.get_ident()] += 1

        self.addCleanup(event.remove, api.get_engine(),
                        'before_cursor_execute', count)

    def plan(self, **values):
        values.setdefault('target_type', 'volume')
        values.setdefault('target_id', 'vol-1')
        values.setdefault('project_id', 'project-a')
        values.setdefault('minute', '*')
        values.setdefault('hour', '*')
        values.setdefault('next_run_at', T0)
        return api.plan_create(self.admin, values)

    def test_claim_slots_decides_each_claim_alone_in_one_transaction(self):
        plans = [self.plan() for _ in range(3)]
        # Another node took the second plan's slot first.
        self.assertIsNotNone(api.plan_claim_slot(
            plans[1]['id'], T0, T0 + MINUTE, {'status': 'running'}))
        before = self.statements[threading.get_ident()]
        runs = api.plan_claim_slots([
            (p['id'], T0, T0 + MINUTE,
             {'status': 'running', 'host': 'node-a', 'full': n == 0,
              'started_at': T0, 'heartbeat_at': T0})
            for n, p in enumerate(plans)])
        used = self.statements[threading.get_ident()] - before
        self.assertIsNone(runs[1])
        for run, plan, full in ((runs[0], plans[0], True),
                                (runs[2], plans[2], False)):
            self.assertEqual(set(api.RUN_KEYS), set(run))
            self.assertEqual(
                (plan['id'], 'project-a', 'scheduled', 'running', 'node-a',
                 T0, full, [], T0),
                (run['plan_id'], run['project_id'], run['kind'],
                 run['status'], run['host'], run['scheduled_for'],
                 run['full'], run['backup_ids'], run['heartbeat_at']))
            self.assertEqual(run, api.run_get(self.admin, run['id']))
            stored = api.plan_get(self.admin, plan['id'])
            self.assertEqual((T0 + MINUTE, 0 if full else 1),
                             (stored['next_run_at'],
                              stored['runs_since_full']))
        # One read of the projects, one update per claim, one insert.
        self.assertEqual(1 + 3 + 1, used)
        self.assertEqual([None] * 3, api.plan_claim_slots([
            (p['id'], T0, T0 + MINUTE, {}) for p in plans]))
        self.assertEqual([], api.plan_claim_slots([]))

    def test_claim_slots_refuses_inactive_and_deleted_plans(self):
        inactive = self.plan(active=False)
        deleted = self.plan()
        api.plan_delete(self.admin, deleted['id'])
        self.assertEqual([None, None], api.plan_claim_slots([
            (p['id'], T0, T0 + MINUTE, {}) for p in (inactive, deleted)]))

    def test_runs_recent_newest_first_per_plan_within_the_limit(self):
        first, second, idle = self.plan(), self.plan(), self.plan()
        made = collections.defaultdict(list)
        for n in range(5):
            for plan in (first, second):
                made[plan['id']].append(api.run_create(
                    plan['id'], {'kind': 'manual', 'error': str(n)})['id'])
        recent = api.runs_recent([first['id'], second['id'], idle['id']],
                                 limit=3)
        self.assertEqual({first['id'], second['id'], idle['id']},
                         set(recent))
        self.assertEqual([], recent[idle['id']])
        for plan in (first, second):
            expected = api.run_get_all(self.admin, plan['id'], limit=3)
            self.assertEqual(expected, recent[plan['id']])
        self.assertEqual({}, api.runs_recent([]))

    def test_run_set_is_one_statement(self):
        plan = self.plan()
        run = api.run_create(plan['id'], {'status': 'running'})
        before = self.statements[threading.get_ident()]
        self.assertIsNone(api.run_set(run['id'], {
            'backup_ids': ['b-1', 'b-2'], 'heartbeat_at': T0}))
        self.assertEqual(1, self.statements[threading.get_ident()] - before)
        stored = api.run_get(self.admin, run['id'])
        self.assertEqual((['b-1', 'b-2'], T0),
                         (stored['backup_ids'], stored['heartbeat_at']))

    def test_run_update_if_is_a_compare_and_swap(self):
        plan = self.plan()
        run = api.run_create(plan['id'], {'status': 'running',
                                          'host': 'dead',
                                          'heartbeat_at': T0})
        expected = {'status': 'running', 'host': 'dead', 'heartbeat_at': T0}
        # Its node beat meanwhile: no takeover.
        api.run_set(run['id'], {'heartbeat_at': T0 + MINUTE})
        self.assertIsNone(api.run_update_if(
            run['id'], expected, {'status': 'interrupted'}))
        expected['heartbeat_at'] = T0 + MINUTE
        won = api.run_update_if(run['id'], expected,
                                {'status': 'interrupted'})
        self.assertEqual('interrupted', won['status'])
        # The second taker loses.
        self.assertIsNone(api.run_update_if(
            run['id'], expected, {'status': 'interrupted'}))
        never = api.run_create(plan['id'], {'status': 'running'})
        self.assertIsNotNone(api.run_update_if(
            never['id'], {'heartbeat_at': None}, {'status': 'failed'}))
