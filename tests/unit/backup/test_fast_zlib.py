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

import hashlib
import resource
from unittest import mock
import zlib

from cinder.backup import driver as backup_driver
from cinder.backup.drivers import posix
import ddt
import fixtures
from isal import isal_zlib
from oslo_config import fixture as config_fixture
from oslo_utils import units
from oslotest import base

from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import fast_zlib
from cinder_vmdk_backup.backup import zero_objects


def _text(size):
    """Compressible data that zlib and ISA-L compress differently."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += b'%d %s ' % (counter, hashlib.md5(
            b'%d' % (counter % 97), usedforsecurity=False).hexdigest()[:7]
            .encode())
        counter += 1
    return bytes(out[:size])


@ddt.ddt
class AcceleratedTestCase(base.BaseTestCase):
    """The context manager on Cinder's real posix backup driver."""

    DATA = _text(256 * 1024)

    def setUp(self):
        super(AcceleratedTestCase, self).setUp()
        self.conf = self.useFixture(config_fixture.Config(fast_zlib.CONF))
        self.conf.config(
            backup_posix_path=self.useFixture(fixtures.TempDir()).path,
            backup_compression_algorithm='zlib')
        # Cinder's backup drivers look at the database engine when built.
        self.conf.config(connection='sqlite://', group='database')

    def _service(self):
        return posix.PosixBackupDriver(mock.sentinel.context)

    def _stored(self, service):
        """What the service stores for DATA, and under which algorithm."""
        return service._prepare_output_data(self.DATA)

    @ddt.data('zlib', 'gzip', 'ZLIB')
    def test_backups_compress_with_isal(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        service = self._service()
        with fast_zlib.accelerated(service) as same:
            self.assertIs(service, same)
            recorded, stored = self._stored(service)
        self.assertEqual(algorithm.lower(), recorded)
        self.assertEqual(isal_zlib.compress(self.DATA, 2), stored)
        self.assertNotEqual(zlib.compress(self.DATA), stored)
        # Any Cinder reads it back with Python's zlib.
        self.assertEqual(self.DATA, zlib.decompress(stored))

    @ddt.data(0, 1, 3)
    def test_level(self, level):
        self.conf.config(driver_owned_backup_isal_level=level)
        service = self._service()
        with fast_zlib.accelerated(service):
            _, stored = self._stored(service)
        self.assertEqual(isal_zlib.compress(self.DATA, level), stored)

    def test_service_is_put_back_afterwards(self):
        service = self._service()
        compressor = service.compressor
        with fast_zlib.accelerated(service):
            self.assertIsNot(compressor, service.compressor)
        self.assertIs(compressor, service.compressor)
        self.assertNotIn('_get_compressor', vars(service))
        self.assertEqual(zlib.compress(self.DATA), self._stored(service)[1])

    def test_service_is_put_back_after_an_error(self):
        service = self._service()
        compressor = service.compressor

        def fail():
            with fast_zlib.accelerated(service):
                raise ValueError('backup failed')

        self.assertRaises(ValueError, fail)
        self.assertIs(compressor, service.compressor)
        self.assertNotIn('_get_compressor', vars(service))

    @ddt.data('zlib', 'gzip')
    def test_restores_inflate_with_isal(self, algorithm):
        service = self._service()
        with mock.patch.object(fast_zlib, 'isal_zlib',
                               wraps=isal_zlib) as isal:
            with fast_zlib.accelerated(service):
                decompressor = service._get_compressor(algorithm)
                self.assertEqual(self.DATA, decompressor.decompress(
                    zlib.compress(self.DATA)))
        isal.decompress.assert_called_once_with(mock.ANY)

    def test_restore_of_other_algorithms_is_cinders(self):
        self.conf.config(backup_compression_algorithm='zstd')
        service = self._service()
        compressor = service.compressor
        with fast_zlib.accelerated(service):
            self.assertIs(compressor, service.compressor)
            bz2 = service._get_compressor('bz2')
            self.assertIsNone(service._get_compressor('none'))
            # A zlib object in a zstd-configured repository still gains.
            self.assertIsInstance(
                getattr(service._get_compressor('zlib'), '_obj',
                        service._get_compressor('zlib')),
                fast_zlib.IsalZlib)
        self.assertEqual(b'x' * 9, bz2.decompress(bz2.compress(b'x' * 9)))

    def test_zlib_implementation_keeps_cinders(self):
        self.conf.config(driver_owned_backup_zlib_implementation='zlib')
        service = self._service()
        compressor = service.compressor
        with fast_zlib.accelerated(service):
            self.assertIs(compressor, service.compressor)
            self.assertNotIn('_get_compressor', vars(service))
            self.assertEqual(zlib.compress(self.DATA),
                             self._stored(service)[1])

    def test_without_isal_keeps_cinders_and_says_so_once(self):
        self.patch(fast_zlib, 'isal_zlib', None)
        self.patch(fast_zlib, '_told_isal_missing', False)
        log = self.useFixture(fixtures.FakeLogger(
            name=fast_zlib.__name__))
        service = self._service()
        compressor = service.compressor
        for _ in range(2):
            with fast_zlib.accelerated(service):
                self.assertIs(compressor, service.compressor)
                self.assertNotIn('_get_compressor', vars(service))
        self.assertEqual(
            1, log.output.count('python-isal cannot be imported'))

    def test_cinders_compressor_where_cinder_changed(self):
        self.useFixture(fixtures.MockPatchObject(
            cinder_internals, 'usable', autospec=True, return_value=False))
        service = self._service()
        compressor = service.compressor
        with fast_zlib.accelerated(service):
            self.assertIs(compressor, service.compressor)
            self.assertNotIn('_get_compressor', vars(service))
            self.assertEqual(zlib.compress(self.DATA),
                             self._stored(service)[1])
        cinder_internals.usable.assert_called_with('zlib')

    def test_other_backup_drivers_are_left_alone(self):
        service = mock.create_autospec(backup_driver.BackupDriver,
                                       instance=True)
        with fast_zlib.accelerated(service) as same:
            self.assertIs(service, same)
        self.assertEqual([], service.method_calls)
        self.assertNotIn('compressor', vars(service))


@ddt.ddt
class ZeroBodiesTestCase(base.BaseTestCase):
    """Objects of zeros are never materialised, and inflated once."""

    def setUp(self):
        super(ZeroBodiesTestCase, self).setUp()
        self.isal = self.useFixture(fixtures.MockPatchObject(
            fast_zlib, 'isal_zlib', autospec=True)).mock
        self.isal.decompress.side_effect = isal_zlib.decompress
        self.isal.decompressobj.side_effect = isal_zlib.decompressobj
        self.isal.error = isal_zlib.error
        self.codec = fast_zlib.IsalZlib(2)

    @ddt.data(zlib.compress, lambda data: isal_zlib.compress(data, 2),
              lambda data: bytearray(zlib.compress(data, 9)))
    def test_zero_body_inflated_once(self, compress):
        body = compress(bytes(4 * 1024 * 1024))
        first = self.codec.decompress(body)
        second = self.codec.decompress(body)
        self.assertEqual(bytes(4 * 1024 * 1024), first)
        self.assertEqual(first, second)
        self.assertIsInstance(second, bytes)
        self.assertTrue(zero_objects.known(second))
        self.isal.decompressobj.assert_called_once_with()
        self.isal.decompress.assert_not_called()

    @ddt.data(b'a', b'\x00' * 1023 + b'\x01')
    def test_other_compressible_bodies_are_always_inflated(self, pattern):
        data = pattern * (4 * 1024 * 1024 // len(pattern))
        body = zlib.compress(data)
        for _ in range(3):
            result = self.codec.decompress(body)
            self.assertEqual(data, result)
            self.assertFalse(zero_objects.known(result))
        self.assertEqual(3, self.isal.decompress.call_count)

    def test_zeros_then_data(self):
        data = bytes(3 * 1024 * 1024 + 5) + b'\x01' + bytes(1000)
        self.assertEqual(data, self.codec.decompress(zlib.compress(data)))
        self.assertEqual(1, self.isal.decompress.call_count)

    def test_zeros_of_other_lengths_are_told_apart(self):
        bodies = {n: zlib.compress(bytes(n))
                  for n in (1024 * 1024, 2 * 1024 * 1024, 1024 * 1024 + 1)}
        for _ in range(2):
            for length, body in bodies.items():
                self.assertEqual(bytes(length), self.codec.decompress(body))
        self.assertEqual(3, self.isal.decompressobj.call_count)

    def test_bodies_kept_are_bounded(self):
        kept = fast_zlib.ZERO_BODIES_KEPT
        bodies = [zlib.compress(bytes(1024 * 1024 + n))
                  for n in range(kept + 1)]
        for body in bodies:
            self.codec.decompress(body)
        self.codec.decompress(bodies[-1])
        self.assertEqual(kept + 1, self.isal.decompressobj.call_count)
        # The oldest was let go.
        self.codec.decompress(bodies[0])
        self.assertEqual(kept + 2, self.isal.decompressobj.call_count)

    def test_a_gibibyte_of_zeros_is_not_materialised(self):
        body = zero_objects.zlib_zeros(units.Gi)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        zeros = self.codec.decompress(body)
        again = self.codec.decompress(body)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.assertEqual(units.Gi, len(zeros))
        self.assertTrue(zero_objects.known(zeros))
        self.assertTrue(zero_objects.known(again))
        self.assertLess(peak - before, 64 * 1024)  # KiB

    def test_cut_stream_raises_as_zlib_does(self):
        body = zlib.compress(bytes(1024 * 1024))[:-10]
        self.assertRaises(isal_zlib.error, self.codec.decompress, body)

    def test_large_bodies_are_not_kept(self):
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.backup.fast_zlib.MAX_ZERO_BODY', 100))
        body = zlib.compress(bytes(1024 * 1024))
        self.assertGreater(len(body), 100)
        for _ in range(2):
            self.assertEqual(bytes(1024 * 1024), self.codec.decompress(body))
        self.assertEqual(2, self.isal.decompress.call_count)

    def test_corrupt_body_raises_as_zlib_does(self):
        body = bytearray(zlib.compress(bytes(1024 * 1024)))
        body[len(body) // 2] ^= 0xff
        self.assertRaises(isal_zlib.error, self.codec.decompress,
                          bytes(body))
