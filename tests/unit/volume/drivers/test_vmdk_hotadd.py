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

"""The VMDK driver's use of the HotAdd transport (backup read, restore)."""

import contextlib
import os
import types
from unittest import mock

from cinder import objects

objects.register_all()

import fixtures  # noqa: E402
import testtools  # noqa: E402

from cinder_vmdk_backup import exception  # noqa: E402
from cinder_vmdk_backup.vmware import diskswap  # noqa: E402
from cinder_vmdk_backup.vmware import errors  # noqa: E402
from cinder_vmdk_backup.vmware import hotadd  # noqa: E402
from cinder_vmdk_backup.vmware import leftovers  # noqa: E402
from cinder_vmdk_backup.vmware import upload  # noqa: E402
from cinder_vmdk_backup.vmware import vmsnapshot  # noqa: E402
from cinder_vmdk_backup.volume.drivers import vmdk  # noqa: E402
from tests.unit.volume.drivers import test_vmdk  # noqa: E402

moref = test_vmdk.moref
PROXY = moref('vm-proxy')


class FakeWriter(object):
    def __init__(self):
        self.writes = []

    def write_at(self, offset, data):
        self.writes.append((offset, bytes(data)))


@mock.patch.object(hotadd, 'datastore_reachable', autospec=True,
                   return_value=None)
@mock.patch.object(hotadd, 'find_proxy', autospec=True,
                   return_value=(PROXY, None))
