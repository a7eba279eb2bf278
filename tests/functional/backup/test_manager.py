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

"""The plugin's BackupManager with Cinder's real backup machinery.

Cinder's test base class gives an sqlite database, fake RPC and a fake
notifier; the backup service is Cinder's real posix driver writing into a
temporary directory; volumes of the ``owned`` backend are files of
:class:`~tests.functional.backup.file_driver.FileVolumeDriver`, which owns
its backups; volumes of the ``stock`` backend (Cinder's LVM driver, which
does not) take Cinder's path through os-brick's local connector. The volume
service is not running: its RPC methods are the boundary the tests play
(``get_backup_device`` is answered by calling ``continue_backup``).
"""

import hashlib
import json
import logging
import os
import threading
import time
from unittest import mock
import zlib

import ddt
import fixtures
from isal import isal_zlib
from os_brick.initiator import connector as brick_connector
from oslo_service import loopingcall
from oslo_utils import units
import zstd

from cinder.backup import chunkeddriver
from cinder.backup.drivers import posix
from cinder import context
from cinder import exception
from cinder.message import message_field
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import volume_utils

from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import driver_owned
from cinder_vmdk_backup.backup import manager
from cinder_vmdk_backup.backup import status_checks
from cinder_vmdk_backup.backup import zero_hashing
from tests.functional.backup import file_driver

CONF = manager.CONF
OWNED_HOST = 'node1@owned#pool1'
STOCK_HOST = 'node1@stock#pool1'
#: Regions written into the source volume: (offset, length). The last one
#: ends at the last byte of the disk, so a lost tail would show.
DATA_REGIONS = ((0, 64 * units.Ki), (5 * units.Mi + 4096, 3 * units.Mi),
                (300 * units.Mi, units.Mi), (units.Gi - units.Mi, units.Mi))


