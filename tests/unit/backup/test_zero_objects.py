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
import zlib

import ddt
from isal import isal_zlib
from oslotest import base

from cinder_vmdk_backup.backup import zero_objects

MIB = 1024 * 1024


@ddt.ddt
class ZeroObjectsTestCase(base.BaseTestCase):

    @ddt.data(1, 4096, MIB - 1, MIB, MIB + 1, 2 * MIB, 3 * MIB + 12288,
              64 * MIB + 5)
    def test_zlib_stream_inflates_to_exactly_the_zeros(self, length):
        for level in (1, 6, 9):
            body = zero_objects.zlib_zeros(length, level)
            self.assertEqual(bytes(length), zlib.decompress(body))
            self.assertEqual(bytes(length), isal_zlib.decompress(body))
            if level >= 6:
                # Zeros compress about a thousand times.
                self.assertLess(len(body), length // 500 + 64)

    @ddt.data(0, 1, MIB + 3, zero_objects.MD5_STEP,
              zero_objects.MD5_STEP * 3 + 4096)
    def test_md5_is_hashlibs(self, length):
        self.assertEqual(
            hashlib.md5(bytes(length), usedforsecurity=False).hexdigest(),
            zero_objects.md5_of_zeros(length))

    def test_sha256_is_hashlibs(self):
        self.assertEqual(hashlib.sha256(bytes(32768)).hexdigest(),
                         zero_objects.sha256_of_zeros(32768))

    def test_zeros_are_known_by_identity(self):
        zeros = zero_objects.zeros(MIB)
        self.assertEqual(bytes(MIB), zeros)
        self.assertTrue(zero_objects.known(zeros))
        self.assertFalse(zero_objects.known(bytes(MIB)))
        for _ in range(4):
            zero_objects.zeros(10)
        # Only the last few are kept (and with them, their memory).
        self.assertFalse(zero_objects.known(zeros))
