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

"""The VMDK driver's instance-group hooks (one snapshot per instance VM)."""

from unittest import mock
import uuid

from cinder import objects

objects.register_all()

from cinder import context  # noqa: E402
from cinder.tests.unit.backup import fake_backup  # noqa: E402
from cinder.tests.unit import fake_volume  # noqa: E402
from cinder.volume.drivers.vmware import volumeops  # noqa: E402
import ddt  # noqa: E402
from oslo_vmware import exceptions as vexc  # noqa: E402
import testtools  # noqa: E402

from cinder_vmdk_backup import exception  # noqa: E402
from cinder_vmdk_backup.vmware import diskswap  # noqa: E402
from cinder_vmdk_backup.vmware import vmsnapshot  # noqa: E402
from cinder_vmdk_backup.volume.drivers import vmdk  # noqa: E402
from tests.unit.volume.drivers import test_vmdk  # noqa: E402


#: The class, before the tests patch it.
FROZEN_VM = vmsnapshot.FrozenVM
I1, I2, I3, I9 = (str(uuid.UUID(int=i << 64)) for i in (1, 2, 3, 9))


def attachments(*pairs):
    """A VolumeAttachmentList of ``(instance uuid, attach status)``."""
    return objects.VolumeAttachmentList(objects=[
        objects.VolumeAttachment(instance_uuid=instance,
                                 attach_status=status)
        for instance, status in pairs])


