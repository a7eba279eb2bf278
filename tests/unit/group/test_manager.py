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

"""The cinder-backup endpoint's failure paths, janitor and power state.

Cinder's real database (sqlite) and records made by the real group API;
the backup manager and the volume driver are autospec mocks (the
successful flows run for real in tests/functional/group).
"""

from unittest import mock

from oslo_utils import timeutils

from cinder import context
from cinder import exception
from cinder import objects
from cinder import quota
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup.backup import driver_owned
from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup.group import api as group_api
from cinder_vmdk_backup.group import manager as group_manager
from cinder_vmdk_backup.group import nova
from cinder_vmdk_backup.group import records
from cinder_vmdk_backup.group import rpcapi

INSTANCE = '3d1c6c0e-77f4-4b53-9a3e-2b6f0b1d2c11'
HOST = 'node1@qcow2#qcow2'


class HookedDriver(driver_owned.DriverOwnedBackupMixin):
    def backup_volumes(self, context, requests, all_or_nothing=False,
                       facts=None):
        pass

    def instance_power_state(self, context, instance_id, volumes):
        pass


class EndpointTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.override_config('service_down_time', 3600)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.backup_manager = mock.create_autospec(manager.BackupManager,
                                                   instance=True)
        self.backup_manager.host = 'backup-a'
        self.backup_manager.az = 'az1'
        self.backup_manager.driver_name = 'posix'
        self.service = mock.Mock(spec=['delete_backup', 'backup'])
        self.backup_manager.service = mock.Mock(return_value=self.service)
        self.driver = mock.create_autospec(HookedDriver, instance=True)
        self.backup_manager._driver_for.return_value = self.driver
        self.endpoint = group_manager.InstanceGroupEndpoint(
            self.backup_manager)
        service = objects.Service(self.ctxt, host='backup-a',
                                  binary='cinder-backup',
                                  topic='cinder-backup',
                                  availability_zone='az1', report_count=1,
                                  disabled=False)
        service.create()
        service.updated_at = timeutils.utcnow()
        service.save()
        vtype = test_utils.create_volume_type(self.ctxt.elevated(),
                                              name='t1')
        self.vols = []
        for mountpoint in ('/dev/vda', '/dev/vdb'):
            volume = test_utils.create_volume(
                self.ctxt, host=HOST, status='in-use',
                availability_zone='az1', volume_type_id=vtype.id)
            test_utils.attach_volume(self.ctxt, volume.id, INSTANCE,
                                     'compute-1', mountpoint)
            self.vols.append(volume)
        self.rpc = mock.create_autospec(rpcapi.InstanceGroupAPI,
                                        instance=True)
        self.api = group_api.API(rpcapi=self.rpc)
        self.group = self.api.create(self.ctxt, INSTANCE)

    def _submit(self):
        """A set recorded by the API and left creating (cast only)."""
        answer = self.api.backup(self.ctxt, self.group['id'], INSTANCE,
                                 'one', wait=False)
        self.assertEqual({'msg': 'Backup request submitted'}, answer)
        (_ctxt, host, set_id), _kw = self.rpc.backup_set.call_args
        self.assertEqual('backup-a', host)
        return set_id

    def _usage(self):
        usages = quota.QUOTAS.get_project_quotas(self.ctxt, fake.PROJECT_ID,
                                                 usages=True)
        return usages['backups']['in_use']

    def _assert_failed_and_clean(self, set_id, reason_part):
        group_snapshot = objects.GroupSnapshot.get_by_id(self.ctxt, set_id)
        self.assertEqual('error', group_snapshot.status)
        self.assertIn(reason_part, group_snapshot.description)
        self.assertEqual([], records.set_backups(self.ctxt, set_id))
        self.assertEqual([], list(
            objects.SnapshotList.get_all_for_group_snapshot(self.ctxt,
                                                            set_id)))
        self.assertEqual(0, self._usage())
        self.assertEqual('available', objects.Group.get_by_id(
            self.ctxt, self.group['id']).status)
        for volume in self.vols:
            volume.refresh()
            self.assertEqual('in-use', volume.status)

    def test_member_failure_fails_the_whole_set(self):
        set_id = self._submit()
        self.assertEqual(2, self._usage())
        backups = records.set_backups(self.ctxt, set_id)
        self.driver.backup_volumes.return_value = {
            backups[0].id: {}, backups[1].id: IOError('disk gone')}
        self.endpoint.backup_set(self.ctxt, set_id)
        (_c, requests), kwargs = self.driver.backup_volumes.call_args
        self.assertEqual({'all_or_nothing': True, 'facts': {}}, kwargs)
        self.assertEqual([b.id for b in backups],
                         [r[0].id for r in requests])
        # Every member, the one that succeeded too, removed from the store.
        self.assertEqual(sorted(b.id for b in backups), sorted(
            c[0][0].id for c in self.service.delete_backup.call_args_list))
        self._assert_failed_and_clean(set_id, 'disk gone')
        self.backup_manager._finish_backup.assert_not_called()

    def test_freeze_failure_fails_the_set(self):
        set_id = self._submit()
        self.driver.backup_volumes.side_effect = (
            group_manager.cvb_exception.GroupFreezeError(reason='vdb busy'))
        self.endpoint.backup_set(self.ctxt, set_id)
        self._assert_failed_and_clean(set_id, 'vdb busy')

    def test_member_not_driver_owned_fails_the_set(self):
        set_id = self._submit()
        self.backup_manager._driver_for.side_effect = [self.driver, None]
        self.endpoint.backup_set(self.ctxt, set_id)
        self._assert_failed_and_clean(set_id, 'driver-owned')
        self.driver.backup_volumes.assert_not_called()

    def test_a_changed_cinder_fails_the_set_before_any_data(self):
        set_id = self._submit()
        with mock.patch.object(group_manager.cinder_internals, 'usable',
                               autospec=True, return_value=False) as usable:
            self.endpoint.backup_set(self.ctxt, set_id)
        usable.assert_called_once_with('groups')
        self._assert_failed_and_clean(set_id, 'made for')
        self.driver.backup_volumes.assert_not_called()

    def test_success_finishes_each_backup_with_cinders_step(self):
        set_id = self._submit()
        backups = records.set_backups(self.ctxt, set_id)
        when = timeutils.utcnow()

        def backup_volumes(ctxt, requests, all_or_nothing, facts):
            facts.update(consistency='quiesced', frozen_at=when)
            return {r[0].id: {'object_count': 3} for r in requests}

        def finish(ctxt, backup, volume, updates):
            backup.status = 'available'
            backup.update(updates)
            backup.save()

        self.driver.backup_volumes.side_effect = backup_volumes
        self.backup_manager._finish_backup.side_effect = finish
        self.endpoint.backup_set(self.ctxt, set_id)
        self.assertEqual('available', objects.GroupSnapshot.get_by_id(
            self.ctxt, set_id).status)
        for backup in records.set_backups(self.ctxt, set_id):
            self.assertEqual('quiesced', backup.metadata['consistency'])
            self.assertEqual(3, backup.object_count)
            self.assertEqual('posix', backup.service)
        self.assertEqual(2, self.backup_manager._finish_backup.call_count)
        self.assertEqual([], list(
            objects.SnapshotList.get_all_for_group_snapshot(self.ctxt,
                                                            set_id)))
        self.assertEqual(2, len(backups))
        for volume in self.vols:
            volume.refresh()
            self.assertEqual('in-use', volume.status)
        self.assertEqual('available', objects.Group.get_by_id(
            self.ctxt, self.group['id']).status)

    def test_full_set_with_metadata_reaches_the_driver(self):
        # An earlier set to build on, then a full one with a plan's
        # metadata: the driver gets backups without parents that carry
        # the metadata (the cap) already, and the set keeps it.
        parent = test_utils.create_backup(
            self.ctxt, volume_id=self.vols[0].id, status='available',
            size=1, metadata={records.GROUP_KEY: self.group['id']})
        set_id = self.api.start_backup(
            self.ctxt, self.group['id'], INSTANCE, 'two', incremental=False,
            metadata={'cvb_bandwidth_mib_s': '8'})
        seen = []

        def backup_volumes(ctxt, requests, all_or_nothing, facts):
            seen.extend((r[0].parent_id, dict(r[0].metadata))
                        for r in requests)
            return {r[0].id: {} for r in requests}

        def finish(ctxt, backup, volume, updates):
            backup.status = 'available'
            backup.save()

        self.driver.backup_volumes.side_effect = backup_volumes
        self.backup_manager._finish_backup.side_effect = finish
        self.endpoint.backup_set(self.ctxt, set_id)
        self.assertEqual([None, None], [p for p, _m in seen])
        self.assertEqual(['8', '8'], [m['cvb_bandwidth_mib_s']
                                      for _p, m in seen])
        for backup in records.set_backups(self.ctxt, set_id):
            self.assertEqual('8', backup.metadata['cvb_bandwidth_mib_s'])
            self.assertIsNone(backup.parent_id)
        self.assertEqual(0, objects.Backup.get_by_id(
            self.ctxt, parent.id).num_dependent_backups)

    def test_janitor_fails_sets_this_host_left(self):
        set_id = self._submit()
        self.assertEqual('updating', objects.Group.get_by_id(
            self.ctxt, self.group['id']).status)
        self.endpoint.init_host(self.ctxt)
        self._assert_failed_and_clean(set_id, 'interrupted')

    def test_janitor_leaves_other_hosts_sets(self):
        set_id = self._submit()
        for backup in records.set_backups(self.ctxt, set_id):
            backup.host = 'backup-b'
            backup.save()
        self.endpoint.init_host(self.ctxt)
        self.assertEqual('creating', objects.GroupSnapshot.get_by_id(
            self.ctxt, set_id).status)
        self.assertEqual('updating', objects.Group.get_by_id(
            self.ctxt, self.group['id']).status)

    def test_power_state_from_the_driver_without_nova(self):
        self.driver.instance_power_state.return_value = (
            'running', 'libvirt domain instance-0001')
        with mock.patch.object(nova, 'power_state', autospec=True,
                               return_value=None):
            answer = self.endpoint.instance_power_state(
                self.ctxt, INSTANCE, [v.id for v in self.vols])
        self.assertEqual(['running', 'libvirt domain instance-0001'], answer)
        (_c, instance, volumes), _kw = (
            self.driver.instance_power_state.call_args)
        self.assertEqual(INSTANCE, instance)
        self.assertEqual([v.id for v in self.vols], [v.id for v in volumes])

    def test_power_state_from_nova_first(self):
        with mock.patch.object(nova, 'power_state', autospec=True,
                               return_value=('shutoff', 'Nova server x')):
            answer = self.endpoint.instance_power_state(
                self.ctxt, INSTANCE, [v.id for v in self.vols])
        self.assertEqual(['shutoff', 'Nova server x'], answer)
        self.driver.instance_power_state.assert_not_called()

    def test_restore_failure_keeps_status_and_says_what_was_done(self):
        backups = self._available_set()
        operation = 'op-1'
        for backup, volume in zip(backups, self.vols):
            backup.status = 'restoring'
            backup.save()
            volume.refresh()
            volume.status = 'restoring-backup'
            volume.previous_status = 'in-use'
            volume.save()
        records.mark_operation(backups, operation, records.RUNNING,
                               'backup-a')

        def restore(ctxt, backup, volume_id, volume_is_new):
            if volume_id == self.vols[1].id:
                raise exception.InvalidVolume(reason='image locked')
            volume = objects.Volume.get_by_id(ctxt, volume_id)
            volume.status = 'available'
            volume.save()
            backup.status = 'available'
            backup.save()

        self.backup_manager.restore_backup.side_effect = restore
        self.endpoint.restore_set(self.ctxt, self.group['id'],
                                  backups[0].metadata['group_snapshot_id'],
                                  operation)
        for backup in records.set_backups(
                self.ctxt, backups[0].metadata['group_snapshot_id']):
            self.assertEqual((operation, records.ERROR, 'backup-a'),
                             records.operation_of(backup))
            self.assertIn(self.vols[0].id,
                          backup.metadata[records.ERROR_KEY])
            self.assertIn('image locked', backup.metadata[records.ERROR_KEY])
            self.assertEqual('available', backup.status)
        for volume in self.vols:
            volume.refresh()
            self.assertEqual('in-use', volume.status)
        self.assertEqual('available', objects.Group.get_by_id(
            self.ctxt, self.group['id']).status)

    def _available_set(self):
        set_id = self._submit()
        backups = records.set_backups(self.ctxt, set_id)
        for backup in backups:
            backup.status = 'available'
            backup.save()
        group_snapshot = objects.GroupSnapshot.get_by_id(self.ctxt, set_id)
        group_snapshot.status = 'available'
        group_snapshot.save()
        for volume in self.vols:
            volume.refresh()
            volume.status = 'in-use'
            volume.save()
        records.unlock_group(self.ctxt, self.group['id'])
        return backups

    def test_restore_to_new_volumes_and_server(self):
        backups = self._available_set()
        made = []

        def create(ctxt, size, name, description, backup=None,
                   volume_type=None, availability_zone=None):
            volume = test_utils.create_volume(
                ctxt, host=HOST, size=size, status='available',
                display_name=name, availability_zone=availability_zone)
            made.append((volume.id, backup.id, volume_type,
                         availability_zone))
            return volume

        self.rpc.restore_set_new.side_effect = (
            lambda ctxt, host, group_id, group_snapshot_id, operation_id,
            volumes, server=None: self.endpoint.restore_set_new(
                ctxt, group_id, group_snapshot_id, operation_id, volumes,
                server=server))
        with mock.patch.object(group_manager.volume_api, 'API',
                               autospec=True) as volume_api, \
                mock.patch.object(nova, 'boot', autospec=True,
                                  return_value=fake.INSTANCE_ID) as boot:
            volume_api.return_value.create.side_effect = create
            answer = self.api.restore_new(
                self.ctxt, self.group['id'], INSTANCE, name='one',
                availability_zone='az1',
                volumes={self.vols[1].id: {'availability_zone': 'az2'}},
                server={'name': 'copy', 'flavor': 'm1.small'})
        self.assertTrue(answer['success'], answer)
        self.assertEqual('restore_new', answer['operation'])
        self.assertEqual([m[0] for m in made], answer['new_volume_id'])
        self.assertEqual([b.id for b in backups], [m[1] for m in made])
        self.assertEqual(['az1', 'az2'], [m[3] for m in made])
        self.assertEqual(fake.INSTANCE_ID, answer['server_id'])
        (_c, server, boot_backups, new_volumes), _kw = boot.call_args
        self.assertEqual({'name': 'copy', 'flavor': 'm1.small'}, server)
        self.assertEqual({b.id: m[0] for b, m in zip(backups, made)},
                         {k: v.id for k, v in new_volumes.items()})
        # The boot volume's copy is bootable (Nova boots only from such);
        # the others are as made.
        self.assertEqual(
            {b.id: b.metadata[records.BOOT_KEY] == 'True' for b in backups},
            {b.id: objects.Volume.get_by_id(self.ctxt, m[0]).bootable
             for b, m in zip(backups, made)})
        self.assertIn(True, [b.metadata[records.BOOT_KEY] == 'True'
                             for b in backups])
        self.assertEqual('available', objects.Group.get_by_id(
            self.ctxt, self.group['id']).status)

    def test_restore_to_new_volume_in_error_fails(self):
        self._available_set()

        def create(ctxt, size, name, description, backup=None,
                   volume_type=None, availability_zone=None):
            return test_utils.create_volume(ctxt, host=HOST, size=size,
                                            status='error')

        self.rpc.restore_set_new.side_effect = (
            lambda ctxt, host, group_id, group_snapshot_id, operation_id,
            volumes, server=None: self.endpoint.restore_set_new(
                ctxt, group_id, group_snapshot_id, operation_id, volumes,
                server=server))
        with mock.patch.object(group_manager.volume_api, 'API',
                               autospec=True) as volume_api:
            volume_api.return_value.create.side_effect = create
            answer = self.api.restore_new(self.ctxt, self.group['id'],
                                          INSTANCE, name='one')
        self.assertFalse(answer['success'])
        self.assertIn('error', answer['msg'])
        self.assertEqual('available', objects.Group.get_by_id(
            self.ctxt, self.group['id']).status)

    def test_restore_new_forgets_an_earlier_outcome(self):
        backups = self._available_set()
        for backup in backups:
            records.set_metadata(backup, **{records.NEW_VOLUME_KEY: 'old',
                                            records.SERVER_KEY: 'old'})
        answer = self.api.restore_new(self.ctxt, self.group['id'],
                                      INSTANCE, name='one', wait=False)
        self.assertEqual({'msg': 'Restore request submitted'}, answer)
        for backup in records.set_backups(
                self.ctxt, backups[0].metadata['group_snapshot_id']):
            self.assertNotIn(records.NEW_VOLUME_KEY, backup.metadata)
            self.assertNotIn(records.SERVER_KEY, backup.metadata)
            self.assertEqual(records.RUNNING,
                             records.operation_of(backup)[1])
