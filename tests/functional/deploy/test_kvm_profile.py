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

"""End to end, kvm profile: qcow2 volumes of a running libvirt instance.

tools/deploy/up.sh kvm starts RabbitMQ, MariaDB, Keystone, libvirtd and
Cinder's four services with the plugin's Qcow2VolumeDriver and backup
manager. With the real ``openstack`` client: two volumes are created;
the tiny writing guest (tests/functional/kvm/guest.py) is written into
the boot volume; both are attached to a stand-in instance
(kvm_instance.py: Cinder attachments as Nova makes them, a libvirt domain
as Nova's libvirt driver defines it) which is started and writes records
to both disks. Then:

- ``backup create --force`` of the in-use data volume while the guest
  writes (the driver freezes it online through libvirt and merges back:
  the guest keeps running and writing, no overlay is left);
- the instance is stopped; ``backup create --force`` of the in-use boot
  volume of the shut off instance;
- the data volume detached (Cinder refuses restores into in-use volumes);
  the online backup restored into a new volume: outside the guest's ring
  byte for byte the data volume's bytes, the ring a gap-free point in
  time; restored onto the detached data volume too (``--force``): the
  same bytes as the new volume;
- the offline backup restored into a new volume: byte for byte the boot
  volume.

The profile's start-up time is in the test's details (and printed).
"""

import json
import os
import subprocess  # nosec B404: qemu-img, qemu-io
import time

import fixtures
import testtools

from tests.functional.deploy import deployment
from tests.functional.deploy import kvm_instance
from tests.functional.kvm import guest

SIZE_GB = 1
RING = 2048
#: A region of each volume written before the instance starts, away from
#: the guest's ring (sectors 1..2048): the backups must hold it.
REGION = (64 * 1024 * 1024, 1024 * 1024)
BACKUP_TIMEOUT = 300
CHUNK = 8 * 1024 * 1024


def _qemu_io_write(path, seed, offset, length):
    subprocess.run(  # nosec B603 B607
        ['qemu-io', '-f', 'qcow2', '-c',
         'write -P %d %d %d' % (seed, offset, length), path],
        check=True, stdout=subprocess.DEVNULL)


def _first_difference(a, b, skip=None):
    """First differing offset of two raw files (None: equal).

    :param skip: (start, end) byte range not compared
    """
    if os.path.getsize(a) != os.path.getsize(b):
        return min(os.path.getsize(a), os.path.getsize(b))
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        offset = 0
        while True:
            x, y = fa.read(CHUNK), fb.read(CHUNK)
            if not x:
                return None
            if skip:
                lo, hi = skip
                x, y = bytearray(x), bytearray(y)
                for buf in (x, y):
                    s, e = max(lo - offset, 0), min(hi - offset, len(buf))
                    if s < e:
                        buf[s:e] = bytes(e - s)
            if x != y:
                return offset + next(i for i, (p, q) in enumerate(zip(x, y))
                                     if p != q)
            offset += len(x)


class KvmDeploymentBase(testtools.TestCase):
    """A test on the kvm profile (one deployment for all of it)."""

    profile = 'kvm'

    def setUp(self):
        super(KvmDeploymentBase, self).setUp()
        self.dep = deployment.Deployment(self.profile)
        deployment.start_for_test(
            self, self.dep,
            (deployment.missing_prerequisites() +
             deployment.missing_kvm_prerequisites()),
            'kvm profile')
        import libvirt
        # libvirt prints every error to stderr besides raising it.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.conn = libvirt.open(kvm_instance.URI)
        self.addCleanup(self.conn.close)
        self.tmp = self.useFixture(fixtures.TempDir()).path

    # -- helpers ----------------------------------------------------------

    def osc(self, *args, **kwargs):
        return self.dep.openstack(*args, **kwargs)

    def timed(self, name, func, *args):
        started = time.monotonic()
        result = func(*args)
        self.figures['%s_seconds' % name] = round(
            time.monotonic() - started, 1)
        return result

    def create_volume(self, name):
        volume = self.osc('volume', 'create', '--size', str(SIZE_GB), name)
        return self.dep.wait('volume', volume['id'], ('available',))['id']

    def backup(self, name, volume_id):
        backup = self.osc('volume', 'backup', 'create', '--force', '--name',
                          name, volume_id)
        self.dep.wait('volume backup', backup['id'], ('available',),
                      timeout=BACKUP_TIMEOUT)
        return backup['id']

    def restore(self, backup_id, target, *extra):
        result = self.osc('volume', 'backup', 'restore',
                          *(extra + (backup_id, target)))
        volume_id = result.get('volume_id') or target
        self.dep.wait('volume backup', backup_id, ('available',),
                      timeout=BACKUP_TIMEOUT)
        self.dep.wait('volume', volume_id, ('available',),
                      failures=('error', 'error_restoring'))
        return volume_id

    def raw(self, volume_id, name):
        path = os.path.join(self.tmp, name)
        kvm_instance.to_raw(self.dep.volume_path(volume_id), path)
        return path

    def wait_for_records(self, instance, volume_id, above=0, timeout=120):
        """Until the guest's newest record on the volume is above ``above``.

        :returns: that newest counter
        """
        deadline = time.monotonic() + timeout
        while True:
            newest = max(instance.records(volume_id))
            if newest > above:
                return newest
            if time.monotonic() > deadline:
                self.fail('guest of %s wrote no record above %d on %s in '
                          '%ss' % (instance.name, above, volume_id, timeout))
            time.sleep(0.5)

    def assert_no_overlay(self, volume_id):
        """The driver merged its freeze back: no backing file is left."""
        info = json.loads(subprocess.run(  # nosec B603 B607
            ['qemu-img', 'info', '-U', '--output=json',
             self.dep.volume_path(volume_id)],
            check=True, stdout=subprocess.PIPE).stdout)
        self.assertNotIn('backing-filename', info,
                         'volume %s still has an overlay chain' % volume_id)


