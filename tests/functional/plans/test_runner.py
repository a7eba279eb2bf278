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

"""Two plan runners (two cinder-backup hosts) over real peers.

Real: Cinder's database (sqlite) with its objects, quotas, message API and
backup API (``create`` records the backup and casts to the scheduler over
the fake transport), the plans database (an sqlite file migrated with
``db_sync``), cron schedules, and a real etcd reached through tooz (each
node its own Cinder ``Coordinator`` with its own lease). The clock of the
plans is simulated (ticks at chosen times); the coordination leases run
in real time. What a cinder-backup does with a backup request is not here:
the test ends each backup itself (``available`` or ``error``), as the
backup manager would.
"""

import datetime
import os
import threading
import time
from unittest import mock

import fixtures
from oslo_db import exception as db_exc
from sqlalchemy import exc as sqla_exc
from tooz import hashring

from cinder import context
from cinder import coordination
from cinder.db import api as cinder_db
from cinder import objects
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup.plans.db import api as plans_db
from cinder_vmdk_backup.plans import runner
from cinder_vmdk_backup.plans import targets
from tests.functional.plans import etcd
from tests import plans_db as plans_db_fixture

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
SECOND = datetime.timedelta(seconds=1)
MINUTE = datetime.timedelta(minutes=1)


class TwoRunnersTestCase(test.TestCase):
    # (Real tooz: Cinder's TestCase would replace the coordinator's
    # start, stop and get_lock with mocks.)
    MOCK_TOOZ = False

    def setUp(self):
        why_not = etcd.available()
        if why_not:
            self.skipTest(why_not)
        super().setUp()
        self.etcd = self.useFixture(etcd.Etcd(lock_timeout=2))
        self.useFixture(plans_db_fixture.PlansDatabase())
        self.override_config('backend_url', self.etcd.url,
                             group='coordination')
        self.override_config('tick_interval', 20, group='backup_plans')
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.admin = context.get_admin_context()
        self.vtype = test_utils.create_volume_type(self.ctxt.elevated(),
                                                   name='gold')
        self.volume = self.make_volume()
        self.nodes = {host: self.make_node(host)
                      for host in ('backup-a', 'backup-b')}

    def make_node(self, host):
        coordinator = coordination.Coordinator(agent_id=host,
                                               prefix='cinder-')
        coordinator.start()
        self.addCleanup(self._stop_coordinator, coordinator)
        node = runner.PlanRunner(host, coordinator=coordinator,
                                 retention=False)
        node.coordinator = coordinator
        # (What start() does: join the runners' group.)
        node.membership.refresh()
        self.addCleanup(node.stop)
        return node

    @staticmethod
    def plan_id_of(owner, hosts=('backup-a', 'backup-b')):
        """A plan id that the ring over ``hosts`` gives to ``owner``."""
        ring = hashring.HashRing(sorted(hosts))
        for n in range(1000):
            plan_id = 'c0ffee00-0000-0000-0000-%012d' % n
            if ring.get_nodes(plan_id.encode()) == {owner}:
                return plan_id
        raise AssertionError('no plan id for %s' % owner)

    @staticmethod
    def _stop_coordinator(coordinator):
        if coordinator.started:
            coordinator.stop()

    def make_volume(self, status='available', **kwargs):
        return test_utils.create_volume(
            self.ctxt, status=status, volume_type_id=self.vtype.id,
            host='node1@lvm#lvm', size=1, **kwargs)

    def make_plan(self, **values):
        plan = {'name': 'nightly', 'project_id': fake.PROJECT_ID,
                'user_id': fake.USER_ID, 'target_type': 'volume',
                'target_id': self.volume.id, 'minute': '*', 'hour': '*',
                'keep': 3, 'full_every': 3, 'next_run_at': T0}
        plan.update(values)
        return plans_db.plan_create(self.ctxt, plan)

    def tick_all(self, at, concurrently=True):
        """Both nodes tick at ``at`` (in two threads); their Stats."""
        results = {}

        def tick(host):
            results[host] = self.nodes[host].tick(self.admin, now=at)

        if not concurrently:
            for host in sorted(self.nodes):
                tick(host)
            return results
        threads = [threading.Thread(target=tick, args=(host,))
                   for host in sorted(self.nodes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(set(self.nodes), set(results))
        return results

    def end_backups(self, status='available'):
        """What cinder-backup would do with every backup being made."""
        for backup in objects.BackupList.get_all(self.admin):
            if backup.status != 'creating':
                continue
            backup.status = status
            backup.service = 'cinder.backup.drivers.nfs.NFSBackupDriver'
            backup.host = 'backup-a'
            if status == 'error':
                backup.fail_reason = 'disk on fire'
            backup.save()
            volume = objects.Volume.get_by_id(self.admin, backup.volume_id)
            volume.status = volume.previous_status or 'available'
            volume.save()

    def runs(self, plan):
        return list(reversed(plans_db.run_get_all(self.admin, plan['id'],
                                                  limit=None)))

    def plan_backups(self, plan):
        return [b for b in objects.BackupList.get_all(self.admin)
                if (b.metadata or {}).get(targets.PLAN_KEY) == plan['id']]

    def wait_left(self, host, timeout=15):
        """Wait for a dead node's membership lease (real time) to end."""
        probe = self.nodes['backup-b' if host == 'backup-a' else 'backup-a']
        deadline = time.monotonic() + timeout
        while host in probe.membership.refresh():
            self.assertLess(time.monotonic(), deadline,
                            'the dead node\'s membership did not expire')
            time.sleep(0.2)

    # -- the cases ----------------------------------------------------------

    def test_every_slot_runs_exactly_once_across_two_nodes(self):
        plan = self.make_plan()
        for n in range(4):
            slot = T0 + n * MINUTE
            self.tick_all(slot + SECOND)
            self.end_backups()
            self.tick_all(slot + 21 * SECOND)
        runs = self.runs(plan)
        self.assertEqual([T0 + n * MINUTE for n in range(4)],
                         [r['scheduled_for'] for r in runs])
        self.assertEqual(['succeeded'] * 4, [r['status'] for r in runs])
        self.assertEqual(['scheduled'] * 4, [r['kind'] for r in runs])
        self.assertEqual([True, False, False, True],
                         [r['full'] for r in runs])
        backups = self.plan_backups(plan)
        self.assertEqual(4, len(backups))
        self.assertEqual(sorted(b.id for b in backups),
                         sorted(r['backup_ids'][0] for r in runs))
        by_run = {b.metadata[targets.RUN_KEY]: b for b in backups}
        for run in runs:
            backup = by_run[run['id']]
            self.assertEqual((fake.PROJECT_ID, self.volume.id),
                             (backup.project_id, backup.volume_id))
            # A full run makes a full backup; else Cinder's parent.
            self.assertEqual(run['full'], backup.parent_id is None)
        self.assertEqual(T0 + 4 * MINUTE,
                         plans_db.plan_get(self.admin,
                                           plan['id'])['next_run_at'])
        events = [n['event_type'] for n in self.notifier.notifications
                  if n['event_type'].startswith('backup_plan.')]
        self.assertEqual(4, events.count('backup_plan.run.start'))
        self.assertEqual(4, events.count('backup_plan.run.end'))

    def test_one_run_per_slot_when_the_locks_do_not_coordinate(self):
        """The database decides even when the lock layer does not.

        Each node gets its own ``file://`` lock directory (what a
        forgotten ``[coordination] backend_url`` gives on two hosts): both
        take "the" lock, both saw the plan due before either claimed it;
        the slot is still taken once.
        """
        root = self.useFixture(fixtures.TempDir()).path
        for host in self.nodes:
            self.override_config('backend_url',
                                 'file://' + os.path.join(root, host),
                                 group='coordination')
            self.nodes[host] = self.make_node(host)
        plan = self.make_plan()
        for n in range(3):
            slot = T0 + n * MINUTE
            seen = plans_db.plans_due(slot + SECOND)
            self.assertEqual([plan['id']], [p['id'] for p in seen])
            with mock.patch.object(plans_db, 'plans_due', autospec=True,
                                   return_value=seen):
                results = self.tick_all(slot + SECOND)
            self.assertEqual((1, 1), (
                sum(s['started'] for s in results.values()),
                sum(s['lost'] for s in results.values())))
            self.end_backups()
            self.tick_all(slot + 21 * SECOND)
        runs = self.runs(plan)
        self.assertEqual([T0, T0 + MINUTE, T0 + 2 * MINUTE],
                         [r['scheduled_for'] for r in runs])
        self.assertEqual(3, len(self.plan_backups(plan)))

    def test_each_node_fires_its_share_and_the_share_of_a_dead_one(self):
        plans = [self.make_plan(id=self.plan_id_of(host))
                 for host in ('backup-a', 'backup-b')]
        results = self.tick_all(T0 + SECOND)
        self.assertEqual([1, 1], [results[h]['started']
                                  for h in ('backup-a', 'backup-b')])
        self.assertEqual([['backup-a'], ['backup-b']],
                         [[r['host'] for r in self.runs(p)] for p in plans])
        self.end_backups()
        self.tick_all(T0 + 21 * SECOND)
        # backup-b dies: once its membership expired, backup-a fires
        # both plans at the next slot.
        self.nodes['backup-b'].coordinator.coordinator.heart.stop()
        self.wait_left('backup-b')
        stats = self.nodes['backup-a'].tick(self.admin,
                                            now=T0 + MINUTE + SECOND)
        self.assertEqual(2, stats['started'])
        self.assertEqual([['backup-a'] * 2, ['backup-b', 'backup-a']],
                         [[r['host'] for r in self.runs(p)] for p in plans])

    def test_a_dead_nodes_run_is_retried_by_the_other(self):
        plan = self.make_plan(minute='*/5', id=self.plan_id_of('backup-a'))
        node_a = self.nodes['backup-a']
        stats = node_a.tick(self.admin, now=T0 + SECOND)
        self.assertEqual(1, stats['started'])
        [run] = self.runs(plan)
        [made] = run['backup_ids']
        # backup-a dies: its coordination lease (membership) is no longer
        # refreshed and it never ticks again.
        node_a.coordinator.coordinator.heart.stop()
        node_b = self.nodes['backup-b']
        stats = node_b.tick(self.admin, now=T0 + 21 * SECOND)
        self.assertEqual(0, stats['interrupted'])  # not stale yet
        self.wait_left('backup-a')
        stats = node_b.tick(self.admin, now=T0 + 81 * SECOND)
        self.assertEqual((1, 1), (stats['interrupted'], stats['retried']))
        first, retry = self.runs(plan)
        self.assertEqual(('interrupted', 'backup-a'),
                         (first['status'], first['host']))
        self.assertIn('backup-a stopped following', first['error'])
        self.assertEqual(('retry', 'running', 'backup-b', T0),
                         (retry['kind'], retry['status'], retry['host'],
                          retry['scheduled_for']))
        # The backup backup-a asked for goes on in Cinder: taken over.
        self.assertEqual([made], retry['backup_ids'])
        self.end_backups()
        node_b.tick(self.admin, now=T0 + 101 * SECOND)
        self.assertEqual('succeeded', self.runs(plan)[1]['status'])
        self.assertEqual(1, len(self.plan_backups(plan)))
        # The interruption is visible to the project.
        messages = cinder_db.message_get_all(self.ctxt)
        self.assertEqual(['VOLUME'], [m['resource_type'] for m in messages])
        self.assertEqual(self.volume.id, messages[0]['resource_uuid'])
        self.assertEqual('018', messages[0]['detail_id'])  # service down
        # The next slot is backup-b's.
        node_b.tick(self.admin, now=T0 + 5 * MINUTE + SECOND)
        self.assertEqual(('scheduled', 'backup-b'),
                         (self.runs(plan)[2]['kind'],
                          self.runs(plan)[2]['host']))

    def test_all_nodes_down_then_up_catch_up_once(self):
        plan = self.make_plan()
        # Every node was down from before T0 until T0 + 47 min.
        back = T0 + 47 * MINUTE + 5 * SECOND
        results = self.tick_all(back)
        self.assertEqual(1, sum(s['catch_up'] for s in results.values()))
        self.tick_all(back + 2 * SECOND)
        [run] = self.runs(plan)
        self.assertEqual(('catch_up', T0), (run['kind'],
                                            run['scheduled_for']))
        self.assertEqual(T0 + 48 * MINUTE,
                         plans_db.plan_get(self.admin,
                                           plan['id'])['next_run_at'])
        self.assertEqual(1, len(self.plan_backups(plan)))

    def test_a_run_still_going_at_the_next_slot_skips_it(self):
        plan = self.make_plan()
        self.tick_all(T0 + SECOND)
        # The backup takes longer than a minute.
        for at in (21, 41, 61, 81):
            self.tick_all(T0 + at * SECOND, concurrently=False)
        runs = self.runs(plan)
        self.assertEqual(['running', 'skipped'],
                         [r['status'] for r in runs])
        self.assertEqual(T0 + MINUTE, runs[1]['scheduled_for'])
        self.assertIn('still running', runs[1]['error'])
        self.assertEqual(runs[0]['host'], runs[1]['host'])
        self.assertEqual(T0 + 2 * MINUTE,
                         plans_db.plan_get(self.admin,
                                           plan['id'])['next_run_at'])
        self.end_backups()
        self.tick_all(T0 + 2 * MINUTE + SECOND, concurrently=False)
        self.end_backups()
        self.tick_all(T0 + 2 * MINUTE + 21 * SECOND, concurrently=False)
        self.assertEqual(['succeeded', 'skipped', 'succeeded'],
                         [r['status'] for r in self.runs(plan)])
        self.assertEqual(2, len(self.plan_backups(plan)))

    def test_failed_run_is_visible_and_waits_for_the_next_slot(self):
        plan = self.make_plan(bandwidth_mib_s=50)
        self.tick_all(T0 + SECOND)
        [backup] = self.plan_backups(plan)
        self.assertEqual('50', backup.metadata[targets.BANDWIDTH_KEY])
        self.end_backups(status='error')
        self.tick_all(T0 + 21 * SECOND)
        self.tick_all(T0 + 41 * SECOND)
        [run] = self.runs(plan)
        self.assertEqual('failed', run['status'])
        self.assertIn('disk on fire', run['error'])
        [message] = cinder_db.message_get_all(self.ctxt)
        self.assertEqual((fake.PROJECT_ID, self.volume.id, '013', '020'),
                         (message['project_id'], message['resource_uuid'],
                          message['action_id'], message['detail_id']))
        errors = [n for n in self.notifier.notifications
                  if n['event_type'] == 'backup_plan.run.error']
        self.assertEqual(1, len(errors))
        self.assertEqual((run['id'], 'failed', 'ERROR'),
                         (errors[0]['payload']['run_id'],
                          errors[0]['payload']['status'],
                          errors[0]['priority']))
        self.tick_all(T0 + MINUTE + SECOND)
        self.assertEqual(2, len(self.runs(plan)))

    def test_volume_type_plan_backs_up_the_projects_volumes(self):
        in_use = self.make_volume(status='in-use')
        excluded = self.make_volume()
        self.make_volume(status='error')
        other_type = test_utils.create_volume_type(self.ctxt.elevated(),
                                                   name='silver')
        test_utils.create_volume(self.ctxt, volume_type_id=other_type.id)
        plan = self.make_plan(target_type='volume_type', target_id='gold',
                              exclude=[excluded.id])
        self.tick_all(T0 + SECOND)
        backups = self.plan_backups(plan)
        self.assertEqual(sorted([self.volume.id, in_use.id]),
                         sorted(b.volume_id for b in backups))
        self.end_backups()
        self.tick_all(T0 + 21 * SECOND)
        [run] = self.runs(plan)
        # The volume in error could not be backed up: partial.
        self.assertEqual('partial', run['status'])
        self.assertIn('is error', run['error'])

    def test_a_run_now_is_claimed_by_one_node(self):
        plan = self.make_plan(next_run_at=T0 + MINUTE)
        queued = plans_db.run_create(plan['id'], {'kind': 'manual'})
        results = self.tick_all(T0)
        self.assertEqual(1, sum(s['manual'] for s in results.values()))
        self.end_backups()
        self.tick_all(T0 + 20 * SECOND)
        run = plans_db.run_get(self.admin, queued['id'])
        self.assertEqual(('succeeded', 1), (run['status'],
                                            len(run['backup_ids'])))

    def _status_of(self, backup_id):
        """The backup's status, read beside the retention thread.

        The test's database is one sqlite connection that every thread of
        the process shares; a read that lands while the retention thread
        is inside a transaction is refused ("cannot start a transaction
        within a transaction", seen once in CI) and is read again.
        """
        for attempt in range(50):
            try:
                return objects.Backup.get_by_id(self.admin, backup_id).status
            except (db_exc.DBError, sqla_exc.OperationalError) as exc:
                if 'within a transaction' not in str(exc):
                    raise
                time.sleep(0.05)
        self.fail('backup %s could not be read beside the retention thread'
                  % backup_id)

    def test_retention_runs_off_the_tick_and_records_its_end(self):
        """Real retention (Cinder's backup API deletes) in a worker thread.

        The deletion it asks for is ended by the test (as cinder-backup
        would): until then retention waits in its worker while ticks go on
        and the next slot fires.
        """
        from cinder.backup import rpcapi as backup_rpcapi
        from cinder.objects import base as objects_base

        from cinder_vmdk_backup.plans import retention
        # (A cinder-backup that Cinder's backup API may send a delete to.)
        test_utils.create_service(self.admin, {
            'host': 'backup-a', 'binary': 'cinder-backup',
            'topic': 'cinder-backup', 'availability_zone':
            self.volume.availability_zone, 'disabled': False,
            'rpc_current_version':
            backup_rpcapi.BackupAPI.RPC_API_VERSION,
            'object_current_version':
            objects_base.OBJ_VERSIONS.get_current()})
        node = runner.PlanRunner('backup-a',
                                 coordinator=self.nodes['backup-a']
                                 .coordinator, retention=retention)
        node.membership.refresh()
        self.addCleanup(node.wait_retention, 30)
        self.addCleanup(node.stop)
        self.nodes = {'backup-a': node}
        plan = self.make_plan(keep=1, full_every=1,
                              id=self.plan_id_of('backup-a'))
        for n in range(2):
            node.tick(self.admin, now=T0 + n * MINUTE + SECOND)
            self.end_backups()
            node.tick(self.admin, now=T0 + n * MINUTE + 21 * SECOND)
        first, second = self.runs(plan)
        self.assertEqual(['succeeded'] * 2, [first['status'],
                                             second['status']])
        [old] = first['backup_ids']
        deadline = time.monotonic() + 20
        while self._status_of(old) != 'deleting':
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        # Retention waits for the deletion: the tick does not.
        started = time.monotonic()
        stats = node.tick(self.admin, now=T0 + 2 * MINUTE + SECOND)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(1, stats['started'])
        self.assertEqual([], plans_db.run_get(self.admin, second['id'])[
            'deleted_backup_ids'])
        # cinder-backup ends the deletion.
        objects.Backup.get_by_id(self.admin, old).destroy()
        self.assertTrue(node.wait_retention(timeout=20))
        second = plans_db.run_get(self.admin, second['id'])
        self.assertEqual([old], second['deleted_backup_ids'])
        self.assertIsNone(second['error'])
        self.assertGreater(second['heartbeat_at'], second['finished_at'])
