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

"""The plan runner's decisions, with an injected clock.

The plans database is the contract's API in memory (fake_db); the tooz
coordination driver (the runners' group), the work (Cinder's backup API
behind plans.targets) and the notices are autospec mocks.
tests/functional/plans runs the same with Cinder's real database, the real
plans database and a real etcd.
"""

import datetime
from unittest import mock

import threading

from cinder import context
from cinder import objects
from cinder.tests.unit import test
from tooz import coordination as tooz_coordination
from tooz import hashring

from cinder_vmdk_backup.plans import notices
from cinder_vmdk_backup.plans import runner
from cinder_vmdk_backup.plans import targets
from tests.unit.plans import fake_db

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
MINUTE = datetime.timedelta(minutes=1)
SECOND = datetime.timedelta(seconds=1)


def every_minute(plan, when):
    return when.replace(second=0, microsecond=0) + MINUTE


class RetentionModule(object):
    """The interface of plans.retention that the runner calls."""

    @staticmethod
    def next_backup_is_full(context, plan, runs):
        pass

    @staticmethod
    def apply(context, plan, run, backup_api=None, group_api=None,
              synthesize=None):
        pass


def outcome(done=True, made=(), failures=()):
    result = targets.Outcome()
    result.done = done
    result.made = list(made)
    result.failures = list(failures)
    return result


class RunnerTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.override_config('tick_interval', 20, group='backup_plans')
        patcher = mock.patch.object(runner.PlanRunner, 'next_after',
                                    autospec=True, side_effect=every_minute)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.db = fake_db.FakePlansDB()
        self.ctxt = context.get_admin_context()
        self.now = T0
        self.hosts = ['node-a']
        self.coordinator = mock.create_autospec(
            tooz_coordination.CoordinationDriver, instance=True)
        self.coordinator.get_members_with_capabilities.side_effect = (
            self._members)
        self.work = mock.create_autospec(targets.Targets, instance=True)
        self.work.start.return_value = (['backup-1'], [], [])
        self.work.progress.return_value = outcome(made=['backup-1'])
        self.notices = mock.create_autospec(notices.Notices, instance=True)
        self.runner = self.make_runner('node-a')

    def make_runner(self, host, retention=False, backup_service=None):
        return runner.PlanRunner(host, clock=lambda: self.now, db=self.db,
                                 coordinator=self.coordinator,
                                 work=self.work, notices=self.notices,
                                 retention=retention,
                                 backup_service=backup_service)

    def _members(self, group_id):
        self.assertEqual(runner.GROUP, group_id)
        answer = mock.Mock()
        answer.get.return_value = {('m-' + h).encode(): {'host': h}
                                   for h in self.hosts}
        return answer

    @staticmethod
    def plan_id_of(owner, hosts):
        """A plan id that the ring over ``hosts`` gives to ``owner``."""
        ring = hashring.HashRing(sorted(hosts))
        for n in range(1000):
            plan_id = '00000000-0000-0000-0000-%012d' % n
            if ring.get_nodes(plan_id.encode()) == {owner}:
                return plan_id
        raise AssertionError('no plan id for %s' % owner)

    def tick(self, at=None, node=None):
        if at is not None:
            self.now = at
        return (node or self.runner).tick(self.ctxt)

    def runs(self, **match):
        return [r for r in self.db.runs
                if all(r[k] == v for k, v in match.items())]

    def events(self):
        return [c.args[1] for c in self.notices.notify.call_args_list]


