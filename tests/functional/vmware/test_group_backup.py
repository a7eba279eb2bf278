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

"""Instance-group backups of VMDK volumes against vcsim: one point in time.

Two volumes are attached to a Nova instance's VM the way Nova's VMware
driver attaches them (``tests.functional.deploy.nova.InstanceVM``: the
backings' disk files added to the instance VM, extraConfig
``volume-<id>``), with Cinder attachment records naming the instance. The
driver the plugin's BackupManager loaded backs them up with one snapshot
of the running VM (the patched vcsim's snapshots freeze the disks; the
data is read through ``ExportSnapshot``) into Cinder's posix backup
service; the restores go through the manager's ``restore_backup``.
"""

import dataclasses
import re
import threading
from unittest import mock
import uuid

from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import utils as test_utils
from oslo_utils import units
from oslo_vmware import vim_util

from cinder_vmdk_backup import exception
from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import leftovers
from cinder_vmdk_backup.vmware import vmsnapshot
from tests.functional.deploy import nova
from tests.functional import vcsim as vcsim_fixture
from tests.functional.vmware import test_backup_flows as flows

REGIONS = ((0, 64 * units.Ki), (7 * units.Mi, units.Mi),
           (units.Gi - units.Mi, units.Mi))
#: Written after the snapshot: partly over the backed-up regions, partly
#: where the disks were empty.
LATE_REGIONS = ((4096, 8192), (7 * units.Mi, 4096), (200 * units.Mi, 4096))


