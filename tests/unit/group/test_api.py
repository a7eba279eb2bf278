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

"""group.api.API against Cinder's real database (sqlite), RPC mocked.

Every refused request must leave the records as they were: the tests
compare the group, its volumes and its sets before and after.
"""

import datetime
from unittest import mock

from oslo_utils import timeutils

from cinder import context
from cinder.db import api as db
from cinder import exception
from cinder import objects
from cinder.objects import fields
from cinder import quota
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.group import api as group_api
from cinder_vmdk_backup.group import manager as group_manager
from cinder_vmdk_backup.group import records
from cinder_vmdk_backup.group import rpcapi

INSTANCE = '3d1c6c0e-77f4-4b53-9a3e-2b6f0b1d2c11'
OTHER_INSTANCE = 'b0a4b4f2-6f0d-4f43-8f7e-0a5f4c3b2a19'
HOST = 'node1@qcow2#qcow2'


class GroupApiBase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.override_config('service_down_time', 3600)
        self.override_config('poll_interval', 0.05, group='instance_groups')
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.rpc = mock.create_autospec(rpcapi.InstanceGroupAPI,
                                        instance=True)
        self.api = group_api.API(rpcapi=self.rpc)
        self.vtype = test_utils.create_volume_type(self.ctxt.elevated(),
                                                   name='t1')
        self._service('backup-a', 'az1')
        self.vols = [self._volume('/dev/vda'), self._volume('/dev/vdb')]
        self.group = self.api.create(self.ctxt, INSTANCE)

    def _service(self, host, az, up=True):
        service = objects.Service(self.ctxt, host=host,
                                  binary='cinder-backup',
                                  topic='cinder-backup',
                                  availability_zone=az, report_count=1,
                                  disabled=False)
        service.create()
        service.updated_at = (timeutils.utcnow() if up else
                              timeutils.utcnow().replace(year=2000))
        service.save()

    def _volume(self, mountpoint, instance=INSTANCE, host=HOST, size=1):
        volume = test_utils.create_volume(
            self.ctxt, host=host, size=size, status='in-use',
            availability_zone='az1', volume_type_id=self.vtype.id)
        test_utils.attach_volume(self.ctxt, volume.id, instance,
                                 'compute-1', mountpoint)
        return objects.Volume.get_by_id(self.ctxt, volume.id)

    def _state(self):
        """What a refused request must not change."""
        group = objects.Group.get_by_id(self.ctxt, self.group['id'])
        volumes = [(v.id, v.status, v.group_id) for v in (
            objects.Volume.get_by_id(self.ctxt, v.id) for v in self.vols)]
        sets = [(s.id, s.status) for s in
                objects.GroupSnapshotList.get_all_by_group(self.ctxt,
                                                           group.id)]
        backups = [(b.id, b.status) for b in
                   records.group_backups(self.ctxt, group.id)]
        return group.status, volumes, sets, backups

    def _backup(self, name, status='available'):
        """Record a set as the API does, finished by a fake endpoint."""

        def finish(ctxt, host, group_snapshot_id):
            group_snapshot = objects.GroupSnapshot.get_by_id(
                ctxt, group_snapshot_id)
            for backup in records.set_backups(ctxt, group_snapshot_id):
                backup.status = status
                backup.data_timestamp = timeutils.utcnow()
                backup.save()
            group_snapshot.status = status
            group_snapshot.save()
            records.unlock_group(ctxt, group_snapshot.group_id)
            for volume in self.vols:
                volume.refresh()
                volume.status = 'in-use'
                volume.save()

        self.rpc.backup_set.side_effect = finish
        return self.api.backup(self.ctxt, self.group['id'], INSTANCE, name)