class DueTestCase(RunnerTestCase):

    def test_due_plan_runs_once_and_is_followed_to_its_end(self):
        plan = self.db.add_plan(next_run_at=T0)
        self.work.progress.return_value = outcome(done=False)

        stats = self.tick(T0 + 2 * SECOND)

        self.assertEqual(1, stats['started'])
        [run] = self.db.runs
        self.assertEqual(('scheduled', 'running', 'node-a', T0),
                         (run['kind'], run['status'], run['host'],
                          run['scheduled_for']))
        self.assertEqual(['backup-1'], run['backup_ids'])
        self.assertEqual(T0 + MINUTE, self.db.plans[plan['id']]['next_run_at'])
        # This node joined the runners' group, with its host.
        self.coordinator.join_group_create.assert_called_once_with(
            runner.GROUP, capabilities={'host': 'node-a'})

        self.tick(T0 + 22 * SECOND)
        self.assertEqual(T0 + 22 * SECOND, self.db.runs[0]['heartbeat_at'])
        self.assertEqual('running', self.db.runs[0]['status'])

        self.work.progress.return_value = outcome(made=['backup-1'])
        stats = self.tick(T0 + 42 * SECOND)
        self.assertEqual(1, stats['succeeded'])
        run = self.db.runs[0]
        self.assertEqual(('succeeded', T0 + 42 * SECOND, None),
                         (run['status'], run['finished_at'], run['error']))
        self.assertEqual({}, self.runner._following)
        self.assertEqual(['start', 'end'], self.events())
        self.notices.tell_user.assert_not_called()
        # Nothing more until the next slot.
        self.assertEqual(0, self.tick(T0 + 50 * SECOND)['started'])
        self.assertEqual(1, self.tick(T0 + MINUTE + SECOND)['started'])
        self.assertEqual(2, len(self.db.runs))

    def test_two_nodes_one_run_per_slot_when_the_group_fails(self):
        self.coordinator.get_members_with_capabilities.side_effect = (
            RuntimeError('no backend'))
        plan = self.db.add_plan(next_run_at=T0)
        other = self.make_runner('node-b')
        # Both saw the plan due; the database decides.
        due = self.db.plans_due(T0 + SECOND)
        with mock.patch.object(self.db, 'plans_due', return_value=due):
            self.tick(T0 + SECOND)
            stats = self.tick(T0 + SECOND, node=other)
        self.assertEqual(1, stats['lost'])
        self.assertEqual(0, stats['started'])
        self.assertEqual(1, len(self.runs(plan_id=plan['id'])))
        self.assertEqual(1, self.work.start.call_count)

    def test_plan_of_another_nodes_share_is_left_to_it(self):
        self.hosts = ['node-a', 'node-b']
        plan = self.db.add_plan(
            id=self.plan_id_of('node-b', self.hosts), next_run_at=T0)
        mine = self.db.add_plan(
            id=self.plan_id_of('node-a', self.hosts), next_run_at=T0)
        stats = self.tick(T0 + SECOND)
        self.assertEqual((2, 1, 1), (stats['due'], stats['left_to_owner'],
                                     stats['started']))
        self.assertEqual([mine['id']], [r['plan_id'] for r in self.db.runs])
        self.assertEqual(T0, self.db.plans[plan['id']]['next_run_at'])
        # Its owner stopped without leaving the group: once the slot is
        # two ticks late any node fires it.
        self.assertEqual(0, self.tick(T0 + 39 * SECOND)['started'])
        stats = self.tick(T0 + 41 * SECOND)
        self.assertEqual(1, stats['started'])
        self.assertEqual(T0, self.runs(plan_id=plan['id'])[0][
            'scheduled_for'])

    def test_a_node_that_left_the_group_leaves_its_share(self):
        self.hosts = ['node-a', 'node-b']
        plan = self.db.add_plan(
            id=self.plan_id_of('node-b', self.hosts), next_run_at=T0)
        self.assertEqual(0, self.tick(T0 + SECOND)['started'])
        self.hosts = ['node-a']     # node-b's membership expired
        self.assertEqual(1, self.tick(T0 + 2 * SECOND)['started'])
        self.assertEqual('scheduled',
                         self.runs(plan_id=plan['id'])[0]['kind'])

    def test_a_node_whose_membership_expired_joins_again(self):
        self.tick(T0)
        self.hosts = ['node-b']
        self.tick(T0 + SECOND)
        self.assertEqual(2, self.coordinator.join_group_create.call_count)

    def test_no_lock_and_one_group_read_per_tick_for_many_plans(self):
        for _ in range(50):
            self.db.add_plan(next_run_at=T0)
        with mock.patch.object(self.db, 'plan_claim_slots',
                               wraps=self.db.plan_claim_slots) as claim, \
                mock.patch.object(self.db, 'runs_recent',
                                  wraps=self.db.runs_recent) as recent:
            stats = self.tick(T0 + SECOND)
        self.assertEqual(50, stats['started'])
        self.assertEqual(1, claim.call_count)
        self.assertEqual(50, len(claim.call_args.args[0]))
        self.assertEqual(1, recent.call_count)
        self.assertEqual(
            1, self.coordinator.get_members_with_capabilities.call_count)
        self.coordinator.get_lock.assert_not_called()

    def test_missed_slots_make_one_catch_up_run(self):
        plan = self.db.add_plan(next_run_at=T0)
        later = T0 + 90 * MINUTE + 5 * SECOND
        stats = self.tick(later)
        self.assertEqual((1, 1), (stats['started'], stats['catch_up']))
        [run] = self.db.runs
        self.assertEqual(('catch_up', T0), (run['kind'],
                                            run['scheduled_for']))
        self.assertEqual(T0 + 91 * MINUTE,
                         self.db.plans[plan['id']]['next_run_at'])
        self.assertEqual(0, self.tick(later + SECOND)['started'])

    def test_a_slot_less_than_a_tick_old_is_not_a_catch_up(self):
        self.db.add_plan(next_run_at=T0)
        self.tick(T0 + 19 * SECOND)
        self.assertEqual('scheduled', self.db.runs[0]['kind'])

    def test_overlapping_run_is_skipped_and_recorded(self):
        plan = self.db.add_plan(next_run_at=T0)
        self.work.progress.return_value = outcome(done=False)
        self.tick(T0 + SECOND)
        stats = self.tick(T0 + MINUTE + SECOND)
        self.assertEqual((1, 0), (stats['skipped'], stats['started']))
        skipped = self.runs(status='skipped')
        self.assertEqual(1, len(skipped))
        self.assertEqual((T0 + MINUTE, 'scheduled'),
                         (skipped[0]['scheduled_for'], skipped[0]['kind']))
        self.assertIn('still running', skipped[0]['error'])
        self.assertEqual(T0 + 2 * MINUTE,
                         self.db.plans[plan['id']]['next_run_at'])
        self.assertEqual(1, self.work.start.call_count)

    def test_full_every_k_runs(self):
        plan = self.db.add_plan(next_run_at=T0, full_every=3)
        fulls = []
        for slot in range(6):
            self.tick(T0 + slot * MINUTE + SECOND)
            fulls.append(self.work.start.call_args.args[3])
        # The first: nothing to build on.
        self.assertEqual([True, False, False, True, False, False], fulls)
        self.assertEqual(2, self.db.plans[plan['id']]['runs_since_full'])

    def test_retention_decides_the_full_and_follows_a_success(self):
        retention = mock.create_autospec(RetentionModule)
        retention.next_backup_is_full.return_value = (True, 'no parent')
        node = self.make_runner('node-a', retention=retention)
        plan = self.db.add_plan(next_run_at=T0)
        self.tick(T0 + SECOND, node=node)
        self.assertTrue(self.db.runs[0]['full'])
        retention.apply.assert_not_called()
        self.tick(T0 + 21 * SECOND, node=node)
        self.assertTrue(node.wait_retention(timeout=10))
        retention.apply.assert_called_once_with(mock.ANY, mock.ANY, mock.ANY)
        ctxt, applied_plan, run = retention.apply.call_args.args
        self.assertEqual((plan['project_id'], plan['id'], 'succeeded'),
                         (ctxt.project_id, applied_plan['id'],
                          run['status']))

    def test_backups_carry_the_plan_owners_project(self):
        plan = self.db.add_plan(next_run_at=T0, project_id='p-9',
                                user_id='u-9')
        self.tick(T0 + SECOND)
        ctxt, started_plan, run, full = self.work.start.call_args.args
        self.assertEqual(('p-9', 'u-9', True),
                         (ctxt.project_id, ctxt.user_id, ctxt.is_admin))
        self.assertEqual(plan['id'], started_plan['id'])