class GroupBackupTestCase(flows.VmdkBackupTestBase):

    def setUp(self):
        super(GroupBackupTestCase, self).setUp()
        self.instance_uuid = str(uuid.uuid4())
        self.instance = nova.InstanceVM(self.session, self.instance_uuid,
                                        self.vcsim.datastore_name)
        self.instance.create()
        self.disks = [flows.Disk(regions=REGIONS, seed=b'v%d' % i)
                      for i in range(2)]
        self.volumes = [self._attached_volume(disk, '/dev/sd%s' % letter)
                        for disk, letter in zip(self.disks, 'bc')]

    # -- helpers -----------------------------------------------------------

    def _attached_volume(self, disk, mountpoint, instance=None):
        instance = instance or self.instance
        volume = self._vmdk_volume(disk=disk, status='in-use')
        info = self.driver.initialize_connection(volume,
                                                 instance.connector())
        instance.attach_volume(info)
        test_utils.attach_volume(self.ctxt, volume.id, instance.uuid,
                                 'compute-1', mountpoint)
        return objects.Volume.get_by_id(self.ctxt, volume.id)

    def _power(self, instance, on):
        task = self.session.invoke_api(
            self.session.vim, 'PowerOnVM_Task' if on else 'PowerOffVM_Task',
            instance.ref)
        self.session.wait_for_task(task)

    def _instance_disk_path(self, volume, instance=None):
        """The disk file the instance's VM has for the volume."""
        instance = instance or self.instance
        option = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, instance.ref,
            'config.extraConfig["volume-%s"]' % volume.id)
        devices = nova._devices(self.session, instance.ref)
        paths = [d.backing.fileName for d in devices
                 if d.__class__.__name__ == 'VirtualDisk' and
                 d.backing.uuid == option.value]
        self.assertEqual(1, len(paths))
        return paths[0]

    def _snapshots(self, instance=None):
        info = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim,
            (instance or self.instance).ref, 'snapshot')
        return list(getattr(info, 'rootSnapshotList', None) or [])

    def _driver_of_manager(self):
        return self.manager._backend_drivers.driver_for(self.volumes[0])

    def _group_backup(self, volumes, all_or_nothing=False):
        """backup_volumes as the group endpoint calls it; the backups."""
        service = self.manager._backup_service_class(self.ctxt)
        backups = []
        for volume in volumes:
            backups.append(test_utils.create_backup(
                self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
                size=volume.size, service=self.manager.driver_name))
        facts = {}
        results = self._driver_of_manager().backup_volumes(
            self.ctxt, [(b, service, None) for b in backups],
            all_or_nothing=all_or_nothing, facts=facts)
        for backup in backups:
            self.assertNotIsInstance(results[backup.id], Exception)
            backup.status = fields.BackupStatus.AVAILABLE
            backup.save()
        return backups, facts

    def _write_late(self, volumes):
        for volume in volumes:
            for offset, length in LATE_REGIONS:
                vcsim_fixture.seed_disk(self.vcsim, self._vmdk_path(volume),
                                        b'\xee' * length, offset=offset)

    def _pit_files(self):
        return [f for f in self._vmdk_files()
                if vmsnapshot.SNAPSHOT_PREFIX in f or '-snapshot-' in f]

    # -- the tests ---------------------------------------------------------

    def test_one_snapshot_backup_and_restore_under_stopped_instance(self):
        self._power(self.instance, True)
        driver = self._driver_of_manager()
        self.assertEqual(
            ('running', 'vCenter VM %s' % self.instance_uuid),
            driver.instance_power_state(self.ctxt, self.instance_uuid,
                                        self.volumes))
        real_freeze = vmsnapshot.FrozenVM.freeze
        seen = {}

        def freeze_then_write(frozen, *args, **kwargs):
            result = real_freeze(frozen, *args, **kwargs)
            seen['snapshots'] = self._snapshots()
            # The guest writes on after the point in time, before any
            # data is read.
            self._write_late(self.volumes)
            return result

        with mock.patch.object(vmsnapshot.FrozenVM, 'freeze', autospec=True,
                               side_effect=freeze_then_write) as freeze:
            backups, facts = self._group_backup(self.volumes)
        self.assertEqual(1, freeze.call_count)
        self.assertEqual(1, len(seen['snapshots']))
        self.assertTrue(seen['snapshots'][0].name.startswith(
            vmsnapshot.SNAPSHOT_PREFIX))
        self.assertEqual('crash-consistent', facts['consistency'])
        self.assertIsNotNone(facts['frozen_at'])
        # The snapshot is gone, and its point-in-time copies with it.
        self.assertEqual([], self._snapshots())
        self.assertEqual([], self._pit_files())
        self._assert_nothing_left()
        # Both disks were read from the snapshot's export.
        self.assertEqual(2, len(re.findall(r'nfc GET \S*-snapshot-',
                                           self.vcsim.log())))
        # The late writes reached the disks, not the backups.
        late = [flows.Disk(regions=()) for _v in self.volumes]
        for disk, volume in zip(late, self.volumes):
            disk.regions = dict(self.disks[self.volumes.index(volume)]
                                .regions)
            for offset, length in LATE_REGIONS:
                disk.write(offset, b'\xee' * length)
            self._assert_data(disk, volume)

        # Restore refused while the instance's VM runs; nothing changed.
        self._restore(backups[0], self.volumes[0], fail=True)
        self.assertIn('shut the instance down', str(self.error))
        self._assert_data(late[0], self.volumes[0])

        # Stopped: both restored into the attached volumes.
        self._power(self.instance, False)
        self.assertEqual(
            'shutoff', driver.instance_power_state(
                self.ctxt, self.instance_uuid, self.volumes)[0])
        for backup, volume, disk in zip(backups, self.volumes, self.disks):
            old_path = self._instance_disk_path(volume)
            self._restore(backup, volume)
            self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
            # The instance's VM sees the restored disk file, the backing's.
            path = self._instance_disk_path(volume)
            self.assertEqual(self._vmdk_path(volume), path)
            self.assertNotEqual(old_path, path)
            self._assert_data(disk, volume, path)
            self.assertEqual(
                [self.instance_uuid],
                [a.instance_uuid for a in objects.Volume.get_by_id(
                    self.ctxt, volume.id).volume_attachment])
        self._assert_nothing_left()

    def test_not_attached_and_stopped_need_no_snapshot(self):
        loose = self._vmdk_volume(disk=flows.Disk(regions=REGIONS,
                                                  seed=b'loose'))
        real_create = vmsnapshot.FrozenVM._create
        snapshotted = []

        def record(frozen, *args):
            snapshotted.append(vim_util.get_moref_value(frozen.vm_ref))
            return real_create(frozen, *args)

        with mock.patch.object(vmsnapshot.FrozenVM, '_create',
                               autospec=True, side_effect=record):
            backups, facts = self._group_backup(self.volumes + [loose])
        # No snapshot of the instance's VM; the loose volume's backing
        # gets one for changed-block tracking (its changeId).
        self.assertEqual([vim_util.get_moref_value(self._backing(loose))],
                         snapshotted)
        self.assertEqual('not-running', facts['consistency'])
        for backup, disk in zip(backups, self.disks + [None]):
            self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        # Restored onto new volumes: the data of the backed-up disks.
        for backup, disk in zip(backups, self.disks):
            new = self._vmdk_volume(backing=False, status='creating')
            self._restore(backup, new)
            self._assert_data(disk, new)
        self._assert_nothing_left()

    def test_all_or_nothing_snapshot_failure(self):
        other = nova.InstanceVM(self.session, str(uuid.uuid4()),
                                self.vcsim.datastore_name)
        other.create()
        third = self._attached_volume(flows.Disk(regions=REGIONS,
                                                 seed=b'x'), '/dev/sdb',
                                      instance=other)
        self._power(self.instance, True)
        self._power(other, True)
        real_create = vmsnapshot.FrozenVM._create
        calls = []

        def fail_second(frozen, *args):
            calls.append(frozen.vm_ref)
            if len(calls) == 2:
                self.vcsim.set_method_fault('CreateSnapshot_Task',
                                            'InvalidState', count=1)
            return real_create(frozen, *args)

        files = self._vmdk_files()
        with mock.patch.object(vmsnapshot.FrozenVM, '_create',
                               autospec=True, side_effect=fail_second):
            self.assertRaisesRegex(
                exception.GroupFreezeError, third.id,
                self._group_backup, self.volumes + [third],
                all_or_nothing=True)
        self.assertEqual(2, len(calls))
        self.assertEqual([], self._snapshots())
        self.assertEqual([], self._snapshots(other))
        self.assertEqual(files, self._vmdk_files())
        self._assert_nothing_left()

        # Without all_or_nothing the members of the other instance fail,
        # the first instance's are backed up.
        self.vcsim.set_method_fault('CreateSnapshot_Task', 'InvalidState',
                                    count=0)
        service = self.manager._backup_service_class(self.ctxt)
        backup = test_utils.create_backup(
            self.ctxt, third.id, status=fields.BackupStatus.CREATING,
            size=1)
        results = self._driver_of_manager().backup_volumes(
            self.ctxt, [(backup, service, None)])
        self.assertIsInstance(results[backup.id],
                              exception.VmdkBackupError)
        self.vcsim.clear_faults()
        self.assertEqual([], self._snapshots(other))
        self._assert_nothing_left()

    def test_instance_deleted_while_its_disks_are_read(self):
        # Nova deletes the server during its group backup: it detaches the
        # volumes' disks, then destroys the VM, while the first disk's
        # export stalls. vcsim then completes the reads (the second with
        # zeros): no backup may take that for the volumes' data.
        self._power(self.instance, True)
        nova_side = nova.InstanceVM(self.vcsim.session(), self.instance_uuid,
                                    self.vcsim.datastore_name)
        nova_side.ref = self.instance.ref
        deleted = []

        def delete_server():
            try:
                self.vcsim.wait_for_log('NFC transfer stalls', 60)
                for volume in self.volumes:
                    nova_side.detach_volume(volume.id)
                nova_side.destroy()
                deleted.append(True)
            finally:
                self.vcsim.clear_faults()

        self.vcsim.set_nfc_fault(stall_after_bytes=1024, count=1)
        thread = threading.Thread(target=delete_server, daemon=True)
        thread.start()
        service = self.manager._backup_service_class(self.ctxt)
        backups = [test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
            size=volume.size, service=self.manager.driver_name)
            for volume in self.volumes]
        try:
            results = self._driver_of_manager().backup_volumes(
                self.ctxt, [(b, service, None) for b in backups])
        finally:
            thread.join(120)
        self.assertEqual([True], deleted)
        for backup in backups:
            self.assertIsInstance(results[backup.id], Exception)
            self.assertIn('was deleted while disk', str(results[backup.id]))
            self.assertIn('the data read is not trusted',
                          str(results[backup.id]))
        self.assertIsNone(vmsnapshot.find_instance_vm(self.session,
                                                      self.instance_uuid))
        self.assertIn('or its snapshot is gone: nothing to remove',
                      self.logs.output)
        self._assert_nothing_left()
        # The volumes' own disks (detached, kept) hold their data.
        for disk, volume in zip(self.disks, self.volumes):
            self._assert_data(disk, volume)

    def test_janitor_removes_snapshots_of_gone_processes(self):
        gone = dataclasses.replace(ownership.current(), pid=4194000,
                                   start_time=1)
        foreign = dataclasses.replace(ownership.current(),
                                      host='other-host.example.org',
                                      pid=4194001, start_time=1)
        names = {}
        for label, owner in (('gone', gone), ('foreign', foreign),
                             ('live', None)):
            names[label] = vmsnapshot.snapshot_name(owner)
            self.driver.volumeops.create_snapshot(self.instance.ref,
                                                  names[label], None)
        removed = leftovers.remove_snapshots(self.session)
        self.assertEqual([(self.instance_uuid, names['gone'])], removed)
        left = []
        pending = self._snapshots()
        while pending:
            node = pending.pop()
            left.append(node.name)
            pending.extend(getattr(node, 'childSnapshotList', None) or [])
        self.assertEqual(sorted([names['foreign'], names['live']]),
                         sorted(left))
