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

import errno
import io
import os
import random
import subprocess  # nosec B404: runs this interpreter
import sys
import time

import ddt
from eventlet import patcher
import fixtures
from oslotest import base

from cinder_vmdk_backup.backup import staging
from cinder_vmdk_backup.backup import transfer

KIB = 1024
MIB = 1024 * KIB

#: The target's writes run on OS threads, eventlet's or not: their events
#: must be real ones (some test modules monkey-patch this process).
_native_threading = patcher.original('threading')


def _until(event, timeout=30):
    """Wait for a native event without blocking eventlet's hub."""
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class BlockingTarget(object):
    """A target whose writes wait until released; records what it got."""

    def __init__(self, fail_on=None):
        self.pos = 0
        self.writes = []
        self.entered = _native_threading.Event()
        self.release = _native_threading.Event()
        self.fail_on = fail_on

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_END:
            offset += max([p + len(d) for p, d in self.writes] or [0])
        elif whence == io.SEEK_CUR:
            offset += self.pos
        self.pos = offset
        return offset

    def tell(self):
        return self.pos

    def write(self, data):
        self.entered.set()
        if not self.release.wait(30):
            raise AssertionError('never released')
        if data == self.fail_on:
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.writes.append((self.pos, bytes(data)))
        self.pos += len(data)
        return len(data)


@ddt.ddt
class WriteBehindTestCase(base.BaseTestCase):

    def setUp(self):
        super(WriteBehindTestCase, self).setUp()
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'f')
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, self.fd)

    @ddt.data(1, 2, 3)
    def test_restore_like_writes_match_a_model(self, seed):
        """Objects at offsets, later ones over earlier ones (incrementals)."""
        rng = random.Random(seed)
        size = 8 * MIB
        model = bytearray(size)
        target = staging.SparseStagingWriter(self.fd)
        with transfer.WriteBehind(target) as behind:
            for _ in range(60):
                offset = rng.randrange(0, size - 1)
                length = rng.randrange(1, min(2 * MIB, size - offset))
                kind = rng.choice(('zeros', 'data', 'byte'))
                if kind == 'zeros':
                    data = bytes(length)
                elif kind == 'data':
                    data = rng.randbytes(length)
                else:
                    data = bytes(length - 1) + b'\x01'
                self.assertEqual(offset, behind.seek(offset))
                self.assertEqual(length, behind.write(data))
                self.assertEqual(offset + length, behind.tell())
                behind.flush()
                model[offset:offset + length] = data
        os.ftruncate(self.fd, size)
        self.assertEqual(bytes(model), os.pread(self.fd, size, 0))

    def test_write_returns_before_the_target_wrote(self):
        target = BlockingTarget()
        behind = transfer.WriteBehind(target)
        self.assertEqual(3, behind.write(b'one'))
        self.assertTrue(_until(target.entered))
        self.assertEqual([], target.writes)
        behind.flush()  # does not wait
        target.release.set()
        behind.write(b'two')
        behind.close()
        self.assertEqual([(0, b'one'), (3, b'two')], target.writes)

    def test_sequential_writes_continue_from_the_position(self):
        target = BlockingTarget()
        target.release.set()
        with transfer.WriteBehind(target) as behind:
            behind.seek(10)
            behind.write(b'ab')
            behind.write(b'cd')
            self.assertEqual(16, behind.seek(2, io.SEEK_END))
            behind.write(memoryview(b'ef'))
        self.assertEqual([(10, b'ab'), (12, b'cd'), (16, b'ef')],
                         target.writes)

    def test_an_error_is_raised_by_the_next_call(self):
        target = BlockingTarget(fail_on=b'bad')
        target.release.set()
        behind = transfer.WriteBehind(target)
        behind.write(b'bad')
        error = self.assertRaises(OSError, behind.write, b'next')
        self.assertEqual(errno.ENOSPC, error.errno)
        behind.close()
        self.assertEqual([], target.writes)

    def test_flush_raises_a_finished_failure(self):
        target = BlockingTarget(fail_on=b'bad')
        target.release.set()
        behind = transfer.WriteBehind(target)
        self.addCleanup(lambda: behind.__exit__(Exception, None, None))
        behind.write(b'bad')
        behind._pending.exception(timeout=30)
        self.assertRaises(OSError, behind.flush)

    def test_close_waits_and_raises_the_last_failure(self):
        target = BlockingTarget(fail_on=b'bad')
        target.release.set()
        behind = transfer.WriteBehind(target)
        behind.write(b'good')
        behind.write(b'bad')
        self.assertRaises(OSError, behind.close)
        self.assertEqual([(0, b'good')], target.writes)
        behind.close()  # once is enough
        self.assertRaises(ValueError, behind.write, b'more')

    def test_leaving_on_an_error_keeps_that_error(self):
        target = BlockingTarget(fail_on=b'bad')
        target.release.set()

        def restore():
            with transfer.WriteBehind(target) as behind:
                behind.write(b'bad')
                raise KeyError('the restore failed')

        self.assertRaises(KeyError, restore)

    def test_large_writes_are_waited_for(self):
        self.patch(transfer, 'MAX_BEHIND', 4)
        target = BlockingTarget()
        target.release.set()
        behind = transfer.WriteBehind(target)
        behind.write(b'four')
        self.assertIsNotNone(behind._pending)
        behind.write(b'fives')
        self.assertIsNone(behind._pending)
        self.assertEqual([(0, b'four'), (4, b'fives')], target.writes)
        behind.close()

    def test_seek_relative_to_the_position(self):
        target = BlockingTarget()
        target.release.set()
        with transfer.WriteBehind(target) as behind:
            behind.write(b'abcd')
            self.assertEqual(2, behind.seek(-2, io.SEEK_CUR))
            behind.write(b'XY')
        self.assertEqual([(0, b'abcd'), (2, b'XY')], target.writes)

    def test_no_fileno(self):
        behind = transfer.WriteBehind(BlockingTarget())
        self.addCleanup(behind.close)
        self.assertRaises(io.UnsupportedOperation, behind.fileno)

    def test_negative_seek(self):
        behind = transfer.WriteBehind(BlockingTarget())
        self.addCleanup(behind.close)
        self.assertRaises(ValueError, behind.seek, -1)


#: Under eventlet (as in cinder-backup), a write must proceed on a native
#: thread while the backup driver's green thread inflates the next object
#: on another: the first write here waits until the inflating job has
#: started, which only works if neither waits for the other.
_EVENTLET_OVERLAP = """
import eventlet
eventlet.monkey_patch()
from eventlet import patcher
from eventlet import tpool

from cinder_vmdk_backup.backup import transfer

inflating = patcher.original('threading').Event()
written = []


class Target(object):
    def seek(self, offset, whence=0):
        return offset

    def tell(self):
        return 0

    def write(self, data):
        written.append(inflating.wait(60))


with transfer.WriteBehind(Target()) as behind:
    behind.write(b'first object')
    eventlet.sleep(0)  # Cinder's cooperative yield after each object
    tpool.execute(inflating.set)
    behind.write(b'second object')
print(written)
"""


class WriteBehindUnderEventletTestCase(base.BaseTestCase):

    def test_writes_while_the_service_inflates_on_a_native_thread(self):
        out = subprocess.run(  # nosec B603
            [sys.executable, '-c', _EVENTLET_OVERLAP], check=True,
            stdout=subprocess.PIPE, text=True, timeout=120).stdout
        self.assertEqual('[True, True]', out.split('\n')[-2])
