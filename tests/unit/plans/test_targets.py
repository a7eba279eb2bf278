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

"""What a plan's run asks for and how it reads their progress.

Cinder's real database (volumes, backups, groups and their sets); Cinder's
backup API and the instance-group API are autospec mocks (the real backup
API runs in tests/functional/plans).
"""

import datetime
import socket
from unittest import mock

from cinder.backup import api as backup_api
from cinder import context
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from oslo_utils import timeutils

from cinder_vmdk_backup.group import api as group_api
from cinder_vmdk_backup.group import records
from cinder_vmdk_backup.plans import targets

SLOT = datetime.datetime(2026, 12, 6, 2, 0, tzinfo=datetime.timezone.utc)
RUN = {'id': 'a1b2c3d4-0000-4000-8000-000000000001', 'scheduled_for': SLOT}


class Base(test.TestCase):

    def setUp(self):
        super().setUp()
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.vtype = test_utils.create_volume_type(self.ctxt.elevated(),
                                                   name='gold')
        self.backups = mock.create_autospec(backup_api.API, instance=True)
        self.backups.create.side_effect = self._create
        self.groups = mock.create_autospec(group_api.API, instance=True)
        self.work = targets.Targets(backup_api=self.backups,
                                    group_api=self.groups)
        self.volume = self.make_volume()
        # Backups of test_utils are made on this machine's host name: its
        # cinder-backup is up.
        test_utils.create_service(self.ctxt, {
            'host': socket.gethostname(), 'binary': 'cinder-backup',
            'topic': 'cinder-backup', 'updated_at': timeutils.utcnow()})

    def _create(self, ctxt, name, description, volume_id, container,
                incremental=False, availability_zone=None, force=False,
                snapshot_id=None, metadata=None):
        return test_utils.create_backup(ctxt, volume_id=volume_id,
                                        metadata=metadata)

    def make_volume(self, status='available'):
        return test_utils.create_volume(self.ctxt, status=status,
                                        volume_type_id=self.vtype.id)

    def plan(self, **values):
        plan = {'id': 'plan-1', 'name': 'nightly',
                'project_id': fake.PROJECT_ID, 'user_id': fake.USER_ID,
                'target_type': 'volume', 'target_id': self.volume.id,
                'exclude': [], 'bandwidth_mib_s': None}
        plan.update(values)
        return plan


