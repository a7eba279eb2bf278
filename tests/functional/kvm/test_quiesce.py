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

"""Group backups quiesced through a real QEMU guest agent (real libvirt).

One Linux guest (:mod:`tests.functional.kvm.linux_guest`: Debian's kernel,
busybox and ``qemu-ga``, under TCG) boots once for the class on two
volumes, each an ext4 filesystem it keeps appending fsync'ed records to.
The qcow2 driver, loaded by the plugin's BackupManager, backs both up as
one group; Cinder's posix driver stores them and Cinder's manager restores
them into new volumes, whose filesystems are then read on the host
(``e2fsck -fn``, ``dumpe2fs``, ``debugfs`` on a raw copy: no mount, no
loop device).

What tells a quiesced copy from a crash-consistent one: ext4 marks a
mounted filesystem ``needs_recovery`` on disk, and only a freeze (or an
unmount) clears the flag, after writing its journal out. A copy taken
while the agent held the guest's filesystems frozen needs no recovery; a
copy of a running, unfrozen guest does.
"""

import logging
import os
import shutil
import subprocess  # nosec B404: qemu-img
import sys
import tempfile
import uuid

import fixtures
from oslo_utils import units
import testtools.content

from cinder.backup.drivers import posix  # noqa: F401 (its options)
from cinder import context
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import volume_utils

from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import qemu_img
from tests.functional.kvm import guest
from tests.functional.kvm import linux_guest

CONF = manager.CONF
HOST = 'node1@qcow2#qcow2'


