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

"""Retention: the pure choice, the full/incremental decision, the deletes.

The decisions read Cinder's real backup rows (Cinder's TestCase database);
Cinder's backup API and the plans DB API are autospec'd: a delete is
answered the way cinder-backup would (the row destroyed, the parent's
dependent count lowered) or by an error status.
"""

import datetime
import types
from unittest import mock

from cinder.backup import api as cinder_backup_api
from cinder import context
from cinder.db import api as cinder_db
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup.group import api as group_api
from cinder_vmdk_backup.plans import retention
from cinder_vmdk_backup.plans import synthetic

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)


def _set(name, *backups):
    """A set: backups as (id, [children])."""
    return {'run_id': name, 'backups': [
        {'id': bid, 'children': list(children)} for bid, children in backups]}


class ChooseTestCase(test.TestCase):

    def test_plain_fulls_beyond_keep_go_oldest_first(self):
        sets = [_set('r%d' % i, ('b%d' % i, ())) for i in range(5)]
        self.assertEqual(['r0', 'r1'],
                         [s['run_id'] for s in retention.choose(sets, 3)])

    def test_nothing_beyond_keep(self):
        sets = [_set('r0', ('b0', ())), _set('r1', ('b1', ()))]
        self.assertEqual([], retention.choose(sets, 2))
        self.assertEqual([], retention.choose(sets, 5))

    def test_keep_zero_is_refused(self):
        self.assertRaises(ValueError, retention.choose, [], 0)

    def _chosen(self, sets, keep):
        return [s['run_id'] for s in retention.choose(sets, keep)]

    def test_chain_of_a_kept_incremental_stays(self):
        # F0 <- I1 <- I2, F3 <- I4.
        sets = [_set('F0', ('f0', ['i1'])), _set('I1', ('i1', ['i2'])),
                _set('I2', ('i2', ())), _set('F3', ('f3', ['i4'])),
                _set('I4', ('i4', ()))]
        # keep 2 keeps F3 and I4; the first chain goes whole.
        self.assertEqual(['F0', 'I1', 'I2'], self._chosen(sets, 2))
        # keep 1: F3 stays all the same (I4 needs it).
        self.assertEqual(['F0', 'I1', 'I2'], self._chosen(sets, 1))
        # keep 3 keeps I2, hence I1 and F0.
        self.assertEqual([], self._chosen(sets, 3))

    def test_child_outside_the_sets_keeps_its_parent(self):
        # A user's (or another plan's) incremental on b1 keeps b1 and, with
        # it, b0 (b1's parent); b2 goes.
        sets = [_set('r0', ('b0', ['b1'])), _set('r1', ('b1', ['user'])),
                _set('r2', ('b2', ())), _set('r3', ('b3', ()))]
        self.assertEqual(['r2'], self._chosen(sets, 1))

    def test_multi_backup_set_is_kept_whole(self):
        # A group set: one member has a kept child, the whole set stays.
        sets = [_set('r0', ('a0', ['a1']), ('b0', ())),
                _set('r1', ('a1', ()), ('b1', ())),
                _set('r2', ('a2', ()), ('b2', ()))]
        self.assertEqual([], self._chosen(sets, 2))
        self.assertEqual(['r0', 'r1'], self._chosen(sets, 1))

    def test_deletion_order_is_child_first(self):
        backups = [{'id': 'f', 'children': ['i1']},
                   {'id': 'i1', 'children': ['i2', 'x']},
                   {'id': 'i2', 'children': []}]
        self.assertEqual(['i2', 'i1', 'f'],
                         [b['id'] for b in retention.deletion_order(backups)])

    def test_deletion_order_refuses_a_loop(self):
        self.assertRaises(ValueError, retention.deletion_order, [
            {'id': 'a', 'children': ['b']}, {'id': 'b', 'children': ['a']}])


class _DBRecorder(object):
    """The plans DB API's run_get_all/run_update, autospec'd, on dicts."""

    def __init__(self, runs):
        self.runs = {run['id']: run for run in runs}
        self.api = mock.create_autospec(types.SimpleNamespace(
            run_get_all=lambda context, plan_id, limit=20: None,
            run_update=lambda run_id, values: None,
            run_get=lambda context, run_id: None), instance=True)
        self.api.run_get.side_effect = (
            lambda context, run_id: dict(self.runs[run_id]))
        self.api.run_get_all.side_effect = self._get_all
        self.api.run_update.side_effect = self._update

    def _get_all(self, context, plan_id, limit=20):
        return sorted(self.runs.values(), key=lambda r: r['scheduled_for'],
                      reverse=True)[:limit]

    def _update(self, run_id, values):
        self.runs[run_id].update(values)
        return dict(self.runs[run_id])