class HotAddDriverTestCase(test_vmdk.DriverTestBase):

    config_overrides = {'vmware_backup_proxy_vm': 'proxy',
                        'vmware_backup_hotadd_device_timeout': 7}

    def setUp(self):
        super(HotAddDriverTestCase, self).setUp()
        self.writer = FakeWriter()
        self.written = []

    # -- backup ------------------------------------------------------------

    def frozen_disk(self):
        frozen = mock.create_autospec(vmsnapshot.FrozenVM, instance=True)
        frozen.snapshot = moref('snapshot-1')
        frozen.label = 'instance i-1'
        disk = types.SimpleNamespace(
            capacityInKB=1024 * 1024, backing=types.SimpleNamespace(
                fileName='[ds1] i-1/i-1.vmdk',
                datastore=moref('ds-1')))
        return frozen, disk

    @mock.patch.object(hotadd, 'reading', autospec=True)
    def test_snapshot_disk_read_over_hotadd(self, reading, find, reachable):
        reading.return_value = contextlib.nullcontext('device source')
        frozen, disk = self.frozen_disk()
        with self.driver._read_frozen_disk(frozen, disk, 2 << 30) as src:
            self.assertEqual('device source', src)
        reading.assert_called_once_with(
            self.driver.session, PROXY, '[ds1] i-1/i-1.vmdk', 2 << 30,
            1 << 30, '/dev/disk/by-id', 7, self.tmp,
            snapshot=frozen.snapshot)
        reachable.assert_called_once_with(self.driver.session, PROXY,
                                          disk.backing.datastore)
        frozen.read_disk.assert_not_called()
        self.assertIn('transport HotAdd', self.logs.output)
        # What was read counts once the snapshot is found kept.
        frozen.check_kept.assert_called_once_with(disk)

    @mock.patch.object(hotadd, 'reading', autospec=True)
    def test_snapshot_gone_after_the_read_fails_it(self, reading, find,
                                                   reachable):
        reading.return_value = contextlib.nullcontext('device source')
        frozen, disk = self.frozen_disk()
        frozen.check_kept.side_effect = errors.TransferError(
            reason='VM i-1 was deleted')
        with testtools.ExpectedException(errors.TransferError,
                                         '.*VM i-1 was deleted'):
            with self.driver._read_frozen_disk(frozen, disk, 2 << 30):
                frozen.check_kept.assert_not_called()
        frozen.check_kept.assert_called_once_with(disk)

    @mock.patch.object(hotadd, 'reading', autospec=True)
    def test_proxy_looked_up_once_per_driver(self, reading, find,
                                             reachable):
        reading.side_effect = lambda *a, **k: contextlib.nullcontext('dev')
        frozen, disk = self.frozen_disk()
        for _i in range(3):
            with self.driver._read_frozen_disk(frozen, disk, 2 << 30):
                pass
        find.assert_called_once_with(self.driver.session, 'proxy')
        self.assertEqual(3, reading.call_count)
        # Gone: forgotten, looked up again in the same operation.
        reachable.side_effect = [
            hotadd.vexc.ManagedObjectNotFoundException('gone'), None]
        with self.driver._read_frozen_disk(frozen, disk, 2 << 30):
            pass
        self.assertEqual(2, find.call_count)

    @mock.patch.object(hotadd, 'reading', autospec=True)
    def test_snapshot_disk_over_nbd_without_proxy(self, reading, find,
                                                  reachable):
        find.return_value = (None, 'no VM of this vCenter is the proxy p')
        frozen, disk = self.frozen_disk()
        frozen.read_disk.return_value = contextlib.nullcontext('nfc')
        with self.driver._read_frozen_disk(frozen, disk, 2 << 30) as src:
            self.assertEqual('nfc', src)
        reading.assert_not_called()
        self.assertIn('transport NBD; HotAdd passed over: no VM of this '
                      'vCenter is the proxy p', self.logs.output)
        frozen.check_kept.assert_called_once_with(disk)

    @mock.patch.object(hotadd, 'reading', autospec=True)
    def test_disk_larger_than_volume_is_not_hot_added(self, reading, find,
                                                      reachable):
        frozen, disk = self.frozen_disk()
        frozen.read_disk.return_value = contextlib.nullcontext('nfc')
        with self.driver._read_frozen_disk(frozen, disk, 1 << 29) as src:
            self.assertEqual('nfc', src)
        reading.assert_not_called()
        self.assertIn('more than the 536870912 bytes', self.logs.output)

    # -- restore -----------------------------------------------------------

    def _image(self, data):
        path = os.path.join(self.tmp, 'image')
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def fake_writing(self, *args, **kwargs):
        self.written.append(args)

        @contextlib.contextmanager
        def cm():
            yield self.writer
        return cm()

    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, '_extend_if_needed',
                       autospec=True)
    @mock.patch.object(diskswap, 'swap_disk', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    @mock.patch.object(hotadd, 'writing', autospec=True)
    def test_restore_into_existing_backing(self, writing, import_disk, swap,
                                           extend, find, reachable):
        writing.side_effect = self.fake_writing
        backing = moref('vm-1')
        temp_vm = moref('vm-temp')
        self.vops.get_backing.return_value = backing
        self.vops.snapshot_exists.return_value = False
        self.vops.get_summary.return_value = types.SimpleNamespace(
            name='ds1')
        self.vops.create_backing.return_value = temp_vm
        self.vops.get_vmdk_path.side_effect = lambda vm: {
            'vm-1': '[ds1] volume-x/volume-x.vmdk',
            'vm-temp': '[ds1] tmp/tmp.vmdk'}[vm.value]
        data = b'\0' * 4096 + b'data' * 1024
        self.driver.restore_raw_image(self.ctx, self.backup, self.volume,
                                      self._image(data))
        import_disk.assert_not_called()
        name = self.vops.create_backing.call_args[0][0]
        self.assertEqual(self.volume.id, leftovers.parse_temp_vm_name(
            name)[3])
        self.assertEqual(len(data) // 1024,
                         self.vops.create_backing.call_args[0][1])
        self.assertEqual([(self.driver.session, PROXY,
                           '[ds1] tmp/tmp.vmdk', len(data),
                           '/dev/disk/by-id', 7, self.tmp)], self.written)
        self.assertEqual([(0, data)], self.writer.writes)
        # The temp VM's disk goes into the backing; the temp VM goes.
        self.assertEqual((backing, temp_vm), swap.call_args[0][1:3])
        self.vops.delete_backing.assert_called_once_with(temp_vm)
        extend.assert_called_once_with(self.driver, self.volume, backing)
        self.assertIn('transport HotAdd', self.logs.output)

    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, '_extend_if_needed',
                       autospec=True)
    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver,
                       '_select_ds_for_volume', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    @mock.patch.object(hotadd, 'writing', autospec=True)
    def test_restore_into_new_backing(self, writing, import_disk, select,
                                      extend, find, reachable):
        writing.side_effect = self.fake_writing
        self.vops.get_backing.return_value = None
        select.return_value = ('host-1', 'rp-1', 'folder-1',
                               types.SimpleNamespace(
                                   name='ds1', datastore=moref('ds-1')))
        new = moref('vm-new')
        self.vops.create_backing.return_value = new
        self.vops.get_vmdk_path.return_value = '[ds1] v/v.vmdk'
        self.driver.restore_raw_image(self.ctx, self.backup, self.volume,
                                      self._image(b'x' * 8192))
        import_disk.assert_not_called()
        args = self.vops.create_backing.call_args[0]
        self.assertEqual((self.volume.name, 8, 'thin', 'folder-1', 'rp-1',
                          'host-1', 'ds1'), args[:7])
        self.assertEqual([(0, b'x' * 8192)], self.writer.writes)
        self.vops.update_backing_disk_uuid.assert_called_once_with(
            new, self.volume.id)
        self.vops.delete_backing.assert_not_called()
        extend.assert_called_once_with(self.driver, self.volume, new)
        reachable.assert_called_once_with(self.driver.session, PROXY,
                                          moref('ds-1'))

    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver,
                       '_select_ds_for_volume', autospec=True)
    @mock.patch.object(hotadd, 'writing', autospec=True)
    def test_failed_write_removes_the_new_backing(self, writing, select,
                                                  find, reachable):
        writing.side_effect = self.fake_writing
        self.writer.write_at = mock.Mock(
            side_effect=errors.TransferError(reason='EIO'))
        self.vops.get_backing.return_value = None
        select.return_value = ('h', 'rp', 'f', types.SimpleNamespace(
            name='ds1', datastore=moref('ds-1')))
        self.vops.create_backing.return_value = moref('vm-new')
        exc = self.assertRaises(exception.VmdkBackupError,
                                self.driver.restore_raw_image, self.ctx,
                                self.backup, self.volume,
                                self._image(b'x' * 512))
        self.assertIn('EIO', str(exc))
        self.vops.delete_backing.assert_called_once_with(moref('vm-new'))
        self.vops.update_backing_disk_uuid.assert_not_called()

    @mock.patch.object(vmdk.VMwareVcVmdkBackupDriver, '_extend_if_needed',
                       autospec=True)
    @mock.patch.object(diskswap, 'swap_disk', autospec=True)
    @mock.patch.object(upload, 'import_disk', autospec=True)
    @mock.patch.object(hotadd, 'writing', autospec=True)
    def test_device_never_appears_restores_over_nbd(
            self, writing, import_disk, swap, extend, find, reachable):
        writing.side_effect = hotadd.DeviceNotFound(reason='no device')
        backing = moref('vm-1')
        self.vops.get_backing.return_value = backing
        self.vops.snapshot_exists.return_value = False
        self.vops.get_summary.return_value = types.SimpleNamespace(
            name='ds1')
        self.vops.create_backing.return_value = moref('vm-hot')
        self.vops.get_vmdk_path.return_value = '[ds1] a/a.vmdk'
        import_disk.return_value = moref('vm-imported')
        self.driver.restore_raw_image(self.ctx, self.backup, self.volume,
                                      self._image(b'y' * 4096))
        # The HotAdd temp VM went before the NFC import made its own.
        self.assertEqual([mock.call(moref('vm-hot')),
                          mock.call(moref('vm-imported'))],
                         self.vops.delete_backing.call_args_list)
        self.assertEqual(moref('vm-imported'), swap.call_args[0][2])
        self.assertIn('transport NBD; HotAdd passed over: Disk transfer '
                      'failed: no device', self.logs.output)

    # -- janitor -----------------------------------------------------------

    @mock.patch.object(leftovers, 'remove_snapshots', autospec=True)
    @mock.patch.object(leftovers, 'remove_temp_vms', autospec=True)
    @mock.patch.object(leftovers, 'abort_leases', autospec=True)
    @mock.patch.object(hotadd, 'remove_leftovers', autospec=True)
    def test_janitor_removes_hot_added_disks_first(
            self, hot, abort, vms, snaps, find, reachable):
        calls = []
        hot.side_effect = lambda *a: calls.append('hotadd')
        abort.side_effect = lambda *a: calls.append('leases')
        vms.side_effect = lambda *a: calls.append('vms')
        snaps.side_effect = lambda *a: calls.append('snapshots')
        self.driver.remove_leftovers()
        self.assertEqual(['hotadd', 'leases', 'vms', 'snapshots'], calls)
        hot.assert_called_once_with(self.driver.session, self.tmp)

    @mock.patch.object(leftovers, 'remove_snapshots', autospec=True)
    @mock.patch.object(leftovers, 'remove_temp_vms', autospec=True)
    @mock.patch.object(leftovers, 'abort_leases', autospec=True)
    @mock.patch.object(hotadd, 'remove_leftovers', autospec=True)
    def test_janitor_failure_does_not_stop_setup(
            self, hot, abort, vms, snaps, find, reachable):
        hot.side_effect = errors.TransferError(reason='vc away')
        self.driver.remove_leftovers()
        self.assertIn('disks left on the HotAdd proxy', self.logs.output)
        vms.assert_called_once_with(self.driver.session, 100)


class FilePiecesTestCase(testtools.TestCase):

    def test_holes_are_skipped(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'img')
        size = 64 << 20
        with open(path, 'wb') as f:
            f.truncate(size)
            f.seek(1 << 20)
            f.write(b'a' * 5000)
            f.seek(40 << 20)
            f.write(b'b' * (hotadd.IO_BYTES + 10))
        pieces = list(vmdk._file_pieces(path, size))
        data = {p.offset: p.data for p in pieces}
        self.assertTrue(all(p.length == len(p.data) for p in pieces))
        # Only what the file system holds is read (its allocation unit
        # around the data), never the holes' 58 MiB.
        self.assertLess(sum(p.length for p in pieces), 12 << 20)
        image = bytearray(size)
        for offset, chunk in data.items():
            image[offset:offset + len(chunk)] = chunk
        with open(path, 'rb') as f:
            self.assertEqual(f.read(), bytes(image))

    def test_all_hole(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'img')
        with open(path, 'wb') as f:
            f.truncate(1 << 20)
        self.assertEqual([], list(vmdk._file_pieces(path, 1 << 20)))
