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

"""The token bucket of bandwidth caps, on an injected clock."""

import collections
import io
import time
from unittest import mock

import fixtures

from oslo_utils import units
from oslotest import base

from cinder_vmdk_backup.backup import throttle

MiB = units.Mi


class Clock(object):
    """A clock that only moves when the bucket sleeps (or a test says)."""

    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def _backup(value=None):
    metadata = {} if value is None else {throttle.METADATA_KEY: value}
    return mock.Mock(id='b1', metadata=metadata)


class TokenBucketTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.clock = Clock()
        self.bucket = throttle.TokenBucket(10 * MiB, clock=self.clock,
                                           sleep=self.clock.sleep)

    def test_average_rate_of_fast_reads(self):
        start = self.clock.now
        for _i in range(100):
            self.bucket.consume(MiB)
        # 100 MiB at 10 MiB/s, less the first burst (a tenth of a second)
        self.assertAlmostEqual(10 - 0.1, self.clock.now - start, places=6)

    def test_big_pieces_wait_their_time(self):
        start = self.clock.now
        self.bucket.consume(32 * MiB)
        self.assertAlmostEqual(3.2 - 0.1, self.clock.now - start, places=6)
        self.bucket.consume(32 * MiB)
        self.assertAlmostEqual(6.4 - 0.1, self.clock.now - start, places=6)

    def test_idle_time_banks_one_burst_only(self):
        self.bucket.consume(MiB)  # burst gone, in debt
        self.clock.now += 3600  # an hour idle
        self.clock.slept.clear()
        self.bucket.consume(MiB // 10)  # within the burst: no wait
        self.assertEqual([], self.clock.slept)
        self.bucket.consume(MiB)  # 0.1 MiB over the one burst banked
        self.assertAlmostEqual(0.01, sum(self.clock.slept), places=6)

    def test_slow_reads_never_wait(self):
        for _i in range(10):
            self.clock.now += 1.0  # the reader itself is slower
            self.bucket.consume(MiB)
        self.assertEqual([], self.clock.slept)

    def test_invalid_rate(self):
        self.assertRaises(ValueError, throttle.TokenBucket, 0)

    def test_real_clock(self):
        bucket = throttle.TokenBucket(50 * MiB)
        start = time.monotonic()
        for _i in range(20):
            bucket.consume(MiB)
        elapsed = time.monotonic() - start
        self.assertGreater(elapsed, (20 - 5) / 50 * 0.95)
        self.assertLess(elapsed, 20 / 50 * 1.5)


class RateOfTestCase(base.BaseTestCase):

    def test_values(self):
        self.assertIsNone(throttle.rate_of(_backup()))
        self.assertIsNone(throttle.rate_of(None))
        self.assertIsNone(throttle.rate_of(mock.Mock(metadata=None)))
        self.assertEqual(20 * MiB, throttle.rate_of(_backup('20')))
        self.assertEqual(int(2.5 * MiB), throttle.rate_of(_backup('2.5')))
        for bad in ('', '0', '-3', 'fast', 'inf', 'nan'):
            with self.subTest(value=bad):
                self.assertIsNone(throttle.rate_of(_backup(bad)))
        self.assertIsNone(throttle.bucket_for(_backup()))
        self.assertEqual(20 * MiB, throttle.bucket_for(_backup('20')).rate)


class WrappersTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.consumed = []
        self.bucket = mock.create_autospec(throttle.TokenBucket,
                                           instance=True)
        self.bucket.consume.side_effect = self.consumed.append
        self.bucket_for = self.useFixture(mock_patch(
            throttle, 'bucket_for', self.bucket)).mock

    def test_uncapped_is_the_same_object(self):
        self.bucket_for.return_value = None
        source, target, pieces = object(), object(), [1, 2]
        self.assertIs(source, throttle.throttled_source(source, _backup()))
        self.assertIs(target, throttle.throttled_writer(target, _backup()))
        self.assertEqual([1, 2], list(throttle.throttled_pieces(
            pieces, _backup())))

    def test_source_reads_count(self):
        class Source(object):
            def read_at(self, offset, view):
                view[:] = b'x' * len(view)

            def fill(self, view):
                view[:] = b'y' * len(view)

            def changed_ranges(self, parent):
                return [(0, 1)]

        source = throttle.throttled_source(Source(), _backup('1'))
        view = bytearray(4096)
        source.read_at(0, memoryview(view))
        source.fill(memoryview(view)[:100])
        self.assertEqual([4096, 100], self.consumed)
        self.assertEqual(b'y' * 100, bytes(view[:100]))
        # the rest passes through; absent methods stay absent
        self.assertEqual([(0, 1)], source.changed_ranges(None))
        self.assertFalse(hasattr(source, 'bytes_read_from_disk'))
        self.assertFalse(hasattr(source, 'readinto'))
        self.assertFalse(hasattr(source, 'read'))

    def test_source_counting_its_disk_reads_is_charged_those(self):
        class Source(object):
            bytes_read_from_disk = 0

            def fill(self, view):
                # half of it a hole, not read
                self.bytes_read_from_disk += len(view) // 2

        source = throttle.throttled_source(Source(), _backup('1'))
        source.fill(memoryview(bytearray(4096)))
        source.fill(memoryview(bytearray(100)))
        self.assertEqual([2048, 50], self.consumed)

    def test_file_source_reads_count(self):
        source = throttle.throttled_source(io.BytesIO(b'a' * 10),
                                           _backup('1'))
        self.assertEqual(b'a' * 4, source.read(4))
        self.assertEqual(b'a' * 6, source.read(100))
        self.assertEqual(b'', source.read(100))
        self.assertEqual([4, 6, 0], self.consumed)

    def test_restore_writes_count_but_zeros(self):
        target = io.BytesIO()
        writer = throttle.throttled_writer(target, _backup('1'))
        writer.write(b'data')
        writer.write(bytes(1 * MiB))
        writer.write(memoryview(bytes(1000) + b'\x01'))
        writer.seek(0)
        self.assertEqual(0, writer.tell())
        self.assertEqual([4, 1001], self.consumed)
        self.assertEqual(4 + MiB + 1001, len(target.getvalue()))

    def test_pieces_count_data_only(self):
        Piece = collections.namedtuple('Piece', 'offset length data')
        pieces = [Piece(0, 10, b'x' * 10), Piece(10, MiB, None),
                  Piece(MiB + 10, 3, b'abc')]
        self.assertEqual(pieces, list(throttle.throttled_pieces(
            iter(pieces), _backup('1'))))
        self.assertEqual([10, 3], self.consumed)


def mock_patch(obj, name, returned):
    return fixtures.MockPatchObject(obj, name, autospec=True,
                                    return_value=returned)
