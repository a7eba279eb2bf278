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

"""An instance-group backup plan run by the plan runner, over real peers.

The peers of tests/functional/group/test_sets.py (Cinder's database,
objects and quotas, the plugin's BackupManager and its group endpoint, the
qcow2 driver on real qcow2 images, Cinder's posix backup driver), plus the
plans database (an sqlite file migrated by ``db_sync``), the real
:class:`~cinder_vmdk_backup.plans.runner.PlanRunner` with its targets and
retention, and a real etcd behind Cinder's coordinator. The group RPC
client calls the endpoint in this process (no RabbitMQ), for the runner's
sets and for retention's deletions alike. The plan's clock is simulated:
each tick is given its time.
"""

import datetime
import os
import subprocess
import time
from unittest import mock

import fixtures

from cinder import context
from cinder import coordination
from cinder import exception
from cinder import objects

from cinder_vmdk_backup.backup import throttle
from cinder_vmdk_backup.group import records
from cinder_vmdk_backup.group import rpcapi as group_rpcapi
from cinder_vmdk_backup.plans.db import api as plans_db
from cinder_vmdk_backup.plans import runner
from cinder_vmdk_backup.plans import targets
from cinder_vmdk_backup.volume.drivers import qcow2
from tests.functional.group import test_sets
from tests.functional.kvm import base
from tests.functional.plans import etcd
from tests import plans_db as plans_db_fixture

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
MINUTE = datetime.timedelta(minutes=1)
TICK = datetime.timedelta(seconds=20)
CAP_MIB_S = 48.0
#: Seconds retention (on the tick or beside it) may take to end.
SETTLE_TIMEOUT = 60


