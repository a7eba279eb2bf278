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

"""Backup sets of an instance group, end to end in one process.

Cinder's real database (sqlite), objects, quotas and backup manager flow
(the plugin's BackupManager), the real qcow2 driver on real qcow2 files
made and read with qemu-img, Cinder's real posix backup driver. What is
not here: RabbitMQ (the API's RPC client is replaced by one that calls the
endpoint's methods directly) and the volume service (its RPC methods are
the boundary, as in tests/functional/kvm/test_manager.py). The instance is
offline: no libvirt domain, the volumes are "attached" by Cinder
attachment rows only.
"""

import os
from unittest import mock

import fixtures
from oslo_utils import timeutils
from oslo_utils import units

from cinder.backup.drivers import posix  # noqa: F401 (its options)
from cinder import context
from cinder import exception
from cinder import objects
from cinder import quota
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import volume_utils

from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.group import api as group_api
from cinder_vmdk_backup.group import records
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import qemu_img
from cinder_vmdk_backup.volume.drivers import qcow2
from tests.functional.kvm import base

CONF = manager.CONF
HOST = 'node1@qcow2#qcow2'
BACKUP_HOST = 'backup-node'
INSTANCE = '8a7d6e2c-5b1f-4c3e-9d0a-1f2e3d4c5b6a'


