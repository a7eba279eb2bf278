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

"""The helpers of bench/deployment_table.py that judge its figures.

The restored disk's check (a sparse file against the expected extents)
must catch a changed byte, data where a hole was expected and a hole where
data was expected; peak RSS and CPU come from /proc (read on this process).
"""

import os

import fixtures
from oslotest import base

from bench import deployment_table

MIB = 1 << 20


class CompareTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 'disk')
        self.data = bytes(range(256)) * (MIB // 256)
        with open(self.path, 'wb') as f:
            f.truncate(8 * MIB)
            f.seek(3 * MIB)
            f.write(self.data)

    def test_identical(self):
        self.assertIsNone(deployment_table.compare(
            self.path, {3 * MIB: self.data}, 8 * MIB))

    def test_changed_byte(self):
        changed = b'\xff' + self.data[1:]
        self.assertEqual('MiB at %d differs' % (3 * MIB),
                         deployment_table.compare(
                             self.path, {3 * MIB: changed}, 8 * MIB))

    def test_data_where_zeros_expected(self):
        self.assertEqual('MiB at %d differs' % (3 * MIB),
                         deployment_table.compare(self.path, {}, 8 * MIB))

    def test_hole_where_data_expected(self):
        self.assertEqual('MiB at %d is a hole, data expected' % (5 * MIB),
                         deployment_table.compare(
                             self.path, {3 * MIB: self.data,
                                         5 * MIB: self.data}, 8 * MIB))

    def test_size(self):
        self.assertEqual('size %d, expected %d' % (8 * MIB, 16 * MIB),
                         deployment_table.compare(
                             self.path, {3 * MIB: self.data}, 16 * MIB))


class ProcTestCase(base.BaseTestCase):

    def test_peak_rss_and_cpu_of_this_process(self):
        pid = os.getpid()
        self.assertIn(pid, deployment_table.process_tree(pid))
        # The peak so far may be far above the present RSS: reset it (as
        # the bench does before each step), then the ballast must show.
        deployment_table.reset_hwm(pid)
        before = deployment_table.hwm(pid)
        ballast = bytearray(64 * MIB)
        ballast[::4096] = b'\x01' * len(ballast[::4096])
        self.assertGreaterEqual(deployment_table.hwm(pid),
                                before + 60 * MIB)
        del ballast
        self.assertGreater(deployment_table.cpu_seconds(pid), 0)
        self.assertEqual(0.0, deployment_table.cpu_seconds(2 ** 22 + 1))

    def test_change_is_the_same_every_time(self):
        pool = b'x' * (4 * MIB)
        first = deployment_table.change_data([0, 65536], pool)
        self.assertEqual(first, deployment_table.change_data([0, 65536],
                                                             pool))
        self.assertEqual([65536, 65536], [len(d) for _o, d in first])