class FailureTestCase(RunnerTestCase):

    def test_failed_backup_fails_the_run_visibly_and_no_tight_retry(self):
        plan = self.db.add_plan(next_run_at=T0)
        self.work.progress.return_value = outcome(
            failures=['backup backup-1 of volume vol-1 is error: disk'])
        self.tick(T0 + SECOND)
        stats = self.tick(T0 + 21 * SECOND)
        self.assertEqual(1, stats['failed'])
        run = self.db.runs[0]
        self.assertEqual('failed', run['status'])
        self.assertIn('is error: disk', run['error'])
        self.assertEqual(['start', 'error'], self.events())
        self.notices.tell_user.assert_called_once_with(
            mock.ANY, mock.ANY, mock.ANY, detail=notices.BACKUP_ERROR,
            exception=None)
        self.assertEqual(plan['project_id'],
                         self.notices.tell_user.call_args.args[0].project_id)
        # Not retried before the next slot.
        for second in (41, 59):
            self.assertEqual(0, self.tick(T0 + second * SECOND)['started'])
        self.assertEqual(1, self.tick(T0 + MINUTE + SECOND)['started'])

    def test_partly_failed_run_is_partial(self):
        self.db.add_plan(next_run_at=T0, target_type='volume_type',
                         target_id='gold')
        self.work.start.return_value = (['b1', 'b2'], [], [])
        self.work.progress.return_value = outcome(
            made=['b1'], failures=['backup b2 of volume v2 is error'])
        self.tick(T0 + SECOND)
        self.assertEqual(1, self.tick(T0 + 21 * SECOND)['partial'])
        self.assertEqual('partial', self.db.runs[0]['status'])
        self.assertIn('error', self.events())

    def test_run_that_cannot_ask_for_backups_fails_at_once(self):
        self.db.add_plan(next_run_at=T0)
        exc = RuntimeError('over quota')
        self.work.start.side_effect = exc
        self.tick(T0 + SECOND)
        run = self.db.runs[0]
        self.assertEqual(('failed', 'over quota'),
                         (run['status'], run['error']))
        self.notices.tell_user.assert_called_once_with(
            mock.ANY, mock.ANY, mock.ANY, detail=None, exception=exc)
        # Not followed.
        self.assertEqual({}, self.runner._following)

    def test_nothing_to_back_up_but_errors_fails(self):
        self.db.add_plan(next_run_at=T0)
        self.work.start.return_value = ([], [], ['volume vol-1 does not '
                                                 'exist any more'])
        self.tick(T0 + SECOND)
        self.assertEqual('failed', self.db.runs[0]['status'])
        self.assertIn('does not exist', self.db.runs[0]['error'])

    def test_everything_excluded_succeeds_with_no_backup(self):
        self.db.add_plan(next_run_at=T0)
        self.work.start.return_value = ([], [], [])
        self.tick(T0 + SECOND)
        self.assertEqual('succeeded', self.db.runs[0]['status'])
        self.work.progress.assert_not_called()

    def test_one_broken_plan_does_not_stop_the_others(self):
        broken = self.db.add_plan(next_run_at=T0)
        good = self.db.add_plan(next_run_at=T0)

        def start(ctxt, plan, run, full, adopt=None, record=None):
            if plan['id'] == broken['id']:
                raise RuntimeError('boom')
            return (['b-good'], [], [])

        self.work.start.side_effect = start
        self.tick(T0 + SECOND)
        self.tick(T0 + 21 * SECOND)
        statuses = {r['plan_id']: r['status'] for r in self.db.runs}
        self.assertEqual({broken['id']: 'failed', good['id']: 'succeeded'},
                         statuses)


