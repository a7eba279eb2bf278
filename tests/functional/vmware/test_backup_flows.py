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

"""Backup and restore of VMDK volumes against vcsim, through the manager.

vcsim (the project's patched build) plays vCenter; Cinder's test base class
gives the sqlite database, fake RPC and notifier; the backup service is
Cinder's posix driver in a temporary directory; the plugin's BackupManager
loads ``VMwareVcVmdkBackupDriver`` for the ``vmdk`` backend as cinder-backup
would. The volume service is not running: its RPC methods are the boundary
the tests play (``get_backup_device`` is answered by ``continue_backup``).
A second backend, ``stock`` (Cinder's LVM driver, which does not own its
backups), takes Cinder's path through os-brick's local connector on a plain
file: backups hold raw data, so they cross between the two.
"""

import hashlib
import os
from unittest import mock

from cinder.backup.drivers import posix  # noqa: F401 (its options)
from cinder import context
from cinder.message import message_field
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import configuration
from cinder.volume.drivers.vmware import vmdk as stock_vmdk
from cinder.volume import volume_utils
import fixtures
from oslo_log import log as logging
from oslo_service import loopingcall
from oslo_utils import units
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

from cinder_vmdk_backup.backup import driver_owned
from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup.vmware import diskswap
from cinder_vmdk_backup.vmware import leftovers
from cinder_vmdk_backup.vmware import nfc
from cinder_vmdk_backup.volume.drivers import vmdk
from tests.functional import vcsim as vcsim_fixture

CONF = manager.CONF
VMDK_HOST = 'node1@vmdk#pool1'
STOCK_HOST = 'node1@stock#pool1'
#: (offset, length) of the data written into a test volume; the last region
#: ends at the last byte of the 1 GiB disk, so a lost tail would show.
DATA_REGIONS = ((0, 64 * units.Ki), (5 * units.Mi + 4096, 3 * units.Mi),
                (300 * units.Mi, units.Mi), (units.Gi - units.Mi, units.Mi))


def pattern(seed, length):
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + b'%d' % counter).digest()
        counter += 1
    return bytes(out[:length])


class Disk(object):
    """What a disk should hold: its size and its non-zero regions."""

    def __init__(self, size=units.Gi, regions=DATA_REGIONS, seed=b'a',
                 random=False):
        self.size = size
        self.regions = {}
        for offset, length in regions:
            self.write(offset, os.urandom(length) if random
                       else pattern(seed + b'%d' % offset, length))

    def write(self, offset, data):
        """Record data at offset (regions must not overlap partially)."""
        for start, old in list(self.regions.items()):
            if start <= offset and offset + len(data) <= start + len(old):
                self.regions[start] = (old[:offset - start] + data +
                                       old[offset - start + len(data):])
                return
        self.regions[offset] = data

    def read(self, offset, length):
        """The bytes the disk should hold at ``offset``.

        Zeros between regions: a range may span regions and the zeros
        around them.
        """
        data = bytearray(length)
        for start, region in self.regions.items():
            lo = max(start, offset)
            hi = min(start + len(region), offset + length)
            if lo < hi:
                data[lo - offset:hi - offset] = region[lo - start:hi - start]
        return bytes(data)

    def resized(self, size):
        disk = Disk(size, regions=())
        disk.regions = dict(self.regions)
        return disk