class QuiesceTestCase(test.TestCase):
    """The tests share one booted guest; each sets the agent as it needs."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.libvirt = guest.LibvirtFixture()
        cls.libvirt.setUp()
        cls.addClassCleanup(cls.libvirt.cleanUp)
        cls.root = tempfile.mkdtemp(prefix='cvb-quiesce-')
        cls.addClassCleanup(shutil.rmtree, cls.root, ignore_errors=True)
        cls.volume_dir = os.path.join(cls.root, 'volumes')
        os.mkdir(cls.volume_dir)
        # The guest's two volumes, ids fixed for the class: each test
        # makes their rows in its own database.
        cls.volume_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
        cls.paths = [os.path.join(cls.volume_dir, 'volume-%s' % i)
                     for i in cls.volume_ids]
        for path in cls.paths:
            linux_guest.make_ext4(path, units.Gi)
        cls.guest = linux_guest.LinuxGuest(cls.libvirt.conn, cls.paths,
                                           cls.root)
        cls.addClassCleanup(cls.guest.destroy)
        sizes = cls.guest.manifest['sizes']
        sys.__stderr__.write(
            '\nLINUX GUEST kernel %d bytes + initramfs %d bytes, booted '
            '(records written, agent connected) in %.1f s under TCG\n'
            % (sizes['vmlinuz'], sizes['initrd.img'],
               cls.guest.boot_seconds))

    def setUp(self):
        super().setUp()
        root = self.useFixture(fixtures.TempDir()).path
        self.restore_dir = os.path.join(root, 'restored')
        os.mkdir(self.restore_dir)
        posix_dir = os.path.join(root, 'posix')
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
        self.volumes = [test_utils.create_volume(self.ctxt, id=i, host=HOST,
                                                 size=1)
                        for i in self.volume_ids]
        self.assertEqual(1, self.guest.domain.isActive())

    # -- helpers --------------------------------------------------------------

    def _group_backup(self, volumes=None):
        """Back up the volumes as one group; ``(backups, facts)``."""
        backups = []
        for volume in volumes or self.volumes:
            backup = test_utils.create_backup(
                self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
                size=volume.size)
            backup.service = self.manager.driver_name
            backup.save()
            backups.append(backup)
        driver = self.manager._driver_for(self.volumes[0])
        self.assertIsNotNone(driver, 'the manager loaded no qcow2 driver')
        facts = {}
        results = driver.backup_volumes(
            self.ctxt, [(b, self.service, None) for b in backups],
            all_or_nothing=True, facts=facts)
        for backup in backups:
            self.assertNotIsInstance(results[backup.id], Exception)
        # Merged back: the guest runs on its volumes alone again.
        self.assertEqual([[p] for p in self.paths],
                         [chain for _t, chain in domains.disk_chains(
                             self.guest.domain.XMLDesc(0))])
        self.assertEqual([], [n for n in os.listdir(self.volume_dir)
                              if naming.parse(n)])
        return backups, facts

    def _restored_raw(self, backup):
        """Restore into a new volume (Cinder's manager); a raw copy of it."""
        target = test_utils.create_volume(self.ctxt, host=HOST, size=1,
                                          status='creating')
        path = os.path.join(self.volume_dir, target.name)
        qemu_img.create(path, units.Gi)
        self.addCleanup(os.unlink, path)
        backup.status = fields.BackupStatus.RESTORING
        backup.restore_volume_id = target.id
        backup.save()
        self.manager.restore_backup(self.ctxt, backup, target.id, True)
        backup.refresh()
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        raw = os.path.join(self.restore_dir, '%s.raw' % target.id)
        subprocess.run(['qemu-img', 'convert', '-q', '-O', 'raw',  # nosec
                        path, raw], check=True)
        return raw

    def _report(self, name, text):
        self.addDetail(name, testtools.content.text_content(text))
        sys.__stderr__.write('\n%s: %s\n' % (name.upper(), text))

    # -- tests ----------------------------------------------------------------

    def test_quiesced_through_the_guest_agent(self):
        if self.guest.agent_mode != 'default':
            self.guest.start_agent()
        mark = len(self.guest.console())

        backups, facts = self._group_backup()

        self.assertEqual('quiesced', facts['consistency'], self.log.output)
        # The agent froze the guest's filesystems and thawed them, once.
        self.guest.wait_for('fsfreeze-hook thaw', after=mark)
        console = self.guest.console()[mark:]
        self.assertIn('qemu-ga: info: guest-fsfreeze called', console)
        events = self.guest.hook_events(mark)
        self.assertEqual(['freeze', 'thaw'], [e[0] for e in events],
                         console)
        self.assertEqual('thawed',
                         self.guest.agent_command('guest-fsfreeze-status'))
        (_f, freeze_at, at_freeze), (_t, thaw_at, at_thaw) = events

        cut = []
        for backup in backups:
            raw = self._restored_raw(backup)
            # Frozen at the copy's moment: journal written out, clean.
            self.assertNotIn('needs_recovery', linux_guest.features(raw))
            status, output = linux_guest.fsck(raw)
            self.assertEqual(0, status, output)
            cut.append(linux_guest.gap_free(linux_guest.records(raw)))
        # One cut across both disks, within the freeze: every record the
        # guest had finished when the freeze began is there, on both.
        self.assertIn(cut[0] - cut[1], (0, 1), cut)
        self.assertLessEqual(at_freeze, cut[1])
        self.assertLessEqual(cut[1], at_thaw)
        self._report('quiesced', 'pause_ms %.1f; guest frozen from uptime '
                     '%.2f to %.2f s (%.0f ms by the hook); records %s at '
                     'the freeze, %s at the thaw, %s in the copies'
                     % (facts['pause_ms'], freeze_at, thaw_at,
                        (thaw_at - freeze_at) * 1000, at_freeze, at_thaw,
                        cut))

    def test_crash_consistent_when_the_agent_is_stopped(self):
        self.guest.stop_agent()
        self.addCleanup(self.guest.start_agent)
        mark = len(self.guest.console())

        backups, facts = self._group_backup()

        self.assertEqual('crash-consistent', facts['consistency'])
        self.assertIn('is crash-consistent, not quiesced: no guest agent '
                      'is connected to org.qemu.guest_agent.0',
                      self.log.output)
        console = self.guest.console()[mark:]
        self.assertNotIn('guest-fsfreeze', console)
        self.assertEqual([], self.guest.hook_events(mark))

        cut = []
        for backup in backups:
            raw = self._restored_raw(backup)
            # Not frozen: the copy is of a mounted filesystem, which the
            # guest's next mount would recover from its journal.
            self.assertIn('needs_recovery', linux_guest.features(raw))
            self.assertIn(linux_guest.recover_journal(raw), (0, 1))
            self.assertNotIn('needs_recovery', linux_guest.features(raw))
            status, output = linux_guest.fsck(raw)
            self.assertEqual(0, status, output)
            cut.append(linux_guest.gap_free(linux_guest.records(raw)))
        self.assertIn(cut[0] - cut[1], (0, 1), cut)
        self.assertGreater(cut[1], 0)
        self._report('crash-consistent', 'pause_ms %.1f; records %s in the '
                     'copies' % (facts['pause_ms'], cut))

    def test_crash_consistent_when_the_agent_refuses_to_freeze(self):
        # The agent answers (libvirt: connected, guest-ping works) but its
        # freeze commands are disabled, as in a locked-down guest: libvirt's
        # quiesced snapshot fails and the driver takes a crash-consistent
        # one. One volume is enough to show it.
        self.guest.deny_freeze()
        self.addCleanup(self.guest.start_agent)
        self.assertEqual('connected', self.guest.agent_state())
        mark = len(self.guest.console())

        _backups, facts = self._group_backup(self.volumes[:1])

        self.assertEqual('crash-consistent', facts['consistency'])
        self.assertIn('is crash-consistent, not quiesced: quiescing through '
                      'the guest agent failed', self.log.output)
        self.assertIn('guest-fsfreeze-freeze', self.log.output)
        self.assertNotIn('guest-fsfreeze called', self.guest.console()[mark:])
        self.assertEqual([], self.guest.hook_events(mark))
        # Nothing was left frozen in the guest.
        self.assertEqual('thawed',
                         self.guest.agent_command('guest-fsfreeze-status'))
        why = [line for line in self.log.output.splitlines()
               if 'quiescing through' in line]
        self._report('freeze refused', 'pause_ms %.1f (the failed quiesced '
                     'attempt not counted); %s' % (facts['pause_ms'],
                                                   why[0][:400]))