class RecoveryTestCase(RunnerTestCase):

    def dead_run(self, plan, beat, kind='scheduled', backup_ids=()):
        return self.db.add_run(plan['id'], kind=kind, status='running',
                               host='node-dead', scheduled_for=T0,
                               started_at=T0, heartbeat_at=beat,
                               full=False, backup_ids=list(backup_ids))

    def test_stale_run_is_interrupted_and_retried_once_here(self):
        plan = self.db.add_plan(next_run_at=T0 + 10 * MINUTE)
        dead = self.dead_run(plan, T0 + SECOND, backup_ids=['b-old'])
        # Within three ticks: still considered alive.
        self.assertEqual(0, self.tick(T0 + 60 * SECOND)['interrupted'])
        stats = self.tick(T0 + 62 * SECOND)
        self.assertEqual((1, 1), (stats['interrupted'], stats['retried']))
        old = self.db._run(dead['id'])
        self.assertEqual('interrupted', old['status'])
        self.assertIn('node-dead', old['error'])
        [retry] = self.runs(kind='retry')
        self.assertEqual(('running', 'node-a', T0),
                         (retry['status'], retry['host'],
                          retry['scheduled_for']))
        adopt = self.work.start.call_args.kwargs['adopt']
        self.assertEqual((dead['id'], ['b-old']),
                         (adopt['id'], adopt['backup_ids']))
        self.notices.tell_user.assert_called_once_with(
            mock.ANY, mock.ANY, mock.ANY, detail=notices.NODE_DOWN,
            exception=None)
        self.tick(T0 + 82 * SECOND)
        self.assertEqual('succeeded', self.db._run(retry['id'])['status'])
        self.assertEqual(['error', 'start', 'end'], self.events())

    def test_interrupted_retry_is_not_retried_again(self):
        plan = self.db.add_plan(next_run_at=T0 + 10 * MINUTE)
        self.dead_run(plan, T0, kind='retry')
        stats = self.tick(T0 + 5 * MINUTE)
        self.assertEqual((1, 0), (stats['interrupted'], stats['retried']))
        self.work.start.assert_not_called()

    def test_stale_run_of_a_live_node_waits_ten_ticks(self):
        self.hosts = ['node-a', 'node-dead']    # still in the group
        plan = self.db.add_plan(next_run_at=T0 + 10 * MINUTE)
        dead = self.dead_run(plan, T0)
        self.assertEqual(0, self.tick(T0 + 199 * SECOND)['interrupted'])
        self.assertEqual('running', self.db._run(dead['id'])['status'])
        self.assertEqual(1, self.tick(T0 + 201 * SECOND)['interrupted'])

    def test_a_dead_nodes_run_is_taken_over_by_one_node_only(self):
        plan = self.db.add_plan(next_run_at=T0 + 10 * MINUTE)
        self.dead_run(plan, T0)
        other = self.make_runner('node-b')
        self.hosts = ['node-a', 'node-b']
        # Both saw it stale before either took it over.
        unfinished = self.db.runs_unfinished()
        with mock.patch.object(self.db, 'runs_unfinished',
                               return_value=unfinished):
            first = self.tick(T0 + 5 * MINUTE)
            second = self.tick(T0 + 5 * MINUTE, node=other)
        self.assertEqual(1, first['interrupted'] + second['interrupted'])
        self.assertEqual(1, len(self.runs(kind='retry')))
        self.assertEqual(1, self.work.start.call_count)

    def test_own_run_not_followed_after_a_restart_is_retried(self):
        plan = self.db.add_plan(next_run_at=T0 + 10 * MINUTE)
        self.db.add_run(plan['id'], kind='scheduled', status='running',
                        host='node-a', scheduled_for=T0, started_at=T0,
                        heartbeat_at=T0, full=False, backup_ids=['b-1'])
        stats = self.tick(T0 + 61 * SECOND)
        self.assertEqual((1, 1), (stats['interrupted'], stats['retried']))

    def test_node_that_lost_its_run_stops_following_it(self):
        plan = self.db.add_plan(next_run_at=T0)
        self.work.progress.return_value = outcome(done=False)
        self.tick(T0 + SECOND)
        run = self.db.runs[0]
        self.db.run_update(run['id'], {'status': 'interrupted'})
        self.tick(T0 + 21 * SECOND)
        self.assertEqual({}, self.runner._following)
        self.assertEqual(plan['id'], run['plan_id'])


