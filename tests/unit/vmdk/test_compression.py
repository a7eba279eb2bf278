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

import importlib
import os
import sys
from unittest import mock
import zlib

import ddt
from oslotest import base

from cinder_vmdk_backup.vmdk import compression


@ddt.ddt
class CompressionTestCase(base.BaseTestCase):

    @ddt.data(0, 1, 65535, 65536, 65537, 200000)
    def test_stored_is_a_valid_zlib_stream(self, size):
        data = os.urandom(size)
        packed = compression.stored(data)
        self.assertEqual(data, zlib.decompress(packed))
        self.assertEqual(len(packed), compression.stored_size(size))

    @ddt.data(1, 2, 3)
    def test_compress_round_trip(self, level):
        data = b'grain of text ' * 5000
        packed = compression.compress(data, compression.backend_level(level))
        self.assertEqual(data, zlib.decompress(packed))
        self.assertLess(len(packed), len(data) // 10)

    def test_decompressobj_honours_max_length(self):
        dec = compression.decompressobj()
        out = dec.decompress(zlib.compress(bytes(1 << 20)), 1000)
        self.assertEqual(1000, len(out))
        self.assertFalse(dec.eof)

    @ddt.data((1, 2), (3, 2), (5, 2), (6, 3), (9, 3), (0, 2), (12, 3))
    @ddt.unpack
    def test_isal_levels(self, level, isal_level):
        with mock.patch.object(compression, 'BACKEND', 'isal'):
            self.assertEqual(isal_level, compression.backend_level(level))

    def test_zlib_levels(self):
        with mock.patch.object(compression, 'BACKEND', 'zlib'):
            self.assertEqual(6, compression.backend_level(6))

    def test_falls_back_to_zlib_without_isal(self):
        self.addCleanup(importlib.reload, compression)
        with mock.patch.dict(sys.modules, {'isal': None}):
            importlib.reload(compression)
            self.assertEqual('zlib', compression.BACKEND)
            packed = compression.compress(b'abc' * 100, 6)
            self.assertEqual(b'abc' * 100, zlib.decompress(packed))
            self.assertEqual(b'x', zlib.decompress(compression.stored(b'x')))
