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

"""A backup plan's cap reaches the qcow2 merge (libvirt and qemu-img)."""

import os
from unittest import mock

import fixtures
import libvirt
import testtools

from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import offline
from cinder_vmdk_backup.kvm import qemu_img

RATE = 16 * 1024 * 1024
ACTIVE = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
BYTES = libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES


class ActiveCommitTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        for name in ('_wait_ready', '_pivot'):
            self.useFixture(fixtures.MockPatchObject(domains, name,
                                                     autospec=True))
        self.domain = mock.create_autospec(libvirt.virDomain, instance=True)

    def test_capped_in_bytes_per_second(self):
        domains.active_commit(self.domain, 'vda', '/v/o', bandwidth=RATE)
        self.domain.blockCommit.assert_called_once_with(
            'vda', None, None, RATE, ACTIVE | BYTES)

    def test_uncapped(self):
        domains.active_commit(self.domain, 'vda', '/v/o')
        self.domain.blockCommit.assert_called_once_with(
            'vda', None, None, 0, ACTIVE)


class QemuImgCommitTestCase(testtools.TestCase):

    def test_rate_limit_option(self):
        run = self.useFixture(fixtures.MockPatchObject(
            qemu_img, '_run', autospec=True)).mock
        qemu_img.commit('/v/x', rate=RATE)
        run.assert_called_once_with('/v/x', 'commit', '-q', '-f', 'qcow2',
                                    '-r', str(RATE), '/v/x')
        run.reset_mock()
        qemu_img.commit('/v/x')
        run.assert_called_once_with('/v/x', 'commit', '-q', '-f', 'qcow2',
                                    '/v/x')


class FrozenImageMergeTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.dir, 'volume-1')
        self.commit = self.useFixture(fixtures.MockPatchObject(
            domains, 'active_commit', autospec=True)).mock
        self.merge = self.useFixture(fixtures.MockPatchObject(
            offline, 'merge', autospec=True)).mock
        self.lock = mock.Mock()

    def test_offline_merge_capped(self):
        frozen = freezer.FrozenImage(self.path, self.path + '.frozen', 't',
                                     self.lock)
        frozen.bandwidth = RATE
        frozen.merge()
        self.merge.assert_called_once_with(self.path, self.path + '.frozen',
                                           rate=RATE)
        self.lock.close.assert_called_once_with()

    def test_online_merge_capped(self):
        domain = mock.create_autospec(libvirt.virDomain, instance=True)
        use = domains.DiskUse(domain, 'vda', [self.path])
        frozen = freezer.FrozenImage(self.path, self.path, 't', self.lock,
                                     use=use, commit_timeout=60)
        open(naming.transient_path(self.path, naming.OVERLAY, 't'),
             'w').close()
        frozen.bandwidth = RATE
        frozen.merge()
        self.commit.assert_called_once_with(
            domain, 'vda', frozen.overlay_path, timeout=60, bandwidth=RATE)

    def test_uncapped_merge_unchanged(self):
        frozen = freezer.FrozenImage(self.path, self.path + '.frozen', 't',
                                     self.lock)
        frozen.merge()
        self.merge.assert_called_once_with(self.path, self.path + '.frozen')