class ManualTestCase(RunnerTestCase):

    def test_queued_run_is_claimed_and_started(self):
        plan = self.db.add_plan(next_run_at=T0 + 10 * MINUTE)
        queued = self.db.add_run(plan['id'], kind='manual', status='queued')
        self.assertEqual(1, self.tick(T0)['manual'])
        self.assertEqual(1, self.tick(T0 + 20 * SECOND)['succeeded'])
        run = self.db._run(queued['id'])
        self.assertEqual(('succeeded', 'node-a', 'manual'),
                         (run['status'], run['host'], run['kind']))
        self.assertEqual(T0 + 10 * MINUTE,
                         self.db.plans[plan['id']]['next_run_at'])

    def test_queued_run_claimed_elsewhere_is_not_started(self):
        plan = self.db.add_plan(next_run_at=T0 + 10 * MINUTE)
        self.db.add_run(plan['id'], kind='manual', status='queued')
        with mock.patch.object(self.db, 'run_claim', return_value=None):
            self.assertEqual(0, self.tick(T0)['started'])
        self.work.start.assert_not_called()

    def test_queued_run_waits_for_the_running_one(self):
        plan = self.db.add_plan(next_run_at=T0)
        self.work.progress.return_value = outcome(done=False)
        self.tick(T0 + SECOND)
        queued = self.db.add_run(plan['id'], kind='manual', status='queued')
        self.tick(T0 + 21 * SECOND)
        self.assertEqual('queued', self.db._run(queued['id'])['status'])
        self.work.progress.return_value = outcome(made=['backup-1'])
        self.tick(T0 + 41 * SECOND)
        self.tick(T0 + 43 * SECOND)
        self.assertEqual('succeeded',
                         self.db._run(queued['id'])['status'])