class GroupPlanTestCase(test_sets.GroupPeers):
    # (Real tooz: Cinder's TestCase would replace the coordinator's
    # start, stop and get_lock with mocks.)
    MOCK_TOOZ = False

    def setUp(self):
        why_not = etcd.available()
        if why_not:
            self.skipTest(why_not)
        super().setUp()
        self.etcd = self.useFixture(etcd.Etcd(lock_timeout=5))
        self.useFixture(plans_db_fixture.PlansDatabase())
        self.override_config('backend_url', self.etcd.url,
                             group='coordination')
        self.override_config('tick_interval', 20, group='backup_plans')
        # Every group API of this process (the runner's and retention's)
        # reaches the endpoint through the in-process client.
        self.useFixture(fixtures.MockPatchObject(
            group_rpcapi, 'InstanceGroupAPI', return_value=self.rpc))
        coordinator = coordination.Coordinator(
            agent_id=test_sets.BACKUP_HOST, prefix='cinder-')
        coordinator.start()
        self.addCleanup(coordinator.stop)
        self.runner = runner.PlanRunner(
            test_sets.BACKUP_HOST, coordinator=coordinator,
            work=targets.Targets(group_api=self.api))
        self.addCleanup(self.runner.stop)
        self.admin = context.get_admin_context()
        self.copies = self.useFixture(fixtures.TempDir()).path
        self.boot = self._volume('/dev/vda', writes=['write -P 0x11 0 2M'])
        self.scratch = self._volume('/dev/vdb',
                                    writes=['write -P 0x21 0 1M'])
        self.vols = [self.boot, self.scratch]
        self.group = self.api.create(self.ctxt, test_sets.INSTANCE)
        self.rates = []
        real = throttle.throttled_source

        def throttled_source(source, backup):
            # What the data path of each member backup is capped at.
            self.rates.append(throttle.rate_of(backup))
            return real(source, backup)

        self.useFixture(fixtures.MockPatchObject(
            throttle, 'throttled_source', autospec=True,
            side_effect=throttled_source))

    def tick(self, at):
        return self.runner.tick(self.admin, now=at)

    def runs(self, plan_id):
        """The plan's runs, oldest first."""
        return list(reversed(plans_db.run_get_all(self.ctxt, plan_id,
                                                  limit=None)))

    def copy(self, volume):
        """A qcow2 copy of the volume's guest data now (sparse, quick)."""
        copy = os.path.join(self.copies, volume.id + '.qcow2')
        subprocess.run(['qemu-img', 'convert', '-U', '-O', 'qcow2',
                        self.path(volume), copy], check=True)
        return copy

    def settle(self, check):
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            answer = check()
            if answer or time.monotonic() > deadline:
                return answer
            time.sleep(0.1)

    def test_plan_makes_sets_with_its_metadata_and_keeps_two(self):
        plan = plans_db.plan_create(self.ctxt, {
            'name': 'hourly', 'project_id': self.ctxt.project_id,
            'user_id': self.ctxt.user_id, 'target_type': 'instance_group',
            'target_id': self.group['id'], 'minute': '*', 'hour': '*',
            'keep': 2, 'full_every': 2, 'bandwidth_mib_s': CAP_MIB_S,
            'exclude': [self.scratch.id], 'next_run_at': T0})
        for slot in range(4):
            at = T0 + slot * MINUTE
            # The guest writes between the runs.
            base.qemu_io(self.path(self.boot),
                         'write -P 0x%x %dM 1M' % (0x40 + slot, 8 + slot))
            stats = self.tick(at)
            self.assertEqual(1, stats['started'], stats)
            # The set was made while the tick asked for it (the in-process
            # client runs it); the next tick sees it end.
            self.tick(at + TICK)
            run = self.runs(plan['id'])[-1]
            self.assertEqual('succeeded', run['status'], run)
        runs = self.runs(plan['id'])
        self.assertEqual(4, len(runs))
        self.assertEqual([T0 + n * MINUTE for n in range(4)],
                         [r['scheduled_for'] for r in runs])
        self.assertEqual([True, False, True, False],
                         [r['full'] for r in runs])

        made = []
        for run in runs:
            [set_id] = run['group_snapshot_ids']
            # Only the boot volume: the scratch disk is excluded.
            [backup_id] = run['backup_ids']
            made.append((set_id, backup_id))
        # The cap was on every member backup before its data moved: the
        # data path of each read it.
        self.assertEqual([int(CAP_MIB_S * 1024 * 1024)] * 4, self.rates)

        # Retention keeps the newest two sets: the third (full) and the
        # fourth (its incremental); the first two went, child first, after
        # the fourth run (after the third, the second set's incremental
        # still needed the first: nothing went).
        self.assertEqual([], runs[2]['deleted_backup_ids'])

        def pruned():
            # Retention runs off the tick and records each deletion as it
            # ends: wait for both.
            deleted = plans_db.run_get(self.ctxt, runs[-1]['id'])[
                'deleted_backup_ids']
            return deleted if len(deleted) >= 2 else None

        self.assertEqual([made[1][1], made[0][1]], self.settle(pruned))
        sets = self.api.list_sets(self.ctxt, self.group['id'])
        self.assertEqual([made[2][0], made[3][0]], [s['id'] for s in sets])
        for set_id, backup_id in made[:2]:
            self.assertRaises(exception.BackupNotFound,
                              objects.Backup.get_by_id, self.ctxt, backup_id)
            self.assertRaises(exception.GroupSnapshotNotFound,
                              objects.GroupSnapshot.get_by_id, self.ctxt,
                              set_id)
        # Their records as the runner's sets made them: the plan's
        # metadata on each, full where the run was full although a parent
        # was there to build on.
        third = objects.Backup.get_by_id(self.ctxt, made[2][1])
        fourth = objects.Backup.get_by_id(self.ctxt, made[3][1])
        self.assertIsNone(third.parent_id)
        self.assertEqual(third.id, fourth.parent_id)
        for backup, run in ((third, runs[2]), (fourth, runs[3])):
            self.assertEqual('available', backup.status)
            self.assertEqual(self.boot.id, backup.volume_id)
            self.assertEqual(
                (plan['id'], run['id'], '%g' % CAP_MIB_S),
                (backup.metadata[targets.PLAN_KEY],
                 backup.metadata[targets.RUN_KEY],
                 backup.metadata[targets.BANDWIDTH_KEY]))
            self.assertEqual(self.group['id'],
                             backup.metadata[records.GROUP_KEY])
        self.assert_unlocked(self.group['id'])

        # The kept sets restore: the newest one byte for byte (its chain
        # is the third set's full), the excluded scratch disk untouched.
        boot_then = self.copy(self.boot)
        base.qemu_io(self.path(self.boot), 'write -P 0x77 0 4M')
        base.qemu_io(self.path(self.scratch), 'write -P 0x78 0 1M')
        scratch_now = self.copy(self.scratch)
        self.assertFalse(base.same_guest_data(boot_then,
                                              self.path(self.boot)))
        with mock.patch.object(qcow2.Qcow2VolumeDriver,
                               'instance_power_state', create=True,
                               return_value=('shutoff', 'test hook')):
            restored = self.api.restore(self.ctxt, self.group['id'],
                                        test_sets.INSTANCE,
                                        group_snapshot_id=made[3][0])
        self.assertTrue(restored['success'], restored)
        self.assertEqual([self.boot.id], restored['volume_id'])
        self.assertTrue(base.same_guest_data(boot_then,
                                             self.path(self.boot)))
        self.assertTrue(base.same_guest_data(scratch_now,
                                             self.path(self.scratch)))
