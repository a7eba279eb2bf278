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

"""Chains of incremental backups that read only what changed.

Real qemu-img, qemu-nbd and (online) libvirt with the writing TCG guest;
Cinder's real posix backup driver stores the chain through the extent
hand-off. At each backup the test keeps a raw copy of the frozen image
(what the backup must hold); each backup of the chain is then restored
into a new volume and compared with its copy byte for byte.
"""

import contextlib
import logging
import os
import resource
import subprocess  # nosec B404: test images
import time

import fixtures
from oslo_utils import units
from testtools import content

from cinder.backup.drivers import posix
from cinder.objects import fields

from cinder_vmdk_backup.kvm import bitmaps
from cinder_vmdk_backup.kvm import domains
from tests.functional.kvm import base
from tests.functional.kvm import guest

MIB = units.Mi
WHOLE = 'reads the whole volume'


def _no_core_dump():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class _ChainMixin(object):
    """Frozen copies, bytes read, restores compared with the copies."""

    def setUp(self):
        super().setUp()
        # The hand-off writes into Cinder's chunked drivers themselves:
        # the real posix driver, not a wrapper of it.
        self.service = posix.PosixBackupDriver(self.ctxt)
        self.copies_dir = os.path.join(self.volume_dir, '..', 'copies')
        os.makedirs(self.copies_dir)
        self.sources = {}
        self.fail_reading = False
        self.log = self.useFixture(fixtures.FakeLogger(
            name='cinder_vmdk_backup', level=logging.INFO))
        self._spy_on(self.driver)

    def make_driver(self, **overrides):
        driver = super().make_driver(**overrides)
        if hasattr(self, 'sources'):
            self._spy_on(driver)
        return driver

    def _spy_on(self, driver):
        """Copy each backup's frozen image while it is frozen."""
        opened = driver.open_backup_source

        @contextlib.contextmanager
        def spying(context, backup, device):
            with opened(context, backup, device) as source:
                if self.fail_reading:
                    raise RuntimeError('injected failure')
                copy = os.path.join(self.copies_dir, backup.id)
                subprocess.run(['qemu-img', 'convert', '-U',  # nosec B603
                                '-O', 'raw', source.path, copy], check=True)
                self.sources[backup.id] = source
                yield source
        driver.open_backup_source = spying

    def backup(self, volume, parent=None):
        backup = super().backup(volume, parent)
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        return backup

    def bytes_read(self, backup):
        return self.sources[backup.id].bytes_read_from_disk

    def make_guest_volumes(self):
        """Two volumes, the first holding the guest writing to both.

        Sets ``volumes`` and their local ``paths``.
        """
        boot = os.path.join(self.volume_dir, 'boot.bin')
        with open(boot, 'wb') as f:
            f.write(guest.boot_sector(disks=2, paced=True))
        self.volumes = [
            self.make_volume(writes=['write -s %s 0 512' % boot,
                                     'write -P 0x11 10M 4M']),
            self.make_volume(writes=['write -P 0x22 200M 4M'])]
        os.unlink(boot)
        self.paths = [self.driver.local_path(v) for v in self.volumes]

    def assertChainOfCuts(self, chain, most_read=2 * MIB):
        """Each set of ``chain`` restores as one cut, later than the last.

        ``chain``: sets of group backups of two disks of a writing guest.
        The incrementals read only what the parent's bitmap marked
        (``most_read`` bytes at most).
        """
        newest = [0, 0]
        for backups in chain:
            counters = []
            for backup in backups:
                restored = self.assertRestoresToItsCopy(backup)
                counters.append(guest.consistent_run(
                    guest.records(base.read_head(restored))))
            # Disk 0 is written first: it may be one record ahead.
            self.assertIn(counters[0] - counters[1], (0, 1))
            self.assertGreater(counters[0], newest[0])
            newest = counters
        for backups in chain[1:]:
            for backup in backups:
                self.assertEqual([], self.whole_reads(backup))
                self.assertLessEqual(self.bytes_read(backup), most_read)

    def assertRestoresToItsCopy(self, backup, size=1):
        target = self.make_volume(size=size)
        self.restore(backup, target, volume_is_new=True)
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        path = self.driver.local_path(target)
        copy = os.path.join(self.copies_dir, backup.id)
        self.assertTrue(base.same_guest_data(copy, path),
                        'backup %s does not restore to its frozen image'
                        % backup.id)
        return path

    def sha256s(self, backup):
        return self.service._read_sha256file(backup)['sha256s']

    def whole_reads(self, backup):
        return [line for line in self.log.output.splitlines()
                if backup.id in line and WHOLE in line]


