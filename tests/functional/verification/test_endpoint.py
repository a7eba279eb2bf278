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

"""The plugin's BackupManager verifies backups of Cinder's posix driver.

The manager is the real one (its backup service Cinder's posix driver, its
operation semaphore Cinder's), as cinder-backup builds it; the endpoint is
called as oslo.messaging would call it for the cast of cinder-api.
"""

import io
import json
import os
import threading

import fixtures
from oslo_utils import units

from cinder.backup.drivers import posix
from cinder import context
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup.verification import endpoint
from cinder_vmdk_backup.verification import records

MiB = units.Mi


class ManagerVerificationTestCase(test.TestCase):

    def setUp(self):
        super(ManagerVerificationTestCase, self).setUp()
        self.store = self.useFixture(fixtures.TempDir()).path
        self.override_config('backup_driver',
                             'cinder.backup.drivers.posix.PosixBackupDriver')
        self.override_config('backup_posix_path', self.store)
        self.override_config('backup_compression_algorithm', 'zstd')
        self.override_config('backup_enable_progress_timer', False)
        self.override_config('backup_file_size', 2 * MiB)
        self.override_config('backup_sha_block_size_bytes', 32 * units.Ki)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.semaphore = threading.Semaphore(1)
        self.manager = manager.BackupManager(host='backup-node',
                                             semaphore=self.semaphore)
        volume = test_utils.create_volume(self.ctxt, size=1)
        self.backup = test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.CREATING)
        disk = b''.join(b'line %08d of a log\n' % i
                        for i in range(8 * MiB // 19 + 1))[:8 * MiB]
        posix.PosixBackupDriver(self.ctxt).backup(self.backup,
                                                  io.BytesIO(disk))
        self.backup.status = fields.BackupStatus.AVAILABLE
        self.backup.save()

    def _verify(self, verification_id):
        records.queue(objects.Backup.get_by_id(self.ctxt, self.backup.id),
                      verification_id, False)
        self.manager.verification_endpoint.verify_backup(
            self.ctxt, self.backup.id, verification_id, deep=False)
        backup = objects.Backup.get_by_id(self.ctxt, self.backup.id)
        return backup, records.read(backup)

    def test_registered(self):
        self.assertIn(self.manager.verification_endpoint,
                      self.manager.additional_endpoints)
        self.assertIsInstance(self.manager.verification_endpoint,
                              endpoint.VerificationEndpoint)

    def test_verify_ok_then_damaged(self):
        backup, record = self._verify('v1')
        self.assertEqual('ok', record['status'], record)
        self.assertEqual('available', backup.status)
        # Four bytes flipped in the middle of the third object.
        with open(os.path.join(self.store, backup.container,
                               backup.service_metadata + '_metadata')) as f:
            name = list(json.load(f)['objects'][2])[0]
        path = os.path.join(self.store, backup.container, name)
        with open(path, 'r+b') as f:
            middle = os.path.getsize(path) // 2
            f.seek(middle)
            data = f.read(4)
            f.seek(middle)
            f.write(bytes(b ^ 0xFF for b in data))
        backup, record = self._verify('v2')
        self.assertEqual('failed', record['status'], record)
        self.assertEqual('v2', record['verification_id'])
        self.assertEqual({name}, {p['object'] for p in record['problems']})
        self.assertIn(name, record['problems'][0]['object'])
        self.assertEqual('available', backup.status)
        self.assertTrue(self.semaphore.acquire(blocking=False))
