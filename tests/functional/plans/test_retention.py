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

"""Retention with every peer real: plans DB, Cinder's DB, API and manager.

The plan and its runs are in the plans database (a migrated sqlite file);
the backups are in Cinder's database and its posix driver; deletions go
through Cinder's backup API to the real BackupManager. After ``apply``
exactly the newest ``keep`` sets (and what they need) are left, the
deleted ids are on the run, and every kept backup restores byte for byte
with Cinder's stock ``restore()``.
"""

import datetime

from oslo_utils import units

from cinder import objects

from cinder_vmdk_backup.plans.db import api as plans_db_api
from cinder_vmdk_backup.plans import retention
from cinder_vmdk_backup.plans import synthetic
from tests.functional.plans import chains
from tests import plans_db

T0 = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc)


class RetentionTestCase(chains.ChainTestCase):

    def setUp(self):
        super(RetentionTestCase, self).setUp()
        self.useFixture(plans_db.PlansDatabase())
        self.plan = plans_db_api.plan_create(self.ctxt, {
            'target_type': 'volume', 'target_id': self.volume.id,
            'keep': 2, 'full_every': 3})
        self.runs = []

    def _run_of(self, backup, full):
        run = plans_db_api.run_create(self.plan['id'], {
            'kind': 'scheduled', 'status': 'succeeded', 'full': full,
            'scheduled_for': T0 + datetime.timedelta(hours=len(self.runs)),
            'backup_ids': [backup.id]})
        self.runs.append(run)
        return run

    def test_keep_two_leaves_the_newest_two_sets_restorable(self):
        kinds = 'FIIFI'
        backups = []
        for index, kind in enumerate(kinds):
            self._write(index * 100 * units.Mi,
                        chains.pattern(b'%d' % index, units.Mi))
            backup = self._backup(backups[-1] if kind == 'I' else None)
            backups.append(backup)
            run = self._run_of(backup, kind == 'F')
            plan = plans_db_api.plan_get(self.ctxt, self.plan['id'])
            full, reason = retention.next_backup_is_full(
                self.ctxt, plan, plans_db_api.run_get_all(
                    self.ctxt, plan['id'], limit=None))
            deleted = retention.apply(self.ctxt, plan, run,
                                      backup_api=self.backup_api)
            if index < 4:
                self.assertEqual([], deleted, kinds[:index + 1])
        # After the fifth run: the first chain (F, I, I) is gone.
        self.assertEqual([b.id for b in reversed(backups[:3])], deleted,
                         plans_db_api.run_get(self.ctxt, run['id'])['error'])
        left = {b.id for b in objects.BackupList.get_all(self.ctxt)}
        self.assertEqual({b.id for b in backups[3:]}, left)
        run = plans_db_api.run_get(self.ctxt, self.runs[-1]['id'])
        self.assertEqual(deleted, run['deleted_backup_ids'])
        self.assertIsNone(run['error'])
        for kept in backups[3:]:
            self.assertEqual(self.expected[kept.id], self._restore(kept.id))
        # A sixth run on top needs no full yet (one incremental since F3).
        self.assertFalse(full, reason)
        # Nothing more to delete on a second look.
        self.assertEqual([], retention.apply(self.ctxt, plan, run,
                                             backup_api=self.backup_api))

    def test_synthetic_full_prunes_a_chain_that_kept_sets_need(self):
        self.plan = plans_db_api.plan_update(self.ctxt, self.plan['id'], {
            'full_every': 10})
        backups = []
        for index in range(4):
            self._write(index * 100 * units.Mi,
                        chains.pattern(b'%d' % index, units.Mi))
            backup = self._backup(backups[-1] if backups else None)
            backups.append(backup)
            run = self._run_of(backup, index == 0)
        deleted = retention.apply(
            self.ctxt, self.plan, run, backup_api=self.backup_api,
            synthesize=lambda backup_id: synthetic.synthesize(
                self.ctxt, self.service, backup_id))
        # I1 (whose child I2 is kept) became a synthetic full; F0, I1 went.
        f0, i1, i2, i3 = backups
        self.assertEqual([i1.id, f0.id], deleted)
        i2 = objects.Backup.get_by_id(self.ctxt, i2.id)
        new = objects.Backup.get_by_id(self.ctxt, i2.parent_id)
        self.assertEqual(i1.id, new.metadata[synthetic.SYNTHETIC_OF_KEY])
        self.assertEqual([i2.id, new.id], plans_db_api.run_get(
            self.ctxt, self.runs[2]['id'])['backup_ids'])
        self.assertEqual({new.id, i2.id, i3.id},
                         {b.id for b in objects.BackupList.get_all(
                             self.ctxt)})
        self.assertEqual(self.expected[i2.id], self._restore(i2.id))
        self.assertEqual(self.expected[i3.id], self._restore(i3.id))