class GroupApiTestCase(GroupApiBase):

    # -- groups -------------------------------------------------------------

    def test_group_of_instance(self):
        self.assertEqual(INSTANCE, self.group['instance_id'])
        self.assertEqual([True, False],
                         [v['boot'] for v in self.group['volumes']])
        self.assertEqual('az1', self.group['availability_zone'])
        self.assertEqual([], self.api.get_all(self.ctxt, OTHER_INSTANCE))
        self.assertEqual(self.group['id'],
                         self.api.get_all(self.ctxt, INSTANCE)[0]['id'])

    def test_other_project_does_not_see_the_group(self):
        other = context.RequestContext(fake.USER2_ID, fake.PROJECT2_ID)
        self.assertRaises(cvb_exception.InstanceGroupNotFound,
                          self.api.get, other, self.group['id'])

    def test_mixed_backends_refused(self):
        self._volume('/dev/vda', instance=OTHER_INSTANCE)
        self._volume('/dev/vdb', instance=OTHER_INSTANCE,
                     host='node1@other#pool')
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.create, self.ctxt, OTHER_INSTANCE)

    def test_delete_refused_while_sets_exist(self):
        self._backup('one')
        before = self._state()
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.delete, self.ctxt, self.group['id'])
        self.assertEqual(before, self._state())

    def test_delete_keeps_volumes(self):
        self.api.delete(self.ctxt, self.group['id'])
        for volume in self.vols:
            volume.refresh()
            self.assertIsNone(volume.group_id)
            self.assertEqual('in-use', volume.status)
            self.assertNotIn('instance_group_instance_id',
                             objects.Volume.get_by_id(
                                 self.ctxt, volume.id).admin_metadata)
        self.assertRaises(cvb_exception.InstanceGroupNotFound,
                          self.api.get, self.ctxt, self.group['id'])

    # -- backup -------------------------------------------------------------

    def test_backup_records_and_incremental_parents(self):
        first = self._backup('one')
        self.assertTrue(first['success'])
        self.rpc.backup_set.assert_called_once_with(
            self.ctxt, 'backup-a', first['group_snapshot_id'])
        second = self._backup('two')
        parents = [objects.Backup.get_by_id(self.ctxt, b).parent_id
                   for b in second['backup_id']]
        self.assertEqual(first['backup_id'], parents)
        backup = objects.Backup.get_by_id(self.ctxt, second['backup_id'][0])
        self.assertEqual({'instance_group_id': self.group['id'],
                          'group_snapshot_id': second['group_snapshot_id'],
                          'instance_id': INSTANCE, 'mountpoint': '/dev/vda',
                          'boot_volume': 'True'}, backup.metadata)

    def test_backup_of_other_instance_refused(self):
        before = self._state()
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.backup, self.ctxt, self.group['id'],
                          OTHER_INSTANCE, 'x')
        self.assertEqual(before, self._state())
        self.rpc.backup_set.assert_not_called()

    def test_busy_group_refused_and_unchanged(self):
        group = objects.Group.get_by_id(self.ctxt, self.group['id'])
        group.status = 'updating'
        group.save()
        before = self._state()
        self.assertRaises(cvb_exception.InstanceGroupBusy,
                          self.api.backup, self.ctxt, self.group['id'],
                          INSTANCE, 'x')
        self.assertEqual(before, self._state())

    def test_lock_lost_between_check_and_lock(self):
        before = self._state()
        with mock.patch.object(objects.Group, 'conditional_update',
                               autospec=True, return_value=False):
            self.assertRaises(cvb_exception.InstanceGroupBusy,
                              self.api.backup, self.ctxt, self.group['id'],
                              INSTANCE, 'x')
        self.assertEqual(before, self._state())

    def _lock_left_behind(self, seconds_ago, empty_set=False):
        """The group as a cinder-api that died after locking leaves it."""
        group = objects.Group.get_by_id(self.ctxt, self.group['id'])
        if empty_set:
            objects.GroupSnapshot(
                context=self.ctxt, group_id=group.id,
                user_id=self.ctxt.user_id, project_id=self.ctxt.project_id,
                name='orphan', status='creating',
                group_type_id=group.group_type_id).create()
        db.group_update(self.ctxt, group.id, {
            'status': 'updating',
            'updated_at': timeutils.utcnow() - datetime.timedelta(
                seconds=seconds_ago)})

    def test_stale_lock_released_and_request_accepted(self):
        self._lock_left_behind(group_api.STALE_LOCK_SECONDS + 60,
                               empty_set=True)
        self.rpc.backup_set.side_effect = None
        answer = self.api.backup(self.ctxt, self.group['id'], INSTANCE, 'x',
                                 wait=False)
        self.assertEqual({'msg': 'Backup request submitted'}, answer)
        status, _vols, sets, backups = self._state()
        # Locked again, by this request; the orphan set is gone.
        self.assertEqual('updating', status)
        self.assertEqual(1, len(sets))
        self.assertEqual(2, len(backups))
        self.rpc.backup_set.assert_called_once()

    def test_recent_lock_is_not_stale(self):
        self._lock_left_behind(group_api.STALE_LOCK_SECONDS - 60)
        before = self._state()
        self.assertRaises(cvb_exception.InstanceGroupBusy,
                          self.api.backup, self.ctxt, self.group['id'],
                          INSTANCE, 'x')
        self.assertEqual(before, self._state())

    def test_old_lock_of_a_running_operation_is_kept(self):
        self.rpc.backup_set.side_effect = None
        self._backup('one')
        backup = records.group_backups(self.ctxt, self.group['id'])[0]
        records.mark_operation([backup], 'op-1', records.RUNNING, 'backup-a')
        self._lock_left_behind(group_api.STALE_LOCK_SECONDS + 60)
        before = self._state()
        self.assertRaises(cvb_exception.InstanceGroupBusy,
                          self.api.update_members, self.ctxt,
                          self.group['id'], INSTANCE)
        self.assertEqual(before, self._state())

    def test_old_lock_of_a_set_in_the_making_is_kept(self):
        self.rpc.backup_set.side_effect = None
        self.api.backup(self.ctxt, self.group['id'], INSTANCE, 'x',
                        wait=False)
        self._lock_left_behind(group_api.STALE_LOCK_SECONDS + 60)
        before = self._state()
        self.assertRaises(cvb_exception.InstanceGroupBusy,
                          self.api.update_members, self.ctxt,
                          self.group['id'], INSTANCE)
        self.assertEqual(before, self._state())

    def test_over_quota_changes_nothing(self):
        before = self._state()
        with mock.patch.object(quota.QUOTAS, 'reserve', autospec=True,
                               side_effect=exception.OverQuota(
                                   overs=['backups'],
                                   quotas={'backups': 1},
                                   usages={'backups': {'reserved': 0,
                                                       'in_use': 1}})):
            self.assertRaises(exception.BackupLimitExceeded,
                              self.api.backup, self.ctxt, self.group['id'],
                              INSTANCE, 'x')
        self.assertEqual(before, self._state())

    def test_quota_committed_per_member(self):
        self._backup('one')
        usages = quota.QUOTAS.get_project_quotas(self.ctxt, fake.PROJECT_ID,
                                                 usages=True)
        self.assertEqual(2, usages['backups']['in_use'])
        self.assertEqual(2, usages['backup_gigabytes']['in_use'])

    def test_no_backup_host_up(self):
        objects.ServiceList.get_all_by_topic(
            self.ctxt, 'cinder-backup')[0].destroy()
        self._service('backup-b', 'az1', up=False)
        self._service('backup-c', 'az2')
        before = self._state()
        self.assertRaises(exception.ServiceNotFound, self.api.backup,
                          self.ctxt, self.group['id'], INSTANCE, 'x')
        self.assertEqual(before, self._state())

    def test_async_answer(self):
        self.rpc.backup_set.side_effect = None
        answer = self.api.backup(self.ctxt, self.group['id'], INSTANCE, 'x',
                                 wait=False)
        self.assertEqual({'msg': 'Backup request submitted'}, answer)
        self.assertEqual('updating', self._state()[0])

    def test_start_backup_full_with_metadata(self):
        first = self._backup('one')
        self.rpc.backup_set.side_effect = None
        set_id = self.api.start_backup(
            self.ctxt, self.group['id'], INSTANCE, 'two', incremental=False,
            metadata={'cvb_backup_plan_id': 'plan-1',
                      'cvb_bandwidth_mib_s': 12.5})
        self.rpc.backup_set.assert_called_with(self.ctxt, 'backup-a', set_id)
        self.assertEqual('creating', objects.GroupSnapshot.get_by_id(
            self.ctxt, set_id).status)
        members = records.set_backups(self.ctxt, set_id)
        self.assertEqual([v.id for v in self.vols],
                         [b.volume_id for b in members])
        # A full set although the first set's backups are there to build
        # on; the caller's metadata is on each member from its creation.
        self.assertEqual([None, None], [b.parent_id for b in members])
        self.assertNotEqual([], first['backup_id'])
        for backup in members:
            self.assertEqual('creating', backup.status)
            self.assertEqual(('plan-1', '12.5', set_id), (
                backup.metadata['cvb_backup_plan_id'],
                backup.metadata['cvb_bandwidth_mib_s'],
                backup.metadata[records.SET_KEY]))

    def test_incremental_true_is_incremental_where_possible(self):
        first = self._backup('one')
        self.rpc.backup_set.side_effect = None
        set_id = self.api.start_backup(self.ctxt, self.group['id'],
                                       INSTANCE, 'two', incremental=True)
        self.assertEqual(first['backup_id'], [
            b.parent_id for b in records.set_backups(self.ctxt, set_id)])

    def test_backup_passes_the_options_and_answers_as_before(self):
        self.rpc.backup_set.side_effect = None
        answer = self.api.backup(self.ctxt, self.group['id'], INSTANCE, 'x',
                                 wait=False, metadata={'k': 'v'},
                                 exclude_volumes=[self.vols[1].id])
        self.assertEqual({'msg': 'Backup request submitted'}, answer)
        [set_id] = [s for s, _st in self._state()[2]]
        [member] = records.set_backups(self.ctxt, set_id)
        self.assertEqual((self.vols[0].id, 'v'),
                         (member.volume_id, member.metadata['k']))

    def test_excluded_volume_left_out(self):
        self.rpc.backup_set.side_effect = None
        set_id = self.api.start_backup(self.ctxt, self.group['id'],
                                       INSTANCE, 'x',
                                       exclude_volumes=[self.vols[0].id])
        self.assertEqual([self.vols[1].id], [
            b.volume_id for b in records.set_backups(self.ctxt, set_id)])
        usages = quota.QUOTAS.get_project_quotas(self.ctxt, fake.PROJECT_ID,
                                                 usages=True)
        self.assertEqual(1, usages['backups']['in_use'])
        # The excluded volume is not touched (not even its status).
        self.assertEqual('in-use', objects.Volume.get_by_id(
            self.ctxt, self.vols[0].id).status)
        self.assertEqual('backing-up', objects.Volume.get_by_id(
            self.ctxt, self.vols[1].id).status)

    def test_refused_options_change_nothing(self):
        before = self._state()
        for kwargs, text in (
                ({'exclude_volumes': [fake.VOLUME5_ID]},
                 'not members of instance group'),
                ({'exclude_volumes': [v.id for v in self.vols]},
                 'every volume of instance group'),
                ({'metadata': {records.SET_KEY: 'forged'}},
                 'belong to the backup set itself'),
                ({'metadata': {'k': 'v' * 256}}, 'longer than 255'),
                ({'metadata': {'': 'v'}}, 'is not a string')):
            exc = self.assertRaises(cvb_exception.InstanceGroupInvalid,
                                    self.api.start_backup, self.ctxt,
                                    self.group['id'], INSTANCE, 'x',
                                    **kwargs)
            self.assertIn(text, str(exc))
        self.assertEqual(before, self._state())
        self.rpc.backup_set.assert_not_called()

    def test_sync_timeout_says_still_running(self):
        self.override_config('sync_timeout', 1, group='instance_groups')
        self.rpc.backup_set.side_effect = None
        answer = self.api.backup(self.ctxt, self.group['id'], INSTANCE, 'x')
        self.assertTrue(answer['still_running'])
        self.assertIn('still running', answer['msg'])

    def test_failed_cast_unlocks(self):
        self.rpc.backup_set.side_effect = RuntimeError('no broker')
        self.assertRaises(RuntimeError, self.api.backup, self.ctxt,
                          self.group['id'], INSTANCE, 'x')
        self.assertEqual('available', self._state()[0])
        self.assertEqual(['error'], [s for _i, s in self._state()[2]])

    # -- set selection ------------------------------------------------------

    def _delete_answer(self, ctxt, host, group_id, group_snapshot_id):
        objects.GroupSnapshot.get_by_id(ctxt, group_snapshot_id).destroy()
        records.unlock_group(ctxt, group_id)

    def test_selection_by_id_and_name(self):
        one = self._backup('one')
        self._backup('two')
        self.rpc.delete_set.side_effect = self._delete_answer
        answer = self.api.delete_backup(self.ctxt, self.group['id'],
                                        INSTANCE, name='one')
        self.assertEqual(one['group_snapshot_id'],
                         answer['group_snapshot_id'])
        self.assertTrue(answer['success'])
        self.assertEqual(['two'], [s['name'] for s in self.api.list_sets(
            self.ctxt, self.group['id'])])

    def test_selection_errors(self):
        one = self._backup('same')
        two = self._backup('same')
        gid = self.group['id']
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.delete_backup, self.ctxt, gid, INSTANCE,
                          name='same')
        self.assertRaises(cvb_exception.BackupSetNotFound,
                          self.api.delete_backup, self.ctxt, gid, INSTANCE,
                          name='nothing')
        self.assertRaises(cvb_exception.BackupSetNotFound,
                          self.api.delete_backup, self.ctxt, gid, INSTANCE,
                          group_snapshot_id=fake.GROUP_SNAPSHOT_ID)
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.delete_backup, self.ctxt, gid, INSTANCE)
        renamed = objects.GroupSnapshot.get_by_id(
            self.ctxt, two['group_snapshot_id'])
        renamed.name = 'other'
        renamed.save()
        before = self._state()
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.delete_backup, self.ctxt, gid, INSTANCE,
                          group_snapshot_id=one['group_snapshot_id'],
                          name='other')
        self.assertEqual(before, self._state())
        self.rpc.delete_set.assert_not_called()

    # -- restore --------------------------------------------------------------

    def test_restore_refused_while_running(self):
        one = self._backup('one')
        self.rpc.instance_power_state.return_value = [
            'running', 'libvirt domain instance-0001']
        before = self._state()
        error = self.assertRaises(
            cvb_exception.InstanceNotShutDown, self.api.restore, self.ctxt,
            self.group['id'], INSTANCE,
            group_snapshot_id=one['group_snapshot_id'])
        self.assertIn('libvirt domain instance-0001', str(error))
        self.assertEqual(400, error.code)
        self.assertEqual(before, self._state())
        self.rpc.restore_set.assert_not_called()

    def test_restore_marks_and_waits(self):
        one = self._backup('one')
        self.rpc.instance_power_state.return_value = ['shutoff', 'Nova']

        def restore(ctxt, host, group_id, group_snapshot_id, operation_id):
            backups = records.set_backups(ctxt, group_snapshot_id)
            for backup in backups:
                self.assertEqual('restoring', backup.status)
                volume = objects.Volume.get_by_id(ctxt, backup.volume_id)
                self.assertEqual('restoring-backup', volume.status)
                self.assertEqual('in-use', volume.previous_status)
                backup.status = 'available'
                backup.save()
            records.mark_operation(backups, operation_id, records.OK, host)
            records.unlock_group(ctxt, group_id)

        self.rpc.restore_set.side_effect = restore
        answer = self.api.restore(self.ctxt, self.group['id'], INSTANCE,
                                  name='one')
        self.assertTrue(answer['success'])
        self.assertEqual('restore', answer['operation'])
        self.assertEqual(one['backup_id'], answer['backup_id'])

    def test_restore_new_elsewhere_runs_in_the_backups_zone(self):
        # The only cinder-backup is in az1, where the backups were made;
        # the new volumes are asked for in az2 with another type.
        test_utils.create_volume_type(self.ctxt.elevated(), name='t2')
        one = self._backup('one')
        answer = self.api.restore_new(
            self.ctxt, self.group['id'], INSTANCE, name='one',
            volume_type='t2', availability_zone='az2', wait=False)
        self.assertIn('submitted', answer['msg'])
        args = self.rpc.restore_set_new.call_args[0]
        host, group_snapshot_id, requests = args[1], args[3], args[5]
        self.assertEqual('backup-a', host)
        self.assertEqual(one['group_snapshot_id'], group_snapshot_id)
        self.assertEqual({v.id for v in self.vols}, set(requests))
        self.assertEqual(
            [{'volume_type': 't2', 'availability_zone': 'az2'}] * 2,
            list(requests.values()))

    def test_restore_cast_failure_puts_everything_back(self):
        one = self._backup('one')
        self.rpc.instance_power_state.return_value = ['shutoff', 'Nova']
        self.rpc.restore_set.side_effect = RuntimeError('no broker')
        before = self._state()
        self.assertRaises(RuntimeError, self.api.restore, self.ctxt,
                          self.group['id'], INSTANCE,
                          group_snapshot_id=one['group_snapshot_id'])
        self.assertEqual(before, self._state())