class BackupRecordsTestCase(test.TestCase):
    """Base: real Cinder backup rows of one volume, and the plan's runs."""

    def setUp(self):
        super(BackupRecordsTestCase, self).setUp()
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.volume = test_utils.create_volume(self.ctxt)
        self.runs = []
        self.plan = {'id': fake.OBJECT_ID, 'keep': 2, 'full_every': 3,
                     'runs_since_full': 0}

    def _backup(self, parent=None, status=fields.BackupStatus.AVAILABLE,
                **kwargs):
        backup = test_utils.create_backup(
            self.ctxt, volume_id=self.volume.id, status=status,
            parent_id=parent.id if parent else None, **kwargs)
        if parent:
            cinder_db.backup_add_dependent(self.ctxt, parent.id)
        return backup

    def _run(self, backups, full, status='succeeded', **extra):
        run = {'id': 'run-%02d' % len(self.runs), 'plan_id': self.plan['id'],
               'status': status, 'full': full,
               'scheduled_for': T0 + datetime.timedelta(
                   hours=len(self.runs)),
               'backup_ids': [b.id for b in backups],
               'group_snapshot_ids': [], 'deleted_backup_ids': [],
               'error': None}
        run.update(extra)
        self.runs.append(run)
        return run

    def _chain(self, kinds):
        """Backups and runs for 'F'/'I' kinds, oldest first."""
        backups = []
        for kind in kinds:
            parent = backups[-1] if kind == 'I' else None
            backup = self._backup(parent)
            backups.append(backup)
            self._run([backup], full=kind == 'F')
        return backups


class NextBackupIsFullTestCase(BackupRecordsTestCase):

    def test_no_previous_run_means_full(self):
        full, reason = retention.next_backup_is_full(self.ctxt, self.plan,
                                                     [])
        self.assertTrue(full)
        self.assertIn('no earlier backup', reason)

    def test_failed_runs_are_no_parent(self):
        self._run([], full=None, status='failed')
        self.assertTrue(retention.next_backup_is_full(
            self.ctxt, self.plan, self.runs)[0])

    def test_incremental_on_an_available_previous_set(self):
        self._chain('F')
        full, reason = retention.next_backup_is_full(self.ctxt, self.plan,
                                                     self.runs)
        self.assertFalse(full, reason)

    def test_previous_backup_gone_or_unavailable_means_full(self):
        backup, = self._chain('F')
        backup.status = fields.BackupStatus.ERROR
        backup.save()
        full, reason = retention.next_backup_is_full(self.ctxt, self.plan,
                                                     self.runs)
        self.assertTrue(full)
        self.assertIn('error', reason)
        backup.destroy()
        full, reason = retention.next_backup_is_full(self.ctxt, self.plan,
                                                     self.runs)
        self.assertTrue(full)
        self.assertIn('gone', reason)

    def test_partial_previous_run_with_an_available_backup(self):
        good = self._backup()
        failed = self._backup(status=fields.BackupStatus.ERROR)
        self._run([good, failed], full=True, status='partial')
        full, reason = retention.next_backup_is_full(self.ctxt, self.plan,
                                                     self.runs)
        self.assertFalse(full, reason)
        good.destroy()
        full, reason = retention.next_backup_is_full(self.ctxt, self.plan,
                                                     self.runs)
        self.assertTrue(full)
        self.assertIn(good.id, reason)
        self.assertIn(failed.id, reason)

    def test_full_every_reached(self):
        self._chain('FII')
        self.plan['runs_since_full'] = 1
        self.assertFalse(retention.next_backup_is_full(
            self.ctxt, self.plan, self.runs)[0])
        self.plan['runs_since_full'] = 2
        full, reason = retention.next_backup_is_full(self.ctxt, self.plan,
                                                     self.runs)
        self.assertTrue(full)
        self.assertIn('full_every 3', reason)

    def test_full_every_one_is_always_full(self):
        self._chain('F')
        self.plan['full_every'] = 1
        self.assertTrue(retention.next_backup_is_full(
            self.ctxt, self.plan, self.runs)[0])

    def test_a_chain_longer_than_keep_plus_full_every_forces_a_full(self):
        # The counter says incremental (full_every raised later, say), but
        # the chain already has keep + full_every sets: one more is too many.
        self.plan.update(keep=2, full_every=30, runs_since_full=0)
        self._chain('F' + 'I' * 31)
        full, reason = retention.next_backup_is_full(self.ctxt, self.plan,
                                                     self.runs)
        self.assertTrue(full)
        self.assertIn('33 sets', reason)
        self.plan.update(keep=3)
        self.assertFalse(retention.next_backup_is_full(
            self.ctxt, self.plan, self.runs)[0])


