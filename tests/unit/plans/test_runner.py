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
coordinator, the work (Cinder's backup API behind plans.targets) and the
notices are autospec mocks. tests/functional/plans runs the same with
Cinder's real database, the real plans database and a real etcd.
"""

import datetime
from unittest import mock

from cinder import context
from cinder.tests.unit import test
from tooz import locking

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


class CoordinatorSpec(object):
    """What the runner calls of Cinder's Coordinator.

    (Cinder's TestCase patches the real class's methods, which autospec
    then refuses.)
    """

    def get_lock(self, name):
        pass


class RetentionModule(object):
    """The interface of plans.retention that the runner calls."""

    @staticmethod
    def next_backup_is_full(context, plan, runs):
        pass

    @staticmethod
    def apply(context, plan, run, backup_api=None, group_api=None):
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
        self.locks = {}
        self.held_elsewhere = set()
        self.coordinator = mock.create_autospec(CoordinatorSpec,
                                                instance=True)
        self.coordinator.get_lock.side_effect = self._get_lock
        self.work = mock.create_autospec(targets.Targets, instance=True)
        self.work.start.return_value = (['backup-1'], [], [])
        self.work.progress.return_value = outcome(made=['backup-1'])
        self.notices = mock.create_autospec(notices.Notices, instance=True)
        self.runner = self.make_runner('node-a')

    def make_runner(self, host, retention=False):
        return runner.PlanRunner(host, clock=lambda: self.now, db=self.db,
                                 coordinator=self.coordinator,
                                 work=self.work, notices=self.notices,
                                 retention=retention)

    def _get_lock(self, name):
        lock = mock.create_autospec(locking.Lock, instance=True)
        lock.name = name
        lock.acquire.side_effect = (
            lambda blocking=True: name not in self.held_elsewhere)
        self.locks.setdefault(name, []).append(lock)
        return lock

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
        self.coordinator.get_lock.assert_called_with(
            'cvb-backup-plan-' + plan['id'])
        # The plan's lock is kept while the run is followed.
        lock = self.locks['cvb-backup-plan-' + plan['id']][0]
        lock.release.assert_not_called()

        self.tick(T0 + 22 * SECOND)
        self.assertEqual(T0 + 22 * SECOND, self.db.runs[0]['heartbeat_at'])
        self.assertEqual('running', self.db.runs[0]['status'])

        self.work.progress.return_value = outcome(made=['backup-1'])
        stats = self.tick(T0 + 42 * SECOND)
        self.assertEqual(1, stats['succeeded'])
        run = self.db.runs[0]
        self.assertEqual(('succeeded', T0 + 42 * SECOND, None),
                         (run['status'], run['finished_at'], run['error']))
        lock.release.assert_called_once_with()
        self.assertEqual(['start', 'end'], self.events())
        self.notices.tell_user.assert_not_called()
        # Nothing more until the next slot.
        self.assertEqual(0, self.tick(T0 + 50 * SECOND)['started'])
        self.assertEqual(1, self.tick(T0 + MINUTE + SECOND)['started'])
        self.assertEqual(2, len(self.db.runs))

    def test_two_nodes_one_run_per_slot_when_the_lock_layer_fails(self):
        self.coordinator.get_lock.side_effect = RuntimeError('no backend')
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

    def test_plan_locked_by_another_node_is_left_to_it(self):
        plan = self.db.add_plan(next_run_at=T0)
        self.held_elsewhere.add('cvb-backup-plan-' + plan['id'])
        stats = self.tick(T0 + SECOND)
        self.assertEqual((1, 1, 0), (stats['due'], stats['locked_elsewhere'],
                                     stats['started']))
        self.assertEqual([], self.db.runs)
        self.assertEqual(T0, self.db.plans[plan['id']]['next_run_at'])

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
        # The lock is not kept.
        self.assertEqual({}, self.runner._held)

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

    def test_stale_run_whose_lock_is_held_is_left_alone(self):
        plan = self.db.add_plan(next_run_at=T0 + 10 * MINUTE)
        dead = self.dead_run(plan, T0)
        self.held_elsewhere.add('cvb-backup-plan-' + plan['id'])
        self.assertEqual(0, self.tick(T0 + 5 * MINUTE)['interrupted'])
        self.assertEqual('running', self.db._run(dead['id'])['status'])

    def test_node_that_lost_its_run_stops_following_it(self):
        plan = self.db.add_plan(next_run_at=T0)
        self.work.progress.return_value = outcome(done=False)
        self.tick(T0 + SECOND)
        run = self.db.runs[0]
        self.db.run_update(run['id'], {'status': 'interrupted'})
        self.tick(T0 + 21 * SECOND)
        self.assertEqual({}, self.runner._following)
        lock = self.locks['cvb-backup-plan-' + plan['id']][0]
        lock.release.assert_called_once_with()


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

    def test_start_ticks_at_once_and_stop_releases_the_locks(self):
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
        lock = self.locks['cvb-backup-plan-' + plan['id']][0]
        lock.release.assert_called_once_with()
        self.assertEqual({}, self.runner._held)

    def test_ready_says_why_not(self):
        with mock.patch.object(self.db, 'runs_unfinished',
                               side_effect=RuntimeError('no such table')):
            self.assertIn('no such table', self.runner.ready())
        self.assertIsNone(self.runner.ready())