class VolumeTargetsTestCase(Base):

    def test_plan_context_is_the_owners_project(self):
        ctxt = targets.plan_context(self.plan())
        self.assertEqual((fake.USER_ID, fake.PROJECT_ID, True),
                         (ctxt.user_id, ctxt.project_id, ctxt.is_admin))

    def test_volume_backup_request(self):
        recorded = []
        ids, sets, errors = self.work.start(
            self.ctxt, self.plan(bandwidth_mib_s=12.5), RUN, False,
            record=lambda b, s: recorded.append((b, s)))
        self.assertEqual(([], []), (sets, errors))
        self.assertEqual([(ids, [])], recorded)
        self.backups.create.assert_called_once_with(
            self.ctxt, 'nightly-20261206T0200Z-a1b2c3d4',
            'Backup plan plan-1, run %s' % RUN['id'], self.volume.id, None,
            # No backup to build on yet: full.
            incremental=False, force=True,
            metadata={'cvb_backup_plan_id': 'plan-1',
                      'cvb_backup_plan_run_id': RUN['id'],
                      'cvb_bandwidth_mib_s': '12.5'})

    def test_incremental_only_on_an_available_parent(self):
        test_utils.create_backup(self.ctxt, volume_id=self.volume.id,
                                 status='error')
        self.work.start(self.ctxt, self.plan(), RUN, False)
        self.assertFalse(self.backups.create.call_args.kwargs['incremental'])
        test_utils.create_backup(self.ctxt, volume_id=self.volume.id,
                                 status='available')
        self.work.start(self.ctxt, self.plan(), RUN, False)
        self.assertTrue(self.backups.create.call_args.kwargs['incremental'])
        self.work.start(self.ctxt, self.plan(), RUN, True)
        self.assertFalse(self.backups.create.call_args.kwargs['incremental'])
        self.assertNotIn('cvb_bandwidth_mib_s',
                         self.backups.create.call_args.kwargs['metadata'])

    def test_excluded_or_missing_volume(self):
        self.assertEqual(([], [], []), self.work.start(
            self.ctxt, self.plan(exclude=[self.volume.id]), RUN, False))
        ids, sets, errors = self.work.start(
            self.ctxt, self.plan(target_id=fake.VOLUME2_ID), RUN, False)
        self.assertEqual([], ids)
        self.assertIn('does not exist any more', errors[0])
        self.backups.create.assert_not_called()

    def test_volume_type_plan(self):
        in_use = self.make_volume(status='in-use')
        excluded = self.make_volume()
        broken = self.make_volume(status='error')
        self.backups.create.side_effect = [
            RuntimeError('over quota'), mock.DEFAULT]
        self.backups.create.return_value = mock.Mock(id='b-2')
        ids, sets, errors = self.work.start(
            self.ctxt, self.plan(target_type='volume_type',
                                 target_id=self.vtype.id,
                                 exclude=[excluded.id]), RUN, False)
        asked = sorted([self.volume.id, in_use.id])
        self.assertEqual(asked, [c.args[3] for c in
                                 self.backups.create.call_args_list])
        self.assertEqual(['b-2'], ids)
        self.assertEqual(2, len(errors))
        self.assertIn('volume %s is error' % broken.id, errors)
        self.assertIn('volume %s: over quota' % asked[0], errors)

    def test_volume_type_by_name_and_gone(self):
        self.work.start(self.ctxt, self.plan(target_type='volume_type',
                                             target_id='gold'), RUN, True)
        self.assertEqual(1, self.backups.create.call_count)
        ids, sets, errors = self.work.start(
            self.ctxt, self.plan(target_type='volume_type',
                                 target_id='platinum'), RUN, True)
        self.assertIn('volume type platinum does not exist', errors[0])

    def test_retry_takes_over_the_good_backups(self):
        other = self.make_volume()
        plan = self.plan(target_type='volume_type', target_id='gold')
        going = test_utils.create_backup(self.ctxt, volume_id=self.volume.id,
                                         status='creating')
        failed = test_utils.create_backup(self.ctxt, volume_id=other.id,
                                          status='error')
        ids, sets, errors = self.work.start(
            self.ctxt, plan, RUN, False,
            adopt={'backup_ids': [going.id, failed.id, fake.BACKUP3_ID]})
        self.assertEqual([other.id], [c.args[3] for c in
                                      self.backups.create.call_args_list])
        self.assertIn(going.id, ids)
        self.assertEqual(2, len(ids))

    def _backup_host(self, host, up):
        when = timeutils.utcnow()
        if not up:
            when -= datetime.timedelta(hours=1)
        test_utils.create_service(self.ctxt, {
            'host': host, 'binary': 'cinder-backup', 'topic': 'cinder-backup',
            'updated_at': when})

    def test_progress_fails_a_backup_stuck_on_a_dead_host(self):
        self._backup_host('dead', up=False)
        self._backup_host('alive', up=True)
        stuck = test_utils.create_backup(self.ctxt, status='creating',
                                         host='dead')
        going = test_utils.create_backup(self.ctxt, status='creating',
                                         host='alive')
        gone = test_utils.create_backup(self.ctxt, status='creating',
                                        host='never-seen')
        outcome = self.work.progress(self.ctxt, {
            'backup_ids': [stuck.id, going.id, gone.id]})
        self.assertFalse(outcome.done)
        self.assertEqual(2, len(outcome.failures))
        self.assertIn('%s of volume' % stuck.id, outcome.failures[0])
        self.assertIn('stuck creating on dead', outcome.failures[0])
        self.assertIn('stuck creating on never-seen', outcome.failures[1])
        outcome = self.work.progress(self.ctxt, {'backup_ids': [stuck.id]})
        self.assertTrue(outcome.done)
        self.assertEqual([], outcome.made)

    def test_retry_does_not_adopt_a_backup_of_a_dead_host(self):
        self._backup_host('dead', up=False)
        self._backup_host('alive', up=True)
        other = self.make_volume()
        plan = self.plan(target_type='volume_type', target_id='gold')
        stuck = test_utils.create_backup(self.ctxt, volume_id=self.volume.id,
                                         status='creating', host='dead')
        going = test_utils.create_backup(self.ctxt, volume_id=other.id,
                                         status='creating', host='alive')
        ids, sets, errors = self.work.start(
            self.ctxt, plan, RUN, False,
            adopt={'backup_ids': [stuck.id, going.id]})
        self.assertEqual([self.volume.id],
                         [c.args[3] for c in
                          self.backups.create.call_args_list])
        self.assertIn(going.id, ids)
        self.assertNotIn(stuck.id, ids)

    def test_progress(self):
        made = test_utils.create_backup(self.ctxt, status='available')
        going = test_utils.create_backup(self.ctxt, status='creating')
        bad = test_utils.create_backup(self.ctxt, status='error',
                                       fail_reason='disk on fire')
        outcome = self.work.progress(self.ctxt, {
            'backup_ids': [made.id, going.id, bad.id, fake.BACKUP4_ID]})
        self.assertFalse(outcome.done)
        self.assertEqual([made.id], outcome.made)
        self.assertEqual(2, len(outcome.failures))
        self.assertIn('is error: disk on fire', outcome.failures[0])
        self.assertIn('was deleted', outcome.failures[1])
        outcome = self.work.progress(self.ctxt, {'backup_ids': [made.id]})
        self.assertTrue(outcome.done)


