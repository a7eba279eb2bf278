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

"""A backup plan's bandwidth cap, measured on real qcow2 images.

The qcow2 driver backs up and restores through Cinder's real
PosixBackupDriver; the reads of the real image (qemu-img decoding it) and
the writes of the restore are timed from outside the cap's own code, and
``qemu-img commit -r`` copies a real overlay. Each measured rate must be
within 20 % of the cap.
"""

import os
import subprocess
import time

import fixtures
from oslo_utils import units

from cinder_vmdk_backup.backup import throttle
from cinder_vmdk_backup.kvm import qemu_img
from cinder_vmdk_backup.kvm import raw_reader
from tests.functional.kvm import base

MiB = units.Mi
CAP_MIB_S = 16
DATA_MIB = 48


class Timed(object):
    """Wraps a method of a class; records (start, end, bytes) of calls.

    :param count: ``count(obj, args, call)`` returns the call's result and
        the bytes it moved (``call()`` makes it)
    :param charged_before: the cap charges a call before it runs (the
        bytes asked for: the call itself waits) rather than after it (the
        bytes it read: the next call waits)
    """

    def __init__(self, test, cls, name, count, charged_before):
        self.calls = []
        self._before = charged_before
        real = getattr(cls, name)

        def timed(obj, *args):
            start = time.monotonic()
            result, nbytes = count(obj, args, lambda: real(obj, *args))
            if nbytes:
                self.calls.append((start, time.monotonic(), nbytes))
            return result

        test.useFixture(fixtures.MonkeyPatch(
            '%s.%s.%s' % (cls.__module__, cls.__name__, name), timed))

    def moved(self):
        return sum(n for _s, _e, n in self.calls)

    def rate(self):
        """Bytes per second the calls moved, seen from outside them.

        Charged before: from the first call's start to the last one's end
        (each waited for its bytes). After: the bytes of all calls but the
        last, from the first start to the last start (each next call
        started once the bytes before it had had their time).
        """
        if self._before:
            span = self.calls[-1][1] - self.calls[0][0]
            return self.moved() / span
        span = self.calls[-1][0] - self.calls[0][0]
        return sum(n for _s, _e, n in self.calls[:-1]) / span


def _disk_read(obj, args, call):
    before = obj.bytes_read_from_disk
    result = call()
    return result, obj.bytes_read_from_disk - before


def _data_written(obj, args, call):
    data = args[0]
    return call(), 0 if throttle._all_zeros(data) else len(data)


class BandwidthCapTestCase(base.Qcow2FunctionalTestCase):

    def setUp(self):
        super().setUp()
        # Small objects: many reads and writes to time.
        self.override_config('driver_owned_backup_object_mb', 4)
        self.override_config('backup_file_size', 4 * MiB)

    def capped_backup(self, volume):
        backup = self.make_backup(volume)
        backup.metadata = {throttle.METADATA_KEY: str(CAP_MIB_S)}
        backup.save()
        self.driver.backup_volume(self.ctxt, backup, self.service,
                                  backup_device=self.device(volume))
        backup.refresh()
        return backup

    def assertNearCap(self, rate, detail=''):
        cap = CAP_MIB_S * MiB
        message = '%.1f MiB/s %s' % (rate / MiB, detail)
        self.assertGreater(rate, cap * 0.8, message)
        self.assertLess(rate, cap * 1.2, message)

    def test_backup_and_restore_at_the_cap(self):
        volume = self.make_volume(
            writes=('write -P 0x5a 0 %dM' % DATA_MIB,))
        path = self.driver.local_path(volume)
        digest = base.raw_digest(path)
        # (through the stream, not the hand-off: the service is wrapped)
        reads = Timed(self, raw_reader.RawImageReader, 'fill', _disk_read,
                      charged_before=False)
        commits = []
        real_commit = qemu_img.commit

        def commit(overlay, rate=None):
            commits.append(rate)
            return real_commit(overlay, rate=rate)

        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.kvm.qemu_img.commit', commit))
        started = time.monotonic()
        backup = self.capped_backup(volume)
        took = time.monotonic() - started
        self.assertEqual((digest, units.Gi), self.service.digests[backup.id])
        self.assertEqual(DATA_MIB * MiB, reads.moved())
        self.assertNearCap(reads.rate())
        self.assertGreater(took, (DATA_MIB - 1.6) / CAP_MIB_S)
        # the merge after it was capped too (offline: qemu-img commit -r)
        self.assertEqual([CAP_MIB_S * MiB], commits)
        self.assertStandalone(volume)

        writes = Timed(self, throttle._ThrottledWriter, 'write',
                       _data_written, charged_before=True)
        target = self.make_volume()
        self.restore(backup, target, volume_is_new=True)
        self.assertEqual(digest, base.raw_digest(
            self.driver.local_path(target)))
        # whole writes are charged: one may hold the data's end and zeros
        self.assertGreaterEqual(writes.moved(), DATA_MIB * MiB)
        self.assertLessEqual(writes.moved(), (DATA_MIB + 16) * MiB)
        self.assertNearCap(writes.rate(), writes.calls)
        self.assertNoLeftovers()

    def test_qemu_img_commit_rate(self):
        directory = self.useFixture(fixtures.TempDir()).path

        def overlay_of(name):
            backing = os.path.join(directory, name + '-base.qcow2')
            overlay = os.path.join(directory, name + '.qcow2')
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2',
                            backing, '1G'], check=True)
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F',
                            'qcow2', '-b', backing, overlay], check=True)
            base.qemu_io(overlay, 'write -P 0x77 0 %dM' % DATA_MIB)
            return backing, overlay

        def timed_commit(overlay, rate):
            started = time.monotonic()
            qemu_img.commit(overlay, rate=rate)
            return time.monotonic() - started

        # What qemu-img costs besides copying at the cap: starting, and
        # copying without one.
        _backing, free = overlay_of('free')
        overhead = timed_commit(free, None)
        backing, capped = overlay_of('capped')
        took = timed_commit(capped, CAP_MIB_S * MiB)
        self.assertNearCap(DATA_MIB * MiB / (took - overhead))
        self.assertEqual(base.raw_digest(capped), base.raw_digest(backing))