class OfflineChainTestCase(_ChainMixin, base.Qcow2FunctionalTestCase):
    """No domain: the freeze is qemu-img's, so is the merge."""

    def test_full_then_incrementals_read_what_changed(self):
        volume = self.make_volume(writes=[
            'write -P 0x11 0 4M', 'write -P 0x22 100M 8M',
            'write -P 0x33 1020M 4M'])
        path = self.driver.local_path(volume)
        full = self.backup(volume)
        # Data, data turned to zeros, data in a hole.
        base.qemu_io(path, 'write -P 0x44 2M 64k', 'write -z 100M 1M',
                     'write -P 0x55 500M 1M')
        incr1 = self.backup(volume, full)
        base.qemu_io(path, 'write -P 0x66 0 512', 'discard 1020M 4M',
                     'write -P 0x77 700M 4k')
        incr2 = self.backup(volume, incr1)

        for backup in (full, incr1, incr2):
            self.assertRestoresToItsCopy(backup)
        self.assertEqual([], self.whole_reads(incr1) + self.whole_reads(
            incr2))
        # The full reads the allocated data only (16 MiB); the
        # incrementals the blocks the bitmap marks, not the volume.
        self.assertLessEqual(self.bytes_read(full), 16 * MIB)
        self.assertLessEqual(self.bytes_read(incr1), 4 * MIB)
        self.assertLessEqual(self.bytes_read(incr2), 3 * MIB)
        self.addDetail('bytes-read', content.text_content(
            'full %d, incr1 %d, incr2 %d of %d' % (
                self.bytes_read(full), self.bytes_read(incr1),
                self.bytes_read(incr2), units.Gi)))
        # The newest two backups keep their bitmaps, no more.
        self.assertEqual(sorted([bitmaps.name_for(incr1.id),
                                 bitmaps.name_for(incr2.id)]),
                         sorted(bitmaps.list_ours(path)))
        self.assertNoLeftovers()
        self.assertStandalone(volume)

    def test_failed_backup_leaves_no_bitmap(self):
        volume = self.make_volume(writes=['write -P 0x11 0 4M'])
        path = self.driver.local_path(volume)
        full = self.backup(volume)
        self.fail_reading = True
        failed = self.make_backup(volume, full)
        self.assertRaises(RuntimeError, self.driver.backup_volume,
                          self.ctxt, failed, self.service,
                          backup_device=self.device(volume))
        self.assertEqual([bitmaps.name_for(full.id)],
                         bitmaps.list_ours(path))
        self.assertNoLeftovers()
        self.assertStandalone(volume)
        # The next incremental still reads only what changed.
        self.fail_reading = False
        base.qemu_io(path, 'write -P 0x22 64k 64k')
        incr = self.backup(volume, full)
        self.assertEqual([], self.whole_reads(incr))
        self.assertEqual(MIB, self.bytes_read(incr))
        self.assertRestoresToItsCopy(incr)

    def test_restore_in_place_then_incremental_reads_everything(self):
        volume = self.make_volume(writes=['write -P 0x11 0 4M',
                                          'write -P 0x22 300M 4M'])
        path = self.driver.local_path(volume)
        full = self.backup(volume)
        base.qemu_io(path, 'write -P 0x33 300M 1M')
        self.restore(full, volume)
        full.status = fields.BackupStatus.AVAILABLE
        full.save()
        # The restored image carries no bitmap: the next incremental
        # cannot know what changed since, and reads everything.
        self.assertEqual([], bitmaps.list_ours(path))
        incr = self.backup(volume, full)
        lines = self.whole_reads(incr)
        self.assertEqual(1, len(lines), self.log.output)
        self.assertIn('no dirty bitmap of the parent backup %s' % full.id,
                      lines[0])
        self.assertGreaterEqual(self.bytes_read(incr), 8 * MIB)
        self.assertRestoresToItsCopy(incr)
        self.assertEqual(self.sha256s(full), self.sha256s(incr))
        # And the one after that reads only what changed again.
        base.qemu_io(path, 'write -P 0x44 0 64k')
        incr2 = self.backup(volume, incr)
        self.assertEqual([], self.whole_reads(incr2))
        self.assertLessEqual(self.bytes_read(incr2), 1 * MIB)
        self.assertRestoresToItsCopy(incr2)

    def test_extended_volume_reads_everything(self):
        volume = self.make_volume(writes=['write -P 0x11 0 4M'])
        full = self.backup(volume)
        self.driver.extend_volume(volume, 2)
        volume.size = 2
        volume.save()
        base.qemu_io(self.driver.local_path(volume),
                     'write -P 0x22 1500M 1M')
        incr = self.backup(volume, full)
        lines = self.whole_reads(incr)
        self.assertEqual(1, len(lines), self.log.output)
        self.assertIn('size changed since the parent backup', lines[0])
        self.assertRestoresToItsCopy(incr, size=2)

    def test_bitmap_incremental_equals_a_full_read_incremental(self):
        volume = self.make_volume(writes=['write -P 0x11 0 6M',
                                          'write -P 0x22 600M 3M'])
        path = self.driver.local_path(volume)
        full = self.backup(volume)
        base.qemu_io(path, 'write -P 0x33 1M 100k', 'write -z 600M 1M',
                     'write -P 0x44 900M 2M')
        by_bitmap = self.backup(volume, full)
        self.assertEqual([], self.whole_reads(by_bitmap))
        # The same data, the same parent, everything read.
        self.override_config('qcow2_dirty_bitmaps', False,
                             group=base.BACKEND)
        by_reading = self.backup(volume, full)
        self.assertEqual(1, len(self.whole_reads(by_reading)))
        self.assertEqual(self.sha256s(by_reading), self.sha256s(by_bitmap))
        self.assertLess(self.bytes_read(by_bitmap),
                        self.bytes_read(by_reading) / 2)
        for backup in (by_bitmap, by_reading):
            self.assertRestoresToItsCopy(backup)
        # Bitmaps off: the driver keeps none of ours.
        self.assertEqual([], bitmaps.list_ours(path))
        # Back on: a parent made without one (before this feature, or
        # another way) means reading everything.
        self.override_config('qcow2_dirty_bitmaps', True,
                             group=base.BACKEND)
        after = self.backup(volume, by_reading)
        lines = self.whole_reads(after)
        self.assertEqual(1, len(lines), self.log.output)
        self.assertIn('no dirty bitmap of the parent backup', lines[0])
        self.assertEqual(self.sha256s(by_reading), self.sha256s(after))

    def test_bitmap_left_inconsistent_means_reading_everything(self):
        volume = self.make_volume(writes=['write -P 0x11 0 4M'])
        path = self.driver.local_path(volume)
        full = self.backup(volume)
        # A program that opened the image for writing and died never
        # stored the bitmap back: qcow2 marks it in use, inconsistent.
        crash = subprocess.run(  # nosec B603
            ['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x22 8M 64k',
             '-c', 'flush', '-c', 'abort', path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_no_core_dump)
        self.assertNotEqual(0, crash.returncode)
        incr = self.backup(volume, full)
        lines = self.whole_reads(incr)
        self.assertEqual(1, len(lines), self.log.output)
        self.assertIn('dirty bitmap %s' % bitmaps.name_for(full.id),
                      lines[0])
        self.assertIn('inconsistent', lines[0])
        self.assertGreaterEqual(self.bytes_read(incr), 4 * MIB)
        self.assertRestoresToItsCopy(incr)


class OnlineChainTestCase(_ChainMixin, base.Qcow2FunctionalTestCase):
    """A TCG guest writes both its disks while the chain is taken."""

    libvirt_uri = guest.LibvirtFixture.URI

    def setUp(self):
        self.libvirt = guest.LibvirtFixture()
        self.libvirt.setUp()
        super().setUp()
        self.addCleanup(self.libvirt.cleanUp)
        self.make_guest_volumes()
        self.domain = self.libvirt.start_guest(self.paths, kvm=False)
        deadline = time.monotonic() + 120
        while max(guest.records(base.read_head(self.paths[0]))) == 0:
            if time.monotonic() > deadline:
                self.fail('the guest wrote nothing in 120 s')
            time.sleep(0.5)

    def _group_backup(self, parents=None):
        backups = [self.make_backup(v, p) for v, p in
                   zip(self.volumes, parents or [None, None])]
        results = self.driver.backup_volumes(
            self.ctxt, [(b, self.service, self.device(v))
                        for b, v in zip(backups, self.volumes)])
        for backup in backups:
            self.assertNotIsInstance(results[backup.id], Exception)
            backup.refresh()
            backup.status = fields.BackupStatus.AVAILABLE
            backup.save()
        return backups

    def test_chain_while_the_guest_writes(self):
        chain = [self._group_backup()]
        for _ in range(2):
            time.sleep(1.5)   # a few dozen records
            chain.append(self._group_backup(parents=chain[-1]))
        self.assertEqual([[p] for p in self.paths],
                         [c for _t, c in
                          domains.disk_chains(self.domain.XMLDesc(0))])

        self.assertChainOfCuts(chain)
        self.addDetail('bytes-read', content.text_content(
            ', '.join('%d' % self.bytes_read(b)
                      for backups in chain for b in backups)))
        self.assertNoLeftovers()
