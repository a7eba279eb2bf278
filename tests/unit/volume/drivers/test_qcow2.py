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

import contextlib
import os
from unittest import mock

import ddt
import fixtures
import libvirt

from cinder import context
from cinder import exception
from cinder import objects
from cinder.tests.unit import fake_volume
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import configuration
from cinder.volume import driver
from oslo_i18n import fixture as i18n_fixture
from oslo_utils import units

from cinder_vmdk_backup.backup import staging_files
from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import leftovers
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import paths
from cinder_vmdk_backup.kvm import qemu_img
from cinder_vmdk_backup import opts
from cinder_vmdk_backup.volume.drivers import qcow2


@ddt.ddt
class Qcow2DriverTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        conf = mock.Mock(spec=configuration.Configuration)
        conf.qcow2_volumes_dir = self.dir
        conf.qcow2_libvirt_uri = ''
        conf.qcow2_connection_type = 'local'
        conf.qcow2_nfs_export = None
        conf.qcow2_nfs_mount_options = None
        conf.qcow2_backup_staging_dir = None
        conf.qcow2_block_commit_timeout = 60
        conf.qcow2_dirty_bitmaps = False  # see test_qcow2_incremental
        conf.qcow2_dirty_bitmaps_kept = 2
        conf.qcow2_backup_decode_window_mb = 64
        conf.qcow2_merge_leftovers_at_start = True
        self.driver = qcow2.Qcow2VolumeDriver(configuration=conf)
        self.ctxt = mock.sentinel.ctxt
        self.volume = fake_volume.fake_volume_obj(self.ctxt, size=1)

    def test_options_registered(self):
        self.driver.configuration.append_config_values.assert_called_with(
            opts.qcow2_opts)
        names = {o.name for o in opts.qcow2_opts}
        self.assertIn('qcow2_volumes_dir', names)
        self.assertTrue(all(n.startswith('qcow2_') for n in names))

    @ddt.data(True, False)
    def test_do_setup_removes_leftovers(self, merge):
        self.driver.configuration.qcow2_merge_leftovers_at_start = merge
        staging = os.path.join(self.dir, '.cvb-staging')
        os.makedirs(staging)
        leftover = os.path.join(staging, staging_files.PREFIX + 'killed')
        open(leftover, 'w').close()
        with mock.patch.object(leftovers, 'clean', autospec=True,
                               return_value=(['merged'], [])) as clean:
            self.driver.do_setup(self.ctxt)
        self.assertFalse(os.path.exists(leftover))
        if merge:
            clean.assert_called_once_with(self.dir, None, commit_timeout=60,
                                          path_map=paths.IDENTITY)
            self.assertEqual((['merged'], []), self.driver.leftovers_report)
        else:
            clean.assert_not_called()

    def _in_use_volume_and_backup(self, snapshot_id=None):
        ctxt = context.get_admin_context()
        volume = test_utils.create_volume(ctxt, status='backing-up',
                                          previous_status='in-use')
        backup = test_utils.create_backup(ctxt, volume_id=volume.id,
                                          snapshot_id=snapshot_id)
        return ctxt, volume, backup

    def test_in_use_volume_backed_up_without_a_clone(self):
        ctxt, volume, backup = self._in_use_volume_and_backup()
        with mock.patch.object(self.driver, 'create_cloned_volume',
                               autospec=True) as clone:
            device, is_snapshot = self.driver.get_backup_device(ctxt, backup)
        self.assertEqual((volume.id, False), (device.id, is_snapshot))
        clone.assert_not_called()
        self.assertIsNone(objects.Backup.get_by_id(
            ctxt, backup.id).temp_volume_id)

    def test_cinders_clone_without_driver_owned_backups(self):
        self.override_config('driver_owned_backup_enabled', False)
        ctxt, volume, backup = self._in_use_volume_and_backup()
        with mock.patch.object(
                driver.BaseVD, 'get_backup_device', autospec=True,
                return_value=(mock.sentinel.clone, False)) as stock:
            self.assertEqual((mock.sentinel.clone, False),
                             self.driver.get_backup_device(ctxt, backup))
        stock.assert_called_once_with(self.driver, ctxt, backup)

    def test_connection_info_is_a_qcow2_file(self):
        info = self.driver.initialize_connection(self.volume, {})
        self.assertEqual('local', info['driver_volume_type'])
        path = '%s/%s' % (self.dir, self.volume.name)
        self.assertEqual({'device_path': path,
                          'name': self.volume.name, 'format': 'qcow2',
                          'access_mode': 'rw'}, info['data'])

    def test_nfs_connection_names_the_export_and_file(self):
        conf = self.driver.configuration
        conf.qcow2_connection_type = 'nfs'
        conf.qcow2_nfs_export = 'cinder-host:/srv/qcow2'
        conf.qcow2_nfs_mount_options = '-o vers=4.2'
        info = self.driver.initialize_connection(self.volume, {})
        self.assertEqual('nfs', info['driver_volume_type'])
        self.assertEqual({'export': 'cinder-host:/srv/qcow2',
                          'name': self.volume.name, 'format': 'qcow2',
                          'options': '-o vers=4.2',
                          'access_mode': 'rw'}, info['data'])

    def test_nfs_connection_needs_the_export(self):
        self.driver.configuration.qcow2_connection_type = 'nfs'
        self.assertRaisesRegex(qcow2.Qcow2DriverError, 'qcow2_nfs_export',
                               self.driver.do_setup, self.ctxt)

    def _nfs(self):
        conf = self.driver.configuration
        conf.qcow2_connection_type = 'nfs'
        conf.qcow2_nfs_export = 'cinder-host:/srv/qcow2'
        conf.qcow2_nfs_mount_point_base = '/var/lib/nova/mnt'
        conf.qcow2_libvirt_uri = 'qemu:///system'
        return paths.nova_mount_point('/var/lib/nova/mnt',
                                      'cinder-host:/srv/qcow2')

    def _libvirt_with(self, *domain_xml_and_state):
        conn = mock.create_autospec(libvirt.virConnect, instance=True)
        found = []
        for i, (xml_text, active) in enumerate(domain_xml_and_state):
            domain = mock.create_autospec(libvirt.virDomain, instance=True)
            domain.name.return_value = 'instance-%d' % i
            domain.UUIDString.return_value = 'uuid-%d' % i
            domain.isActive.return_value = int(active)
            domain.XMLDesc.return_value = xml_text
            found.append(domain)
        conn.listAllDomains.side_effect = lambda flags=0: [
            d for d in found if d.isActive() or not flags]
        conn.lookupByUUIDString.side_effect = _no_domain()
        return self.useFixture(fixtures.MockPatchObject(
            domains, 'connect', autospec=True, return_value=conn)).mock

    @staticmethod
    def _disk_xml(path):
        return ("<domain><devices><disk type='file' device='disk'>"
                "<source file='%s'/><target dev='vdb'/></disk></devices>"
                "</domain>" % path)

    def test_nfs_path_map_is_novas_mount_point(self):
        mount = self._nfs()
        self.assertEqual(mount, self.driver._path_map.mount_dir)
        self.assertEqual(os.path.realpath(self.dir),
                         self.driver._path_map.local_dir)
        self.driver.configuration.qcow2_connection_type = 'gpfs'
        self.assertIs(paths.IDENTITY, self.driver._path_map)

    def test_restore_refused_while_a_domain_runs_it_at_the_mount_point(self):
        mount = self._nfs()
        self._libvirt_with((self._disk_xml(
            os.path.join(mount, self.volume.name)), True))
        with mock.patch.object(qemu_img, 'convert',
                               autospec=True) as convert:
            exc = self.assertRaises(
                exception.InvalidVolume, self.driver.restore_raw_image,
                self.ctxt, mock.Mock(), self.volume, __file__)
        self.assertIn('instance-0', str(exc))
        convert.assert_not_called()

    def test_restore_not_refused_for_a_same_named_file_elsewhere(self):
        self._nfs()
        other = paths.nova_mount_point('/var/lib/nova/mnt', 'x:/other')
        self._libvirt_with((self._disk_xml(
            os.path.join(other, self.volume.name)), True))
        with mock.patch.object(qemu_img, 'convert', autospec=True,
                               side_effect=errors.QemuImgError('stop')):
            self.assertRaisesRegex(qcow2.Qcow2DriverError, 'stop',
                                   self.driver.restore_raw_image,
                                   self.ctxt, mock.Mock(), self.volume,
                                   __file__)

    def test_power_state_of_a_domain_defined_at_the_mount_point(self):
        mount = self._nfs()
        self._libvirt_with((self._disk_xml(
            os.path.join(mount, self.volume.name)), False))
        self.assertEqual(('shutoff', 'libvirt domain instance-0'),
                         self.driver.instance_power_state(
                             self.ctxt, 'uuid-x', [self.volume]))

    def test_extend_of_a_volume_running_at_the_mount_point(self):
        mount = self._nfs()
        connect = self._libvirt_with((self._disk_xml(
            os.path.join(mount, self.volume.name)), True))
        with mock.patch.object(qemu_img, 'resize', autospec=True) as resize:
            self.driver.extend_volume(self.volume, 2)
        resize.assert_not_called()
        (domain,) = connect.return_value.listAllDomains(0)
        domain.blockResize.assert_called_once_with(
            'vdb', 2 * units.Gi, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    @mock.patch.object(qemu_img, 'create', autospec=True)
    def test_create_volume(self, create):
        self.driver.create_volume(self.volume)
        create.assert_called_once_with(self.driver.local_path(self.volume),
                                       units.Gi)

    def test_restore_refused_while_a_domain_runs_the_volume(self):
        self.driver.configuration.qcow2_libvirt_uri = 'qemu:///system'
        use = mock.Mock(domain_name='instance-1')
        path = self.driver.local_path(self.volume)
        with mock.patch.object(domains, 'connect', autospec=True), \
                mock.patch.object(domains, 'users', autospec=True,
                                  return_value={path: [use]}), \
                mock.patch.object(qemu_img, 'convert',
                                  autospec=True) as convert:
            exc = self.assertRaises(
                exception.InvalidVolume, self.driver.restore_raw_image,
                self.ctxt, mock.Mock(), self.volume, __file__)
        self.assertIn('instance-1', str(exc))
        self.assertIn('shut them down', str(exc))
        convert.assert_not_called()

    @mock.patch.object(qemu_img, 'info', autospec=True)
    def test_disk_profile_is_the_cluster_size(self, info):
        info.return_value = {'virtual-size': units.Gi, 'format': 'qcow2',
                             'cluster-size': 16384}
        self.assertEqual({'cluster_size': 16384},
                         self.driver.get_disk_profile(self.ctxt, self.volume))

    @ddt.data(({'disk_profile:cluster_size': '16384'}, 16384),
              ({'disk_profile:cluster_size': '2097152'}, 2 * units.Mi),
              ({}, None),                                   # another backend
              ({'disk_profile:adapter_type': 'lsiLogic'}, None),  # VMDK's
              ({'disk_profile:cluster_size': '0'}, None),
              ({'disk_profile:cluster_size': '12288'}, None),  # not 2**n
              ({'disk_profile:cluster_size': '4194304'}, None),  # > 2 MiB
              ({'disk_profile:cluster_size': 'x'}, None))
    @ddt.unpack
    @mock.patch.object(qemu_img, 'virtual_size', autospec=True,
                       return_value=units.Gi)
    @mock.patch.object(qemu_img, 'convert', autospec=True)
    def test_restore_writes_the_backed_up_cluster_size(
            self, metadata, expected, convert, virtual_size):
        backup = mock.Mock(id='b1', metadata=metadata)
        image = self.dir + '/staging'
        with open(image, 'wb') as f:
            f.truncate(units.Gi)
        with mock.patch.object(qcow2, '_fsync', autospec=True), \
                mock.patch('os.rename', autospec=True):
            self.driver.restore_raw_image(self.ctxt, backup, self.volume,
                                          image)
        self.assertEqual(expected, convert.call_args[1]['cluster_size'])

    def test_helper_errors_become_cinder_errors(self):
        with mock.patch.object(qemu_img, 'resize', autospec=True,
                               side_effect=errors.QemuImgError('bad /x')):
            exc = self.assertRaises(exception.VolumeBackendAPIException,
                                    self.driver.extend_volume, self.volume,
                                    2)
        self.assertIn('bad /x', str(exc))

    def test_several_volumes_reported_per_volume(self):
        volumes = [fake_volume.fake_volume_obj(self.ctxt, size=1, id=i)
                   for i in ('11111111-1111-1111-1111-111111111111',
                             '22222222-2222-2222-2222-222222222222')]
        paths = [self.driver.local_path(v) for v in volumes]
        good = mock.Mock(spec=freezer.FrozenImage, path=paths[0])
        failed = errors.DomainError('snapshot of sdb failed')
        backups = [mock.Mock(id='b%d' % i, volume_id=v.id)
                   for i, v in enumerate(volumes)]
        devices = [mock.Mock(is_snapshot=False, volume=v, spec=[
            'is_snapshot', 'volume', 'snapshot']) for v in volumes]
        with mock.patch.object(freezer, 'freeze_all', autospec=True,
                               return_value={paths[0]: good,
                                             paths[1]: failed}), \
                mock.patch.object(self.driver, 'backup_volume',
                                  autospec=True,
                                  return_value='done') as backup_volume:
            results = self.driver.backup_volumes(
                self.ctxt, [(b, mock.sentinel.service, d)
                            for b, d in zip(backups, devices)])
        self.assertEqual('done', results['b0'])
        self.assertIsInstance(results['b1'], qcow2.Qcow2DriverError)
        self.assertIn('snapshot of sdb failed', str(results['b1']))
        backup_volume.assert_called_once_with(
            self.ctxt, backups[0], mock.sentinel.service,
            backup_device=devices[0])
        # Not consumed by a (mocked) backup: merged by the batch itself.
        good.merge.assert_called_once_with()

    def _member(self):
        """``(image path, overlay path, member)`` of a one-volume set.

        ``member`` is the ``(backup, backup service, backup device)``
        triple :meth:`backup_volumes` takes.
        """
        volume = fake_volume.fake_volume_obj(
            self.ctxt, size=1, id='11111111-1111-1111-1111-111111111111')
        path = self.driver.local_path(volume)
        overlay = naming.transient_path(path, naming.OVERLAY,
                                        '0123456789abcdef')
        device = mock.Mock(is_snapshot=False, volume=volume,
                           spec=['is_snapshot', 'volume', 'snapshot'])
        backup = mock.Mock(id='b0', volume_id=volume.id)
        return path, overlay, (backup, mock.sentinel.service, device)

    def _back_up_set(self, path, frozen, member):
        """Back up the one-volume set frozen as ``frozen``.

        :returns: the mock of the driver's leftover cleaner
        """
        with mock.patch.object(freezer, 'freeze_all', autospec=True,
                               return_value={path: frozen}), \
                mock.patch.object(self.driver, 'backup_volume',
                                  autospec=True, return_value='done'), \
                mock.patch.object(self.driver, 'clean_leftovers',
                                  autospec=True,
                                  return_value=([], [])) as clean:
            self.driver.backup_volumes(self.ctxt, [member])
        return clean

    def test_overlay_of_a_failed_merge_is_merged_at_once(self):
        # The domain went away during the merge (server deleted): the
        # overlay is left; the leftover cleaner merges it now, not at the
        # driver's next start.
        path, overlay, member = self._member()

        def merge():
            open(overlay, 'w').close()
            raise errors.MergeError('domain is not running', path=overlay)

        frozen = mock.Mock(spec=freezer.FrozenImage, path=path)
        frozen.merge.side_effect = merge
        clean = self._back_up_set(path, frozen, member)
        clean.assert_called_once_with()

    def test_overlay_of_a_failed_group_freeze_is_merged_at_once(self):
        # The domain went away during the atomic snapshot: QEMU made the
        # overlay, the snapshot failed, the freeze could not be undone.
        path, overlay, member = self._member()

        def freeze_all(*args, **kwargs):
            open(overlay, 'w').close()
            raise errors.GroupFreezeFailed(
                {path: errors.DomainError('domain is not running')})

        with mock.patch.object(freezer, 'freeze_all', autospec=True,
                               side_effect=freeze_all), \
                mock.patch.object(self.driver, 'clean_leftovers',
                                  autospec=True,
                                  return_value=([], [])) as clean:
            self.assertRaises(
                cvb_exception.GroupFreezeError, self.driver.backup_volumes,
                self.ctxt, [member], all_or_nothing=True)
        clean.assert_called_once_with()

    def test_overlay_of_a_failed_single_merge_is_merged_at_once(self):
        # The same for one volume's backup (backup create --force of a
        # running server's volume, through _frozen).
        path, overlay, _member = self._member()

        @contextlib.contextmanager
        def frozen(*args, **kwargs):
            yield mock.Mock(spec=freezer.FrozenImage, path=path)
            open(overlay, 'w').close()
            raise errors.MergeError('domain is not running', path=overlay)

        def back_up():
            with self.driver._frozen(path):
                pass

        logs = self.useFixture(fixtures.FakeLogger(level='ERROR'))
        with mock.patch.object(freezer, 'frozen', autospec=True,
                               side_effect=frozen), \
                mock.patch.object(self.driver, 'clean_leftovers',
                                  autospec=True,
                                  return_value=([], ['not merged'])) as clean:
            self.assertRaises(errors.MergeError, back_up)
        clean.assert_called_once_with()
        self.assertIn('Could not merge the leftovers (not merged)',
                      logs.output)

    def test_no_leftover_no_cleaning(self):
        path, _overlay, member = self._member()
        frozen = mock.Mock(spec=freezer.FrozenImage, path=path)
        clean = self._back_up_set(path, frozen, member)
        clean.assert_not_called()


def _no_domain():
    error = libvirt.libvirtError('no domain')
    error.err = (libvirt.VIR_ERR_NO_DOMAIN,) + (None,) * 8
    return error


class GroupFreezeReasonTestCase(test.TestCase):
    """The reason of a set whose freeze failed, as the services build it."""

    def test_reason_with_lazy_translation(self):
        # cinder-volume and cinder-backup translate lazily: _() gives
        # Message objects, which cannot be added to a string.
        self.useFixture(i18n_fixture.ToggleLazy(True))
        exc = errors.GroupFreezeFailed(
            {'/v/volume-a': errors.DomainError('domain is not running')},
            undo_failures={'/v/volume-b': errors.MergeError('gone')})
        reason = str(qcow2._group_freeze_reason(
            exc, {'/v/volume-a': 'a', '/v/volume-b': 'b'}))
        self.assertEqual(
            'volume a (/v/volume-a): domain is not running. No volume of '
            'the set was frozen. Merging back volume b (/v/volume-b) '
            'failed; the driver merges them when it starts.', reason)
