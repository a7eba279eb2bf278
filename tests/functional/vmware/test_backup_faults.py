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

"""Faults during backup and restore of VMDK volumes, against vcsim.

After each fault: the volume's data is what it was, the statuses are back
to what Cinder sets after a failure with a user message, and no temporary
VM, disk file, staging file or open lease is left (where vcsim was killed,
what it held can no longer be asked; its datastore directory still can).
"""

import os
import subprocess

from cinder.message import message_field
from cinder.objects import fields
from oslo_utils import units
from oslo_vmware import exceptions as vexc

from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import diskswap
from cinder_vmdk_backup.vmware import recovery_lock
from tests.functional.vmware import test_backup_flows as flows

#: Names of the restore lock's records in the staging directory.
LOCK_RECORD_PREFIX = '%s%s-' % (ownership.Record.PREFIX,
                                recovery_lock.RECORD_KIND)
#: Incompressible data: an export or import of it takes long enough for
#: a fault in the middle.
BIG_REGIONS = tuple((offset * 16 * units.Mi, 4 * units.Mi)
                    for offset in range(0, 64, 8))


class BackupFaultsTestCase(flows.VmdkBackupTestBase):

    def setUp(self):
        super(BackupFaultsTestCase, self).setUp()
        # Reads of 32 MiB, so that a fault can come between two of them.
        self.override_config('backup_file_size', 32 * units.Mi)

    def test_vcsim_killed_during_export(self):
        disk = flows.Disk(regions=BIG_REGIONS, random=True)
        volume = self._vmdk_volume(disk=disk)
        path = self._vmdk_path(volume)
        killer = self.vcsim.kill_mid_transfer(after_bytes=4 * units.Mi)
        backup = self._backup(volume, fail=True)
        killer.join(30)
        self.assertFalse(self.vcsim.running)
        self.assertEqual(fields.BackupStatus.ERROR, backup.status)
        self.assertEqual('available', volume.status)
        self.assertIn(message_field.Detail.BACKUP_CREATE_DRIVER_ERROR[0],
                      self._messages(backup.id))
        self.assertIn(volume.id, str(self.error))
        self._assert_data(disk, volume, path)
        self.assertEqual([], os.listdir(self.staging_dir))
        self.assertNotIn(self.vcsim.password, self.logs.output)

    def test_vcsim_killed_during_import(self):
        volume = self._vmdk_volume(disk=flows.Disk(regions=BIG_REGIONS,
                                                   random=True))
        backup = self._backup(volume)
        changed = flows.Disk(seed=b'changed')
        target = self._vmdk_volume(disk=changed)
        path = self._vmdk_path(target)
        files = self._vmdk_files()
        killer = self.vcsim.kill_mid_transfer(after_bytes=4 * units.Mi)
        self._restore(backup, target, fail=True)
        killer.join(30)
        self.assertFalse(self.vcsim.running)
        self.assertEqual('error_restoring', target.status)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.assertIn(message_field.Detail.BACKUP_RESTORE_ERROR[0],
                      self._messages(backup.id))
        self._assert_data(changed, target, path)
        # vCenter is gone: the restore lock of the target's backing could
        # not be released; its record stays for the next start's janitor,
        # and nothing else does.
        left = os.listdir(self.staging_dir)
        self.assertEqual(
            [], [n for n in left if not n.startswith(LOCK_RECORD_PREFIX)])
        self.assertEqual(1, len(left))
        self.assertIn('Could not enable the methods', self.logs.output)
        # vcsim died with the import's VM registered; its folder stays in
        # the datastore directory, the volumes' disks are untouched.
        self.assertEqual(files, [f for f in self._vmdk_files()
                                 if not f.startswith('cvb-tmp-')])
        self.assertNotIn(self.vcsim.password, self.logs.output)

    def _backup_objects(self, backup):
        container = os.path.join(self.posix_dir, backup.container)
        return sorted(os.path.join(container, name)
                      for name in os.listdir(container)
                      if name.startswith(backup.service_metadata + '-'))

    def _restore_fails_cleanly(self, backup, volume, disk):
        files = self._vmdk_files()
        self._restore(backup, volume, fail=True)
        self.assertEqual('error_restoring', volume.status)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.assertIn(message_field.Detail.BACKUP_RESTORE_ERROR[0],
                      self._messages(backup.id))
        self._assert_data(disk, volume)
        current = diskswap.disk_of(self.session, self._backing(volume))
        self.assertEqual(volume.id, current.backing.uuid)
        self.assertEqual(files, self._vmdk_files())
        self._assert_nothing_left()

    def _backup_and_target(self, disk=None):
        volume = self._vmdk_volume(disk=disk)
        backup = self._backup(volume)
        keep = flows.Disk(seed=b'keep')
        return backup, self._vmdk_volume(disk=keep), keep

    def test_corrupt_backup_object(self):
        backup, target, keep = self._backup_and_target()
        # Cut short: Cinder's posix driver does not check an object's md5
        # on restore, so only damage the decompressor sees is detected.
        victim = self._backup_objects(backup)[0]
        os.truncate(victim, os.path.getsize(victim) // 2)
        self._restore_fails_cleanly(backup, target, keep)

    def test_missing_backup_object(self):
        backup, target, keep = self._backup_and_target()
        os.unlink(self._backup_objects(backup)[-1])
        self._restore_fails_cleanly(backup, target, keep)

    def test_full_staging_disk(self):
        # A restore that stages its data (streaming restores stage none).
        self.override_config('vmware_backup_restore_streaming', False,
                             group='vmdk')
        backup, target, keep = self._backup_and_target(
            flows.Disk(regions=BIG_REGIONS, random=True))
        try:
            subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m',
                            'tmpfs', self.staging_dir], check=True,
                           capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            self.skipTest('cannot mount a small tmpfs: %s' % exc)
        self.addCleanup(subprocess.run, ['umount', self.staging_dir],
                        check=False)
        self._restore_fails_cleanly(backup, target, keep)
        self.assertIsInstance(self.error, OSError)

    def test_failure_between_import_and_swap(self):
        backup, target, keep = self._backup_and_target()
        self._patch(diskswap, 'move_disk',
                    side_effect=vexc.VimException('injected move fault'))
        self._restore_fails_cleanly(backup, target, keep)
        self.assertIn('injected move fault', str(self.error))

    def test_failure_after_attach_gives_the_old_disk_back(self):
        backup, target, keep = self._backup_and_target()
        self._patch(diskswap, '_set_uuid',
                    side_effect=vexc.VimException('injected uuid fault'))
        self._restore_fails_cleanly(backup, target, keep)
        self.assertIn('injected uuid fault', str(self.error))

    def test_stalled_export_hits_the_idle_timeout(self):
        self.override_config('vmware_backup_transfer_idle_timeout', 10,
                             group='vmdk')
        volume = self._vmdk_volume()
        self.vcsim.set_nfc_fault(stall_after_bytes=64 * units.Ki)
        self.addCleanup(self.vcsim.clear_faults)
        backup = self._backup(volume, fail=True)
        self.assertEqual(fields.BackupStatus.ERROR, backup.status)
        self.assertEqual('available', volume.status)
        self.assertIn('moved no data', str(self.error))
        self._assert_nothing_left()
