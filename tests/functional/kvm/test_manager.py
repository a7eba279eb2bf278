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

"""The qcow2 driver through the plugin's BackupManager (Cinder's flow).

The manager builds the qcow2 driver from this node's cinder.conf backend
section and lets it move the data; Cinder's real posix backup driver
stores it. The volume service is not running: its RPC methods are the
boundary the test plays, as in tests/functional/backup/test_manager.py.
"""

import os
import subprocess  # nosec B404: makes a test image
from unittest import mock

from oslo_utils import units

from cinder.backup.drivers import posix  # noqa: F401 (its options)
from cinder import context
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import volume_utils

from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup.kvm import qemu_img
from tests.functional.kvm import base

CONF = manager.CONF
HOST = 'node1@qcow2#qcow2'


class ManagerQcow2TestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        root = self.useFixture(__import__('fixtures').TempDir()).path
        self.volume_dir = os.path.join(root, 'volumes')
        posix_dir = os.path.join(root, 'posix')
        os.makedirs(self.volume_dir)
        os.makedirs(posix_dir)
        conf_path = os.path.join(root, 'cinder.conf')
        with open(conf_path, 'w') as conf:
            conf.write('[qcow2]\nvolume_driver = cinder_vmdk_backup.volume.'
                       'drivers.qcow2.Qcow2VolumeDriver\n'
                       'qcow2_volumes_dir = %s\nqcow2_libvirt_uri =\n'
                       % self.volume_dir)
        CONF([], default_config_files=[conf_path])
        self.override_config('backup_driver',
                             'cinder.backup.drivers.posix.PosixBackupDriver')
        self.override_config('backup_posix_path', posix_dir)
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
            patcher = mock.patch.object(rpcapi, name, autospec=True)
            patcher.start()
            self.addCleanup(patcher.stop)
        # os-brick's host probing runs privileged commands (privsep).
        patcher = mock.patch.object(volume_utils,
                                    'brick_get_connector_properties',
                                    autospec=True,
                                    return_value={'host': 'backup-node'})
        patcher.start()
        self.addCleanup(patcher.stop)
        patcher = mock.patch.object(rpcapi, 'secure_file_operations_enabled',
                                    autospec=True, return_value=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def _volume(self, size=1, status='available', cluster_size=None):
        volume = test_utils.create_volume(self.ctxt, host=HOST, size=size,
                                          status=status,
                                          previous_status='available')
        path = os.path.join(self.volume_dir, volume.name)
        if cluster_size:
            # (An image made elsewhere: the driver makes qemu's default.)
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2',  # nosec
                            '-o', 'cluster_size=%d' % cluster_size, path,
                            str(size * units.Gi)], check=True)
        else:
            qemu_img.create(path, size * units.Gi)
        return volume

    def test_backup_and_restore_through_the_manager(self):
        # A 16 KiB cluster image comes back as one (qemu's default: 64 KiB).
        volume = self._volume(cluster_size=16 * units.Ki)
        path = os.path.join(self.volume_dir, volume.name)
        base.qemu_io(path, 'write -P 0x5a 1M 2M', 'write -P 0xa5 1023M 1M')
        digest = base.raw_digest(path)
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
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.assertEqual({'disk_profile:cluster_size': '16384'},
                         {k: v for k, v in backup.metadata.items()
                          if k.startswith('disk_profile:')})

        target = self._volume(size=2, status='creating')
        backup.status = fields.BackupStatus.RESTORING
        backup.restore_volume_id = target.id
        backup.save()
        self.manager.restore_backup(self.ctxt, backup, target.id, True)
        target.refresh()
        backup.refresh()
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        target_path = os.path.join(self.volume_dir, target.name)
        self.assertEqual(2 * units.Gi, qemu_img.virtual_size(target_path))
        self.assertEqual(16 * units.Ki,
                         qemu_img.info(target_path)['cluster-size'])
        self.assertEqual(digest, base.raw_digest(target_path, units.Gi))
        self.assertEqual([], [n for n in os.listdir(self.volume_dir)
                              if '.cvb-' in n and n != '.cvb-locks'
                              and n != '.cvb-staging'])
