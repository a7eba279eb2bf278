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

"""A damaged backup never restores "successfully" onto a qcow2 volume.

The operator's case (issue 20) through the plugin's BackupManager, the real
qcow2 driver, qemu-img and Cinder's posix driver: four bytes flipped in the
middle of a stored zstd object. The restore onto a new volume fails naming
the region, the volume in error; onto the backed-up volume itself it fails
and leaves the image as it was. With the check off, the restore succeeds
and exactly those four bytes are wrong (what Cinder's own restore does).
"""

import json
import os
import subprocess  # nosec B404: makes a test image
from unittest import mock

from cinder.backup.drivers import posix  # noqa: F401 (its options)
from cinder import context
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import volume_utils
import fixtures
from oslo_utils import units

from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup.kvm import qemu_img
from tests.functional.kvm import base
from tests.functional.vmware import test_restore_checks as vmware_checks

CONF = manager.CONF
HOST = 'node1@qcow2#qcow2'
#: Half random, half zeros per MiB: a zstd object that keeps flipped bytes
#: four (see tests.functional.vmware.test_restore_checks).
REGIONS = ((0, 64 * units.Ki),) + tuple(
    (40 * units.Mi + k * units.Mi, 512 * units.Ki) for k in range(8)) + (
    (units.Gi - units.Mi, units.Mi),)


class Qcow2RestoreChecksTestCase(test.TestCase):

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
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.manager = manager.BackupManager(host='backup-node')
        try:
            self.manager._setup_backup_driver(self.ctxt)
        except Exception:  # LoopingCallDone ends the set-up loop
            pass
        rpcapi = self.manager.volume_rpcapi
        for name in ('get_backup_device', 'terminate_connection',
                     'remove_export', 'delete_volume'):
            self._patch(rpcapi, name)
        # os-brick's host probing runs privileged commands (privsep).
        self._patch(volume_utils, 'brick_get_connector_properties',
                    return_value={'host': 'backup-node'})
        self._patch(rpcapi, 'secure_file_operations_enabled',
                    return_value=True)
        self.volume, self.raw = self._volume_with_data(root)
        self.backup = self._backup(self.volume)

    def _patch(self, obj, name, **kwargs):
        patcher = mock.patch.object(obj, name, autospec=True, **kwargs)
        self.addCleanup(patcher.stop)
        return patcher.start()

    def _path(self, volume):
        return os.path.join(self.volume_dir, volume.name)

    def _volume(self, status='available'):
        volume = test_utils.create_volume(self.ctxt, host=HOST, size=1,
                                          status=status,
                                          previous_status='available')
        qemu_img.create(self._path(volume), units.Gi)
        return volume

    def _volume_with_data(self, root):
        raw = os.path.join(root, 'source.raw')
        with open(raw, 'wb') as f:
            f.truncate(units.Gi)
            for offset, length in REGIONS:
                f.seek(offset)
                f.write(os.urandom(length))
        volume = self._volume()
        subprocess.run(['qemu-img', 'convert', '-q', '-f', 'raw',  # nosec
                        '-O', 'qcow2', raw, self._path(volume)], check=True)
        return volume, raw

    def _backup(self, volume):
        volume.status = 'backing-up'
        volume.save()
        backup = test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
            size=volume.size)
        self.manager.create_backup(self.ctxt, backup)
        device = objects.BackupDeviceInfo()
        device.volume = volume
        self.manager.continue_backup(self.ctxt, backup, device)
        backup.refresh()
        volume.refresh()
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        return backup

    def _restore(self, volume, fail):
        volume_is_new = volume.status == 'creating'
        if not volume_is_new:
            volume.status = 'restoring-backup'
            volume.save()
        self.backup.status = fields.BackupStatus.RESTORING
        self.backup.restore_volume_id = volume.id
        self.backup.save()
        error = None
        try:
            self.manager.restore_backup(self.ctxt, self.backup, volume.id,
                                        volume_is_new)
        except Exception as exc:
            error = exc
        if fail and error is None:
            self.fail('the restore did not fail')
        if not fail and error is not None:
            raise error
        volume.refresh()
        self.backup.refresh()
        self.assertEqual(fields.BackupStatus.AVAILABLE, self.backup.status)
        return error

    def _damage(self):
        """Flip four bytes in the object holding 44 MiB of the volume."""
        service = self.manager._backup_service_class(self.ctxt)
        metadata = service._read_metadata(self.backup)
        target = 44 * units.Mi
        for entry in metadata['objects']:
            (name, info), = entry.items()
            if info['offset'] <= target < info['offset'] + info['length']:
                break
        self.assertEqual('zstd', info['compression'])
        container = os.path.join(self.posix_dir, self.backup.container)
        at = info['offset'] + vmware_checks.flip_four_bytes(
            os.path.join(container, name))
        with open(os.path.join(container, service._sha256_filename(
                self.backup))) as f:
            block = json.load(f)['chunk_size']
        return name, at, block

    def _assert_region_named(self, error, name, at, block):
        message = str(error)
        self.assertIn(self.backup.id, message)
        self.assertIn('offset %d, length %d' % (at // block * block, block),
                      message)
        self.assertIn(name, message)

    def _assert_no_leftovers(self):
        self.assertEqual([], [n for n in os.listdir(self.volume_dir)
                              if '.cvb-' in n and n not in (
                                  '.cvb-locks', '.cvb-staging')])
        staging = os.path.join(self.volume_dir, '.cvb-staging')
        if os.path.isdir(staging):
            self.assertEqual([], os.listdir(staging))

    def test_damaged_backup(self):
        # One backup for every case: a 1 GiB backup is most of a test's
        # time. (Good backups restore checked in test_manager.)
        path = self._path(self.volume)
        before = os.stat(path)
        digest = base.raw_digest(path)
        name, at, block = self._damage()

        # Onto a new volume: fails, the region named; the image untouched.
        target = self._volume(status='creating')
        empty = base.raw_digest(self._path(target))
        error = self._restore(target, fail=True)
        self._assert_region_named(error, name, at, block)
        # Cinder 29's manager sets error_restoring on a failed restore
        # even onto a new volume (it compares the backup's status with
        # 'creating').
        self.assertEqual('error_restoring', target.status)
        self.assertEqual(empty, base.raw_digest(self._path(target)))
        self._assert_no_leftovers()

        # In place: fails, the volume's image is not replaced.
        error = self._restore(self.volume, fail=True)
        self._assert_region_named(error, name, at, block)
        self.assertEqual('error_restoring', self.volume.status)
        after = os.stat(path)
        self.assertEqual((before.st_ino, before.st_mtime_ns),
                         (after.st_ino, after.st_mtime_ns))
        self.assertEqual(digest, base.raw_digest(path))
        self._assert_no_leftovers()

        # Unchecked (Cinder's own behaviour): "succeeds", exactly the four
        # bytes wrong.
        self.override_config('driver_owned_restore_check_digests', False)
        target.status = 'creating'
        target.save()
        self._restore(target, fail=False)
        self.assertEqual('available', target.status)
        raw = base._to_raw(self._path(target))
        self.addCleanup(os.unlink, raw)
        # cmp -l: one line per differing byte, 1-based offsets.
        out = subprocess.run(['cmp', '-l', self.raw, raw],  # nosec
                             stdout=subprocess.PIPE, text=True).stdout
        differing = [int(line.split()[0]) - 1 for line in out.splitlines()]
        self.assertEqual([at, at + 1, at + 2, at + 3], differing)