class ApplyTestCase(BackupRecordsTestCase):

    def setUp(self):
        super(ApplyTestCase, self).setUp()
        self.backup_api = mock.create_autospec(cinder_backup_api.API,
                                               instance=True)
        self.backup_api.delete.side_effect = self._delete
        self.fail_ids = set()
        self.sleep = mock.Mock()

    def _delete(self, ctxt, backup, force=False):
        """What cinder-api and cinder-backup do, at once."""
        children = objects.BackupList.get_all(
            ctxt, filters={'parent_id': backup.id})
        if len(children):
            raise Exception('Incremental backups exist for this backup.')
        if backup.id in self.fail_ids:
            backup.status = fields.BackupStatus.ERROR
            backup.fail_reason = 'store unreachable'
            backup.save()
            return
        backup.destroy()
        if backup.parent_id:
            cinder_db.backup_remove_dependent(ctxt, backup.parent_id)

    def _apply(self, run=None):
        recorder = _DBRecorder(self.runs)
        run = run or self.runs[-1]
        deleted = retention.apply(self.ctxt, self.plan, run,
                                  backup_api=self.backup_api,
                                  db_api=recorder.api, sleep=self.sleep)
        return deleted, recorder

    def _left(self):
        return {b.id for b in objects.BackupList.get_all(self.ctxt)}

    def test_keep_two_of_two_chains_deletes_the_first_child_first(self):
        backups = self._chain('FIIFI')
        deleted, recorder = self._apply()
        self.assertEqual([backups[2].id, backups[1].id, backups[0].id],
                         deleted)
        self.assertEqual({b.id for b in backups[3:]}, self._left())
        self.assertEqual(deleted,
                         recorder.runs['run-04']['deleted_backup_ids'])
        self.assertIsNone(recorder.runs['run-04']['error'])

    def test_nothing_to_delete_while_a_kept_set_needs_the_chain(self):
        self.plan['keep'] = 3
        backups = self._chain('FIIFI')
        deleted, recorder = self._apply()
        self.assertEqual([], deleted)
        self.assertEqual({b.id for b in backups}, self._left())
        recorder.api.run_update.assert_not_called()

    def test_a_users_backup_on_top_keeps_the_chain(self):
        backups = self._chain('FIFI')
        self.plan['keep'] = 1
        # Someone's incremental on the first chain's newest backup.
        user = self._backup(parent=backups[1])
        deleted, _recorder = self._apply()
        self.assertEqual([], deleted)
        self.assertIn(user.id, self._left())
        self.assertEqual(set(), {b.id for b in backups} - self._left())

    def test_failed_deletion_stops_and_is_recorded(self):
        backups = self._chain('FIIFI')
        self.fail_ids.add(backups[1].id)
        deleted, recorder = self._apply()
        self.assertEqual([backups[2].id], deleted)
        run = recorder.runs['run-04']
        self.assertEqual([backups[2].id], run['deleted_backup_ids'])
        self.assertIn(backups[1].id, run['error'])
        self.assertIn('store unreachable', run['error'])
        # The full of the first chain is untouched.
        self.assertIn(backups[0].id, self._left())

    def test_api_refusal_stops(self):
        backups = self._chain('FIFI')
        self.plan['keep'] = 2
        self.backup_api.delete.side_effect = Exception('policy says no')
        deleted, recorder = self._apply()
        self.assertEqual([], deleted)
        self.assertIn('policy says no', recorder.runs['run-03']['error'])
        self.assertEqual({b.id for b in backups}, self._left())

    def test_deletion_that_never_ends_times_out(self):
        backups = self._chain('FFF')
        self.backup_api.delete.side_effect = (
            lambda ctxt, backup, force=False: (
                setattr(backup, 'status', 'deleting'), backup.save()))
        clock = mock.Mock(side_effect=[0.0, 10.0, 4000.0])
        recorder = _DBRecorder(self.runs)
        deleted = retention.apply(self.ctxt, self.plan, self.runs[-1],
                                  backup_api=self.backup_api,
                                  db_api=recorder.api, sleep=self.sleep,
                                  clock=clock)
        self.assertEqual([], deleted)
        self.assertIn('still being deleted',
                      recorder.runs['run-02']['error'])
        self.assertIn(backups[0].id, recorder.runs['run-02']['error'])

    def test_sets_already_pruned_or_unhealthy_are_not_counted(self):
        backups = self._chain('FFFF')
        # The oldest set was pruned before (its run says so).
        self.runs[0]['deleted_backup_ids'] = [backups[0].id]
        backups[0].destroy()
        # The second one is being restored: not counted, not deleted.
        backups[1].status = fields.BackupStatus.RESTORING
        backups[1].save()
        deleted, _recorder = self._apply()
        self.assertEqual([], deleted)
        self.plan['keep'] = 1
        deleted, _recorder = self._apply()
        self.assertEqual([backups[2].id], deleted)
        self.assertIn(backups[1].id, self._left())

    def test_partial_sets_and_backups_in_error_are_pruned_too(self):
        good = self._backup()
        failed = self._backup(status=fields.BackupStatus.ERROR)
        self._run([good, failed], full=True, status='partial')
        self._chain('FF')
        deleted, _recorder = self._apply()
        self.assertEqual({good.id, failed.id}, set(deleted))

    def test_group_sets_go_through_the_group_api(self):
        group_id, instance_id = fake.GROUP_ID, fake.INSTANCE_ID
        for index in range(3):
            members = [self._backup(metadata={
                'instance_group_id': group_id, 'instance_id': instance_id,
                'group_snapshot_id': 'gs%d' % index}) for _ in range(2)]
            self._run(members, full=True,
                      group_snapshot_ids=['gs%d' % index])
        groups = mock.create_autospec(group_api.API, instance=True)
        groups.delete_backup.return_value = {'success': True}
        recorder = _DBRecorder(self.runs)
        deleted = retention.apply(self.ctxt, self.plan, self.runs[-1],
                                  group_api=groups, db_api=recorder.api,
                                  backup_api=self.backup_api)
        groups.delete_backup.assert_called_once_with(
            self.ctxt, group_id, instance_id, group_snapshot_id='gs0')
        self.assertEqual(self.runs[0]['backup_ids'], deleted)
        self.backup_api.delete.assert_not_called()
        groups.delete_backup.return_value = {'success': False,
                                             'msg': 'set is busy'}
        self.plan['keep'] = 1
        deleted = retention.apply(self.ctxt, self.plan, self.runs[-1],
                                  group_api=groups, db_api=recorder.api,
                                  backup_api=self.backup_api)
        self.assertEqual([], deleted)
        self.assertIn('set is busy', recorder.runs['run-02']['error'])

    def _synthesize(self, backup_id):
        """A synthetic full's records (its data is the functional tests')."""
        old = objects.Backup.get_by_id(self.ctxt, backup_id)
        new = self._backup()
        self.synthesized.append((backup_id, new.id))
        synthetic.reparent(self.ctxt, old, new)
        return {'id': new.id}

    def test_synthetic_full_frees_the_old_sets_and_joins_a_kept_set(self):
        backups = self._chain('FIIII')
        self.synthesized = []
        recorder = _DBRecorder(self.runs)
        deleted = retention.apply(self.ctxt, self.plan, self.runs[-1],
                                  backup_api=self.backup_api,
                                  db_api=recorder.api, sleep=self.sleep,
                                  synthesize=self._synthesize)
        # I2 (whose child I3 is kept) is replaced; F0, I1, I2 go.
        (old, new), = self.synthesized
        self.assertEqual(backups[2].id, old)
        self.assertEqual([b.id for b in reversed(backups[:3])], deleted)
        self.assertEqual({new, backups[3].id, backups[4].id}, self._left())
        self.assertEqual(new, objects.Backup.get_by_id(
            self.ctxt, backups[3].id).parent_id)
        self.assertEqual([backups[3].id, new],
                         recorder.runs['run-03']['backup_ids'])
        # The next run: the set {I3, S} ages out the same way.
        i5 = self._backup(parent=backups[4])
        self._run([i5], full=False)
        recorder.runs[self.runs[-1]['id']] = self.runs[-1]
        deleted = retention.apply(self.ctxt, self.plan, self.runs[-1],
                                  backup_api=self.backup_api,
                                  db_api=recorder.api, sleep=self.sleep,
                                  synthesize=self._synthesize)
        # I3 (whose child I4 is kept) is replaced in turn; I3, then S go.
        (old2, new2) = self.synthesized[1]
        self.assertEqual(backups[3].id, old2)
        self.assertEqual([backups[3].id, new], deleted)
        self.assertEqual({new2, backups[4].id, i5.id}, self._left())
        self.assertEqual([backups[4].id, new2],
                         recorder.runs['run-04']['backup_ids'])

    def test_without_synthesis_the_chain_waits(self):
        self._chain('FIIII')
        deleted, _recorder = self._apply()
        self.assertEqual([], deleted)

    def test_failed_synthesis_is_recorded_and_nothing_deleted(self):
        backups = self._chain('FIIII')
        recorder = _DBRecorder(self.runs)
        deleted = retention.apply(
            self.ctxt, self.plan, self.runs[-1], backup_api=self.backup_api,
            db_api=recorder.api, sleep=self.sleep,
            synthesize=mock.Mock(side_effect=Exception('store full')))
        self.assertEqual([], deleted)
        self.assertIn('store full', recorder.runs['run-04']['error'])
        self.assertEqual({b.id for b in backups}, self._left())
