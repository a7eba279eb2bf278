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

import io
import time

import ddt
import testtools

from cinder_vmdk_backup.backup import readahead


class CountingSource(object):
    """``io.BytesIO`` that counts reads and can fail at an offset."""

    def __init__(self, data, fail_at=None):
        self._data = io.BytesIO(data)
        self._fail_at = fail_at
        self.reads = 0

    def read(self, n):
        self.reads += 1
        if (self._fail_at is not None
                and self._data.tell() + n > self._fail_at):
            raise IOError('source broke at %d' % self._fail_at)
        return self._data.read(n)


def read_all(stream, size):
    pieces = []
    while True:
        data = stream.read(size)
        if not data:
            return b''.join(pieces)
        pieces.append(data)


@ddt.ddt
class ReadAheadTestCase(testtools.TestCase):

    data = bytes(range(256)) * 4099  # not a multiple of any piece size

    @ddt.data(1, 1000, 4096, 5000, 1 << 20, -1)
    def test_delivers_the_source_exactly(self, size):
        with readahead.ReadAhead(CountingSource(self.data),
                                 piece_size=4096, depth=3) as ahead:
            self.assertEqual(self.data, read_all(ahead, size))
            self.assertEqual(b'', ahead.read(10))

    def test_source_error_comes_after_the_data_before_it(self):
        source = CountingSource(self.data, fail_at=3 * 4096)
        with readahead.ReadAhead(source, piece_size=4096) as ahead:
            got = b''.join(ahead.read(4096) for _ in range(3))
            self.assertEqual(self.data[:3 * 4096], got)
            exc = self.assertRaises(IOError, ahead.read, 4096)
            self.assertIn('broke at 12288', str(exc))
            self.assertEqual(b'', ahead.read(4096))

    def test_reads_at_most_depth_pieces_ahead(self):
        source = CountingSource(self.data)
        with readahead.ReadAhead(source, piece_size=1024, depth=2) as ahead:
            self.assertEqual(self.data[:10], ahead.read(10))
            time.sleep(0.3)
            # One piece taken, two queued, one read and waiting to be
            # queued.
            self.assertLessEqual(source.reads, 4)

    def test_close_stops_a_thread_waiting_for_room(self):
        source = CountingSource(self.data)
        ahead = readahead.ReadAhead(source, piece_size=1024, depth=1)
        time.sleep(0.2)
        ahead.close()
        self.assertFalse(ahead._thread.is_alive())
        reads = source.reads
        time.sleep(0.2)
        self.assertEqual(reads, source.reads)
        self.assertEqual(b'', ahead.read(10))
