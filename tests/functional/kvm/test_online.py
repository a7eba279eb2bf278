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

"""The qcow2 driver with a real libvirt domain whose guest keeps writing.

The guest (:mod:`tests.functional.kvm.guest`) runs under TCG and writes a
counter to both of its disks, one record after the other, while the
driver backs them up online.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from unittest import mock

from cinder import exception

from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.volume.drivers import qcow2
from tests.functional.kvm import base
from tests.functional.kvm import guest


class OnlineBackupTestCase(base.Qcow2FunctionalTestCase):

    libvirt_uri = guest.LibvirtFixture.URI

    def setUp(self):
        self.libvirt = guest.LibvirtFixture()
        # libvirtd before the driver's set-up (it connects to it).
        self.libvirt.setUp()
        super().setUp()
        self.addCleanup(self.libvirt.cleanUp)
        boot = os.path.join(self.volume_dir, 'boot.bin')
        with open(boot, 'wb') as f:
            f.write(guest.boot_sector(disks=2, paced=True))
        self.volumes = [self.make_volume(writes=['write -s %s 0 512' % boot]),
                        self.make_volume()]
        os.unlink(boot)
        self.paths = [self.driver.local_path(v) for v in self.volumes]
        self.domain = self.libvirt.start_guest(self.paths, kvm=False)
        self._wait_for_first_record()
        self._wait_for_writes()

    def _wait_for_first_record(self, timeout=120):
        # A TCG guest on a busy machine may take longer than a fixed wait
        # to boot. Its first records land in disk 0's first cluster,
        # which the boot sector's write allocated: readable from outside
        # without a flush.
        deadline = time.monotonic() + timeout
        while max(guest.records(base.read_head(self.paths[0]))) == 0:
            if time.monotonic() > deadline:
                self.fail('the guest wrote nothing in %d s' % timeout)
            time.sleep(0.5)

    def _wait_for_writes(self, seconds=2.0):
        # A running QEMU keeps qcow2 metadata in its cache: the files are
        # only read from outside once it has flushed (a snapshot does, a
        # graceful shut-down does).
        time.sleep(seconds)

    def _chains(self):
        return [chain for _target, chain in
                domains.disk_chains(self.domain.XMLDesc(0))]

    def _counters_after_shutdown(self):
        self.domain.destroyFlags(
            domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        return [guest.consistent_run(guest.records(base.read_head(p)))
                for p in self.paths]

    def _backup_counter(self, backup):
        return guest.consistent_run(guest.records(
            self.service.heads[backup.id]))

    def test_online_backup_is_point_in_time_and_guest_writes_survive(self):
        backups = [self.make_backup(v) for v in self.volumes]
        results = self.driver.backup_volumes(
            self.ctxt, [(b, self.service, self.device(v))
                        for b, v in zip(backups, self.volumes)])
        for backup in backups:
            self.assertNotIsInstance(results[backup.id], Exception)
        # Merged: the domain runs on the volumes again, nothing left.
        self.assertEqual([[p] for p in self.paths], self._chains())
        self.assertNoLeftovers()

        # Restore each backup into a new volume: byte for byte what was
        # read, and a point-in-time image of both disks at once.
        counters = []
        for backup in backups:
            backup.refresh()
            target = self.make_volume()
            self.restore(backup, target, volume_is_new=True)
            path = self.driver.local_path(target)
            self.assertEqual(self.service.digests[backup.id][0],
                             base.raw_digest(path))
            counters.append(guest.consistent_run(
                guest.records(base.read_head(path))))
        self.assertGreater(counters[0], 0)
        # The guest writes disk 0, then disk 1: one atomic snapshot of
        # both disks has disk 0 at most one record ahead.
        self.assertIn(counters[0] - counters[1], (0, 1))

        # Restoring into a volume a running domain uses is refused.
        exc = self.assertRaises(exception.InvalidVolume, self.restore,
                                backups[0], self.volumes[0])
        self.assertIn(self.domain.name(), str(exc))
        self.assertIn('shut', str(exc))
        self.assertEqual([[p] for p in self.paths], self._chains())

        # The guest's writes during and after the backup are all there.
        time.sleep(0.5)
        final = self._counters_after_shutdown()
        self.assertGreater(final[1], counters[0])
        self.assertIn(final[0] - final[1], (0, 1))

    def test_failing_merge_keeps_the_guest_running_then_start_merges(self):
        backup = self.make_backup(self.volumes[1])
        with mock.patch.object(domains.libvirt.virDomain, 'blockCommit',
                               autospec=True,
                               side_effect=domains.libvirt.libvirtError(
                                   'injected block commit failure')):
            exc = self.assertRaises(
                qcow2.Qcow2DriverError, self.driver.backup_volume, self.ctxt,
                backup, self.service, self.device(self.volumes[1]))
        self.assertIn('keeps running on that overlay', str(exc))
        chains = self._chains()
        self.assertEqual(2, len(chains[1]))      # overlay, then volume
        self.assertEqual(1, len(self.transient_files()))
        at_backup = self._backup_counter(backup)
        self.assertGreater(at_backup, 0)
        time.sleep(0.5)
        driver = self.make_driver()             # the next start merges
        self.assertEqual(1, len(driver.leftovers_report[0]),
                         driver.leftovers_report)
        self.assertEqual([[p] for p in self.paths], self._chains())
        self.assertNoLeftovers()
        time.sleep(0.3)
        self.assertGreater(self._counters_after_shutdown()[1], at_backup)

    def test_killed_online_backup_is_merged_at_next_start(self):
        script = textwrap.dedent('''
            import os, signal, sys
            from cinder_vmdk_backup.kvm import domains, freezer
            conn = domains.connect(sys.argv[1])
            frozen = freezer.freeze_all(sys.argv[2:], conn)
            assert all(f.online for f in frozen.values()), frozen
            os.kill(os.getpid(), signal.SIGKILL)
            ''')
        proc = subprocess.run([sys.executable, '-c', script,
                               self.libvirt_uri] + self.paths)
        self.assertEqual(-signal.SIGKILL, proc.returncode)
        self.assertEqual([2, 2], [len(c) for c in self._chains()])
        # The frozen volumes were flushed by the snapshot.
        frozen_at = [guest.consistent_run(guest.records(base.read_head(p)))
                     for p in self.paths]
        self.assertIn(frozen_at[0] - frozen_at[1], (0, 1))

        driver = self.make_driver()
        self.assertEqual(2, len(driver.leftovers_report[0]),
                         driver.leftovers_report)
        self.assertEqual([[p] for p in self.paths], self._chains())
        self.assertNoLeftovers()
        time.sleep(0.3)
        final = self._counters_after_shutdown()
        self.assertGreater(final[1], frozen_at[0])
        self.assertIn(final[0] - final[1], (0, 1))