class LoopTestCase(RunnerTestCase):

    def test_start_ticks_at_once_and_stop_leaves_the_group(self):
        self.override_config('tick_interval', 1, group='backup_plans')
        plan = self.db.add_plan(next_run_at=T0)
        self.work.progress.return_value = outcome(done=False)
        ticked = mock.MagicMock()
        original = self.runner.tick

        def tick(ctxt, now=None):
            stats = original(ctxt, now)
            ticked(stats)
            return stats

        with mock.patch.object(self.runner, 'tick', side_effect=tick):
            self.now = T0 + SECOND
            self.runner.start()
            for _ in range(100):
                if ticked.called:
                    break
                self.runner._stopping.wait(0.05)
            self.runner.stop(timeout=5)
        self.assertTrue(ticked.called)
        self.assertEqual('running', self.db.runs[0]['status'])
        self.assertEqual(plan['id'], self.db.runs[0]['plan_id'])
        self.coordinator.leave_group.assert_called_once_with(runner.GROUP)
        self.assertEqual({}, self.runner._following)

    def test_ready_says_why_not(self):
        with mock.patch.object(self.db, 'runs_unfinished',
                               side_effect=RuntimeError('no such table')):
            self.assertIn('no such table', self.runner.ready())
        self.assertIsNone(self.runner.ready())