@ddt.ddt
class GroupHooksTestCase(testtools.TestCase):

    def setUp(self):
        super(GroupHooksTestCase, self).setUp()
        self.config = test_vmdk.MockConfiguration(
            vmware_host_ip='vc', vmware_host_port=443,
            vmware_host_username='admin', vmware_host_password='pw',
            vmware_ca_file=None, vmware_insecure=True,
            vmware_task_poll_interval=1.0, vmware_tmp_dir='/tmp',
            vmware_max_objects_retrieval=100)
        self.driver = vmdk.VMwareVcVmdkBackupDriver(
            configuration=self.config)
        self.vops = mock.create_autospec(volumeops.VMwareVolumeOps,
                                         instance=True)
        self.driver._volumeops = self.vops
        self.driver._session = mock.Mock()
        self.ctx = context.get_admin_context()
        self.find = self._patch(vmsnapshot, 'find_instance_vm',
                                side_effect=self._vm_of)
        self.state = self._patch(vmsnapshot, 'vm_state',
                                 return_value=('inst', 'poweredOn', None))
        self.frozen = {}
        self.frozen_class = self._patch(vmsnapshot, 'FrozenVM',
                                        side_effect=self._new_frozen)
        self.backup_volume = self._patch(vmdk.VMwareVcVmdkBackupDriver,
                                         'backup_volume',
                                         side_effect=self._backup_volume)
        self.seen = {}
        self.fail_freeze = set()
        self.members = 0

    def _patch(self, obj, name, **kwargs):
        patcher = mock.patch.object(obj, name, autospec=True, **kwargs)
        self.addCleanup(patcher.stop)
        return patcher.start()

    @staticmethod
    def _vm_of(session, instance):
        names = {I1: 'vm-i1', I2: 'vm-i2', I3: 'vm-i3', I9: 'vm-i9'}
        return test_vmdk.moref(names[instance])

    def _new_frozen(self, session, settings, vm_ref, label):
        frozen = mock.create_autospec(FROZEN_VM, instance=True)
        frozen.vm_ref = vm_ref
        frozen.label = label
        frozen.snapshot = test_vmdk.moref('snap')
        frozen.running = True
        frozen.quiesced = False
        frozen.frozen_at = 'at-%s' % vm_ref.value
        if vm_ref.value in self.fail_freeze:
            frozen.freeze.side_effect = vexc.VimException('no snapshot')
        self.frozen[vm_ref.value] = frozen
        return frozen

    def _backup_volume(self, driver, context, backup, service,
                       backup_device=None):
        self.seen[backup.volume_id] = driver._snapshot_sources.get(
            backup.volume_id)
        return 'result-%s' % backup.volume_id

    def _member(self, instance=None):
        self.members += 1
        volume = fake_volume.fake_volume_obj(self.ctx)
        volume.id = str(uuid.UUID(int=self.members))
        volume.volume_attachment = attachments(
            *([(instance, 'attached')] if instance else []))
        backup = fake_backup.fake_backup_obj(self.ctx, volume_id=volume.id)
        backup.id = str(uuid.UUID(int=1000 + self.members))
        device = objects.BackupDeviceInfo()
        device.volume = volume
        return backup, 'service', device

    def test_one_snapshot_per_instance_read_from_it(self):
        requests = [self._member(I1), self._member(I1),
                    self._member(None), self._member(I2)]
        facts = {}
        results = self.driver.backup_volumes(self.ctx, requests,
                                             facts=facts)
        self.assertEqual(['vm-i1', 'vm-i2'], sorted(self.frozen))
        for frozen in self.frozen.values():
            frozen.freeze.assert_called_once_with(description=mock.ANY)
            frozen.release.assert_called_once_with()
        vols = [r[2].volume.id for r in requests]
        self.assertEqual({vols[0]: self.frozen['vm-i1'],
                          vols[1]: self.frozen['vm-i1'],
                          vols[2]: None,
                          vols[3]: self.frozen['vm-i2']}, self.seen)
        self.assertEqual({r[0].id: 'result-%s' % v
                          for r, v in zip(requests, vols)}, results)
        self.assertEqual({}, self.driver._snapshot_sources)
        self.assertEqual('crash-consistent', facts['consistency'])
        self.assertEqual('at-vm-i1', facts['frozen_at'])

    def test_all_or_nothing_freeze_failure(self):
        self.fail_freeze.add('vm-i2')
        requests = [self._member(I1), self._member(I2),
                    self._member(I2)]
        err = self.assertRaises(exception.GroupFreezeError,
                                self.driver.backup_volumes, self.ctx,
                                requests, all_or_nothing=True)
        for _b, _s, device in requests[1:]:
            self.assertIn(device.volume.id, str(err))
        self.assertNotIn(requests[0][2].volume.id, str(err))
        self.backup_volume.assert_not_called()
        self.frozen['vm-i1'].release.assert_called_once_with()

    def test_freeze_failure_fails_only_that_instance(self):
        self.fail_freeze.add('vm-i2')
        self.find.side_effect = lambda session, instance: (
            None if instance == I3 else self._vm_of(session, instance))
        requests = [self._member(I1), self._member(I2),
                    self._member(I3)]
        results = self.driver.backup_volumes(self.ctx, requests)
        self.assertEqual('result-%s' % requests[0][2].volume.id,
                         results[requests[0][0].id])
        self.assertIsInstance(results[requests[1][0].id],
                              exception.VmdkBackupError)
        self.assertIn('no VM of instance %s' % I3,
                      str(results[requests[2][0].id]))
        self.assertEqual(1, self.backup_volume.call_count)

    def test_backup_failure_still_releases(self):
        self.backup_volume.side_effect = [RuntimeError('boom'), 'ok']
        requests = [self._member(I1), self._member(I1)]
        results = self.driver.backup_volumes(self.ctx, requests)
        self.assertIsInstance(results[requests[0][0].id], RuntimeError)
        self.assertEqual('ok', results[requests[1][0].id])
        self.frozen['vm-i1'].release.assert_called_once_with()
        self.assertEqual({}, self.driver._snapshot_sources)

    @ddt.data(('poweredOn', 'running'), ('poweredOff', 'shutoff'),
              ('suspended', 'running'), ('weird', 'unknown'))
    @ddt.unpack
    def test_instance_power_state(self, vc_state, state):
        self.state.return_value = ('inst-vm', vc_state, None)
        got, who = self.driver.instance_power_state(self.ctx, I1, [])
        self.assertEqual(state, got)
        self.assertIn('vCenter VM inst-vm', who)

    def test_instance_power_state_without_vm(self):
        self.find.side_effect = None
        self.find.return_value = None
        self.assertEqual(('unknown', 'vCenter (no VM of instance %s)' % I1),
                         self.driver.instance_power_state(self.ctx, I1,
                                                          []))

    def test_restore_refused_while_instance_vm_runs(self):
        volume = fake_volume.fake_volume_obj(self.ctx)
        volume.volume_attachment = attachments((I1, 'attached'),
                                               (I9, 'detached'))
        self.vops.snapshot_exists.return_value = False
        self.assertRaisesRegex(exception.VmdkBackupError,
                               'shut the instance down',
                               self.driver._check_instances_stopped,
                               volume)
        self.find.assert_called_once_with(self.driver.session, I1)
        self.state.return_value = ('inst', 'poweredOff', None)
        self.driver._check_instances_stopped(volume)
        self.vops.snapshot_exists.return_value = True
        self.assertRaisesRegex(exception.VmdkBackupError, 'has snapshots',
                               self.driver._check_instances_stopped,
                               volume)

    def test_repoint_undone_on_failure(self):
        repoint = self._patch(diskswap, 'repoint_disk', side_effect=[
            True, vexc.VimException('no'), True])
        vms = [(I1, test_vmdk.moref('vm-1')),
               (I2, test_vmdk.moref('vm-2'))]
        self.assertRaises(vexc.VimException,
                          self.driver._repoint_instances, vms, 'old', 'new')
        session = self.driver.session
        self.assertEqual(
            [mock.call(session, vms[0][1], 'old', 'new'),
             mock.call(session, vms[1][1], 'old', 'new'),
             mock.call(session, vms[0][1], 'new', 'old')],
            repoint.call_args_list)