class DirectRpc(object):
    """The group RPC client, calling the endpoint in this process."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.hosts = []

    def backup_set(self, ctxt, host, group_snapshot_id):
        self.hosts.append(host)
        self.endpoint.backup_set(ctxt, group_snapshot_id)

    def restore_set(self, ctxt, host, group_id, group_snapshot_id,
                    operation_id):
        self.endpoint.restore_set(ctxt, group_id, group_snapshot_id,
                                  operation_id)

    def delete_set(self, ctxt, host, group_id, group_snapshot_id):
        self.endpoint.delete_set(ctxt, group_id, group_snapshot_id)

    def instance_power_state(self, ctxt, host, instance_id, volume_ids):
        return self.endpoint.instance_power_state(ctxt, instance_id,
                                                  volume_ids)


class GroupPeers(test.TestCase):
    """The real peers of a set (see the module's description), no test."""

    def setUp(self):
        super().setUp()
        root = self.useFixture(fixtures.TempDir()).path
        self.volume_dir = os.path.join(root, 'volumes')
        self.posix_dir = os.path.join(root, 'posix')
        os.makedirs(self.volume_dir)
        os.makedirs(self.posix_dir)
        conf_path = os.path.join(root, 'cinder.conf')
        with open(conf_path, 'w') as conf:
            conf.write('[qcow2]\nvolume_driver = cinder_vmdk_backup.volume.'
                       'drivers.qcow2.Qcow2VolumeDriver\n'
                       'qcow2_volumes_dir = %s\nqcow2_libvirt_uri =\n'
                       % self.volume_dir)
        CONF([], default_config_files=[conf_path])
        self.override_config('backup_driver',
                             'cinder.backup.drivers.posix.PosixBackupDriver')
        self.override_config('backup_posix_path', self.posix_dir)
        self.override_config('backup_compression_algorithm', 'zstd')
        self.override_config('backup_file_size', 64 * units.Mi)
        self.override_config('backup_enable_progress_timer', False)
        self.override_config('poll_interval', 0.05, group='instance_groups')
        # (A slow machine must not see the test's cinder-backup go down.)
        self.override_config('service_down_time', 3600)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.manager = manager.BackupManager(host=BACKUP_HOST)
        try:
            self.manager._setup_backup_driver(self.ctxt)
        except Exception:  # LoopingCallDone ends the set-up loop
            pass
        rpcapi = self.manager.volume_rpcapi
        for name in ('get_backup_device', 'terminate_connection',
                     'remove_export', 'delete_volume',
                     'secure_file_operations_enabled'):
            patcher = mock.patch.object(rpcapi, name, autospec=True)
            patcher.start()
            self.addCleanup(patcher.stop)
        patcher = mock.patch.object(volume_utils,
                                    'brick_get_connector_properties',
                                    autospec=True,
                                    return_value={'host': BACKUP_HOST})
        patcher.start()
        self.addCleanup(patcher.stop)
        service = objects.Service(
            self.ctxt, host=BACKUP_HOST, binary='cinder-backup',
            topic='cinder-backup', availability_zone='fake_az',
            report_count=1, disabled=False)
        service.create()
        service.updated_at = timeutils.utcnow()  # a heartbeat
        service.save()
        self.assertTrue(objects.Service.get_by_id(self.ctxt,
                                                  service.id).is_up)
        self.rpc = DirectRpc(self.manager.group_endpoint)
        self.api = group_api.API(rpcapi=self.rpc)
        self.vtype = test_utils.create_volume_type(
            self.ctxt.elevated(), name='qcow2-type')

    # -- helpers ------------------------------------------------------------

    def _volume(self, mountpoint, size=1, writes=()):
        volume = test_utils.create_volume(
            self.ctxt, host=HOST, size=size, status='in-use',
            volume_type_id=self.vtype.id)
        path = self.path(volume)
        qemu_img.create(path, size * units.Gi)
        if writes:
            base.qemu_io(path, *writes)
        test_utils.attach_volume(self.ctxt, volume.id, INSTANCE,
                                 'compute-1', mountpoint)
        return objects.Volume.get_by_id(self.ctxt, volume.id)

    def path(self, volume):
        return os.path.join(self.volume_dir, volume.name)

    def _group(self):
        self.vols = [
            self._volume('/dev/vda', writes=['write -P 0x11 0 1M',
                                             'write -P 0x12 1020M 1M']),
            self._volume('/dev/vdb', writes=['write -P 0x21 4M 2M']),
            self._volume('/dev/vdc', writes=['write -P 0x31 100M 1M']),
        ]
        return self.api.create(self.ctxt, INSTANCE)

    def digests(self):
        return [base.raw_digest(self.path(v)) for v in self.vols]

    def transient_files(self):
        return sorted(n for n in os.listdir(self.volume_dir)
                      if naming.parse(n))

    def assert_unlocked(self, group_id):
        self.assertEqual('available',
                         objects.Group.get_by_id(self.ctxt, group_id).status)

    def _stored_objects(self):
        found = []
        for _dirpath, _dirs, files in os.walk(self.posix_dir):
            found.extend(files)
        return found


class InstanceGroupSetsTestCase(GroupPeers):

    def test_group_made_from_attachments(self):
        self.assertIn(self.manager.group_endpoint,
                      self.manager.additional_endpoints)
        group = self._group()
        self.assertEqual(INSTANCE, group['instance_id'])
        self.assertEqual('instance-%s' % INSTANCE, group['name'])
        self.assertEqual('fake_az', group['availability_zone'])
        self.assertEqual(
            [(v.id, mp, boot) for v, mp, boot in zip(
                self.vols, ('/dev/vda', '/dev/vdb', '/dev/vdc'),
                (True, False, False))],
            [(m['id'], m['mountpoint'], m['boot'])
             for m in group['volumes']])
        for volume in self.vols:
            volume.refresh()
            self.assertEqual(group['id'], volume.group_id)
        self.assertEqual([group['id']], [
            g['id'] for g in self.api.get_all(self.ctxt, INSTANCE)])
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.create, self.ctxt, INSTANCE)

    def test_backup_incremental_restore_delete(self):
        group = self._group()
        gid = group['id']
        first_digests = self.digests()

        first = self.api.backup(self.ctxt, gid, INSTANCE, 'first')
        self.assertTrue(first['success'], first)
        self.assertEqual('backup', first['operation'])
        self.assertEqual([v.id for v in self.vols], first['volume_id'])
        self.assertEqual(3, len(first['backup_id']))
        self.assertEqual(3, len(first['volume_snapshot_id']))
        self.assert_unlocked(gid)
        for volume in self.vols:
            volume.refresh()
            self.assertEqual('in-use', volume.status)
        sets = self.api.list_sets(self.ctxt, gid)
        self.assertEqual(['first'], [s['name'] for s in sets])
        self.assertEqual('available', sets[0]['status'])
        for entry, mountpoint in zip(sets[0]['backups'],
                                     ('/dev/vda', '/dev/vdb', '/dev/vdc')):
            self.assertEqual('available', entry['status'])
            self.assertIsNone(entry['parent_id'])
            self.assertEqual(mountpoint, entry['metadata']['mountpoint'])
            self.assertEqual(gid, entry['metadata']['instance_group_id'])
            self.assertEqual('not-running',
                             entry['metadata']['consistency'])
            self.assertIsNotNone(entry['data_timestamp'])
        # The point-in-time records are gone once the set is complete.
        self.assertEqual([], list(
            objects.SnapshotList.get_all_for_group_snapshot(
                self.ctxt, first['group_snapshot_id'])))

        # The guest writes; the second set is incremental on the first.
        base.qemu_io(self.path(self.vols[0]), 'write -P 0x13 2M 1M')
        base.qemu_io(self.path(self.vols[2]), 'write -P 0x32 200M 1M')
        second_digests = self.digests()
        second = self.api.backup(self.ctxt, gid, INSTANCE, 'second')
        self.assertTrue(second['success'], second)
        by_id = {b.id: b for b in records.set_backups(
            self.ctxt, second['group_snapshot_id'])}
        self.assertEqual(first['backup_id'],
                         [by_id[b].parent_id for b in second['backup_id']])
        for parent_id in first['backup_id']:
            self.assertEqual(1, objects.Backup.get_by_id(
                self.ctxt, parent_id).num_dependent_backups)

        # A restore is refused while the instance is not shut down ...
        with mock.patch.object(qcow2.Qcow2VolumeDriver,
                               'instance_power_state', create=True,
                               return_value=('running', 'test hook')):
            self.assertRaises(cvb_exception.InstanceNotShutDown,
                              self.api.restore, self.ctxt, gid, INSTANCE,
                              name='first')
        self.assert_unlocked(gid)
        self.assertEqual(second_digests, self.digests())
        # ... and done once it is.
        with mock.patch.object(qcow2.Qcow2VolumeDriver,
                               'instance_power_state', create=True,
                               return_value=('shutoff', 'test hook')):
            restored = self.api.restore(self.ctxt, gid, INSTANCE,
                                        name='first')
        self.assertTrue(restored['success'], restored)
        self.assertEqual(first_digests, self.digests())
        self.assert_unlocked(gid)
        for volume in self.vols:
            volume.refresh()
            self.assertEqual('in-use', volume.status)
            self.assertEqual('attached', volume.attach_status)

        # Deleting the first set retires its backups (the second needs
        # them) and takes it off the list.
        deleted = self.api.delete_backup(self.ctxt, gid, INSTANCE,
                                         name='first')
        self.assertTrue(deleted['success'], deleted)
        self.assertEqual(['second'], [
            s['name'] for s in self.api.list_sets(self.ctxt, gid)])
        for backup_id in first['backup_id']:
            retired = objects.Backup.get_by_id(self.ctxt, backup_id)
            self.assertEqual('True', retired.metadata[records.RETIRED_KEY])
        # The second set restores byte for byte from its chain.
        with mock.patch.object(qcow2.Qcow2VolumeDriver,
                               'instance_power_state', create=True,
                               return_value=('shutoff', 'test hook')):
            restored = self.api.restore(self.ctxt, gid, INSTANCE,
                                        group_snapshot_id=second[
                                            'group_snapshot_id'])
        self.assertTrue(restored['success'], restored)
        self.assertEqual(second_digests, self.digests())

        # The group cannot go while sets exist.
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api.delete, self.ctxt, gid)
        # Deleting the second set deletes the retired first too.
        deleted = self.api.delete_backup(self.ctxt, gid, INSTANCE,
                                         name='second')
        self.assertTrue(deleted['success'], deleted)
        for backup_id in first['backup_id'] + second['backup_id']:
            self.assertRaises(exception.BackupNotFound,
                              objects.Backup.get_by_id, self.ctxt, backup_id)
        self.assertEqual([], records.group_backups(self.ctxt, gid))
        self.assertEqual([], self._stored_objects())
        self.assertEqual(0, self._quota_in_use('backups'))
        self.api.delete(self.ctxt, gid)
        for volume in self.vols:
            volume.refresh()
            self.assertIsNone(volume.group_id)
            self.assertEqual('in-use', volume.status)
        self.assertEqual([], self.transient_files())

    def _quota_in_use(self, resource):
        usages = quota.QUOTAS.get_project_quotas(
            self.ctxt, fake.PROJECT_ID, usages=True)
        return usages[resource]['in_use']

    def test_all_or_nothing(self):
        group = self._group()
        gid = group['id']
        before = self.digests()
        # The third volume's image cannot be locked (another operation
        # holds it): its freeze fails, so nothing of the set may be kept.
        bad = self.path(self.vols[2])

        def image_lock(path, *args, **kwargs):
            if path == bad:
                raise qcow2.errors.KvmError('image %s is locked' % path,
                                            path=path)
            return _real_lock(path, *args, **kwargs)

        with mock.patch.object(naming, 'image_lock', autospec=True,
                               side_effect=image_lock):
            result = self.api.backup(self.ctxt, gid, INSTANCE, 'doomed')
        self.assertFalse(result['success'], result)
        self.assertIn('Failed', result['msg'])
        sets = self.api.list_sets(self.ctxt, gid)
        self.assertEqual(['error'], [s['status'] for s in sets])
        self.assertEqual([], sets[0]['backups'])
        self.assertEqual([], records.group_backups(self.ctxt, gid))
        self.assertEqual([], self._stored_objects())
        self.assertEqual(0, self._quota_in_use('backups'))
        self.assertEqual([], self.transient_files())
        self.assertEqual(before, self.digests())
        self.assert_unlocked(gid)
        for volume in self.vols:
            volume.refresh()
            self.assertEqual('in-use', volume.status)
            self.assertNotIn('backing-filename',
                             qemu_img.info(self.path(volume)))

    def test_janitor_after_a_killed_backup(self):
        group = self._group()
        gid = group['id']
        before = self.digests()
        endpoint = self.manager.group_endpoint
        stored = []

        def killed_midway(ctxt, host, group_snapshot_id):
            # The first member's data reaches the store, then the process
            # is gone: nothing else of the set happens.
            first = records.set_backups(ctxt, group_snapshot_id)[0]
            first.service = self.manager.driver_name
            first.save()
            volume = objects.Volume.get_by_id(ctxt, first.volume_id)
            driver = endpoint._driver_of(volume)
            driver.backup_volume(ctxt, first, self.manager.service(ctxt))
            stored.extend(self._stored_objects())

        self.rpc.backup_set = killed_midway
        answer = self.api.backup(self.ctxt, gid, INSTANCE, 'killed',
                                 wait=False)
        self.assertEqual({'msg': 'Backup request submitted'}, answer)
        self.assertNotEqual([], stored)
        self.assertEqual('updating',
                         objects.Group.get_by_id(self.ctxt, gid).status)
        # The next start of this host's cinder-backup.
        self.manager.init_host()
        sets = self.api.list_sets(self.ctxt, gid)
        self.assertEqual(['error'], [s['status'] for s in sets])
        self.assertIn('interrupted', sets[0]['description'])
        self.assertEqual([], records.group_backups(self.ctxt, gid))
        self.assertEqual([], self._stored_objects())
        self.assertEqual(0, self._quota_in_use('backups'))
        self.assert_unlocked(gid)
        for volume in self.vols:
            volume.refresh()
            self.assertEqual('in-use', volume.status)
        self.assertEqual([], self.transient_files())
        self.assertEqual(before, self.digests())

    def test_busy_group_refused(self):
        group = self._group()
        db_group = objects.Group.get_by_id(self.ctxt, group['id'])
        db_group.status = 'updating'
        db_group.save()
        self.assertRaises(cvb_exception.InstanceGroupBusy,
                          self.api.backup, self.ctxt, group['id'], INSTANCE,
                          'x')
        self.assertEqual([], self.api.list_sets(self.ctxt, group['id']))
        for volume in self.vols:
            volume.refresh()
            self.assertEqual('in-use', volume.status)


_real_lock = naming.image_lock
