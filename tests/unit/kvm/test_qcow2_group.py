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

"""The qcow2 driver's instance-group hooks (libvirt mocked)."""

from unittest import mock

import ddt
import fixtures
import libvirt

from cinder.tests.unit import fake_volume
from cinder.tests.unit import test
from cinder.volume import configuration

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import paths
from cinder_vmdk_backup.volume.drivers import qcow2

IDS = ('11111111-1111-1111-1111-111111111111',
       '22222222-2222-2222-2222-222222222222')
INSTANCE = '33333333-3333-3333-3333-333333333333'


def _domain(name, active):
    domain = mock.create_autospec(libvirt.virDomain, instance=True)
    domain.name.return_value = name
    domain.UUIDString.return_value = name + '-uuid'
    domain.isActive.return_value = int(active)
    return domain


@ddt.ddt
class GroupHooksTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        conf = mock.Mock(spec=configuration.Configuration)
        conf.qcow2_volumes_dir = self.dir
        conf.qcow2_connection_type = 'local'
        conf.qcow2_libvirt_uri = 'qemu:///system'
        conf.qcow2_block_commit_timeout = 60
        conf.qcow2_dirty_bitmaps = False  # see test_qcow2_incremental
        conf.qcow2_dirty_bitmaps_kept = 2
        self.driver = qcow2.Qcow2VolumeDriver(configuration=conf)
        self.ctxt = mock.sentinel.ctxt
        self.volumes = [fake_volume.fake_volume_obj(self.ctxt, size=1, id=i)
                        for i in IDS]
        self.paths = [self.driver.local_path(v) for v in self.volumes]
        self.conn = mock.create_autospec(libvirt.virConnect, instance=True)
        self.useFixture(fixtures.MockPatchObject(
            domains, 'connect', autospec=True, return_value=self.conn))

    def _requests(self):
        backups = [mock.Mock(id='b%d' % i, volume_id=v.id)
                   for i, v in enumerate(self.volumes)]
        devices = [mock.Mock(is_snapshot=False, volume=v, spec=[
            'is_snapshot', 'volume', 'snapshot']) for v in self.volumes]
        return [(b, mock.sentinel.service, d)
                for b, d in zip(backups, devices)]

    @mock.patch.object(freezer, 'freeze_all', autospec=True)
    def test_group_freeze_error_names_the_volumes(self, freeze_all):
        freeze_all.side_effect = errors.GroupFreezeFailed(
            {self.paths[1]: errors.KvmError('Image busy')},
            {self.paths[0]: errors.MergeError('commit failed')})
        with mock.patch.object(self.driver, 'backup_volume',
                               autospec=True) as backup_volume:
            exc = self.assertRaises(
                cvb_exception.GroupFreezeError, self.driver.backup_volumes,
                self.ctxt, self._requests(), all_or_nothing=True)
        self.assertIn('volume %s (%s): Image busy' % (IDS[1], self.paths[1]),
                      str(exc))
        self.assertIn('Merging back volume %s' % IDS[0], str(exc))
        backup_volume.assert_not_called()
        self.assertTrue(freeze_all.call_args[1]['all_or_nothing'])
        self.assertEqual(qcow2.Qcow2VolumeDriver.GROUP_LOCK_TIMEOUT,
                         freeze_all.call_args[1]['lock_timeout'])

    @mock.patch.object(freezer, 'freeze_all', autospec=True)
    def test_facts_are_filled_by_the_freeze(self, freeze_all):
        frozen = [mock.Mock(spec=freezer.FrozenImage, path=p)
                  for p in self.paths]

        def freeze(paths, conn, timeout, lock_timeout, all_or_nothing,
                   facts, path_map):
            facts.update(consistency='quiesced', pause_ms=12.5)
            return dict(zip(paths, frozen))
        freeze_all.side_effect = freeze
        facts = {}
        with mock.patch.object(self.driver, 'backup_volume', autospec=True,
                               return_value='done'):
            results = self.driver.backup_volumes(
                self.ctxt, self._requests(), all_or_nothing=True,
                facts=facts)
        self.assertEqual({'b0': 'done', 'b1': 'done'}, results)
        self.assertEqual('quiesced', facts['consistency'])
        self.assertEqual(12.5, facts['pause_ms'])
        self.assertIsNotNone(facts['frozen_at'].tzinfo)
        for image in frozen:
            image.merge.assert_called_once_with()

    def test_power_state_without_libvirt_is_unknown(self):
        self.driver.configuration.qcow2_libvirt_uri = ''
        state, who = self.driver.instance_power_state(self.ctxt, INSTANCE,
                                                      self.volumes)
        self.assertEqual('unknown', state)
        self.assertIn('qcow2_libvirt_uri', who)

    @ddt.data(True, False)
    def test_power_state_of_the_instance_domain(self, active):
        self.conn.lookupByUUIDString.return_value = _domain('instance-0001',
                                                            active)
        self.assertEqual(('running' if active else 'shutoff',
                          'libvirt domain instance-0001'),
                         self.driver.instance_power_state(
                             self.ctxt, INSTANCE, self.volumes))
        self.conn.lookupByUUIDString.assert_called_once_with(INSTANCE)

    @ddt.data(((True, False), 'running', 'libvirt domain a'),
              ((False, False), 'shutoff', 'libvirt domains a, b'),
              ((), 'unknown', None))
    @ddt.unpack
    def test_power_state_of_the_volumes_domains(self, active, state, who):
        error = libvirt.libvirtError('no domain')
        error.err = (libvirt.VIR_ERR_NO_DOMAIN,) + (None,) * 8
        self.conn.lookupByUUIDString.side_effect = error
        found = {}
        for path, name, up in zip(self.paths, 'ab', active):
            found[path] = [domains.DiskUse(_domain(name, up), 'vda', [path])]
        with mock.patch.object(domains, 'users', autospec=True,
                               return_value=found) as users:
            answer = self.driver.instance_power_state(self.ctxt, INSTANCE,
                                                      self.volumes)
        users.assert_called_once_with(self.conn, self.paths,
                                      active_only=False,
                                      path_map=paths.IDENTITY)
        self.assertEqual(state, answer[0])
        if who:
            self.assertEqual(who, answer[1])
        else:
            self.assertIn(IDS[0], answer[1])

    def test_power_state_libvirt_failure_is_a_driver_error(self):
        error = libvirt.libvirtError('connection reset')
        error.err = (libvirt.VIR_ERR_SYSTEM_ERROR,) + (None,) * 8
        self.conn.lookupByUUIDString.side_effect = error
        exc = self.assertRaises(qcow2.Qcow2DriverError,
                                self.driver.instance_power_state,
                                self.ctxt, INSTANCE, self.volumes)
        self.assertIn('connection reset', str(exc))
