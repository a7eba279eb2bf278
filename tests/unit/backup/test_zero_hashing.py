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

import array
import contextlib
import hashlib
import os
import types
from unittest import mock

from cinder.backup import chunkeddriver
from cinder.backup.drivers import posix
import ddt
import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslotest import base

from cinder_vmdk_backup.backup import zero_hashing

KIB = 1024
MIB = 1024 * KIB


def _with_byte(length, position, value=1):
    data = bytearray(length)
    data[position] = value
    return bytes(data)


@ddt.ddt
class ZeroAwareHashlibTestCase(base.BaseTestCase):
    """Digests through the stand-in are hashlib's, zeros or not."""

    def setUp(self):
        super(ZeroAwareHashlibTestCase, self).setUp()
        self.real = types.SimpleNamespace(
            md5=mock.create_autospec(hashlib.md5, side_effect=hashlib.md5),
            sha256=mock.create_autospec(hashlib.sha256,
                                        side_effect=hashlib.sha256),
            sha1=hashlib.sha1)
        self.hashlib = zero_hashing.ZeroAwareHashlib(self.real)

    def _both(self, name, data, **options):
        """(stand-in's digest, hashlib's digest) of ``data``."""
        ours = getattr(self.hashlib, name)(data, **options).hexdigest()
        return ours, getattr(hashlib, name)(data, **options).hexdigest()

    @ddt.data(('sha256', 4 * KIB), ('sha256', 32 * KIB),
              ('sha256', 300001), ('md5', 32 * MIB), ('md5', 32 * MIB + 1),
              ('md5', 64 * KIB))
    @ddt.unpack
    def test_zeros_are_not_hashed(self, name, length):
        ours, real = self._both(name, bytes(length))
        self.assertEqual(real, ours)
        getattr(self.real, name).assert_not_called()
        # Again, from the cache: the same digest, still nothing hashed.
        ours, _real = self._both(name, bytearray(length))
        self.assertEqual(real, ours)
        getattr(self.real, name).assert_not_called()

    @ddt.data(0, 1, 256 * KIB - 1, 256 * KIB, 32 * KIB * 7 + 5, -1)
    def test_one_nonzero_byte_anywhere_is_hashed(self, position):
        data = _with_byte(2 * MIB, position)
        for name in zero_hashing.SHORTCUT_NAMES:
            ours, real = self._both(name, data)
            self.assertEqual(real, ours)
            getattr(self.real, name).assert_called_once_with(data)

    def test_random_data_is_hashed(self):
        data = os.urandom(MIB)
        self.assertEqual(*self._both('sha256', data))
        self.real.sha256.assert_called_once_with(data)

    def test_small_buffers_are_hashed(self):
        data = bytes(zero_hashing.MIN_ZERO_CHECK - 1)
        self.assertEqual(*self._both('sha256', data))
        self.real.sha256.assert_called_once_with(data)

    def test_memoryview_blocks_as_cinder_slices_them(self):
        """Cinder's _calculate_sha hashes memoryview slices of a chunk."""
        chunk = memoryview(bytes(64 * KIB) + b'\x01' + bytes(64 * KIB - 1))
        for start in range(0, len(chunk), 32 * KIB):
            block = chunk[start:start + 32 * KIB]
            self.assertEqual(*self._both('sha256', block))
        # Only the block holding the byte.
        self.assertEqual(1, self.real.sha256.call_count)

    def test_views_of_wider_items_count_bytes(self):
        words = array.array('I', bytes(64 * KIB))
        ours = self.hashlib.sha256(memoryview(words)).hexdigest()
        self.assertEqual(hashlib.sha256(bytes(64 * KIB)).hexdigest(), ours)
        self.real.sha256.assert_not_called()

    def test_options_are_kept(self):
        ours, real = self._both('md5', bytes(MIB), usedforsecurity=False)
        self.assertEqual(real, ours)

    def test_hash_objects_handed_out_are_copies(self):
        first = self.hashlib.sha256(bytes(32 * KIB))
        first.update(b'more')
        second = self.hashlib.sha256(bytes(32 * KIB))
        self.assertEqual(hashlib.sha256(bytes(32 * KIB)).hexdigest(),
                         second.hexdigest())
        self.assertEqual(
            hashlib.sha256(bytes(32 * KIB) + b'more').hexdigest(),
            first.hexdigest())

    def test_other_names_are_the_modules(self):
        self.assertIs(hashlib.sha1, self.hashlib.sha1)

    def test_no_data(self):
        self.assertEqual(hashlib.md5().hexdigest(),
                         self.hashlib.md5().hexdigest())