class KvmDeploymentTest(KvmDeploymentBase):
    """The kvm profile's scenario."""

    def test_backup_restore_of_a_running_instance(self):
        import libvirt
        boot = self.create_volume('kvm-boot')
        data = self.create_volume('kvm-data')
        for seed, vol in ((0x5A, boot), (0xA5, data)):
            path = self.dep.volume_path(vol)
            self.assertTrue(os.path.isfile(path), path)
            _qemu_io_write(path, seed, *REGION)
        kvm_instance.install_guest(self.dep.volume_path(boot), disks=2,
                                   ring=RING)

        instance = kvm_instance.KvmInstance(self.dep, self.conn)
        self.addCleanup(instance.cleanup)
        instance.attach(boot)
        instance.attach(data)
        instance.define()
        for vol, mountpoint in ((boot, '/dev/vda'), (data, '/dev/vdb')):
            shown = self.dep.wait('volume', vol, ('in-use',))
            attachments = shown.get('attachments') or []
            self.assertEqual([(instance.id, mountpoint)],
                             [(a.get('server_id'), a.get('device'))
                              for a in attachments], shown)
        self.assertIn("<source file='%s'/>" % self.dep.volume_path(data),
                      self.conn.lookupByUUIDString(instance.id).XMLDesc(0))

        # Running and writing to both disks.
        self.timed('instance_start', instance.start)
        self.assertEqual(instance.name, instance.domain.name())
        before = self.wait_for_records(instance, data)
        self.wait_for_records(instance, boot)

        # Online backup of the in-use data volume while the guest writes.
        online = self.timed('online_backup', self.backup, 'kvm-online',
                            data)
        self.assertTrue(instance.running, 'the instance stopped during '
                        'the online backup')
        after_backup = max(instance.records(data))
        self.assertGreater(after_backup, before)
        # The guest goes on writing on the merged image.
        self.wait_for_records(instance, data, above=after_backup)
        self.assert_no_overlay(data)
        # ... and the running domain was pivoted back onto the volume's
        # file (not left on a freeze overlay).
        live = instance.domain.XMLDesc(0)
        for vol in (boot, data):
            self.assertIn("<source file='%s'" % self.dep.volume_path(vol),
                          live)
        self.dep.wait('volume', data, ('in-use',))

        self.timed('instance_stop', instance.stop)
        self.assertFalse(instance.running)
        final = max(instance.records(data))
        self.assertGreaterEqual(final, after_backup)

        # Offline backup of the attached boot volume (instance shut off).
        offline = self.timed('offline_backup', self.backup, 'kvm-offline',
                             boot)
        self.dep.wait('volume', boot, ('in-use',))

        # Cinder restores only into available volumes: detach the data
        # volume; the online backup into a new volume first.
        instance.detach(data)
        self.dep.wait('volume', data, ('available',))
        data_raw = self.raw(data, 'data.raw')
        new = self.timed('restore_new', self.restore, online,
                         'kvm-online-restored')
        new_raw = self.raw(new, 'new.raw')
        ring = (guest.SECTOR, (RING + 1) * guest.SECTOR)
        self.assertIsNone(_first_difference(data_raw, new_raw, skip=ring),
                          'restored volume differs outside the ring')
        with open(new_raw, 'rb') as f:
            head = f.read((RING + 1) * guest.SECTOR)
        newest = guest.consistent_run(guest.records(head, ring=RING))
        self.assertGreaterEqual(newest, before)
        self.assertLessEqual(newest, after_backup)
        self.figures['online_backup_newest_record'] = newest
        self.figures['records_at_stop'] = final

        # The same backup onto the detached original: the same bytes.
        self.timed('restore_onto', self.restore, online, data, '--force')
        self.assertIsNone(_first_difference(new_raw,
                                            self.raw(data, 'data2.raw')))

        # The offline backup of the boot volume: byte for byte.
        instance.detach(boot)
        boot_new = self.restore(offline, 'kvm-offline-restored')
        self.assertIsNone(_first_difference(self.raw(boot, 'boot.raw'),
                                            self.raw(boot_new,
                                                     'boot-new.raw')))

        instance.cleanup()
        self.assertRaises(libvirt.libvirtError, self.conn.lookupByUUIDString,
                          instance.id)