def _block_map(path, block=units.Mi):
    """File size and digests of its non-zero blocks: equal iff identical."""
    blocks = {}
    zero = bytes(block)
    with open(path, 'rb') as f:
        end = os.fstat(f.fileno()).st_size
        offset = 0
        while offset < end:
            try:
                data_start = os.lseek(f.fileno(), offset, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(f.fileno(), data_start, os.SEEK_HOLE)
            offset = max(offset, data_start - data_start % block)
            while offset < hole:
                f.seek(offset)
                data = f.read(block)
                if data.rstrip(b'\0') and data != zero[:len(data)]:
                    blocks[offset] = hashlib.sha256(data).hexdigest()
                offset += block
    return end, blocks


@ddt.ddt
class DriverOwnedBackupManagerTestCase(test.TestCase):

    def setUp(self):
        super(DriverOwnedBackupManagerTestCase, self).setUp()
        self.volume_dir = self.useFixture_tempdir('volumes')
        self.posix_dir = self.useFixture_tempdir('posix')
        self.etc_dir = self.useFixture_tempdir('etc')
        self._load_config()
        self.override_config('backup_driver',
                             'cinder.backup.drivers.posix.PosixBackupDriver')
        self.override_config('backup_posix_path', self.posix_dir)
        self.override_config('backup_compression_algorithm', 'zstd')
        self.override_config('backup_enable_progress_timer', False)
        self.override_config('backup_file_size', 64 * units.Mi)

        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        # os-brick's host probing runs privileged commands (privsep): the
        # stock path's; driver-owned operations must not probe.
        self.probe = self._patch(brick_connector, 'get_connector_properties',
                                 return_value={'host': 'backup-node'})
        self._start_manager()
        file_driver.SETUP_CALLS.clear()

    # -- fixtures ----------------------------------------------------------

    def _start_manager(self, manager_class=manager.BackupManager):
        """Start a manager; its volume service's side is played here."""
        self.manager = manager_class(host='backup-node')
        self.assertRaises(loopingcall.LoopingCallDone,
                          self.manager._setup_backup_driver, self.ctxt)
        rpcapi = self.manager.volume_rpcapi
        # The volume service's side of the RPC boundary.
        self.get_backup_device = self._patch(rpcapi, 'get_backup_device')
        self.secure_ops = self._patch(rpcapi,
                                      'secure_file_operations_enabled',
                                      return_value=True)
        self.initialize_connection = self._patch(
            rpcapi, 'initialize_connection',
            side_effect=self._initialize_connection)
        self.terminate_connection = self._patch(rpcapi,
                                                'terminate_connection')
        self.remove_export = self._patch(rpcapi, 'remove_export')
        self.delete_volume = self._patch(rpcapi, 'delete_volume')

    def _load_config(self, owned_extra=''):
        """Give this node a cinder.conf with two backend sections.

        Cinder's TestCase parsed no file; the manager looks for sections.
        """
        conf_path = os.path.join(self.etc_dir, 'cinder.conf')
        with open(conf_path, 'w') as conf:
            conf.write('[owned]\n'
                       'volume_driver = tests.functional.backup.file_driver.'
                       'FileVolumeDriver\n'
                       'file_volume_dir = %s\n%s'
                       '[stock]\n'
                       'volume_driver = cinder.volume.drivers.lvm.'
                       'LVMVolumeDriver\n' % (self.volume_dir, owned_extra))
        CONF([], default_config_files=[conf_path])

    def useFixture_tempdir(self, name):
        path = os.path.join(self.useFixture(
            fixtures.TempDir()).path, name)
        os.makedirs(path)
        return path

    def _patch(self, obj, name, **kwargs):
        patcher = mock.patch.object(obj, name, autospec=True, **kwargs)
        self.addCleanup(patcher.stop)
        return patcher.start()

    def _initialize_connection(self, ctxt, volume, properties):
        return {'driver_volume_type': 'local',
                'data': {'device_path': self._path(volume)}}

    def _path(self, volume):
        return file_driver.volume_path(self.volume_dir, volume.id)

    def _volume(self, host=OWNED_HOST, size=1, status='available',
                regions=DATA_REGIONS, seed=b'a'):
        volume = test_utils.create_volume(self.ctxt, host=host, size=size,
                                          status=status,
                                          previous_status='available')
        with open(self._path(volume), 'wb') as f:
            f.truncate(size * units.Gi)
            for offset, length in regions:
                f.seek(offset)
                f.write(self._pattern(seed + b'%d' % offset, length))
        return volume

    @staticmethod
    def _pattern(seed, length):
        out = bytearray()
        counter = 0
        while len(out) < length:
            out += hashlib.sha256(seed + b'%d' % counter).digest()
            counter += 1
        return bytes(out[:length])

    def _write(self, volume, offset, data):
        with open(self._path(volume), 'r+b') as f:
            f.seek(offset)
            f.write(data)

    # -- the API's and the volume service's part of the flows --------------

    def _backup(self, volume, parent=None, device=None, fail=None,
                snapshot=None):
        """Run a backup through create_backup and continue_backup."""
        if snapshot:
            snapshot.status = 'backing-up'
            snapshot.save()
        else:
            volume.status = 'backing-up'
            volume.previous_status = 'available'
            volume.save()
        backup = test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
            parent_id=parent and parent.id, size=volume.size,
            temp_volume_id=device and device.id,
            snapshot_id=snapshot and snapshot.id)
        self.manager.create_backup(self.ctxt, backup)
        self.get_backup_device.assert_called_with(self.ctxt, backup,
                                                  mock.ANY)
        backup_device = objects.BackupDeviceInfo()
        backup_device.volume = device or volume
        backup_device.secure_enabled = True
        if fail:
            self.assertRaises(fail, self.manager.continue_backup,
                              self.ctxt, backup, backup_device)
        else:
            self.manager.continue_backup(self.ctxt, backup, backup_device)
        backup.refresh()
        return backup

    def _restore(self, backup, volume, fail=None):
        volume_is_new = volume.status == 'creating'
        if not volume_is_new:
            volume.status = 'restoring-backup'
            volume.save()
        backup.status = fields.BackupStatus.RESTORING
        backup.restore_volume_id = volume.id
        backup.save()
        if fail:
            self.assertRaises(fail, self.manager.restore_backup,
                              self.ctxt, backup, volume.id, volume_is_new)
        else:
            self.manager.restore_backup(self.ctxt, backup, volume.id,
                                        volume_is_new)
        volume.refresh()
        backup.refresh()

    def _new_volume(self, host=OWNED_HOST, size=1):
        volume = test_utils.create_volume(self.ctxt, host=host, size=size,
                                          status='creating')
        with open(self._path(volume), 'wb') as f:
            f.truncate(size * units.Gi)
        return volume

    def _messages(self, resource_uuid):
        return [message['detail_id']
                for message in self.manager.message_api.get_all(
                    self.ctxt, filters={'resource_uuid': resource_uuid})]

    def _stored_bytes(self, backup):
        service = self.manager._backup_service_class(self.ctxt)
        metadata = service._read_metadata(backup)
        return sum(obj['length'] for entry in metadata['objects']
                   for obj in entry.values())

    def _backup_objects(self, backup):
        container = os.path.join(self.posix_dir, backup.container)
        return sorted(os.path.join(container, name)
                      for name in os.listdir(container)
                      if name.startswith(backup.service_metadata + '-'))

    def _staging_files(self):
        staging = os.path.join(self.volume_dir, 'staging')
        return os.listdir(staging) if os.path.isdir(staging) else []

    def _notified(self, event):
        return [n['event_type'] for n in self.notifier.notifications
                if n['event_type'] == 'backup.' + event]

    # -- tests ---------------------------------------------------------------

    def test_full_and_incremental_backup_then_restores(self):
        volume = self._volume()
        full = self._backup(volume)
        self.assertEqual(fields.BackupStatus.AVAILABLE, full.status)
        volume.refresh()
        self.assertEqual('available', volume.status)
        self.assertEqual(1, file_driver.SETUP_CALLS['node1@owned'])
        self.initialize_connection.assert_not_called()
        self.assertEqual(['backup.create.end'], self._notified('create.end'))
        self.assertEqual(
            {'format': 'raw', 'capacity': str(units.Gi)},
            driver_owned.DriverOwnedBackupMixin.disk_profile_of(full))
        full_map = _block_map(self._path(volume))

        # Two small changes, each inside one 32 KiB hash block.
        self._write(volume, 7 * units.Mi + 100, b'x' * 4096)
        self._write(volume, 900 * units.Mi, b'y' * 512)
        incremental = self._backup(volume, parent=full)
        self.assertEqual(fields.BackupStatus.AVAILABLE, incremental.status)
        # The extent hand-off stores whole hash blocks of its own size.
        self.assertEqual(2 * CONF.driver_owned_backup_hash_block_kb * units.Ki,
                         self._stored_bytes(incremental))
        self.assertEqual(1, file_driver.SETUP_CALLS['node1@owned'])
        changed_map = _block_map(self._path(volume))
        self.assertNotEqual(full_map, changed_map)

        # The incremental restored onto a new volume.
        new = self._new_volume()
        self._restore(incremental, new)
        self.assertEqual('available', new.status)
        self.assertEqual(fields.BackupStatus.AVAILABLE, incremental.status)
        self.assertEqual(changed_map, _block_map(self._path(new)))

        # The full one restored onto the (changed) volume itself.
        self._restore(full, volume)
        self.assertEqual('available', volume.status)
        self.assertEqual(full_map, _block_map(self._path(volume)))
        self.assertEqual([], self._staging_files())
        self.assertEqual(2, len(self._notified('restore.end')))
        self.initialize_connection.assert_not_called()
        self.probe.assert_not_called()
        self.secure_ops.assert_called()

    def test_restore_to_bigger_volume(self):
        volume = self._volume()
        backup = self._backup(volume)
        bigger = self._new_volume(size=2)
        self._restore(backup, bigger)
        self.assertEqual('available', bigger.status)
        size, blocks = _block_map(self._path(bigger))
        self.assertEqual(2 * units.Gi, size)
        self.assertEqual(_block_map(self._path(volume))[1], blocks)

    def test_backup_of_temporary_clone(self):
        """An in-use volume: Cinder's temporary clone is what is read."""
        volume = self._volume()
        clone = self._volume(seed=b'clone')
        backup = self._backup(volume, device=clone)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.assertIsNone(backup.temp_volume_id)
        self.delete_volume.assert_called_once_with(self.ctxt, mock.ANY)
        self.assertEqual(clone.id, self.delete_volume.call_args[0][1].id)
        new = self._new_volume()
        self._restore(backup, new)
        self.assertEqual(_block_map(self._path(clone)),
                         _block_map(self._path(new)))

    def _opened(self):
        with open(os.path.join(self.volume_dir,
                               file_driver.OPENED_LOG)) as log:
            return log.read().split()

    def test_backup_from_snapshot_reads_temporary_volume(self):
        """Cinder's temporary volume from the snapshot is what is read."""
        volume = self._volume()
        snapshot = test_utils.create_snapshot(self.ctxt, volume.id,
                                              status='available')
        temporary = self._volume(seed=b'from snapshot')
        backup = self._backup(volume, device=temporary, snapshot=snapshot)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.assertEqual(['Volume', temporary.id], self._opened())
        snapshot.refresh()
        self.assertEqual('available', snapshot.status)
        self.assertIsNone(backup.temp_volume_id)
        self.assertEqual(temporary.id,
                         self.delete_volume.call_args[0][1].id)

    def test_stock_backend_takes_cinders_path(self):
        volume = self._volume(host=STOCK_HOST)
        backup = self._backup(volume)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        self.initialize_connection.assert_called_once_with(
            self.ctxt, mock.ANY, mock.ANY)
        self.terminate_connection.assert_called_once()
        self.probe.assert_called_once()
        self.assertNotIn('node1@stock', file_driver.SETUP_CALLS)
        self.assertEqual({}, driver_owned.DriverOwnedBackupMixin
                         .disk_profile_of(backup))

        # The stock (raw) backup restores onto a driver-owned volume.
        new = self._new_volume()
        self._restore(backup, new)
        self.assertEqual('available', new.status)
        self.assertEqual(1, self.initialize_connection.call_count)
        self.assertEqual(_block_map(self._path(volume)),
                         _block_map(self._path(new)))

    def _objects_by_offset(self, backup):
        """The stored objects of ``backup``: offset -> (algorithm, bytes)."""
        service = self.manager._backup_service_class(self.ctxt)
        container = os.path.join(self.posix_dir, backup.container)
        objects_ = {}
        for entry in service._read_metadata(backup)['objects']:
            for name, obj in entry.items():
                with open(os.path.join(container, name), 'rb') as f:
                    objects_[obj['offset']] = (obj['compression'], f.read())
        return objects_

    @ddt.data('isal', 'zlib')
    def test_zlib_backups_are_read_by_any_cinder(self, implementation):
        """zlib objects of driver-owned backups are plain zlib streams.

        A driver-owned backup restores through Cinder's own path (Python's
        zlib), a stock backup through the driver.
        """
        self.override_config('backup_compression_algorithm', 'zlib')
        self.override_config('driver_owned_backup_zlib_implementation',
                             implementation)
        # The stream path's objects (one per backup_file_size): what is
        # compared below. The extent hand-off's zlib objects are checked
        # against Cinder's restore in tests/unit/backup/test_handoff.py.
        self.override_config('driver_owned_backup_extent_handoff', False)
        regions = ((0, 64 * units.Ki), (3 * units.Mi, 2 * units.Mi))
        volume = self._volume(regions=regions)
        with open(self._path(volume), 'r+b') as f:
            f.seek(8 * units.Mi)
            f.write(b'compressible text, ' * 50000)
        backup = self._backup(volume)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        stored = self._objects_by_offset(backup)
        self.assertEqual({'zlib'}, {algorithm for algorithm, _data
                                    in stored.values()})
        data = stored[0][1]
        with open(self._path(volume), 'rb') as f:
            chunk = f.read(CONF.backup_file_size)
        compress = {'isal': lambda raw: isal_zlib.compress(raw, 2),
                    'zlib': zlib.compress}[implementation]
        self.assertEqual(compress(chunk), data)
        self.assertEqual(chunk, zlib.decompress(data))

        # Restored by Cinder's own path onto a volume of another backend.
        stock_volume = self._volume(host=STOCK_HOST, regions=(),
                                    status='available')
        self._restore(backup, stock_volume)
        self.assertEqual('available', stock_volume.status)
        self.initialize_connection.assert_called_once_with(
            self.ctxt, mock.ANY, mock.ANY)
        self.assertEqual(_block_map(self._path(volume)),
                         _block_map(self._path(stock_volume)))

        # A stock backup (Python's zlib) restored by the driver.
        self._write(stock_volume, 20 * units.Mi, b'stock data' * 1000)
        stock_backup = self._backup(stock_volume)
        with open(self._path(stock_volume), 'rb') as f:
            chunk = f.read(CONF.backup_file_size)
        self.assertEqual(('zlib', zlib.compress(chunk)),
                         self._objects_by_offset(stock_backup)[0])
        new = self._new_volume()
        self._restore(stock_backup, new)
        self.assertEqual('available', new.status)
        self.assertEqual(_block_map(self._path(stock_volume)),
                         _block_map(self._path(new)))
        self.assertEqual([], self._staging_files())

    def _digests(self, backup):
        """The SHA-256 map and the objects' MD5s Cinder recorded."""
        service = self.manager._backup_service_class(self.ctxt)
        md5s = [(obj['offset'], obj['md5'])
                for entry in service._read_metadata(backup)['objects']
                for obj in entry.values()]
        return service._read_sha256file(backup)['sha256s'], md5s

    def test_digests_are_the_stock_paths(self):
        """Zeros are not hashed, yet the digests are Cinder's own.

        The same mostly-empty disk through the driver and through Cinder's
        path: the same SHA-256 map (incrementals of either build on it) and
        the same MD5 per object; then an incremental of the driver's.
        """
        self.override_config('backup_file_size', 16 * units.Mi)
        # The stream path hashes at Cinder's block size, the hand-off at
        # its own (tests/unit/backup/test_handoff.py compares it).
        self.override_config('driver_owned_backup_extent_handoff', False)
        volume = self._volume()
        stock_volume = self._volume(host=STOCK_HOST)
        zero_hashing._hash_of_zeros.cache_clear()
        owned = self._backup(volume)
        # Zeros were answered from the cache (the 16 MiB zero objects and
        # the zero blocks: two entries, many hits).
        self.assertGreater(zero_hashing._hash_of_zeros.cache_info().hits,
                           1000)
        stock = self._backup(stock_volume)
        self.initialize_connection.assert_called_once_with(
            self.ctxt, mock.ANY, mock.ANY)
        self.assertIsNot(zero_hashing.ZeroAwareHashlib,
                         type(chunkeddriver.hashlib))
        owned_shas, owned_md5s = self._digests(owned)
        self.assertEqual(self._digests(stock), (owned_shas, owned_md5s))
        zero_block = hashlib.sha256(
            bytes(CONF.backup_sha_block_size_bytes)).hexdigest()
        self.assertGreater(owned_shas.count(zero_block),
                           len(owned_shas) * 9 // 10)
        self.assertIn((16 * units.Mi, hashlib.md5(
            bytes(16 * units.Mi), usedforsecurity=False).hexdigest()),
            owned_md5s)

        # Data over zeros, zeros over data: only those blocks are stored.
        self._write(volume, 100 * units.Mi, b'z' * 10)
        self._write(volume, 0, bytes(CONF.backup_sha_block_size_bytes))
        incremental = self._backup(volume, parent=owned)
        self.assertEqual(2 * CONF.backup_sha_block_size_bytes,
                         self._stored_bytes(incremental))
        new = self._new_volume()
        self._restore(incremental, new)
        self.assertEqual(_block_map(self._path(volume)),
                         _block_map(self._path(new)))

    def _records(self, backup):
        """What Cinder recorded for ``backup``, less its id and times.

        Its metadata (objects by position, not name; the volume's record
        without its ``updated_at``), its SHA-256 file and a digest of every
        object it stored.
        """
        service = posix.PosixBackupDriver(self.ctxt)
        metadata = service._read_metadata(backup)
        sha256file = service._read_sha256file(backup)
        container = os.path.join(self.posix_dir, backup.container)
        stored = []
        for entry in metadata.pop('objects'):
            (name, obj), = entry.items()
            with open(os.path.join(container, name), 'rb') as f:
                stored.append((obj, hashlib.sha256(f.read()).hexdigest()))
        for record in (metadata, sha256file):
            del record['backup_id'], record['created_at']
        # The volume's own record, changed by the backups themselves.
        volume_meta = json.loads(metadata.pop('volume_meta'))
        del volume_meta['volume-base-metadata']['updated_at']
        return metadata, volume_meta, sha256file, stored

    def test_stock_backup_beside_a_driver_owned_one_is_cinders(self):
        """A stock backup while a driver-owned one has Cinder patched.

        The stock volume's backup made by Cinder's own manager, without the
        plugin, is the reference. Then a driver-owned backup is held in the
        middle of its data (its ISA-L compressor, zero digests and connector
        probe in place, Cinder's module attributes replaced) while the same
        stock backup runs in another green thread: it writes the same
        records and objects (zlib's, not ISA-L's; no digest from the zero
        cache) and probes the host as Cinder does.
        """
        self.override_config('backup_compression_algorithm', 'zlib')
        self.override_config('backup_file_size', 16 * units.Mi)
        stock_volume = self._volume(host=STOCK_HOST)
        owned_volume = self._volume()
        self._start_manager(cinder_internals.manager.BackupManager)
        reference = self._backup(stock_volume)
        self.assertEqual(fields.BackupStatus.AVAILABLE, reference.status)
        self.assertIs(hashlib, chunkeddriver.hashlib)

        self._start_manager()
        inside = threading.Event()
        resume = threading.Event()
        backup_chunk = chunkeddriver.ChunkedBackupDriver._backup_chunk

        def held_in_the_middle(service, *args):
            if (cinder_internals.current_operation() is not None
                    and not inside.is_set()):
                inside.set()
                self.assertTrue(resume.wait(120))
            return backup_chunk(service, *args)

        self._patch(chunkeddriver.ChunkedBackupDriver, '_backup_chunk',
                    side_effect=held_in_the_middle)
        owned = []
        worker = threading.Thread(
            target=lambda: owned.append(self._backup(owned_volume)))
        worker.start()
        try:
            self.assertTrue(inside.wait(120))
            self.assertIsInstance(chunkeddriver.hashlib,
                                  cinder_internals._HashlibDispatcher)
            probe = volume_utils.brick_get_connector_properties
            self.assertTrue(hasattr(probe, '__wrapped__'))
            zero_digests = zero_hashing._hash_of_zeros.cache_info()
            self.probe.reset_mock()
            stock = self._backup(stock_volume)
            self.assertEqual(zero_digests,
                             zero_hashing._hash_of_zeros.cache_info())
        finally:
            resume.set()
            worker.join(120)
        self.assertEqual(fields.BackupStatus.AVAILABLE, stock.status)
        self.probe.assert_called_once()
        self.initialize_connection.assert_called_once_with(
            self.ctxt, mock.ANY, {'host': 'backup-node'})
        self.assertEqual(self._records(reference), self._records(stock))
        # The driver-owned backup went on and is complete.
        self.assertEqual(fields.BackupStatus.AVAILABLE, owned[0].status)
        self.assertIs(hashlib, chunkeddriver.hashlib)
        new = self._new_volume()
        self._restore(owned[0], new)
        self.assertEqual(_block_map(self._path(owned_volume)),
                         _block_map(self._path(new)))

    def test_mismatched_cinder_takes_cinders_path(self):
        """A Cinder whose internals changed: one error, Cinder's path."""
        cinder_manager = cinder_internals.manager.BackupManager
        attach_device = cinder_manager._attach_device

        def changed(mgr, ctxt, backup_device, properties, is_snapshot=False,
                    timeout=None):
            return attach_device(mgr, ctxt, backup_device, properties,
                                 is_snapshot)

        self.useFixture(fixtures.MockPatchObject(
            cinder_manager, '_attach_device', changed))
        for name, value in (('_checked', None), ('_reported', False)):
            self.useFixture(fixtures.MonkeyPatch(
                cinder_internals.__name__ + '.' + name, value))
        log = self.useFixture(fixtures.FakeLogger(
            name=cinder_internals.__name__, level=logging.ERROR))
        self._start_manager()
        self._start_manager()
        self.assertEqual(1, log.output.count('Driver-owned backup is '
                                             'disabled'), log.output)
        self.assertIn('BackupManager._attach_device has parameters',
                      log.output)
        self._assert_cinders_attach_was_used()
        self.assertEqual({}, file_driver.SETUP_CALLS)

    def _assert_cinders_attach_was_used(self):
        """Cinder's path: its attach step ran (and failed, on purpose).

        The stock path moving data is covered by the stock backend's test;
        here the attach failing keeps the test from copying a volume.
        """
        self.initialize_connection.side_effect = IOError('no target')
        volume = self._volume()
        backup = self._backup(volume, fail=IOError)
        self.initialize_connection.assert_called_once_with(
            self.ctxt, mock.ANY, mock.ANY)
        self.assertEqual(fields.BackupStatus.ERROR, backup.status)
        self.assertEqual([message_field.Detail.ATTACH_ERROR[0]],
                         self._messages(backup.id))
        volume.refresh()
        self.assertEqual('available', volume.status)

    def test_driver_owned_backup_disabled(self):
        self.override_config('driver_owned_backup_enabled', False)
        self._assert_cinders_attach_was_used()
        self.assertEqual({}, file_driver.SETUP_CALLS)

    def test_driver_setup_failure_falls_back(self):
        self._load_config(owned_extra='file_volume_fail_setup = true\n')
        self._assert_cinders_attach_was_used()
        self.assertEqual(1, file_driver.SETUP_CALLS['node1@owned'])

    def test_driver_failure_during_backup(self):
        volume = self._volume()
        file_driver.inject_fault(self.volume_dir, volume.id,
                                 file_driver.FAULT_READ)
        backup = self._backup(volume, fail=IOError)
        self.assertEqual(fields.BackupStatus.ERROR, backup.status)
        self.assertIn('injected read fault', backup.fail_reason)
        volume.refresh()
        self.assertEqual('available', volume.status)
        self.assertEqual(
            [message_field.Detail.BACKUP_CREATE_DRIVER_ERROR[0]],
            self._messages(backup.id))
        self.assertEqual([], self._notified('create.end'))

    def test_restore_failures_leave_volume_intact(self):
        """A failed restore: nothing of the old data lost, nothing left.

        One backup, three faults in turn (the first two leave the backup
        usable): the driver failing before it replaces the volume's data,
        a corrupt backup object, a missing one.
        """
        volume = self._volume()
        backup = self._backup(volume)
        target = self._volume(seed=b'target')
        before = _block_map(self._path(target))
        first_object = self._backup_objects(backup)[0]
        with open(first_object, 'rb') as f:
            good_object = f.read()
        faults = (
            ('driver', IOError, lambda: file_driver.inject_fault(
                self.volume_dir, target.id, file_driver.FAULT_WRITE)),
            ('corrupt', zstd.Error, lambda: self._replace(
                first_object, b'not zstd data' + good_object[13:])),
            ('missing', exception.InvalidBackup,
             lambda: os.unlink(first_object)),
        )
        for count, (fault, error, inject) in enumerate(faults, 1):
            inject()
            self._restore(backup, target, fail=error)
            self.assertEqual('error_restoring', target.status, fault)
            self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
            self.assertEqual(before, _block_map(self._path(target)), fault)
            self.assertEqual([], self._staging_files(), fault)
            self.assertFalse(os.path.exists(self._path(target) +
                                            '.restoring'))
            self.assertEqual(
                [message_field.Detail.BACKUP_RESTORE_ERROR[0]] * count,
                self._messages(backup.id), fault)
            if fault == 'driver':
                os.unlink(self._path(target) + '.fault-' +
                          file_driver.FAULT_WRITE)

    def test_cancelled_restore_stops_and_leaves_volume_intact(self):
        """Status checks are throttled, cancellation still works.

        The backup's status changes while its second object (of 16) is
        read, and the checks' interval passes; the restore reads no object
        after it, Cinder marks the volume in error, and the volume's data
        is untouched.
        """
        # Objects of backup_file_size, as Cinder's own backup() writes.
        self.override_config('driver_owned_backup_extent_handoff', False)
        interval = mock.patch.object(status_checks, 'STATUS_CHECK_INTERVAL',
                                     0.2)
        interval.start()
        self.addCleanup(interval.stop)
        volume = self._volume()
        backup = self._backup(volume)
        target = self._volume(seed=b'target')
        before = _block_map(self._path(target))
        read_object = posix.PosixBackupDriver.get_object_reader
        data_objects = []

        def cancel_at_the_second(service, container, object_name,
                                 extra_metadata=None):
            if not object_name.endswith('_metadata'):
                data_objects.append(object_name)
            if len(data_objects) == 2 and object_name == data_objects[-1]:
                cancelled = objects.Backup.get_by_id(self.ctxt, backup.id)
                cancelled.status = fields.BackupStatus.AVAILABLE
                cancelled.save()
                time.sleep(0.3)
            return read_object(service, container, object_name,
                               extra_metadata=extra_metadata)

        self._patch(posix.PosixBackupDriver, 'get_object_reader',
                    side_effect=cancel_at_the_second)
        self._restore(backup, target)
        self.assertEqual('error', target.status)
        self.assertEqual(16, len(self._backup_objects(backup)))
        self.assertEqual(2, len(data_objects))
        self.assertEqual(before, _block_map(self._path(target)))
        self.assertEqual([], self._staging_files())

    @staticmethod
    def _replace(path, data):
        with open(path, 'wb') as f:
            f.write(data)

    def test_startup_cleanup_of_interrupted_operations(self):
        """Cinder's init_host resets what a crash interrupted, as before.

        The plugin adds: every driver-owned backend is set up at start,
        and its do_setup removes the staging file a killed restore left;
        the user is told about the interrupted restore.
        """
        staging = os.path.join(self.volume_dir, 'staging')
        os.makedirs(staging)
        leftover = os.path.join(staging, driver_owned.STAGING_PREFIX +
                                'killed-restore')
        with open(leftover, 'wb') as f:
            f.write(b'data of a killed restore')
        volume = self._volume(status='backing-up')
        creating = test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
            host='backup-node', size=1)
        target = self._volume(status='restoring-backup')
        restoring = test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.RESTORING,
            host='backup-node', size=1, restore_volume_id=target.id)
        self.manager.init_host()
        for obj in (volume, creating, target, restoring):
            obj.refresh()
        self.assertEqual(fields.BackupStatus.ERROR, creating.status)
        self.assertEqual('available', volume.status)
        self.assertEqual(fields.BackupStatus.AVAILABLE, restoring.status)
        self.assertEqual('error_restoring', target.status)
        self.assertEqual(1, file_driver.SETUP_CALLS['%s@owned' % CONF.host])
        self.assertEqual([], self._staging_files())
        self.assertEqual([message_field.Detail.BACKUP_RESTORE_ERROR[0]],
                         self._messages(target.id))
        self.assertEqual([], self._messages(volume.id))
