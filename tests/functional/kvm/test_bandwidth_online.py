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

"""The online merge of a capped backup: libvirt's block commit bandwidth.

A real guest (TCG, the paced writing guest of :mod:`.guest`) runs on a
qcow2 disk; the disk is frozen online (external snapshot), 48 MiB are
written into the overlay through QEMU's own ``qemu-io`` monitor command,
and the frozen image is merged back (active block commit and pivot) with a
cap of 16 MiB/s: the merge must take the time of 48 MiB at 16 MiB/s,
within 20 %, and leave the data in the image.
"""

import os
import subprocess
import time

import fixtures
from oslo_utils import units
import testtools

from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import qemu_img
from tests.functional.kvm import guest

MiB = units.Mi
CAP_MIB_S = 16
DATA_MIB = 48


class OnlineMergeCapTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.libvirt = self.useFixture(guest.LibvirtFixture())
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.dir, 'volume0')
        qemu_img.create(self.path, 256 * MiB)
        boot = os.path.join(self.dir, 'boot.bin')
        with open(boot, 'wb') as f:
            f.write(guest.boot_sector(paced=True))
        subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                        'write -s %s 0 512' % boot, self.path], check=True,
                       stdout=subprocess.DEVNULL)
        self.domain = self.libvirt.start_guest([self.path], kvm=False)

    def hmp(self, command):
        import libvirt_qemu
        return libvirt_qemu.qemuMonitorCommand(
            self.domain, command,
            libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)

    def test_block_commit_at_the_cap(self):
        frozen = freezer.freeze_all([self.path], self.libvirt.conn,
                                    commit_timeout=120)[self.path]
        self.assertTrue(frozen.online, frozen)
        out = self.hmp('qemu-io -d sata0-0-0 "write -P 0x5a 100M %dM"'
                       % DATA_MIB)
        self.assertNotIn('rror', out)
        frozen.bandwidth = CAP_MIB_S * MiB
        started = time.monotonic()
        frozen.merge()
        took = time.monotonic() - started
        rate = DATA_MIB * MiB / took
        self.assertGreater(rate, CAP_MIB_S * MiB * 0.8,
                           '%.1f MiB/s' % (rate / MiB))
        self.assertLess(rate, CAP_MIB_S * MiB * 1.2,
                        '%.1f MiB/s' % (rate / MiB))
        # the domain is back on its image, which holds the data
        self.assertIn(self.path, self.domain.XMLDesc(0))
        self.assertFalse(os.path.exists(frozen.overlay_path))
        check = subprocess.run(
            ['qemu-io', '-r', '-U', '-f', 'qcow2', '-c',
             'read -P 0x5a 100M %dM' % DATA_MIB, self.path],
            capture_output=True, text=True)
        self.assertNotIn('Pattern verification failed', check.stdout)
        self.assertEqual(0, check.returncode, check.stdout + check.stderr)