def assert_sparse_file(test, disk, path, size):
    """Assert that the file at path reads as ``disk`` (``size`` bytes).

    Reads the expected regions, and elsewhere only what the file has
    allocated (SEEK_DATA), so a 1 GiB disk of a few MiB costs a few MiB.
    """
    test.assertLessEqual(os.path.getsize(path), size)
    with open(path, 'rb') as f:
        for offset, data in sorted(disk.regions.items()):
            f.seek(offset)
            got = f.read(len(data))
            got += bytes(len(data) - len(got))
            test.assertEqual(hashlib.sha256(data).hexdigest(),
                             hashlib.sha256(got).hexdigest(),
                             'region at %d differs' % offset)
        ranges = sorted((o, o + len(d)) for o, d in disk.regions.items())
        fd = f.fileno()
        end = os.fstat(fd).st_size
        position = 0
        while position < end:
            try:
                position = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, position, os.SEEK_HOLE)
            while position < hole:
                step = min(hole, position + 8 * units.Mi)
                for start, stop in ranges:
                    if start <= position < stop:
                        step = min(step, stop)
                        break
                    if position < start < step:
                        step = start
                if not any(a <= position < b for a, b in ranges):
                    os.lseek(fd, position, os.SEEK_SET)
                    chunk = os.read(fd, step - position)
                    test.assertEqual(0, chunk.count(0) - len(chunk),
                                     'data outside the regions at %d'
                                     % position)
                position = step


