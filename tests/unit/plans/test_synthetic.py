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

"""The pieces of a synthetic full: its source and the zeros of a list.

(The whole of it runs against Cinder's posix driver in
tests/functional/plans/test_synthetic.py.)
"""

import hashlib

import fixtures

from cinder.backup.drivers import posix
from cinder import context
from cinder import exception
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test

from cinder_vmdk_backup.backup import chain_reader
from cinder_vmdk_backup.plans import synthetic


class _Backup(dict):
    """What the posix driver reads of a backup for its sha256 file."""

    def __init__(self, **values):
        super(_Backup, self).__init__(**values)
        self.__dict__.update(values)


class ChainSourceTestCase(test.TestCase):

    def _source(self, pieces):
        return synthetic._ChainSource(
            iter([chain_reader.Piece(*p) for p in pieces]), iter(()))

    def test_reads_across_pieces_with_zeros_between(self):
        source = self._source([(0, 4, b'abcd'), (4, 8, None),
                               (12, 4, b'efgh')])
        self.assertEqual(b'ab', source.read(2))
        self.assertEqual(b'cd\0\0', source.read(4))
        self.assertEqual(bytes(6), source.read(6))
        self.assertEqual(b'efgh', source.read(10))
        self.assertEqual(b'', source.read(1))

    def test_zeros_within_one_piece(self):
        source = self._source([(0, 1 << 20, None)])
        self.assertEqual(bytes(1 << 19), source.read(1 << 19))
        self.assertEqual(bytes(1 << 19), source.read(1 << 20))
        self.assertEqual(b'', source.read(1))


class ZeroRangesTestCase(test.TestCase):

    def test_runs_of_zero_digests_with_a_short_last_block(self):
        path = self.useFixture(fixtures.TempDir()).path
        self.override_config('backup_posix_path', path)
        ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID)
        service = posix.PosixBackupDriver(ctxt)
        self.override_config('backup_sha_block_size_bytes', 4)
        service.sha_block_size_bytes = 4
        backup = _Backup(id=fake.BACKUP_ID, service_metadata='prefix',
                         container='c', display_name='n',
                         display_description='d', created_at='t')
        service.put_container('c')
        disk = b'abcd' + bytes(8) + b'efgh' + bytes(4) + bytes(2)
        digests = [hashlib.sha256(disk[i:i + 4]).hexdigest()
                   for i in range(0, len(disk), 4)]
        service._write_sha256file(backup, fake.VOLUME_ID, 'c', digests)
        self.assertEqual([(4, 8), (16, 6)], list(
            synthetic._zero_ranges(service, backup, len(disk))))


class RefusedServiceTestCase(test.TestCase):

    def test_a_service_that_is_not_chunked_is_refused(self):
        class Ceph(object):
            pass
        ctxt = context.get_admin_context()
        exc = self.assertRaises(exception.InvalidBackup,
                                synthetic.synthesize, ctxt, Ceph(),
                                fake.BACKUP_ID)
        self.assertIn('no synthetic full of backup %s' % fake.BACKUP_ID,
                      str(exc))
        self.assertIn('Ceph is not a chunked backup driver', str(exc))