class GroupTargetTestCase(Base):

    def setUp(self):
        super().setUp()
        self.group = test_utils.create_group(
            self.ctxt, group_type_id=fake.GROUP_TYPE_ID,
            volume_type_ids=[self.vtype.id])
        self.scratch = self.make_volume()
        self.groups.get.return_value = {
            'id': self.group.id, 'instance_id': 'instance-1',
            'volumes': [{'id': self.volume.id}, {'id': self.scratch.id}]}
        self.groups.start_backup.side_effect = self._group_backup

    def _group_backup(self, ctxt, group_id, instance_id, name,
                      description=None, incremental=None, metadata=None,
                      exclude_volumes=None):
        group_snapshot = test_utils.create_group_snapshot(
            ctxt, group_id, group_type_id=fake.GROUP_TYPE_ID, name=name)
        metadata = dict(metadata or {})
        metadata[records.SET_KEY] = group_snapshot.id
        self.member = test_utils.create_backup(
            ctxt, volume_id=self.volume.id, metadata=metadata)
        return group_snapshot.id

    def group_plan(self, **values):
        values.setdefault('bandwidth_mib_s', 20)
        return self.plan(target_type='instance_group',
                         target_id=self.group.id, **values)

    def test_group_set_request_and_progress(self):
        recorded = []
        ids, sets, errors = self.work.start(
            self.ctxt, self.group_plan(), RUN, False,
            record=lambda b, s: recorded.append((b, s)))
        self.assertEqual(([], []), (ids, errors))
        self.groups.start_backup.assert_called_once_with(
            self.ctxt, self.group.id, 'instance-1',
            'nightly-20261206T0200Z-a1b2c3d4',
            description='Backup plan plan-1, run %s' % RUN['id'],
            incremental=None,
            metadata={'cvb_backup_plan_id': 'plan-1',
                      'cvb_backup_plan_run_id': RUN['id'],
                      'cvb_bandwidth_mib_s': '20'},
            exclude_volumes=[])
        self.groups.backup.assert_not_called()
        [set_id] = sets
        self.assertEqual([([], [set_id])], recorded)
        outcome = self.work.progress(self.ctxt,
                                     {'group_snapshot_ids': sets})
        self.assertFalse(outcome.done)
        group_snapshot = test_utils.objects.GroupSnapshot.get_by_id(
            self.ctxt, set_id)
        group_snapshot.status = 'available'
        group_snapshot.save()
        outcome = self.work.progress(self.ctxt,
                                     {'group_snapshot_ids': sets})
        self.assertEqual((True, [self.member.id], []),
                         (outcome.done, outcome.made, outcome.failures))
        group_snapshot.status = 'error'
        group_snapshot.description = 'freeze failed'
        group_snapshot.save()
        outcome = self.work.progress(self.ctxt,
                                     {'group_snapshot_ids': sets})
        self.assertIn('freeze failed', outcome.failures[0])
        # A retry asks again for a set that failed (one still being
        # made or made is taken over: see the next test).
        self.groups.start_backup.reset_mock()
        self.work.start(self.ctxt, self.group_plan(), RUN, False,
                        adopt={'group_snapshot_ids': sets})
        self.assertEqual(1, self.groups.start_backup.call_count)

    def test_full_run_asks_for_a_full_set(self):
        self.work.start(self.ctxt, self.group_plan(bandwidth_mib_s=None),
                        RUN, True)
        kwargs = self.groups.start_backup.call_args.kwargs
        self.assertIs(False, kwargs['incremental'])
        self.assertNotIn('cvb_bandwidth_mib_s', kwargs['metadata'])

    def test_retry_takes_over_a_set_being_made(self):
        ids, sets, errors = self.work.start(self.ctxt, self.group_plan(),
                                            RUN, False)
        self.groups.start_backup.reset_mock()
        self.assertEqual(([], sets, []), self.work.start(
            self.ctxt, self.group_plan(), RUN, False,
            adopt={'group_snapshot_ids': sets}))
        self.groups.start_backup.assert_not_called()

    def test_excluded_member_volume_left_out(self):
        # A volume that left the group since excludes nothing.
        self.work.start(self.ctxt, self.group_plan(
            exclude=[self.scratch.id, fake.VOLUME5_ID]), RUN, False)
        self.assertEqual(
            [self.scratch.id],
            self.groups.start_backup.call_args.kwargs['exclude_volumes'])

    def test_every_member_excluded_is_an_error(self):
        ids, sets, errors = self.work.start(self.ctxt, self.group_plan(
            exclude=[self.scratch.id, self.volume.id]), RUN, False)
        self.assertEqual(([], []), (ids, sets))
        self.assertIn('every member volume is excluded', errors[0])
        self.groups.start_backup.assert_not_called()

    def test_excluded_instance_or_refused_set(self):
        self.assertEqual(([], [], []), self.work.start(
            self.ctxt, self.group_plan(exclude=['instance-1']), RUN, False))
        self.groups.start_backup.assert_not_called()
        self.groups.start_backup.side_effect = RuntimeError('group busy')
        ids, sets, errors = self.work.start(self.ctxt, self.group_plan(),
                                            RUN, False)
        self.assertEqual([], sets)
        self.assertIn('group busy', errors[0])