class RetentionOffTheTickTestCase(RunnerTestCase):

    def setUp(self):
        super().setUp()
        self.retention = mock.create_autospec(RetentionModule)
        self.retention.next_backup_is_full.return_value = (True, 'full')
        self.release = threading.Event()
        self.entered = threading.Event()
        self.applied = []

        def apply(ctxt, plan, run, synthesize=None):
            self.applied.append((plan['id'], run['id'], synthesize))
            self.entered.set()
            self.assertTrue(self.release.wait(10))

        self.retention.apply.side_effect = apply
        self.addCleanup(self.release.set)

    def test_a_slow_retention_does_not_hold_the_tick_and_records_its_end(
            self):
        node = self.make_runner('node-a', retention=self.retention)
        slow = self.db.add_plan(next_run_at=T0)
        self.tick(T0 + SECOND, node=node)
        self.tick(T0 + 21 * SECOND, node=node)     # succeeded: retention
        other = self.db.add_plan(next_run_at=T0 + MINUTE)
        # Retention of the first plan is still deleting: ticks go on.
        stats = self.tick(T0 + MINUTE + SECOND, node=node)
        self.assertEqual(2, stats['started'])
        self.assertEqual({slow['id'], other['id']},
                         {r['plan_id'] for r in self.runs(status='running')})
        # The retention thread may not have reached the store yet.
        self.assertTrue(self.entered.wait(10))
        self.assertEqual([slow['id']], [a[0] for a in self.applied])
        first = self.runs(plan_id=slow['id'])[0]
        self.assertEqual(T0 + 21 * SECOND, first['heartbeat_at'])
        self.release.set()
        self.now = T0 + 90 * SECOND
        self.assertTrue(node.wait_retention(timeout=10))
        # The run records the end of its retention.
        self.assertEqual(T0 + 90 * SECOND,
                         self.db._run(first['id'])['heartbeat_at'])
        self.assertEqual(T0 + 21 * SECOND,
                         self.db._run(first['id'])['finished_at'])

    def test_one_retention_per_plan_at_a_time_newest_success_next(self):
        node = self.make_runner('node-a', retention=self.retention)
        plan = self.db.add_plan(next_run_at=T0)
        for slot in range(3):
            self.tick(T0 + slot * MINUTE + SECOND, node=node)
            self.tick(T0 + slot * MINUTE + 21 * SECOND, node=node)
        # The first is still going; the second was superseded by the
        # third, which goes next.
        self.assertTrue(self.entered.wait(10))
        self.assertEqual(1, len(self.applied))
        self.release.set()
        self.assertTrue(node.wait_retention(timeout=10))
        runs = self.runs(plan_id=plan['id'])
        self.assertEqual([runs[0]['id'], runs[2]['id']],
                         [a[1] for a in self.applied])

    def test_failed_retention_is_recorded_on_the_run(self):
        self.retention.apply.side_effect = RuntimeError('store gone')
        node = self.make_runner('node-a', retention=self.retention)
        self.db.add_plan(next_run_at=T0)
        self.tick(T0 + SECOND, node=node)
        self.tick(T0 + 21 * SECOND, node=node)
        self.assertTrue(node.wait_retention(timeout=10))
        run = self.db.runs[0]
        self.assertEqual(('succeeded', 'retention: store gone'),
                         (run['status'], run['error']))

    def _backup_on(self, host):
        backup = mock.Mock(host=host)
        patcher = mock.patch.object(objects.Backup, 'get_by_id',
                                    autospec=True, return_value=backup)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_synthetic_fulls_on_the_node_that_holds_the_chain(self):
        self.release.set()
        service = mock.Mock()
        factory = mock.Mock(return_value=service)
        node = self.make_runner('node-a', retention=self.retention,
                                backup_service=factory)
        self._backup_on('node-a')
        self.db.add_plan(next_run_at=T0)
        self.tick(T0 + SECOND, node=node)
        self.tick(T0 + 21 * SECOND, node=node)
        self.assertTrue(node.wait_retention(timeout=10))
        [(_plan, _run, synthesize)] = self.applied
        self.assertIsNotNone(synthesize)
        from cinder_vmdk_backup.plans import synthetic
        with mock.patch.object(synthetic, 'synthesize', autospec=True,
                               return_value={'id': 'new'}) as make:
            self.assertEqual({'id': 'new'}, synthesize('backup-1'))
        make.assert_called_once_with(mock.ANY, service, 'backup-1')

    def test_no_synthetic_full_where_the_chain_is_elsewhere(self):
        self.release.set()
        node = self.make_runner('node-a', retention=self.retention,
                                backup_service=mock.Mock())
        self._backup_on('node-b')
        self.db.add_plan(next_run_at=T0)
        self.tick(T0 + SECOND, node=node)
        self.tick(T0 + 21 * SECOND, node=node)
        self.assertTrue(node.wait_retention(timeout=10))
        self.assertEqual([None], [a[2] for a in self.applied])