class VmdkBackupTestBase(test.TestCase):
    """vcsim, the manager, a posix backup service and helpers."""

    def setUp(self):
        # Before Cinder's base class points HOME at a temporary directory:
        # the vcsim build and its WSDL are cached under the real HOME.
        vcsim_fixture.vcsim_binary()
        vcsim_fixture.wsdl_path()
        super(VmdkBackupTestBase, self).setUp()
        # DEBUG as an operator debugging would run; suds at INFO as
        # oslo.log's default_log_levels set it (its DEBUG dumps every SOAP
        # message).
        self.logs = self.useFixture(fixtures.FakeLogger(
            level=logging.DEBUG, format='%(asctime)s %(name)s %(message)s'))
        for name in ('suds', 'oslo_vmware.service'):
            self.useFixture(fixtures.FakeLogger(name=name,
                                                level=logging.INFO))
        self.vcsim = self.useFixture(vcsim_fixture.VcsimFixture())
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.posix_dir = self._dir('posix')
        self.staging_dir = self._dir('staging')
        self.stock_dir = self._dir('stock')
        self._write_conf()
        self.override_config('backup_driver',
                             'cinder.backup.drivers.posix.PosixBackupDriver')
        self.override_config('backup_posix_path', self.posix_dir)
        self.override_config('backup_compression_algorithm', 'zstd')
        self.override_config('backup_enable_progress_timer', False)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.volume_type = test_utils.create_volume_type(
            self.ctxt, name='vmdk-%s' % self.id()[-40:])
        self.manager = manager.BackupManager(host='backup-node')
        self.assertRaises(loopingcall.LoopingCallDone,
                          self.manager._setup_backup_driver, self.ctxt)
        self._patch(volume_utils, 'brick_get_connector_properties',
                    return_value={'host': 'backup-node'})
        rpcapi = self.manager.volume_rpcapi
        self.get_backup_device = self._patch(rpcapi, 'get_backup_device')
        self._patch(rpcapi, 'secure_file_operations_enabled',
                    return_value=True)
        self._patch(rpcapi, 'initialize_connection',
                    side_effect=self._initialize_connection)
        self._patch(rpcapi, 'terminate_connection')
        self._patch(rpcapi, 'remove_export')
        self.delete_volume = self._patch(rpcapi, 'delete_volume')
        # The test's own driver: creates and inspects backings, as the
        # volume service would.
        self.driver = self._new_driver()
        self.session = self.driver.session
        self.leases = []
        real_ready = nfc.NfcLease._ready

        def spy(lease):
            self.leases.append(lease.ref)
            return real_ready(lease)

        self._patch(nfc.NfcLease, '_ready', side_effect=spy)

    # -- fixtures ----------------------------------------------------------

    def _dir(self, name):
        path = os.path.join(self.tmp, name)
        os.makedirs(path)
        return path

    def _write_conf(self):
        options = dict(self.vcsim.cinder_backend_options())
        options.update({
            'volume_driver': 'cinder_vmdk_backup.volume.drivers.vmdk.'
                             'VMwareVcVmdkBackupDriver',
            'vmware_tmp_dir': self.staging_dir,
            'vmware_task_poll_interval': 0.1,
            'vmware_backup_transfer_idle_timeout': 20,
            'vmware_backup_lease_ready_timeout': 20,
        })
        path = os.path.join(self.tmp, 'cinder.conf')
        with open(path, 'w') as conf:
            conf.write('[vmdk]\n')
            for key, value in options.items():
                if isinstance(value, (list, tuple)):
                    value = ','.join(value)
                conf.write('%s = %s\n' % (key, value))
            conf.write('[stock]\nvolume_driver = cinder.volume.drivers.lvm.'
                       'LVMVolumeDriver\n')
        CONF([], default_config_files=[path])

    def _new_driver(self):
        conf = configuration.Configuration(stock_vmdk.vmdk_opts,
                                           config_group='vmdk')
        driver = vmdk.VMwareVcVmdkBackupDriver(configuration=conf,
                                               host='node1@vmdk')
        driver.do_setup(self.ctxt)
        return driver

    def _patch(self, obj, name, **kwargs):
        patcher = mock.patch.object(obj, name, autospec=True, **kwargs)
        self.addCleanup(patcher.stop)
        return patcher.start()

    def _initialize_connection(self, ctxt, volume, properties):
        return {'driver_volume_type': 'local',
                'data': {'device_path': self._stock_path(volume)}}

    def _stock_path(self, volume):
        return os.path.join(self.stock_dir, volume.id)

    # -- volumes -----------------------------------------------------------

    def _vmdk_volume(self, size=1, disk=None, backing=True,
                     status='available', volume_type=None):
        volume = self._create_volume(host=VMDK_HOST, size=size,
                                     status=status,
                                     previous_status='available',
                                     volume_type=volume_type)
        if backing:
            self.driver._create_backing(volume)
            self._seed(volume, disk or Disk(size * units.Gi))
        return volume

    def _create_volume(self, volume_type=None, **kwargs):
        return test_utils.create_volume(
            self.ctxt, volume_type_id=(volume_type or self.volume_type).id,
            **kwargs)

    def _backing(self, volume):
        return self.driver.volumeops.get_backing(volume.name, volume.id)

    def _vmdk_path(self, volume):
        return self.driver.volumeops.get_vmdk_path(self._backing(volume))

    def _seed(self, volume, disk):
        path = self._vmdk_path(volume)
        for offset, data in disk.regions.items():
            vcsim_fixture.seed_disk(self.vcsim, path, data, offset=offset)

    def _flat(self, volume, path=None):
        return vcsim_fixture._flat_file(self.vcsim,
                                        path or self._vmdk_path(volume))

    def _assert_data(self, disk, volume, path=None):
        """The volume's disk holds exactly ``disk`` (read sparsely)."""
        assert_sparse_file(self, disk, self._flat(volume, path),
                           volume.size * units.Gi)

    def _stock_volume(self, size=1, disk=None, status='available'):
        volume = self._create_volume(host=STOCK_HOST, size=size,
                                     status=status,
                                     previous_status='available')
        with open(self._stock_path(volume), 'wb') as f:
            f.truncate(size * units.Gi)
            for offset, data in (disk.regions.items() if disk else ()):
                f.seek(offset)
                f.write(data)
        return volume

    # -- the API's and the volume service's part of the flows --------------

    def _backup(self, volume, parent=None, device=None, fail=False):
        volume.status = 'backing-up'
        volume.previous_status = 'available'
        volume.save()
        backup = test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
            parent_id=parent and parent.id, size=volume.size,
            temp_volume_id=device and device.id)
        self.manager.create_backup(self.ctxt, backup)
        backup_device = objects.BackupDeviceInfo()
        backup_device.volume = device or volume
        backup_device.secure_enabled = True
        self.error = self._call(fail, self.manager.continue_backup,
                                self.ctxt, backup, backup_device)
        backup.refresh()
        volume.refresh()
        return backup

    def _call(self, fail, func, *args):
        """Call func; when fail, it must raise: return the exception."""
        if not fail:
            func(*args)
            return None
        try:
            func(*args)
        except Exception as exc:
            return exc
        self.fail('%s did not fail' % func.__name__)

    def _restore(self, backup, volume, fail=False):
        volume_is_new = volume.status == 'creating'
        if not volume_is_new:
            volume.status = 'restoring-backup'
            volume.save()
        backup.status = fields.BackupStatus.RESTORING
        backup.restore_volume_id = volume.id
        backup.save()
        self.error = self._call(fail, self.manager.restore_backup, self.ctxt,
                                backup, volume.id, volume_is_new)
        volume.refresh()
        backup.refresh()

    # -- what must be left behind (nothing) ----------------------------------

    def _messages(self, resource_uuid):
        return [message['detail_id']
                for message in self.manager.message_api.get_all(
                    self.ctxt, filters={'resource_uuid': resource_uuid})]

    def _stored_bytes(self, backup):
        service = self.manager._backup_service_class(self.ctxt)
        metadata = service._read_metadata(backup)
        return sum(obj['length'] for entry in metadata['objects']
                   for obj in entry.values())

    def _temp_vms(self):
        return [name for name, _ref in leftovers._vm_names(self.session, 100)
                if name and name.startswith(leftovers.TEMP_VM_PREFIX)]

    def _vmdk_files(self):
        found = []
        for root, _dirs, files in os.walk(self.vcsim.datastore_path):
            found += [os.path.relpath(os.path.join(root, name),
                                      self.vcsim.datastore_path)
                      for name in files if name.endswith('.vmdk')]
        return sorted(found)

    def _open_leases(self):
        """Leases of this test still ready (neither completed nor aborted)."""
        still = []
        for lease in self.leases:
            try:
                state = self.session.invoke_api(
                    vim_util, 'get_object_property', self.session.vim, lease,
                    'state')
            except vexc.ManagedObjectNotFoundException:
                continue
            if state == 'ready':
                still.append(lease)
        return still

    def _assert_nothing_left(self):
        self.assertEqual([], self._temp_vms())
        self.assertEqual([], self._open_leases())
        self.assertEqual([], os.listdir(self.staging_dir))
        self.assertNotIn(self.vcsim.password, self.logs.output)