class ChainTestCase(test.TestCase):
    """Retirement of parents (the endpoint's delete of a set)."""

    def setUp(self):
        super().setUp()
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.backup_manager = mock.create_autospec(manager.BackupManager,
                                                   instance=True)
        self.backup_manager.host = 'backup-a'

        def delete_backup(ctxt, backup, retired_parents=True):
            backup.destroy()
            if retired_parents and backup.parent_id:
                self.endpoint.delete_retired_parents(ctxt, backup.parent_id)

        self.backup_manager.delete_backup.side_effect = delete_backup
        self.endpoint = group_manager.InstanceGroupEndpoint(
            self.backup_manager)
        volume = test_utils.create_volume(self.ctxt)
        self.full = test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.AVAILABLE)
        self.incr = test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.AVAILABLE,
            parent_id=self.full.id)

    def test_parent_with_dependent_is_retired(self):
        self.assertTrue(self.endpoint.delete_or_retire(self.ctxt, self.full))
        self.full.refresh()
        self.assertEqual('True', self.full.metadata[records.RETIRED_KEY])
        self.assertIn(self.incr.id, self.full.display_description)
        self.backup_manager.delete_backup.assert_not_called()

    def test_retired_parent_goes_with_last_child(self):
        self.endpoint.delete_or_retire(self.ctxt, self.full)
        self.assertFalse(self.endpoint.delete_or_retire(self.ctxt,
                                                        self.incr))
        for backup in (self.full, self.incr):
            self.assertRaises(exception.BackupNotFound,
                              objects.Backup.get_by_id, self.ctxt, backup.id)

    def test_parent_not_retired_is_kept(self):
        self.endpoint.delete_or_retire(self.ctxt, self.incr)
        self.assertEqual(self.full.id, objects.Backup.get_by_id(
            self.ctxt, self.full.id).id)


