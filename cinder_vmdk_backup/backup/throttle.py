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

"""The bandwidth cap of a backup: a token bucket on the data it moves.

A backup made by a backup plan with a cap carries the Cinder backup
metadata :data:`METADATA_KEY` (MiB/s). The driver-owned paths honour it:

* a backup reads its source (the decoded VMware export, the qcow2 image)
  through :func:`throttled_source`: every byte read from the disk counts
  (holes and unchanged extents the hand-off skips are never read and cost
  nothing; the qcow2 reader's holes and zero clusters neither, as it
  counts what it reads; a VMware export's decoded zeros do count);
* the qcow2 merge after the backup is capped by QEMU itself (libvirt's
  block commit ``bandwidth``, ``qemu-img commit -r``): :func:`rate_of`;
* a restore of such a backup writes through :func:`throttled_writer` (the
  staging path) or takes its pieces through :func:`throttled_pieces` (the
  VMware streaming path); zeros cost nothing there either.

The bucket allows a burst of a tenth of a second of data and then lets
a caller through at the rate on average: a read of ``n`` bytes waits
until the bytes before it have had their time. Waiting sleeps the calling
thread only: a native thread natively, a green thread (eventlet) on the
hub.
"""

import time

from oslo_log import log as logging
from oslo_utils import units

from cinder_vmdk_backup.backup import transfer
from cinder_vmdk_backup.backup import zero_hashing

LOG = logging.getLogger(__name__)

#: Cinder backup metadata of a capped backup: MiB/s, a decimal number.
METADATA_KEY = 'cvb_bandwidth_mib_s'

#: Seconds of data the bucket lets through at once.
BURST_SECONDS = 0.1


def _sleep(seconds):
    if transfer._on_green_thread() or not transfer.eventlet_patched():
        time.sleep(seconds)  # eventlet's own under eventlet
    else:
        transfer._native('time').sleep(seconds)


def rate_of(backup):
    """The cap of ``backup`` in bytes per second, or None (no cap).

    An unreadable or non-positive value is logged and means no cap: a
    backup is never refused for its cap.
    """
    metadata = getattr(backup, 'metadata', None) or {}
    value = metadata.get(METADATA_KEY)
    if value in (None, ''):
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = 0.0
    if not rate > 0 or rate == float('inf'):
        LOG.warning('Backup %(backup)s has an invalid bandwidth cap '
                    '%(key)s=%(value)r; it is not capped.',
                    {'backup': getattr(backup, 'id', None),
                     'key': METADATA_KEY, 'value': value})
        return None
    return int(rate * units.Mi)


class TokenBucket(object):
    """``rate`` bytes per second on average.

    In bursts of at most :data:`BURST_SECONDS` of data.

    :param rate: bytes per second (> 0)
    :param clock: monotonic seconds (for tests)
    :param sleep: what waits (for tests)
    """

    def __init__(self, rate, clock=time.monotonic, sleep=_sleep):
        if not rate > 0:
            raise ValueError('rate must be above 0')
        self.rate = float(rate)
        self._burst = self.rate * BURST_SECONDS
        self._clock = clock
        self._sleep = sleep
        self._lock = transfer._native('threading').Lock()
        self._tokens = self._burst
        self._last = clock()

    def consume(self, count):
        """Take ``count`` bytes' worth; wait for the ones not there yet."""
        if count <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens +
                               (now - self._last) * self.rate)
            self._last = now
            # Taken at once (the bucket goes into debt): later callers
            # wait for this one's bytes too, so the average holds.
            self._tokens -= count
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


def bucket_for(backup):
    """A :class:`TokenBucket` at the cap of ``backup``, or None."""
    rate = rate_of(backup)
    if rate is None:
        return None
    LOG.info('Backup %(backup)s moves its data at %(rate).1f MiB/s at '
             'most.', {'backup': backup.id, 'rate': rate / units.Mi})
    return TokenBucket(rate)


class _ThrottledSource(object):
    """A backup source whose reads take tokens; the rest passes through.

    A source that counts what it really reads (``bytes_read_from_disk``,
    the qcow2 reader: holes and zero clusters are not read) is charged
    that, after each read; any other is charged every byte asked for,
    before the read.
    """

    def __init__(self, source, bucket):
        self._source = source
        self._bucket = bucket

    def _metered(self, call, wanted):
        source = self._source
        counted = getattr(source, 'bytes_read_from_disk', None)
        if counted is None:
            self._bucket.consume(wanted)
            return call()
        result = call()
        self._bucket.consume(source.bytes_read_from_disk - counted)
        return result

    def __getattr__(self, name):
        attr = getattr(self._source, name)
        if name == 'read_at':
            def read_at(offset, view):
                return self._metered(lambda: attr(offset, view), len(view))
            return read_at
        if name in ('fill', 'readinto'):
            def fill(view):
                return self._metered(lambda: attr(view), len(view))
            return fill
        if name == 'read':
            def read(size=-1):
                data = attr(size)
                self._bucket.consume(len(data))
                return data
            return read
        return attr


def throttled_source(source, backup):
    """``source`` read at most at the cap of ``backup`` (itself if none)."""
    bucket = bucket_for(backup)
    return source if bucket is None else _ThrottledSource(source, bucket)


def _all_zeros(data):
    view = zero_hashing._as_byte_view(data)
    return view is not None and zero_hashing.is_all_zero(view)


class _ThrottledWriter(object):
    def __init__(self, target, bucket):
        self._target = target
        self._bucket = bucket

    def write(self, data):
        # Cinder's restore writes every byte, zeros included; those came
        # from the store as a few compressed bytes and cost nothing.
        if not _all_zeros(data):
            self._bucket.consume(len(data))
        return self._target.write(data)

    def __getattr__(self, name):
        return getattr(self._target, name)


def throttled_writer(target, backup):
    """``target`` written at most at the cap of ``backup`` (itself if none).

    For a restore: the file object the backup driver writes into. Runs of
    zeros written are not counted (they are nearly free on the store).
    """
    bucket = bucket_for(backup)
    return target if bucket is None else _ThrottledWriter(target, bucket)


def throttled_pieces(pieces, backup):
    """Iterate ``pieces`` (with ``.data``) at most at the cap of ``backup``.

    Pieces without data (runs of zeros) cost nothing.
    """
    bucket = bucket_for(backup)
    if bucket is None:
        yield from pieces
        return
    for piece in pieces:
        if piece.data is not None:
            bucket.consume(len(piece.data))
        yield piece