class BackupFlowsTestCase(VmdkBackupTestBase):

    def test_full_incremental_and_restores(self):
        disk = Disk()
        volume = self._vmdk_volume(disk=disk)
        files_before = self._vmdk_files()
        full = self._backup(volume)
        self.assertEqual(fields.BackupStatus.AVAILABLE, full.status)
        self.assertEqual('available', volume.status)
        profile = driver_owned.DriverOwnedBackupMixin.disk_profile_of(full)
        self.assertEqual({'adapter_type', 'disk_type', 'hw_version'},
                         set(profile))
        self.assertEqual('lsiLogic', profile['adapter_type'])
        self.assertEqual('thin', profile['disk_type'])
        self.assertTrue(profile['hw_version'].startswith('vmx-'))
        self.assertEqual(files_before, self._vmdk_files())

        # A few grains change: two hash blocks of the extent hand-off
        # (driver_owned_backup_hash_block_kb) are stored.
        changed = Disk(regions=())
        changed.regions = dict(disk.regions)
        for offset, data in ((5 * units.Mi + 8192, b'x' * 4096),
                             (300 * units.Mi + 100, b'y' * 512)):
            changed.write(offset, data)
            vcsim_fixture.seed_disk(self.vcsim, self._vmdk_path(volume),
                                    data, offset=offset)
        self._assert_data(changed, volume)
        incremental = self._backup(volume, parent=full)
        self.assertEqual(fields.BackupStatus.AVAILABLE, incremental.status)
        self.assertEqual(2 * CONF.driver_owned_backup_hash_block_kb * units.Ki,
                         self._stored_bytes(incremental))

        # The incremental onto a new volume (no backing: a new one).
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(incremental, new)
        self.assertEqual('available', new.status)
        self._assert_data(changed, new)
        new_disk = diskswap.disk_of(self.session, self._backing(new))
        self.assertEqual(new.id, new_disk.backing.uuid)

        # The full one onto the changed volume itself (disk swap).
        old_path = self._vmdk_path(volume)
        self._restore(full, volume)
        self.assertEqual('available', volume.status)
        self._assert_data(disk, volume)
        swapped = diskswap.disk_of(self.session, self._backing(volume))
        self.assertEqual(volume.id, swapped.backing.uuid)
        self.assertEqual(units.Gi, swapped.capacityInKB * units.Ki)
        self.assertNotEqual(old_path, swapped.backing.fileName)
        self.assertNotIn(old_path.split('] ')[-1], self._vmdk_files())
        self._assert_nothing_left()

    def test_restore_to_bigger_volume(self):
        disk = Disk()
        volume = self._vmdk_volume(disk=disk)
        backup = self._backup(volume)
        bigger = self._vmdk_volume(size=2, backing=False, status='creating')
        self._restore(backup, bigger)
        self.assertEqual('available', bigger.status)
        restored = diskswap.disk_of(self.session, self._backing(bigger))
        self.assertEqual(2 * units.Gi, restored.capacityInKB * units.Ki)
        self._assert_data(disk.resized(2 * units.Gi), bigger)
        self._assert_nothing_left()

    def test_restore_into_existing_bigger_volume(self):
        disk = Disk()
        volume = self._vmdk_volume(disk=disk)
        backup = self._backup(volume)
        bigger = self._vmdk_volume(size=2, disk=Disk(
            2 * units.Gi, regions=((units.Gi + 4096, units.Mi),), seed=b'b'))
        self._restore(backup, bigger)
        self.assertEqual('available', bigger.status)
        restored = diskswap.disk_of(self.session, self._backing(bigger))
        self.assertEqual(2 * units.Gi, restored.capacityInKB * units.Ki)
        self.assertEqual(bigger.id, restored.backing.uuid)
        self._assert_data(disk.resized(2 * units.Gi), bigger)
        self._assert_nothing_left()

    def _volume_type(self, **specs):
        return test_utils.create_volume_type(
            self.ctxt, name='shape-%s' % os.urandom(4).hex(),
            extra_specs={'vmware:%s' % k: v for k, v in specs.items()})

    def _disk_shape(self, volume):
        """(controller class, provisioning) of the backing's disk."""
        backing = self._backing(volume)
        disk = diskswap.disk_of(self.session, backing)
        controller = diskswap.controller_of(self.session, backing, disk)
        if getattr(disk.backing, 'thinProvisioned', False):
            provisioning = 'thin'
        elif getattr(disk.backing, 'eagerlyScrub', False):
            provisioning = 'eagerZeroedThick'
        else:
            provisioning = 'thick'
        return controller.__class__.__name__, provisioning

    def test_new_backing_shaped_like_the_backed_up_disk(self):
        disk = Disk(regions=((4096, 64 * units.Ki),))
        volume = self._vmdk_volume(disk=disk, volume_type=self._volume_type(
            adapter_type='paraVirtual', vmdk_type='eagerZeroedThick'))
        self.assertEqual(('ParaVirtualSCSIController', 'eagerZeroedThick'),
                         self._disk_shape(volume))
        backup = self._backup(volume)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)

        # A new volume whose type says nothing of the disk: the disk comes
        # back as it was backed up, not as the backend's default.
        plain = self._vmdk_volume(backing=False, status='creating')
        self._restore(backup, plain)
        self.assertEqual('available', plain.status)
        self._assert_data(disk, plain)
        self.assertEqual(('ParaVirtualSCSIController', 'eagerZeroedThick'),
                         self._disk_shape(plain))

        # A new volume whose type sets the adapter: the type's adapter,
        # the backed-up disk's provisioning.
        sas = self._vmdk_volume(backing=False, status='creating',
                                volume_type=self._volume_type(
                                    adapter_type='lsiLogicsas'))
        self._restore(backup, sas)
        self.assertEqual('available', sas.status)
        self._assert_data(disk, sas)
        self.assertEqual(('VirtualLsiLogicSASController', 'eagerZeroedThick'),
                         self._disk_shape(sas))
        self._assert_nothing_left()

    def test_volume_without_backing_backs_up_as_zeros(self):
        lazy = self._vmdk_volume(backing=False)
        backup = self._backup(lazy)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.assertIsNone(self._backing(lazy))
        # No disk to look at: what the volume type would give it.
        self.assertEqual({'adapter_type': 'lsiLogic', 'disk_type': 'thin',
                          'hw_version': ''},
                         driver_owned.DriverOwnedBackupMixin
                         .disk_profile_of(backup))
        target = self._vmdk_volume(disk=Disk(seed=b'c'))
        self._restore(backup, target)
        self._assert_data(Disk(regions=()), target)
        self._assert_nothing_left()

    def test_in_use_volume_through_temporary_clone(self):
        disk = Disk(seed=b'd')
        volume = self._vmdk_volume(disk=disk)
        clone = self._create_volume(host=VMDK_HOST, size=1,
                                    status='available')
        self.driver.create_cloned_volume(clone, volume)
        self._assert_data(disk, clone)
        backup = self._backup(volume, device=clone)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.assertEqual(clone.id,
                         self.delete_volume.call_args[0][1].id)
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(backup, new)
        self._assert_data(disk, new)
        self._assert_nothing_left()

    def test_backups_cross_backends(self):
        # A stock (raw) backup of a plain volume, restored onto VMDK.
        disk = Disk(seed=b'e')
        stock = self._stock_volume(disk=disk)
        stock_backup = self._backup(stock)
        self.assertEqual(fields.BackupStatus.AVAILABLE, stock_backup.status)
        target = self._vmdk_volume(backing=False, status='creating')
        self._restore(stock_backup, target)
        self.assertEqual('available', target.status)
        self._assert_data(disk, target)

        # A VMDK backup restored onto a plain volume by Cinder's path.
        vmdk_backup = self._backup(target)
        plain = self._stock_volume(status='creating')
        self._restore(vmdk_backup, plain)
        self.assertEqual('available', plain.status)
        assert_sparse_file(self, disk, self._stock_path(plain), units.Gi)
        self._assert_nothing_left()

    def test_create_volume_from_backup_in_volume_service(self):
        disk = Disk(seed=b'f')
        volume = self._vmdk_volume(disk=disk)
        backup = self._backup(volume)
        new = self._vmdk_volume(backing=False, status='creating')
        self.driver.create_volume_from_backup(new, backup)
        self._assert_data(disk, new)
        restored = diskswap.disk_of(self.session, self._backing(new))
        self.assertEqual(new.id, restored.backing.uuid)
        self._assert_nothing_left()

    def test_restore_refused_over_cow_snapshots(self):
        disk = Disk(seed=b'g')
        volume = self._vmdk_volume(disk=disk)
        backup = self._backup(volume)
        self.driver.volumeops.create_snapshot(self._backing(volume),
                                              'snap-1', None)
        self._restore(backup, volume, fail=True)
        self.assertEqual('error_restoring', volume.status)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.assertIn('snapshots', str(self.error))
        self.assertEqual([message_field.Detail.BACKUP_RESTORE_ERROR[0]],
                         self._messages(backup.id))
        self._assert_data(disk, volume)
        self.assertIsNotNone(self.driver.volumeops.get_snapshot(
            self._backing(volume), 'snap-1'))
        self._assert_nothing_left()
