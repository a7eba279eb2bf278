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
verifier reads Swift's objects in pieces through the reader's connection
instead (``resp_chunk_size``, as swiftclient's ``get_object`` offers). The
client is Cinder's own file-backed fake (``fake_swift_client2``), its
``get_object`` given swiftclient's ``resp_chunk_size`` here; the real Swift
is the deployment's (tests/functional/deploy/test_swift_store.py).
"""

import hashlib
import io
import os
import shutil
import tempfile

from oslo_utils import units
import requests
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
        # swiftclient's get_object(..., resp_chunk_size=n): a body read
        # in pieces (the fake reads whole objects only).
        fake_get = fake_swift_client2.FakeSwiftConnection2.get_object
        self.calls = []

        def get_object(conn, container, name, headers=None,
                       resp_chunk_size=None):
            self.calls.append((name, resp_chunk_size))
            headers_, data = fake_get(conn, container, name, headers=headers)
            if resp_chunk_size is None:
                return headers_, data
            return headers_, _Body(data, self.reads, self.body_error)

        self.reads = []
        self.body_error = None
        self.mock_object(fake_swift_client2.FakeSwiftConnection2,
                         'get_object', get_object)
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

        def get_object(conn, container, name, headers=None, **kwargs):
            if name.endswith('-00002'):
                raise error
            return fake_get(conn, container, name, headers=headers,
                            **kwargs)

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

    def test_objects_and_digests_read_in_pieces(self):
        report = verifier.verify(self._service(), self.backup)
        self.assertTrue(report.ok, report.problems)
        # Every object and the sha256 file: asked for in pieces, never
        # whole (the metadata is Cinder's own read).
        asked = {name: size for name, size in self.calls
                 if not name.endswith('_metadata')}
        self.assertEqual(4, len(asked), asked)
        self.assertEqual({verifier.READ_BYTES}, set(asked.values()))
        self.assertNotEqual([], self.reads)
        self.assertLessEqual(max(self.reads), verifier.READ_BYTES)
        self.assertEqual([], [n for n, size in self.calls
                              if not n.endswith('_metadata') and
                              size is None])

    def test_transfer_broken_midway_raises(self):
        # Beyond swiftclient's retries: the store's failure, not the data's.
        self.body_error = requests.exceptions.ChunkedEncodingError(
            'connection broken')
        self.assertRaises(cvb_exception.VerificationError, verifier.verify,
                          self._service(), self.backup)

    def test_http_error_midway_raises(self):
        self.body_error = swift.ClientException('unavailable',
                                                http_status=503)
        self.assertRaises(cvb_exception.VerificationError, verifier.verify,
                          self._service(), self.backup)

    def test_sha256_file_gone_midway_is_missing(self):
        # Gone after its first piece was read (the data objects, of one
        # piece each, are read whole before their bodies fail).
        self.body_error = swift.ClientException('gone', http_status=404)
        report = verifier.verify(self._service(), self.backup)
        sha_name = '%s_sha256file' % self.backup.service_metadata
        self.assertEqual([('sha256_file_missing', sha_name)],
                         [(p['reason'], p['object'])
                          for p in report.problems])

    def test_sha256_file_gone_after_listing_is_missing(self):
        sha_name = '%s_sha256file' % self.backup.service_metadata
        self._get_object_fails_named(
            sha_name, swift.ClientException('gone', http_status=404))
        report = verifier.verify(self._service(), self.backup)
        self.assertEqual({'sha256_file_missing'},
                         {p['reason'] for p in report.problems})
        self.assertEqual({sha_name}, {p['object'] for p in report.problems})

    def test_socket_error_at_open_raises(self):
        self._get_object_fails(ConnectionResetError(104, 'reset'))
        self.assertRaises(cvb_exception.VerificationError, verifier.verify,
                          self._service(), self.backup)

    def test_truncated_object(self):
        name = '%s-00002' % self.backup.service_metadata
        path = os.path.join(self.store, name)
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
        report = verifier.verify(self._service(), self.backup)
        self.assertFalse(report.ok)
        self.assertEqual({name}, {p['object'] for p in report.problems})
        self.assertTrue({p['reason'] for p in report.problems} <=
                        {'truncated', 'undecodable', 'md5_mismatch',
                         'digest_mismatch'}, report.problems)
        for start, length in report.regions:
            self.assertGreaterEqual(start, 2 * MiB)
            self.assertLessEqual(start + length, 4 * MiB)

    def _get_object_fails_named(self, wanted, error):
        fake_get = fake_swift_client2.FakeSwiftConnection2.get_object

        def get_object(conn, container, name, headers=None, **kwargs):
            if name == wanted:
                raise error
            return fake_get(conn, container, name, headers=headers,
                            **kwargs)

        self.mock_object(fake_swift_client2.FakeSwiftConnection2,
                         'get_object', get_object)


class _Body(object):
    """swiftclient's object body: ``read(n)``, ``close()``."""

    def __init__(self, data, reads, error):
        self._data = io.BytesIO(data)
        self._reads = reads
        self._error = error
        self.closed = False

    def read(self, length=None):
        self._reads.append(length)
        if self._error is not None and self._data.tell():
            raise self._error
        return self._data.read(length)

    def close(self):
        self.closed = True