class IsAllZeroTestCase(base.BaseTestCase):

    def test_lengths_around_the_piece(self):
        piece = 256 * KIB
        for length in (1, piece - 1, piece, piece + 1, 3 * piece + 7):
            self.assertTrue(zero_hashing.is_all_zero(
                memoryview(bytes(length))))
            self.assertFalse(zero_hashing.is_all_zero(
                memoryview(_with_byte(length, length - 1))))

    def test_empty(self):
        self.assertTrue(zero_hashing.is_all_zero(memoryview(b'')))


class ZeroAwareHashingTestCase(base.BaseTestCase):
    """The stand-in serves one chunked driver instance while in use."""

    def setUp(self):
        super(ZeroAwareHashingTestCase, self).setUp()
        conf = self.useFixture(config_fixture.Config(cfg.CONF))
        conf.config(backup_posix_path=self.useFixture(
            fixtures.TempDir()).path)
        conf.config(connection='sqlite://', group='database')
        self.service = posix.PosixBackupDriver(mock.sentinel.context)
        self.stock = posix.PosixBackupDriver(mock.sentinel.context)
        zero_hashing._hash_of_zeros.cache_clear()

    def _zero_hits(self):
        return zero_hashing._hash_of_zeros.cache_info().hits

    def test_this_service_only(self):
        zeros = bytes(256 * KIB)
        expected = self.stock._calculate_sha(zeros)
        with zero_hashing.zero_aware_hashing(self.service) as same:
            self.assertIs(self.service, same)
            self.assertEqual(expected, self.service._calculate_sha(zeros))
            hits = self._zero_hits()
            self.assertEqual(7, hits)  # 8 blocks, the first computed
            # A stock backup meanwhile hashes with hashlib.
            self.assertEqual(expected, self.stock._calculate_sha(zeros))
            self.assertEqual(hits, self._zero_hits())
            self.assertIs(hashlib.sha256, chunkeddriver.hashlib.sha256)
        self.assertIs(hashlib, chunkeddriver.hashlib)

    def test_overlapping_uses(self):
        original = chunkeddriver.hashlib
        with contextlib.ExitStack() as first:
            first.enter_context(zero_hashing.zero_aware_hashing(
                self.service))
            installed = chunkeddriver.hashlib
            self.assertIsNot(original, installed)
            with contextlib.ExitStack() as second:
                second.enter_context(zero_hashing.zero_aware_hashing(
                    self.stock))
                self.assertIs(installed, chunkeddriver.hashlib)
                first.close()
                self.assertIs(installed, chunkeddriver.hashlib)
                self.stock._calculate_sha(bytes(64 * KIB))
                self.assertEqual(1, self._zero_hits())
        self.assertIs(original, chunkeddriver.hashlib)

    def test_put_back_after_an_error(self):
        original = chunkeddriver.hashlib

        def fail():
            with zero_hashing.zero_aware_hashing(self.service):
                raise ValueError('backup failed')

        self.assertRaises(ValueError, fail)
        self.assertIs(original, chunkeddriver.hashlib)
        self.assertNotIn('_calculate_sha', vars(self.service))

    def test_cinders_sha_list_is_unchanged(self):
        """Cinder's own _calculate_sha, zeros and data mixed."""
        self.service.sha_block_size_bytes = 32 * KIB
        chunk = (bytes(96 * KIB) + os.urandom(40 * KIB) + bytes(100 * KIB)
                 + _with_byte(32 * KIB, 31 * KIB) + bytes(1000))
        expected = self.stock._calculate_sha(chunk)
        with zero_hashing.zero_aware_hashing(self.service):
            self.assertEqual(expected, self.service._calculate_sha(chunk))
        self.assertGreater(self._zero_hits(), 0)
        self.assertEqual(hashlib.sha256(bytes(32 * KIB)).hexdigest(),
                         expected[0])
