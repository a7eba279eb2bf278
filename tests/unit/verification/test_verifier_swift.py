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

"""The verifier on Cinder's real Swift driver, its store Cinder's fake.

Swift's object readers read whole objects (``read()`` takes no size): the
verifier's other path. The client is Cinder's own file-backed fake
(``fake_swift_client2``); a real Swift is part A's deployment.
"""

import hashlib
import io
import os
import shutil
import tempfile

from oslo_utils import units
from swiftclient import client as swift

from cinder.backup.drivers import swift as swift_driver
from cinder import context
from cinder.objects import fields
from cinder.tests.unit.backup import fake_swift_client2
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.verification import verifier

MiB = units.Mi


class SwiftVerifierTestCase(test.TestCase):

    def setUp(self):
        super(SwiftVerifierTestCase, self).setUp()
        catalog = [{'type': 'object-store', 'name': 'swift',
                    'endpoints': [{'publicURL': 'http://example.com'}]},
                   {'type': 'identity', 'name': 'keystone',
                    'endpoints': [{'publicURL': 'http://example.com'}]}]
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True,
                                           service_catalog=catalog)
        self.mock_object(swift, 'Connection',
                         fake_swift_client2.FakeSwiftClient2.Connection)
        # The fake answers the md5 of what is left to read (nothing);
        # Swift answers the stored object's.
        fake_put = fake_swift_client2.FakeSwiftConnection2.put_object

        def put_object(conn, container, name, reader, **kwargs):
            data = reader.read()
            fake_put(conn, container, name, io.BytesIO(data), **kwargs)
            return hashlib.md5(data, usedforsecurity=False).hexdigest()

        self.mock_object(fake_swift_client2.FakeSwiftConnection2,
                         'put_object', put_object)
        self.override_config('backup_swift_object_size', 2 * MiB)
        self.override_config('backup_swift_block_size', 32 * units.Ki)
        self.override_config('backup_enable_progress_timer', False)
        # The fake keeps objects as files: no "/" in their names.
        self.mock_object(swift_driver.SwiftBackupDriver,
                         '_generate_object_name_prefix',
                         lambda service, backup: 'volume_%s_backup_%s' % (
                             backup.volume_id, backup.id))
        self.store = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.store)
        self.container = os.path.basename(self.store)
        volume = test_utils.create_volume(self.ctxt, size=1)
        self.backup = test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
            container=self.container)
        disk = b''.join(b'line %08d of a log\n' % i
                        for i in range(6 * MiB // 19 + 1))[:6 * MiB]
        self._service().backup(self.backup, io.BytesIO(disk))
        self.backup.status = fields.BackupStatus.AVAILABLE
        self.backup.save()

    def _service(self):
        return swift_driver.SwiftBackupDriver(self.ctxt)

    def test_good_backup_is_ok(self):
        report = verifier.verify(self._service(), self.backup)
        self.assertTrue(report.ok, report.problems)
        self.assertEqual(3, report.objects_checked)
        self.assertEqual(6 * MiB // (32 * units.Ki), report.blocks_checked)

    def test_flipped_bytes_reported(self):
        name = '%s-00002' % self.backup.service_metadata
        path = os.path.join(self.store, name)
        with open(path, 'r+b') as f:
            middle = os.path.getsize(path) // 2
            f.seek(middle)
            data = f.read(4)
            f.seek(middle)
            f.write(bytes(b ^ 0xFF for b in data))
        report = verifier.verify(self._service(), self.backup)
        self.assertFalse(report.ok)
        self.assertEqual({name}, {p['object'] for p in report.problems})
        for start, length in report.regions:
            self.assertGreaterEqual(start, 2 * MiB)
            self.assertLessEqual(start + length, 4 * MiB)

    def _get_object_fails(self, error):
        fake_get = fake_swift_client2.FakeSwiftConnection2.get_object

        def get_object(conn, container, name, headers=None):
            if name.endswith('-00002'):
                raise error
            return fake_get(conn, container, name, headers=headers)

        self.mock_object(fake_swift_client2.FakeSwiftConnection2,
                         'get_object', get_object)

    def test_store_down_raises(self):
        self._get_object_fails(ConnectionRefusedError(111, 'refused'))
        self.assertRaises(cvb_exception.VerificationError, verifier.verify,
                          self._service(), self.backup)

    def test_not_found_at_read_is_missing(self):
        self._get_object_fails(swift.ClientException('gone',
                                                     http_status=404))
        report = verifier.verify(self._service(), self.backup)
        self.assertEqual(['missing'], [p['reason'] for p in report.problems])
        self.assertEqual([(2 * MiB, 2 * MiB)], report.regions)
