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

"""ChainReader against Cinder's real posix backup driver and database."""

import hashlib
import io
import os
import tracemalloc
from unittest import mock

from cinder.backup.drivers import posix
from cinder import context
from cinder import exception
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
import ddt
import fixtures
from oslo_utils import units

from cinder_vmdk_backup.backup import chain_reader
from cinder_vmdk_backup.backup import object_stream
from cinder_vmdk_backup.backup import restore_checks
from cinder_vmdk_backup.vmdk import piece_writer
from cinder_vmdk_backup.vmdk import reader as vmdk_reader

MiB = units.Mi
GRAIN = 64 * units.Ki
SIZE = 16 * MiB
OBJECT = 4 * MiB


def _data(seed, length):
    """Compressible, non-repeating bytes."""
    line = b'%s line %%08d of some log\n' % seed
    out = b''.join(line % i for i in range(length // len(line % 0) + 1))
    return out[:length]


def _first_difference(a, b):
    if len(a) != len(b):
        return 'lengths %d and %d' % (len(a), len(b))
    for start in range(0, len(a), GRAIN):
        if a[start:start + GRAIN] != b[start:start + GRAIN]:
            return 'grain at byte %d' % start
    return None


class ChainTestBase(test.TestCase):
    """Cinder's posix driver in a temporary directory; chains of it."""

    def assertSameBytes(self, expected, got):
        self.assertIsNone(_first_difference(expected, got))

    def setUp(self):
        super(ChainTestBase, self).setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.override_config('backup_posix_path', self.tmp)
        self.override_config('backup_file_size', OBJECT)
        self.override_config('backup_sha_block_size_bytes', 32 * units.Ki)
        self.override_config('backup_enable_progress_timer', False)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.volume = test_utils.create_volume(self.ctxt, size=1)
        self.disk = bytearray(SIZE)

    def _service(self):
        return posix.PosixBackupDriver(self.ctxt)

    def _write(self, offset, data):
        self.disk[offset:offset + len(data)] = data

    def _backup(self, parent=None):
        backup = test_utils.create_backup(
            self.ctxt, self.volume.id, status=fields.BackupStatus.CREATING,
            parent_id=parent and parent.id, size=1)
        self._service().backup(backup, io.BytesIO(bytes(self.disk)))
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        return backup

    def _restoring(self, backup):
        backup.status = fields.BackupStatus.RESTORING
        backup.save()
        return backup

    def _stock_restore(self, backup):
        out = io.BytesIO(bytes(SIZE))
        self._service().restore(backup, self.volume.id, out, False)
        return out.getvalue()

    def _chain(self):
        """full, then incrementals: new data, data->zero, overlaps."""
        self._write(0, _data(b'a', 100))
        self._write(OBJECT - 5000, _data(b'b', 3 * MiB))
        self._write(SIZE - GRAIN, _data(b'c', GRAIN))
        full = self._backup()
        self._write(MiB, _data(b'd', 40000))
        self._write(OBJECT + 12345, bytes(2 * MiB))      # data -> zeros
        self._write(3 * OBJECT + 7, _data(b'e', 70000))  # zeros -> data
        incr1 = self._backup(full)
        self._write(MiB + 1000, _data(b'f', 1000))       # inside incr1's
        self._write(OBJECT + 32 * units.Ki, _data(b'g', 10))
        incr2 = self._backup(incr1)
        return full, incr1, incr2

    def _pieces(self, backup, grains=True):
        reader = chain_reader.ChainReader(self._service(), backup, SIZE)
        if grains:
            reader.nonzero_grains(GRAIN)
        pieces = list(reader.pieces(check_cancel=True))
        return reader, pieces

    def _drain(self, backup):
        """Read the whole chain; return nothing (no 16 MiB in messages)."""
        _reader, pieces = self._pieces(backup)
        del pieces

    def _joined(self, pieces):
        out = bytearray()
        for offset, length, data in pieces:
            self.assertEqual(len(out), offset)
            out += bytes(length) if data is None else data
        return bytes(out)


@ddt.ddt
class ChainReaderTestCase(ChainTestBase):

    @ddt.data('zlib', 'bz2', 'none', 'zstd')
    def test_chain_restores_like_cinder(self, algorithm):
        self.override_config('backup_compression_algorithm', algorithm)
        chain = self._chain()
        expected = bytes(self.disk)
        for backup in chain:
            self._restoring(backup)
            stock = self._stock_restore(backup)
            _reader, pieces = self._pieces(backup)
            self.assertSameBytes(stock, self._joined(pieces))
        self.assertSameBytes(expected, stock)

    def test_grain_map_matches_the_data(self):
        full, _incr1, incr2 = self._chain()
        reader = chain_reader.ChainReader(self._service(), incr2, SIZE)
        grains = reader.nonzero_grains(GRAIN)
        for g in range(SIZE // GRAIN):
            chunk = self.disk[g * GRAIN:(g + 1) * GRAIN]
            self.assertEqual(chunk.count(0) != GRAIN,
                             bool(grains[g >> 3] & (1 << (g & 7))), g)

    def test_vmdk_of_the_chain(self):
        chain = self._chain()
        backup = self._restoring(chain[-1])
        reader = chain_reader.ChainReader(self._service(), backup, SIZE)
        vmdk = piece_writer.PlannedStreamWriter(
            reader.pieces(), SIZE, reader.nonzero_grains(GRAIN))
        stream = b''.join(vmdk.iter_chunks())
        self.assertEqual(vmdk.length, len(stream))
        self.assertSameBytes(bytes(self.disk),
                             vmdk_reader.StreamOptimizedReader(
                                 io.BytesIO(stream)).read())

    def test_each_object_read_once_replaced_and_zero_ones_never(self):
        self.override_config('backup_compression_algorithm', 'zlib')
        self._write(0, _data(b'a', OBJECT))
        full = self._backup()      # objects 2-4 hold zeros only
        self._write(0, _data(b'b', OBJECT))
        incr = self._backup(full)  # replaces object 1 entirely
        self._restoring(incr)
        service = self._service()
        opened = []
        real = service.get_object_reader

        def spy(container, name, extra_metadata=None):
            opened.append(name)
            return real(container, name, extra_metadata=extra_metadata)

        with mock.patch.object(service, 'get_object_reader',
                               side_effect=spy):
            reader = chain_reader.ChainReader(service, incr, SIZE)
            reader.nonzero_grains(GRAIN)
            got = self._joined(reader.pieces())
        self.assertSameBytes(bytes(self.disk), got)
        objects = [name for name in opened if not name.endswith(
            ('_metadata', '_sha256file'))]
        self.assertEqual(len(objects), len(set(objects)))
        self.assertEqual([incr.service_metadata + '-00001'], objects)

    def test_without_grain_map_zero_objects_are_read(self):
        self._write(0, _data(b'a', 100))
        full = self._restoring(self._backup())
        reader, pieces = self._pieces(full, grains=False)
        self.assertSameBytes(bytes(self.disk), self._joined(pieces))

    @ddt.data('zlib', 'none', 'bz2')
    def test_corrupt_object_names_backup_and_object(self, algorithm):
        self.override_config('backup_compression_algorithm', algorithm)
        full, incr1, incr2 = self._chain()
        self._restoring(incr2)
        name = full.service_metadata + '-00001'
        path = os.path.join(self.tmp, full.container, name)
        with open(path, 'r+b') as f:
            f.seek(os.path.getsize(path) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x55]))
        exc = self.assertRaises(exception.InvalidBackup, self._drain,
                                incr2)
        self.assertIn(name, str(exc))
        self.assertIn(full.id, str(exc))

    def test_truncated_object(self):
        self.override_config('backup_compression_algorithm', 'zlib')
        full, incr1, incr2 = self._chain()
        self._restoring(incr2)
        name = incr1.service_metadata + '-00001'
        path = os.path.join(self.tmp, incr1.container, name)
        os.truncate(path, os.path.getsize(path) - 10)
        exc = self.assertRaises(exception.InvalidBackup, self._drain,
                                incr2)
        self.assertIn(name, str(exc))

    def test_missing_object_found_before_any_data(self):
        full, incr1, incr2 = self._chain()
        self._restoring(incr2)
        name = incr1.service_metadata + '-00002'
        os.remove(os.path.join(self.tmp, incr1.container, name))
        exc = self.assertRaises(exception.InvalidBackup,
                                chain_reader.ChainReader, self._service(),
                                incr2, SIZE)
        self.assertIn(name, str(exc))
        self.assertIn(incr1.id, str(exc))

    def test_cancel(self):
        full = self._restoring(self._chain()[0])
        clock = mock.Mock(side_effect=[0.0, 0.5, 2.0, 3.0, 4.0])
        reader = chain_reader.ChainReader(self._service(), full, SIZE,
                                          clock=clock)
        pieces = reader.pieces(check_cancel=True)
        next(pieces)
        stored = type(full).get_by_id(self.ctxt, full.id)
        stored.status = fields.BackupStatus.AVAILABLE
        stored.save()
        # Within the interval the stale status is used; then it is seen.
        next(pieces)
        self.assertRaises(exception.BackupRestoreCancel, list, pieces)

    def test_unsupported_version_and_objects_beyond_the_disk(self):
        full = self._restoring(self._chain()[0])
        service = self._service()
        with mock.patch.object(service, 'DRIVER_VERSION_MAPPING', {}):
            self.assertRaises(chain_reader.ChainUnsupported,
                              chain_reader.ChainReader, service, full, SIZE)
        self.assertRaises(chain_reader.ChainUnsupported,
                          chain_reader.ChainReader, service, full, SIZE // 2)

    def test_zero_md5s(self):
        chain_reader._ZERO_MD5_CACHE.clear()
        lengths = [0, 1, units.Mi + 3, 3 * units.Mi]
        expected = {n: hashlib.md5(bytes(n)).hexdigest() for n in lengths}
        self.assertEqual(expected, chain_reader._zero_md5s(lengths))
        self.assertEqual(expected, chain_reader._zero_md5s(lengths))
        self.assertEqual(set(lengths), set(chain_reader._ZERO_MD5_CACHE))

    def test_usable_services(self):
        self.assertIsNone(chain_reader.unusable_because(self._service()))
        self.assertIn('not a chunked', chain_reader.unusable_because(
            mock.Mock()))
        with mock.patch.object(chain_reader, 'SERVICE_ATTRIBUTES',
                               ('_read_metadata', '_renamed_in_cinder')):
            self.assertIn('no _renamed_in_cinder',
                          chain_reader.unusable_because(self._service()))

    def test_digest_count_must_match_the_disk(self):
        full = self._restoring(self._chain()[0])
        reader = chain_reader.ChainReader(self._service(), full, SIZE)
        reader.size = 2 * SIZE
        self.assertRaises(chain_reader.ChainUnsupported,
                          reader.nonzero_grains, GRAIN)

    def test_memory_bounded_by_pieces_not_objects(self):
        self.override_config('backup_compression_algorithm', 'zlib')
        self.override_config('backup_file_size', SIZE)
        self._write(0, _data(b'a', SIZE))
        full = self._restoring(self._backup())
        reader = chain_reader.ChainReader(self._service(), full, SIZE)
        reader.nonzero_grains(GRAIN)
        total = 0
        tracemalloc.start()
        try:
            for _offset, length, _data_ in reader.pieces():
                total += length
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(SIZE, total)
        # The object is 16 MiB; pieces are 1 MiB.
        self.assertLess(peak, (object_stream.MD5_PENDING + 4) *
                        chain_reader.PIECE_BYTES)


@ddt.ddt
class DigestsCheckedTestCase(ChainTestBase):
    """The streaming restore's pieces with the digest checks on."""

    def _checked(self, backup, service=None):
        service = service or self._service()
        reader = chain_reader.ChainReader(service, backup, SIZE)
        reader.nonzero_grains(GRAIN)
        checker = restore_checks.BlockChecker(service, backup, SIZE,
                                              describe=reader.describe)
        return reader, restore_checks.checked_pieces(
            reader.pieces(digests_checked=True), checker)

    @ddt.data('zlib', 'zstd')
    def test_chain_checked_restores_like_cinder(self, algorithm):
        self.override_config('backup_compression_algorithm', algorithm)
        for backup in self._chain():
            self._restoring(backup)
            stock = self._stock_restore(backup)
            _reader, pieces = self._checked(backup)
            self.assertSameBytes(stock, self._joined(pieces))

    def test_objects_of_zeros_by_the_digests_alone_are_not_read(self):
        # Stock objects of zeros, their md5 not even known: not read.
        self.override_config('backup_compression_algorithm', 'zlib')
        self._write(0, _data(b'a', OBJECT))
        full = self._restoring(self._backup())
        service = self._service()
        metadata = service._read_metadata(full)
        for entry in metadata['objects']:
            for info in entry.values():
                info['md5'] = None
        opened = []
        real = service.get_object_reader

        def spy(container, name, extra_metadata=None):
            opened.append(name)
            return real(container, name, extra_metadata=extra_metadata)

        with mock.patch.object(service, '_read_metadata',
                               return_value=metadata), \
                mock.patch.object(service, 'get_object_reader',
                                  side_effect=spy):
            _reader, pieces = self._checked(full, service)
            got = self._joined(pieces)
        self.assertSameBytes(bytes(self.disk), got)
        self.assertEqual([full.service_metadata + '-00001'],
                         [name for name in opened if not name.endswith(
                             ('_metadata', '_sha256file'))])

    def test_flipped_byte_names_region_and_object(self):
        self.override_config('backup_compression_algorithm', 'none')
        self._write(0, _data(b'a', SIZE))
        full = self._restoring(self._backup())
        name = full.service_metadata + '-00002'
        path = os.path.join(self.tmp, full.container, name)
        with open(path, 'r+b') as f:
            f.seek(100000)
            byte = f.read(1)
            f.seek(100000)
            f.write(bytes([byte[0] ^ 1]))
        reader, pieces = self._checked(full)
        exc = self.assertRaises(exception.InvalidBackup, list, pieces)
        block = 32 * units.Ki
        start = (OBJECT + 100000) // block * block
        self.assertIn('offset %d, length %d' % (start, block), str(exc))
        self.assertIn(name, str(exc))
        self.assertEqual(['%s of backup %s' % (name, full.id)],
                         reader.describe(start, block))
        self.assertEqual([], reader.describe(SIZE, 0))
