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

"""An instance's volumes backed up from one point in time (real libvirt).

The qcow2 driver comes from the plugin's BackupManager (built from this
node's cinder.conf, as cinder-backup builds it); Cinder's posix backup
driver stores the data and Cinder's manager restores it. The guest
(:mod:`tests.functional.kvm.guest`) runs under TCG and writes numbered
records to its two disks in turn, so that a restored pair of disks shows
whether both were cut at the same moment.
"""

import logging
import os
import statistics
import subprocess  # nosec B404: makes test images
import sys
import textwrap
import time
import uuid

import eventlet.patcher
import fixtures
from oslo_utils import units
import testtools.content

from cinder.backup.drivers import posix  # noqa: F401 (its options)
from cinder import context
from cinder import exception
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import volume_utils

from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import qemu_img
from tests.functional.kvm import base
from tests.functional.kvm import guest

CONF = manager.CONF
HOST = 'node1@qcow2#qcow2'
#: Sectors in the guest's ring: the unpaced guest writes up to about 2000
#: records a second here, so this keeps a minute of them.
RING = 131072
_threading = eventlet.patcher.original('threading')


class GroupBackupTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.libvirt = self.useFixture(guest.LibvirtFixture())
        root = self.useFixture(fixtures.TempDir()).path
        self.volume_dir = os.path.join(root, 'volumes')
        posix_dir = os.path.join(root, 'posix')
        os.makedirs(self.volume_dir)
        os.makedirs(posix_dir)
        conf_path = os.path.join(root, 'cinder.conf')
        with open(conf_path, 'w') as conf:
            conf.write('[qcow2]\nvolume_driver = cinder_vmdk_backup.volume.'
                       'drivers.qcow2.Qcow2VolumeDriver\n'
                       'qcow2_volumes_dir = %s\nqcow2_libvirt_uri = %s\n'
                       'qcow2_block_commit_timeout = 60\n'
                       % (self.volume_dir, guest.LibvirtFixture.URI))
        CONF([], default_config_files=[conf_path])
        self.override_config('backup_driver',
                             'cinder.backup.drivers.posix.PosixBackupDriver')
        self.override_config('backup_posix_path', posix_dir)
        self.override_config('backup_compression_algorithm', 'zstd')
        self.override_config('backup_file_size', 64 * units.Mi)
        self.override_config('backup_enable_progress_timer', False)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.manager = manager.BackupManager(host='backup-node')
        self.service = self.manager.service(self.ctxt)
        # The volume service is not running: its RPC methods are the
        # boundary the test plays (tests/functional/kvm/test_manager.py).
        rpcapi = self.manager.volume_rpcapi
        for name in ('get_backup_device', 'terminate_connection',
                     'remove_export', 'delete_volume'):
            self.useFixture(fixtures.MockPatchObject(rpcapi, name,
                                                     autospec=True))
        self.useFixture(fixtures.MockPatchObject(
            rpcapi, 'secure_file_operations_enabled', autospec=True,
            return_value=True))
        # os-brick's host probing runs privileged commands (privsep).
        self.useFixture(fixtures.MockPatchObject(
            volume_utils, 'brick_get_connector_properties', autospec=True,
            return_value={'host': 'backup-node'}))
        self.log = self.useFixture(fixtures.FakeLogger(
            name='cinder_vmdk_backup', level=logging.INFO))

    # -- helpers --------------------------------------------------------------

    def _volume(self, status='available'):
        volume = test_utils.create_volume(self.ctxt, host=HOST, size=1,
                                          status=status)
        qemu_img.create(self._path(volume), units.Gi)
        return volume

    def _path(self, volume):
        return os.path.join(self.volume_dir, volume.name)

    def _driver(self, volume):
        driver = self.manager._driver_for(volume)
        self.assertIsNotNone(driver, 'the manager loaded no qcow2 driver')
        return driver

    def _guest(self, volumes, paced=True, ring=2048, **kwargs):
        """Boot the writing guest on the volumes; wait for its records."""
        boot = os.path.join(self.volume_dir, 'boot.bin')
        with open(boot, 'wb') as f:
            f.write(guest.boot_sector(disks=len(volumes), paced=paced,
                                      ring=ring))
        paths = [self._path(v) for v in volumes]
        base.qemu_io(paths[0], 'write -s %s 0 512' % boot)
        os.unlink(boot)
        domain = self.libvirt.start_guest(paths, kvm=False, **kwargs)
        deadline = time.monotonic() + 120
        while max(guest.records(base.read_head(paths[0]))) == 0:
            if time.monotonic() > deadline:
                self.fail('the guest wrote nothing in 120 s')
            time.sleep(0.5)
        time.sleep(1.0)
        return domain

    def _backups(self, volumes):
        out = []
        for volume in volumes:
            backup = test_utils.create_backup(
                self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
                size=volume.size)
            backup.service = self.manager.driver_name
            backup.save()
            out.append(backup)
        return out

    def _restore_new(self, backup):
        """Restore through Cinder's manager into a new volume; its path."""
        target = self._volume(status='creating')
        backup.status = fields.BackupStatus.RESTORING
        backup.restore_volume_id = target.id
        backup.save()
        self.manager.restore_backup(self.ctxt, backup, target.id, True)
        backup.refresh()
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        return self._path(target)

    def _chains(self, domain):
        return [chain for _t, chain in domains.disk_chains(domain.XMLDesc(0))]

    def _transient_files(self):
        return sorted(n for n in os.listdir(self.volume_dir)
                      if naming.parse(n))

    def _poll_states(self, domain):
        """Record the domain's states from another connection, OS thread.

        :returns: ``(stop(), states seen)``
        """
        import libvirt
        conn = libvirt.open(guest.LibvirtFixture.URI)
        watched = conn.lookupByUUIDString(domain.UUIDString())
        seen = []
        done = _threading.Event()

        def poll():
            while not done.is_set():
                state = watched.state()[0]
                if not seen or seen[-1] != state:
                    seen.append(state)
                time.sleep(0.001)
        thread = _threading.Thread(target=poll)
        thread.start()

        def stop():
            done.set()
            thread.join()
            conn.close()
        return stop, seen

    # -- tests ----------------------------------------------------------------

    def test_group_backup_is_one_cut_of_both_disks(self):
        volumes = [self._volume(), self._volume()]
        paths = [self._path(v) for v in volumes]
        # Unpaced: the guest writes as fast as it can, so that its own
        # records time the pause. It has an agent channel nobody answers.
        domain = self._guest(volumes, paced=False, ring=RING,
                             agent_channel=True)
        driver = self._driver(volumes[0])
        backups = self._backups(volumes)
        facts = {}
        stop, states = self._poll_states(domain)
        try:
            results = driver.backup_volumes(
                self.ctxt, [(b, self.service, None) for b in backups],
                all_or_nothing=True, facts=facts)
        finally:
            stop()
        # Stop the guest now: its ring still holds the records around the
        # cut (graceful: QEMU flushes its qcow2 caches).
        domain.destroyFlags(domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        for backup in backups:
            self.assertNotIsInstance(results[backup.id], Exception)
        self.assertEqual('crash-consistent', facts['consistency'])
        self.assertIn('no guest agent is connected', self.log.output)
        self.assertGreater(facts['pause_ms'], 0.0)
        self.assertLess(facts['pause_ms'], 30000.0)
        self.assertIsNotNone(facts['frozen_at'].tzinfo)
        # Libvirt never stopped the vCPUs for the disk-only snapshot.
        self.assertEqual([domains.libvirt.VIR_DOMAIN_RUNNING], states)
        self.assertEqual([], self._transient_files())

        # Both backups restored into new volumes through Cinder's manager:
        # ONE cut. The guest writes record N to disk A, then to disk B,
        # then N+1 to A: B is never ahead of A, A at most one ahead of B.
        restored = [self._restore_new(b) for b in backups]
        cut = [guest.consistent_run(guest.records(
            base.read_head(p, (RING + 1) * guest.SECTOR), ring=RING))
            for p in restored]
        self.assertGreater(cut[1], 0)
        self.assertIn(cut[0] - cut[1], (0, 1), cut)

        # The guest's own clock across the cut: the extra time its
        # records took there is the pause it saw.
        stall = self._guest_stall_ms(paths[0], cut[0])
        self.addDetail('pause', testtools.content.text_content(
            'snapshot call (pause_ms) %.1f ms; guest-seen stall %s ms; '
            'cut %s' % (facts['pause_ms'], stall, cut)))
        sys.__stderr__.write('\nPAUSE snapshot call %.1f ms, guest-seen '
                             'stall %s ms, cut %s\n'
                             % (facts['pause_ms'], stall, cut))
        if stall is not None:
            self.assertLessEqual(stall, facts['pause_ms'] + 50.0)

    def _guest_stall_ms(self, path, cut, around=8):
        """The guest's extra time per record near the cut, summed (ms)."""
        mhz = guest.tsc_mhz()
        if mhz is None:
            return None
        tscs = guest.tscs(base.read_head(path, (RING + 1) * guest.SECTOR),
                          ring=RING)
        self.assertIn(cut + 1, tscs, 'the guest wrote nothing after the cut')
        deltas = {n: tscs[n + 1] - tscs[n] for n in tscs if n + 1 in tscs}
        usual = statistics.median(deltas.values())
        extra = sum(max(0, deltas[n] - usual)
                    for n in range(cut - around, cut + around)
                    if n in deltas)
        return round(extra / mhz / 1000.0, 1)

    def test_all_or_nothing_refused_when_a_member_is_busy(self):
        volumes = [self._volume(), self._volume()]
        paths = [self._path(v) for v in volumes]
        domain = self._guest(volumes)
        driver = self._driver(volumes[0])
        # Another process holds the second image's lock (another backup).
        holder = subprocess.Popen(  # nosec B603
            [sys.executable, '-c', textwrap.dedent('''
                import sys, time
                from cinder_vmdk_backup.kvm import naming
                with naming.image_lock(sys.argv[1]) as taken:
                    assert taken
                    print('held', flush=True)
                    time.sleep(120)
                '''), paths[1]], stdout=subprocess.PIPE, text=True)
        self.addCleanup(holder.wait)
        self.addCleanup(holder.kill)
        self.assertEqual('held', holder.stdout.readline().strip())
        backups = self._backups(volumes)
        facts = {}
        exc = self.assertRaises(
            cvb_exception.GroupFreezeError, driver.backup_volumes,
            self.ctxt, [(b, self.service, None) for b in backups],
            all_or_nothing=True, facts=facts)
        self.assertIn(volumes[1].id, str(exc))
        self.assertIn('busy', str(exc))
        self.assertNotIn(volumes[0].id, str(exc))
        # Nothing frozen: the domain runs on its original chain.
        self.assertEqual(1, domain.isActive())
        self.assertEqual([[p] for p in paths], self._chains(domain))
        self.assertEqual([], self._transient_files())
        self.assertEqual({}, facts)
        # The first image's lock was released: it backs up alone.
        results = driver.backup_volumes(
            self.ctxt, [(backups[0], self.service, None)],
            all_or_nothing=True, facts=facts)
        self.assertNotIsInstance(results[backups[0].id], Exception)
        self.assertEqual([[p] for p in paths], self._chains(domain))

    def test_all_or_nothing_undoes_an_online_freeze(self):
        running = self._volume()
        domain = self._guest([running])
        path = self._path(running)
        # A member no domain uses, whose backing file is gone: its offline
        # freeze fails after the running domain's disk was snapshotted.
        broken = test_utils.create_volume(self.ctxt, host=HOST, size=1)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2',  # nosec
                        '-u', '-b', 'gone.qcow2', '-F', 'qcow2',
                        self._path(broken), '1G'], check=True)
        driver = self._driver(running)
        backups = self._backups([running, broken])
        before = guest.consistent_run(guest.records(base.read_head(path)))
        exc = self.assertRaises(
            cvb_exception.GroupFreezeError, driver.backup_volumes,
            self.ctxt, [(b, self.service, None) for b in backups],
            all_or_nothing=True)
        self.assertIn(broken.id, str(exc))
        self.assertIn('gone.qcow2', str(exc))
        self.assertIn('Undid the freeze of %s' % path, self.log.output)
        # Merged back: the domain runs on its volume alone, no overlay.
        self.assertEqual(1, domain.isActive())
        self.assertEqual([[path]], self._chains(domain))
        self.assertEqual([], self._transient_files())
        # And it kept writing through all of it.
        time.sleep(0.5)
        domain.destroyFlags(domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        after = guest.consistent_run(guest.records(base.read_head(path)))
        self.assertGreater(after, before)

    def test_power_state_and_restore_into_a_shut_off_domain(self):
        volume = self._volume()
        path = self._path(volume)
        instance_id = str(uuid.uuid4())
        domain = self._guest([volume], domain_uuid=instance_id,
                             persistent=True)
        driver = self._driver(volume)
        name = domain.name()
        self.assertEqual(('running', 'libvirt domain %s' % name),
                         driver.instance_power_state(self.ctxt, instance_id,
                                                     [volume]))
        # Found through the volume when the instance id is not a domain's.
        self.assertEqual(('running', 'libvirt domain %s' % name),
                         driver.instance_power_state(
                             self.ctxt, str(uuid.uuid4()), [volume]))
        other = self._volume()
        state, who = driver.instance_power_state(
            self.ctxt, str(uuid.uuid4()), [other])
        self.assertEqual('unknown', state)
        self.assertIn(other.id, who)

        backup = self._backups([volume])[0]
        facts = {}
        results = driver.backup_volumes(self.ctxt,
                                        [(backup, self.service, None)],
                                        all_or_nothing=True, facts=facts)
        self.assertNotIsInstance(results[backup.id], Exception)
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        # A running domain's volume is not restored.
        backup.status = fields.BackupStatus.RESTORING
        backup.save()
        exc = self.assertRaises(exception.InvalidVolume,
                                driver.restore_backup, self.ctxt, backup,
                                volume, self.service)
        self.assertIn(name, str(exc))
        self.assertIn('shut them down', str(exc))

        domain.destroyFlags(
            domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        self.assertEqual(('shutoff', 'libvirt domain %s' % name),
                         driver.instance_power_state(self.ctxt, instance_id,
                                                     [volume]))
        self.assertEqual(('shutoff', 'libvirt domain %s' % name),
                         driver.instance_power_state(
                             self.ctxt, str(uuid.uuid4()), [volume]))
        # Without its boot sector the domain could not boot any more.
        base.qemu_io(path, 'write -z 0 512')
        wiped = base.read_head(path, 64 * 1024)
        driver.restore_backup(self.ctxt, backup, volume, self.service)
        self.assertEqual([path], self._chains(domain)[0])
        restored = base.read_head(path, 64 * 1024)
        self.assertEqual(guest.boot_sector(disks=1, paced=True),
                         restored[:guest.SECTOR])
        self.assertNotEqual(wiped, restored)
        self.assertEqual([], self._transient_files())
        # The domain starts from the restored data: it boots and writes.
        domain.create()
        deadline = time.monotonic() + 120
        while base.read_head(path, 64 * 1024) == restored:
            if time.monotonic() > deadline:
                self.fail('the domain did not boot from the restored disk')
            time.sleep(0.5)
        self.assertEqual('running', driver.instance_power_state(
            self.ctxt, instance_id, [volume])[0])