class MembersTestCase(GroupApiBase):

    def test_follow_attachments(self):
        third = self._volume('/dev/vdc')
        group = self.api.update_members(self.ctxt, self.group['id'],
                                        INSTANCE)
        self.assertEqual([v.id for v in self.vols] + [third.id],
                         [v['id'] for v in group['volumes']])
        self.assertEqual('available', group['status'])
        group = self.api.update_members(self.ctxt, self.group['id'],
                                        INSTANCE, remove_volumes=[third.id])
        self.assertEqual([v.id for v in self.vols],
                         [v['id'] for v in group['volumes']])
        third.refresh()
        self.assertIsNone(third.group_id)
        self.assertNotIn('instance_group_instance_id',
                         objects.Volume.get_by_id(
                             self.ctxt, third.id).admin_metadata)

    def test_unattached_volume_refused(self):
        loose = test_utils.create_volume(self.ctxt, host=HOST,
                                         availability_zone='az1')
        before = self._state()
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.update_members, self.ctxt,
                          self.group['id'], INSTANCE,
                          add_volumes=[loose.id])
        self.assertEqual(before, self._state())

    def test_last_member_cannot_leave(self):
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.update_members, self.ctxt,
                          self.group['id'], INSTANCE,
                          remove_volumes=[v.id for v in self.vols])
        self.assertEqual('available', self._state()[0])


class PowerStateUnknownTestCase(GroupApiBase):

    def test_no_answer_refuses(self):
        one = self._backup('one')
        self.rpc.instance_power_state.side_effect = RuntimeError('timeout')
        before = self._state()
        error = self.assertRaises(
            cvb_exception.InstanceNotShutDown, self.api.restore, self.ctxt,
            self.group['id'], INSTANCE,
            group_snapshot_id=one['group_snapshot_id'])
        self.assertIn('did not answer', str(error))
        self.assertEqual(before, self._state())
