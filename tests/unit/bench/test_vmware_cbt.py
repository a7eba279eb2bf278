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

"""The pure helpers of bench/vmware_cbt.py (issue 19's benchmark)."""

from oslotest import base

from bench import vmware_cbt

PIECE = 64 << 10


class MergedRunsTestCase(base.BaseTestCase):

    def test_scattered_pieces_stay_apart_and_sorted(self):
        self.assertEqual([(0, PIECE), (3 * PIECE, PIECE)],
                         vmware_cbt.merged_runs([3 * PIECE, 0], PIECE))

    def test_adjacent_pieces_merge(self):
        self.assertEqual([(PIECE, 3 * PIECE)],
                         vmware_cbt.merged_runs(
                             [2 * PIECE, PIECE, 3 * PIECE], PIECE))

    def test_repeated_and_overlapping_pieces_counted_once(self):
        # The change helper may draw the same place twice.
        self.assertEqual([(0, 2 * PIECE)],
                         vmware_cbt.merged_runs(
                             [0, PIECE, 0, PIECE // 2], PIECE))

    def test_nothing(self):
        self.assertEqual([], vmware_cbt.merged_runs([], PIECE))


class PairRatiosTestCase(base.BaseTestCase):

    def test_each_pair_its_ratio(self):
        self.assertEqual([10.0, 4.0],
                         vmware_cbt.pair_ratios([20.0, 8.0], [2.0, 2.0]))

    def test_unequal_runs_refused(self):
        self.assertRaises(ValueError, vmware_cbt.pair_ratios, [1.0], [])
