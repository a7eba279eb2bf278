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

"""The qcow2 driver against the real qemu-img, offline (no domain runs)."""

import os
import signal
import subprocess
import sys
import textwrap
from unittest import mock

import fixtures
from oslo_utils import units

from cinder import exception

from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import qemu_img
from cinder_vmdk_backup.volume.drivers import qcow2
from tests.functional.kvm import base

#: Writes that put data at the start, in the middle, and in the last
#: cluster of a 1 GiB volume (a lost tail would show).
WRITES = ('write -P 0x11 0 64k', 'write -P 0x22 5M 3M',
          'write -P 0x33 300M 1M', 'write -P 0x44 1048512k 64k')


class OfflineBackupTestCase(base.Qcow2FunctionalTestCase):

    def test_full_incremental_and_restores_byte_for_byte(self):
        volume = self.make_volume(writes=WRITES)
        path = self.driver.local_path(volume)
        first = base.raw_digest(path)
        reference = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 'reference.qcow2')
        subprocess.run(['qemu-img', 'convert', '-O', 'qcow2', path,
                        reference], check=True)
        full = self.backup(volume)
        self.assertEqual((first, units.Gi), self.service.digests[full.id])
        self.assertStandalone(volume)
        self.assertNoLeftovers()

        base.qemu_io(path, 'write -P 0x55 7M 64k')
        second = base.raw_digest(path)
        incr = self.backup(volume, parent=full)
        self.assertEqual(second, self.service.digests[incr.id][0])

        # The full backup into a new, bigger volume: the data, then zeros
        # (qemu-img compare checks that the bigger image's tail is zero).
        bigger = self.make_volume(size=2)
        self.restore(full, bigger, volume_is_new=True)
        new_path = self.driver.local_path(bigger)
        self.assertEqual(2 * units.Gi, qemu_img.virtual_size(new_path))
        self.assertEqual(first, base.raw_digest(new_path, units.Gi))
        self.assertTrue(base.same_guest_data(reference, new_path))
        # The incremental one back into the volume itself.
        base.qemu_io(path, 'write -P 0x66 0 1M')
        self.restore(incr, volume)
        self.assertEqual(second, base.raw_digest(path))
        self.assertStandalone(volume)
        self.assertNoLeftovers()

    def test_backup_reads_no_holes(self):
        volume = self.make_volume(writes=WRITES)
        device = volume
        with self.driver.open_backup_source(self.ctxt, None, device) as src:
            reader = src
            while reader.read(16 * units.Mi):
                pass
            read = reader.bytes_read_from_disk
        self.assertEqual(64 * units.Ki + 3 * units.Mi + units.Mi
                         + 64 * units.Ki, read)

    def test_compressed_image_decoded_in_windows(self):
        volume = self.make_volume(writes=WRITES)
        path = self.driver.local_path(volume)
        expected = base.raw_digest(path)
        packed = path + '.packed'
        subprocess.run(['qemu-img', 'convert', '-c', '-O', 'qcow2', path,
                        packed], check=True)
        os.rename(packed, path)
        backup = self.backup(volume)
        self.assertEqual(expected, self.service.digests[backup.id][0])
        self.assertNoLeftovers()

    def test_volume_operations(self):
        volume = self.make_volume(writes=WRITES)
        path = self.driver.local_path(volume)
        digest = base.raw_digest(path)
        snapshot = mock.Mock(volume=volume, volume_size=1,
                             id='snap', spec=['volume', 'volume_size',
                                              'id', 'name'])
        snapshot.name = 'snapshot-x'
        self.driver.create_snapshot(snapshot)
        base.qemu_io(path, 'write -P 0x77 0 1M')
        from_snap = self.make_volume(size=2)
        self.driver.create_volume_from_snapshot(from_snap, snapshot)
        self.assertEqual(digest, base.raw_digest(
            self.driver.local_path(from_snap), units.Gi))
        clone = self.make_volume()
        os.unlink(self.driver.local_path(clone))
        self.driver.create_cloned_volume(clone, volume)
        self.assertEqual(base.raw_digest(path),
                         base.raw_digest(self.driver.local_path(clone)))
        self.driver.extend_volume(clone, 3)
        self.assertEqual(3 * units.Gi, qemu_img.virtual_size(
            self.driver.local_path(clone)))
        info = self.driver.initialize_connection(volume, {})
        self.assertEqual({'device_path': path, 'format': 'qcow2'},
                         {k: info['data'][k] for k in ('device_path',
                                                       'format')})
        self.driver.delete_snapshot(snapshot)
        self.driver.delete_volume(clone)
        self.assertFalse(os.path.exists(self.driver.local_path(clone)))
        self.assertNoLeftovers()

    def test_corrupt_image_gives_clear_error_and_is_left_as_it_was(self):
        volume = self.make_volume(writes=WRITES)
        path = self.driver.local_path(volume)
        with open(path, 'r+b') as f:
            f.seek(40)              # L1 table offset: far beyond the end
            f.write(b'\x7f' * 8)
        with open(path, 'rb') as f:
            before = f.read()
        backup = self.make_backup(volume)
        exc = self.assertRaises(qcow2.Qcow2DriverError,
                                self.driver.backup_volume, self.ctxt,
                                backup, self.service, self.device(volume))
        self.assertIn(path, str(exc))
        with open(path, 'rb') as f:
            self.assertEqual(before, f.read())
        self.assertNoLeftovers()
        self.assertRaises(errors.ImageCorruptError, qemu_img.check, path)

    def test_failing_merge_leaves_usable_chain_then_start_merges(self):
        volume = self.make_volume(writes=WRITES)
        path = self.driver.local_path(volume)
        expected = base.raw_digest(path)
        backup = self.make_backup(volume)
        real_commit = qemu_img.commit

        def commit_after_guest_write(image, rate=None):
            base.qemu_io(image, 'write -P 0x99 9M 64k')
            raise errors.QemuImgError('qemu-img commit of %s failed: '
                                      'injected' % image, path=image)
        with mock.patch.object(qemu_img, 'commit', autospec=True,
                               side_effect=commit_after_guest_write):
            exc = self.assertRaises(qcow2.Qcow2DriverError,
                                    self.driver.backup_volume, self.ctxt,
                                    backup, self.service,
                                    self.device(volume))
        self.assertIn('stays usable', str(exc))
        self.assertEqual(expected, self.service.digests[backup.id][0])
        # The chain is usable: the volume reads its data and the write.
        base.qemu_io(path, 'read -P 0x99 9M 64k', 'read -P 0x22 5M 3M')
        self.assertEqual(1, len(self.transient_files()))
        latest = base.raw_digest(path)

        self.assertIs(real_commit, qemu_img.commit)
        self.make_driver()      # the next start merges the leftover
        self.assertNoLeftovers()
        self.assertStandalone(volume)
        self.assertEqual(latest, base.raw_digest(path))

    def test_killed_backup_leaves_what_the_next_start_cleans(self):
        volume = self.make_volume(writes=WRITES)
        path = self.driver.local_path(volume)
        # A backup process frozen the volume, a writer wrote into the
        # overlay, then the backup process was killed (SIGKILL).
        script = textwrap.dedent('''
            import os, signal, sys
            from cinder_vmdk_backup.kvm import freezer
            frozen = freezer.freeze_all([sys.argv[1]])[sys.argv[1]]
            print(frozen.read_path, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            ''')
        proc = subprocess.run([sys.executable, '-c', script, path],
                              stdout=subprocess.PIPE, text=True)
        self.assertEqual(-signal.SIGKILL, proc.returncode)
        self.assertEqual(1, len(self.transient_files()))
        base.qemu_io(path, 'write -P 0xaa 11M 64k')
        latest = base.raw_digest(path)
        # Half-done freezes of another volume: a second name only; an
        # overlay that never took the name.
        other = self.make_volume(writes=WRITES)
        other_path = self.driver.local_path(other)
        other_digest = base.raw_digest(other_path)
        os.link(other_path, naming.transient_path(other_path, naming.FROZEN,
                                                  'a' * 16))
        subprocess.run(
            ['qemu-img', 'create', '-q', '-f', 'qcow2', '-u', '-F', 'qcow2',
             '-b', os.path.basename(naming.transient_path(
                 other_path, naming.FROZEN, 'b' * 16)),
             naming.transient_path(other_path, naming.OVERLAY, 'b' * 16),
             str(units.Gi)], check=True)
        self.assertEqual(3, len(self.transient_files()))
        stranger = os.path.join(self.volume_dir, 'volume-x.cvb-frozen-zz')
        open(stranger, 'w').close()

        driver = self.make_driver()
        done, failed = driver.leftovers_report
        self.assertEqual(3, len(done), done)
        self.assertEqual([], failed)
        self.assertTrue(os.path.exists(stranger))   # not one of ours
        os.unlink(stranger)
        self.assertNoLeftovers()
        self.assertEqual(latest, base.raw_digest(path))
        self.assertEqual(other_digest, base.raw_digest(other_path))
        self.assertStandalone(volume)

    def test_leftover_of_a_backup_under_way_is_not_touched(self):
        volume = self.make_volume(writes=WRITES)
        path = self.driver.local_path(volume)
        with self.driver._frozen(path):
            self.make_driver()
            self.assertEqual(1, len(self.transient_files()))
        self.assertNoLeftovers()

    def test_restore_failure_leaves_the_volume_intact(self):
        volume = self.make_volume(writes=WRITES)
        path = self.driver.local_path(volume)
        backup = self.backup(volume)
        base.qemu_io(path, 'write -P 0x12 0 1M')
        digest = base.raw_digest(path)
        volume.size = 2     # a bigger volume: the restore grows the image
        with mock.patch.object(qemu_img, 'resize', autospec=True,
                               side_effect=errors.QemuImgError('full')):
            self.assertRaises(exception.VolumeBackendAPIException,
                              self.restore, backup, volume)
        self.assertEqual(digest, base.raw_digest(path))
        self.assertNoLeftovers()
