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

"""Domains that see the volumes at Nova's NFS mount point, real libvirt.

With ``qcow2_connection_type = nfs`` Nova attaches a volume as
``<nfs_mount_point_base>/<md5 of the export>/<file>``. Here the export's
mount is stood in for by a real bind mount of the volumes directory at
that path (this kernel has no NFS client); the writing TCG guest
(:mod:`tests.functional.kvm.guest`) runs a persistent domain, as Nova's
are, whose disks are the mount-point paths. A mount point does not
resolve to the local directory: without the driver's path map it finds no
domain using its volumes (checked below).
"""

import os
import signal
import subprocess  # nosec B404: test mounts and images
import sys
import textwrap
import time
from unittest import mock
import uuid

from cinder import exception

from cinder_vmdk_backup.kvm import bitmaps
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import paths
from cinder_vmdk_backup.kvm import qemu_img
from tests.functional.kvm import base
from tests.functional.kvm import guest
from tests.functional.kvm import test_incremental

MIB = 1024 * 1024


class NfsViewTestCase(test_incremental._ChainMixin,
                      base.Qcow2FunctionalTestCase):

    libvirt_uri = guest.LibvirtFixture.URI

    def setUp(self):
        self.libvirt = guest.LibvirtFixture()
        # libvirtd before the driver's set-up (it connects to it).
        self.libvirt.setUp()
        super().setUp()
        self._bind_mount()
        # Registered after the mount's: the domains go first.
        self.addCleanup(self.libvirt.cleanUp)
        self.make_guest_volumes()
        self.seen = [os.path.join(self.mount_dir, v.name)
                     for v in self.volumes]
        self.domain = self.libvirt.start_guest(self.seen, kvm=False,
                                               persistent=True)
        deadline = time.monotonic() + 120
        while max(guest.records(base.read_head(self.paths[0]))) == 0:
            if time.monotonic() > deadline:
                self.fail('the guest wrote nothing in 120 s')
            time.sleep(0.5)

    # -- set-up ---------------------------------------------------------------

    def _nfs_settings(self):
        root = os.path.dirname(self.volume_dir)
        return {'qcow2_connection_type': 'nfs',
                'qcow2_nfs_export': '127.0.0.1:%s' % self.volume_dir,
                'qcow2_nfs_mount_point_base': os.path.join(root, 'nova-mnt')}

    def make_driver(self, **overrides):
        settings = self._nfs_settings()
        settings.update(overrides)
        return super().make_driver(**settings)

    def _bind_mount(self):
        settings = self._nfs_settings()
        self.mount_dir = paths.nova_mount_point(
            settings['qcow2_nfs_mount_point_base'],
            settings['qcow2_nfs_export'])
        os.makedirs(self.mount_dir)
        subprocess.run(['mount', '--bind', self.volume_dir,  # nosec B603
                        self.mount_dir], check=True)
        self.mounted = True
        self.addCleanup(self._umount)
        # (os.path.ismount cannot tell a bind mount on the same
        # filesystem.)
        with open('/proc/self/mountinfo') as f:
            points = [line.split()[4] for line in f]
        self.assertIn(self.mount_dir, points)

    def _umount(self):
        if not self.mounted:
            return
        if subprocess.run(['umount', self.mount_dir]).returncode:  # nosec
            subprocess.run(['umount', '-l', self.mount_dir],  # nosec B603
                           check=True)
        self.mounted = False

    # -- helpers --------------------------------------------------------------

    def _seen_chains(self, inactive=False):
        flags = domains.libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return [chain for _t, chain in
                domains.seen_chains(self.domain.XMLDesc(flags))]

    def _group_backup(self, parents=None):
        backups = [self.make_backup(v, p) for v, p in
                   zip(self.volumes, parents or [None, None])]
        results = self.driver.backup_volumes(
            self.ctxt, [(b, self.service, self.device(v))
                        for b, v in zip(backups, self.volumes)])
        for backup in backups:
            self.assertNotIsInstance(results[backup.id], Exception)
            backup.refresh()
            backup.status = 'available'
            backup.save()
        return backups

    def _counters(self):
        return [guest.consistent_run(guest.records(base.read_head(p)))
                for p in self.paths]

    def _kill_during_freeze(self):
        """Freeze both volumes online in a process killed -9 meanwhile."""
        script = textwrap.dedent('''
            import os, signal, sys
            from cinder_vmdk_backup.kvm import domains, freezer, paths
            conn = domains.connect(sys.argv[1])
            path_map = paths.PathMap(sys.argv[2], sys.argv[3])
            frozen = freezer.freeze_all(sys.argv[4:], conn,
                                        path_map=path_map)
            assert all(f.online for f in frozen.values()), frozen
            os.kill(os.getpid(), signal.SIGKILL)
            ''')
        proc = subprocess.run([sys.executable, '-c', script,  # nosec B603
                               self.libvirt_uri, self.volume_dir,
                               self.mount_dir] + self.paths)
        self.assertEqual(-signal.SIGKILL, proc.returncode)
        chains = self._seen_chains()
        self.assertEqual([2, 2], [len(c) for c in chains])
        # libvirt made the overlays at the mount point, beside the disks.
        for chain, seen in zip(chains, self.seen):
            self.assertEqual(seen, chain[1])
            self.assertEqual(self.mount_dir, os.path.dirname(chain[0]))
        return self._counters()

    # -- tests ----------------------------------------------------------------

    def test_without_the_map_no_domain_uses_the_volumes(self):
        # What makes the others meaningful: the mount point is a real
        # mount, not a path that resolves to the local one.
        conn = self.libvirt.conn
        self.assertNotEqual(self.paths[0], os.path.realpath(self.seen[0]))
        self.assertEqual({}, domains.users(conn, self.paths))
        found = domains.users(conn, self.paths,
                              path_map=self.driver._path_map)
        self.assertEqual(sorted(self.paths), sorted(found))
        self.assertEqual(['sda', 'sdb'],
                         [found[p][0].target for p in self.paths])

    def test_online_full_and_incremental_restored_byte_for_byte(self):
        snapshot = domains.snapshot_disks
        with mock.patch.object(domains, 'snapshot_disks', autospec=True,
                               side_effect=snapshot) as spy:
            chain = [self._group_backup()]
            for _ in range(2):
                time.sleep(1.5)   # a few dozen records
                chain.append(self._group_backup(parents=chain[-1]))
        # One atomic snapshot of both disks a backup; the overlays named
        # at the mount point, as the domain sees its disks.
        self.assertEqual(3, spy.call_count)
        for call in spy.call_args_list:
            overlays = call[0][1]
            self.assertEqual(['sda', 'sdb'], sorted(overlays))
            for target, seen in zip(('sda', 'sdb'), self.seen):
                self.assertTrue(overlays[target].startswith(seen + '.cvb-'),
                                overlays)
        # Merged: the domain runs on the volumes at the mount point again.
        self.assertEqual([[s] for s in self.seen], self._seen_chains())
        self.assertNoLeftovers()

        self.assertChainOfCuts(chain)
        # The bitmaps were made, and the oldest pruned, on the domain's
        # nodes of the mount-point paths (qcow2_dirty_bitmaps_kept = 2).
        for i, seen in enumerate(self.seen):
            self.assertEqual(
                sorted(bitmaps.name_for(b[i].id) for b in chain[1:]),
                sorted(b['name'] for b in domains.node_bitmaps(
                    self.domain, seen)))
        self.assertNotIn('Could not', self.log.output)

    def test_restore_refused_while_running_done_when_shut_off(self):
        backup = self.backup(self.volumes[1])
        self.assertEqual(('running', 'libvirt domain %s'
                          % self.domain.name()),
                         self.driver.instance_power_state(
                             self.ctxt, str(uuid.uuid4()), self.volumes))
        exc = self.assertRaises(exception.InvalidVolume, self.restore,
                                backup, self.volumes[1])
        self.assertIn(self.domain.name(), str(exc))
        self.assertIn('shut', str(exc))
        self.assertEqual([[s] for s in self.seen], self._seen_chains())

        self.domain.destroyFlags(
            domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        self.assertEqual('shutoff', self.driver.instance_power_state(
            self.ctxt, str(uuid.uuid4()), self.volumes)[0])
        base.qemu_io(self.paths[1], 'write -P 0x5e 300M 1M')
        self.restore(backup, self.volumes[1])
        copy = os.path.join(self.copies_dir, backup.id)
        self.assertTrue(base.same_guest_data(copy, self.paths[1]))
        # The defined domain's disk is still the volume, at the mount
        # point: it runs the restored data.
        self.assertEqual([[s] for s in self.seen],
                         self._seen_chains(inactive=True))
        self.assertNoLeftovers()
        self.domain.create()
        self.assertEqual([[s] for s in self.seen], self._seen_chains())
        self.assertRaises(exception.InvalidVolume, self.restore,
                          backup, self.volumes[1])

    def test_killed_online_freeze_is_merged_at_next_start(self):
        frozen_at = self._kill_during_freeze()
        self.assertIn(frozen_at[0] - frozen_at[1], (0, 1))

        driver = self.make_driver()
        self.assertEqual(2, len(driver.leftovers_report[0]),
                         driver.leftovers_report)
        self.assertEqual([], driver.leftovers_report[1])
        self.assertTrue(all('committed by domain' in line
                            for line in driver.leftovers_report[0]))
        self.assertEqual([[s] for s in self.seen], self._seen_chains())
        self.assertNoLeftovers()
        time.sleep(0.3)
        self.domain.destroyFlags(
            domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        final = self._counters()
        self.assertGreater(final[1], frozen_at[0])
        self.assertIn(final[0] - final[1], (0, 1))

    def test_killed_freeze_of_a_domain_shut_off_and_unmounted(self):
        # The freeze is killed, the server stopped and its volumes
        # detached (Nova unmounts the export): the next start merges the
        # overlays although their backing path is gone, and points the
        # defined domain back at the volumes at the mount point.
        frozen_at = self._kill_during_freeze()
        time.sleep(0.3)
        self.domain.destroyFlags(
            domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        defined = self._seen_chains(inactive=True)
        self.assertEqual([self.mount_dir] * 2,
                         [os.path.dirname(c[0]) for c in defined])
        self.assertNotEqual([[s] for s in self.seen], defined)
        self._umount()

        driver = self.make_driver()
        report = driver.leftovers_report
        self.assertEqual([], report[1])
        self.assertEqual(2, len(report[0]), report)
        self.assertTrue(all('pointed back' in line for line in report[0]),
                        report)
        self.assertNoLeftovers()
        for volume in self.volumes:
            self.assertStandalone(volume)
        self.assertEqual([[s] for s in self.seen],
                         self._seen_chains(inactive=True))
        # The overlays' writes (after the freeze) are in the volumes.
        final = self._counters()
        self.assertGreater(final[1], frozen_at[0])
        self.assertIn(final[0] - final[1], (0, 1))

    def test_extend_online_and_delete_refused_at_the_mount_point(self):
        # Grown through the domain (blockResize), not behind its back.
        self.driver.extend_volume(self.volumes[1], 2)
        self.assertEqual(2 * 1024 * MIB,
                         self.domain.blockInfo('sdb')[0])
        self.assertEqual(2 * 1024 * MIB,
                         qemu_img.virtual_size(self.paths[1]))
        exc = self.assertRaises(exception.InvalidVolume,
                                self.driver.delete_volume, self.volumes[1])
        self.assertIn(self.domain.name(), str(exc))
        self.assertTrue(os.path.exists(self.paths[1]))
        self.assertEqual([[s] for s in self.seen], self._seen_chains())
