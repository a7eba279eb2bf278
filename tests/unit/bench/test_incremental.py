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

"""The pure helpers of bench/incremental.py (issue 21's benchmark).

What makes its comparisons fair: the same data in the same order at every
size, the same change (by extent and place in it) at every size, and its
stored bytes counted per backup.
"""

import collections

from oslotest import base

from bench import incremental

MIB = 1 << 20
GIB = 1 << 30


class DataLayoutTestCase(base.BaseTestCase):

    def test_same_data_scattered_over_each_capacity(self):
        small = incremental.data_layout(GIB, 256 * MIB)
        big = incremental.data_layout(16 * GIB, 256 * MIB)
        self.assertEqual(256, len(small))
        self.assertEqual(256, len(big))
        # The same kinds in the same order: the same data.
        self.assertEqual([k for _o, k in small], [k for _o, k in big])
        self.assertEqual({'text': 103, 'random': 102, 'zero': 51},
                         dict(collections.Counter(k for _o, k in small)))
        for layout, size in ((small, GIB), (big, 16 * GIB)):
            offsets = [o for o, _k in layout]
            self.assertEqual(sorted(set(offsets)), offsets)
            self.assertTrue(all(o % incremental.EXTENT == 0 for o in offsets))
            self.assertLessEqual(offsets[-1] + incremental.EXTENT, size)
        # Scattered over the whole capacity, not packed at its start.
        self.assertGreater(big[-1][0], 8 * GIB)

    def test_deterministic(self):
        self.assertEqual(incremental.data_layout(4 * GIB, 64 * MIB),
                         incremental.data_layout(4 * GIB, 64 * MIB))

    def test_data_filling_the_volume(self):
        layout = incremental.data_layout(32 * MIB, 32 * MIB)
        self.assertEqual([i * MIB for i in range(32)],
                         [o for o, _k in layout])

    def test_too_much_data(self):
        self.assertRaises(ValueError, incremental.data_layout, 16 * MIB,
                          32 * MIB)
        self.assertRaises(ValueError, incremental.data_layout, GIB, 0)


class ChangeOffsetsTestCase(base.BaseTestCase):

    def test_one_percent_of_the_data_inside_the_data(self):
        layout = incremental.data_layout(16 * GIB, 256 * MIB)
        offsets = incremental.change_offsets(layout, 0.01)
        # 1 % of 256 MiB in 64 KiB pieces.
        self.assertEqual(41, len(offsets))
        self.assertEqual(sorted(set(offsets)), offsets)
        starts = [o for o, _k in layout]
        for offset in offsets:
            self.assertEqual(0, offset % incremental.PIECE)
            self.assertTrue(any(s <= offset < s + incremental.EXTENT
                                for s in starts), offset)

    def test_the_same_change_at_every_size(self):
        def relative(size):
            layout = incremental.data_layout(size, 256 * MIB)
            starts = [o for o, _k in layout]
            return [(starts.index(o - o % incremental.EXTENT),
                     o % incremental.EXTENT)
                    for o in incremental.change_offsets(layout, 0.01)]
        self.assertEqual(relative(GIB), relative(16 * GIB))
        self.assertEqual(relative(GIB), relative(1024 * GIB))

    def test_at_least_one_write_at_most_every_piece(self):
        layout = incremental.data_layout(GIB, MIB)
        self.assertEqual(1, len(incremental.change_offsets(layout, 1e-9)))
        self.assertEqual(16, len(incremental.change_offsets(layout, 5.0)))


class StoredBytesTestCase(base.BaseTestCase):

    def test_data_and_metadata_of_one_backup(self):
        prefix = 'volume_v_20261206_backup_b1'
        files = [(prefix + '-00001', 100), (prefix + '-00002', 50),
                 (prefix + '_metadata', 7), (prefix + '_sha256file', 9),
                 ('volume_v_20261206_backup_b2-00001', 1000),
                 ('volume_v_20261206_backup_b2_sha256file', 1000),
                 (prefix + '.tmp', 1000)]
        self.assertEqual((150, 16), incremental.stored_bytes(files, prefix))

    def test_nothing_stored(self):
        self.assertEqual((0, 0), incremental.stored_bytes([], 'p'))


class FiguresTestCase(base.BaseTestCase):

    def test_median(self):
        self.assertEqual(2, incremental.median([3, 1, 2]))
        self.assertEqual(2.5, incremental.median([4, 1, 3, 2]))

    def test_ratios_and_summary(self):
        values = incremental.ratios([10, 4, 9], [1, 2, 0])
        self.assertEqual([10.0, 2.0, float('inf')], values)
        self.assertEqual('1.50 (pairs: 1.00, 2.00)',
                         incremental.pair_summary([1.0, 2.0]))

    def test_verdict(self):
        self.assertEqual('met', incremental.verdict(1.5, 1.5))
        self.assertEqual('NOT met', incremental.verdict(1.51, 1.5))
        self.assertEqual('met', incremental.verdict(10, 10, at_least=True))
        self.assertEqual('NOT met',
                         incremental.verdict(9.9, 10, at_least=True))

    def test_rotated(self):
        items = ('new', 'whole', 'today')
        self.assertEqual(items, incremental.rotated(items, 0))
        self.assertEqual(('whole', 'today', 'new'),
                         incremental.rotated(items, 1))
        self.assertEqual(items, incremental.rotated(items, 3))
