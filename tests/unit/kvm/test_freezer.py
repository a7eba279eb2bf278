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

"""All-or-nothing freezes and the facts of a set's point in time.

The image locks are real (files in a temporary directory); libvirt and
qemu-img are mocked.
"""

import os
from unittest import mock

import ddt
import fixtures
import libvirt
import testtools

from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import offline


def _use(uuid, path, target):
    domain = mock.create_autospec(libvirt.virDomain, instance=True)
    domain.UUIDString.return_value = uuid
    domain.name.return_value = 'instance-%s' % uuid
    return domains.DiskUse(domain, target, [path])


@ddt.ddt
class FreezeAllTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.paths = [os.path.join(self.dir, n) for n in ('a', 'b', 'c')]
        for path in self.paths:
            open(path, 'w').close()
        self.conn = mock.create_autospec(libvirt.virConnect, instance=True)
        self.users = self.useFixture(fixtures.MockPatchObject(
            domains, 'users', autospec=True, return_value={})).mock
        self.snapshot = self.useFixture(fixtures.MockPatchObject(
            domains, 'snapshot_disks', autospec=True)).mock
        self.snapshot.side_effect = self._snapshot
        self.commit = self.useFixture(fixtures.MockPatchObject(
            domains, 'active_commit', autospec=True)).mock
        self.freeze = self.useFixture(fixtures.MockPatchObject(
            offline, 'freeze', autospec=True)).mock
        self.freeze.side_effect = lambda path, token: path + '.frozen'
        self.merge = self.useFixture(fixtures.MockPatchObject(
            offline, 'merge', autospec=True)).mock

    @staticmethod
    def _snapshot(domain, overlays, quiesce=True, quiesced=False,
                  seconds=0.25):
        for path in overlays.values():
            open(path, 'w').close()   # libvirt makes the overlays
        return domains.Snapshot(quiesced, None, seconds, 1e9)

    def assertUnlocked(self):
        for path in self.paths:
            with naming.image_lock(path, blocking=False) as taken:
                self.assertTrue(taken, path)

    def test_busy_member_fails_the_set_before_any_freeze(self):
        # (A non-reentrant lock: held here, the freeze waits in vain.)
        with naming.image_lock(self.paths[1]):
            exc = self.assertRaises(
                errors.GroupFreezeFailed, freezer.freeze_all,
                self.paths, self.conn, lock_timeout=0.1,
                all_or_nothing=True)
        self.assertEqual([self.paths[1]], list(exc.failures))
        self.assertIn('busy', str(exc))
        self.users.assert_not_called()
        self.snapshot.assert_not_called()
        self.freeze.assert_not_called()
        self.assertUnlocked()

    def test_odd_use_fails_the_set_before_any_freeze(self):
        shared = [_use('d1', self.paths[0], 'vda'),
                  _use('d2', self.paths[0], 'vdb')]
        self.users.return_value = {self.paths[0]: shared,
                                   self.paths[1]: [_use('d1', self.paths[1],
                                                        'vdc')]}
        exc = self.assertRaises(errors.GroupFreezeFailed, freezer.freeze_all,
                                self.paths, self.conn, all_or_nothing=True)
        self.assertEqual([self.paths[0]], list(exc.failures))
        self.assertIsInstance(exc.failures[self.paths[0]],
                              errors.ImageInUseError)
        self.snapshot.assert_not_called()
        self.freeze.assert_not_called()
        self.assertUnlocked()

    def test_failed_offline_freeze_undoes_the_online_one(self):
        use = _use('d1', self.paths[0], 'vda')
        self.users.return_value = {self.paths[0]: [use]}
        self.freeze.side_effect = [self.paths[1] + '.frozen',
                                   errors.QemuImgError('no backing')]
        exc = self.assertRaises(errors.GroupFreezeFailed, freezer.freeze_all,
                                self.paths, self.conn, all_or_nothing=True)
        self.assertEqual([self.paths[2]], list(exc.failures))
        self.assertEqual({}, exc.undo_failures)
        self.commit.assert_called_once_with(use.domain, 'vda', mock.ANY,
                                            timeout=600.0)
        self.merge.assert_called_once_with(self.paths[1],
                                           self.paths[1] + '.frozen')
        self.assertUnlocked()

    def test_failed_snapshot_of_a_second_domain_undoes_the_first(self):
        uses = [_use('d1', self.paths[0], 'vda'),
                _use('d2', self.paths[1], 'vda')]
        self.users.return_value = {self.paths[0]: [uses[0]],
                                   self.paths[1]: [uses[1]]}
        self.snapshot.side_effect = [self._snapshot(uses[0].domain,
                                                    {'vda': '/dev/null'}),
                                     errors.DomainError('no space')]
        self.commit.side_effect = errors.MergeError('commit failed')
        exc = self.assertRaises(errors.GroupFreezeFailed, freezer.freeze_all,
                                self.paths, self.conn, all_or_nothing=True)
        self.assertEqual([self.paths[1]], list(exc.failures))
        self.assertEqual([self.paths[0]], list(exc.undo_failures))
        self.assertIn('undoing the freeze failed', str(exc))
        self.freeze.assert_not_called()
        self.assertUnlocked()

    def test_without_all_or_nothing_the_others_are_frozen(self):
        self.freeze.side_effect = [errors.QemuImgError('bad'),
                                   self.paths[1] + '.frozen',
                                   self.paths[2] + '.frozen']
        results = freezer.freeze_all(self.paths, self.conn)
        self.assertIsInstance(results[self.paths[0]], errors.QemuImgError)
        self.assertEqual(self.paths[1] + '.frozen',
                         results[self.paths[1]].read_path)
        for path in self.paths[1:]:
            results[path].merge()
        self.assertUnlocked()

    @ddt.data(([], 'not-running', None),
              ([True], 'quiesced', 250.0),
              ([True, False], 'crash-consistent', 250.0),
              ([False], 'crash-consistent', 125.0))
    @ddt.unpack
    def test_facts(self, quiesced, consistency, pause_ms):
        uses = [_use('d%d' % i, self.paths[i], 'vda')
                for i in range(len(quiesced))]
        self.users.return_value = {u.chain[0]: [u] for u in uses}
        kinds = iter(quiesced)

        def snapshot(domain, overlays, quiesce):
            q = next(kinds)
            return self._snapshot(domain, overlays, quiesced=q,
                                  seconds=0.25 if q else 0.125)
        self.snapshot.side_effect = snapshot
        facts = {}
        results = freezer.freeze_all(self.paths, self.conn, facts=facts,
                                     all_or_nothing=True)
        self.assertEqual(consistency, facts['consistency'])
        self.assertEqual(pause_ms, facts.get('pause_ms'))
        self.assertIsNotNone(facts['frozen_at'].tzinfo)
        if quiesced:
            self.assertEqual(1e9, facts['frozen_at'].timestamp())
        self.assertEqual(len(quiesced),
                         sum(1 for r in results.values() if r.online))
        for result in results.values():
            result.merge()
        self.assertUnlocked()
