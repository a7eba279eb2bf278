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

"""StagingCheck against Cinder's real posix driver: checked as written."""

import contextlib
import io
import json
import os
from unittest import mock

from cinder import exception
import ddt
import fixtures
from oslo_utils import units

from cinder_vmdk_backup.backup import chain_reader
from cinder_vmdk_backup.backup import restore_checks
from cinder_vmdk_backup.backup import staging
from cinder_vmdk_backup.backup import staging_checks
from cinder_vmdk_backup.backup import transfer
from tests.unit.backup import test_chain_reader as chains

BLOCK = 32 * units.Ki
SIZE = chains.SIZE
OBJECT = chains.OBJECT


def _flip(path, at):
    with open(path, 'r+b') as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))


@ddt.ddt
class StagingCheckTestCase(chains.ChainTestBase):

    def setUp(self):
        super(StagingCheckTestCase, self).setUp()
        path = os.path.join(self.tmp, 'staging')
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.addCleanup(os.close, self.fd)
        self.addCleanup(os.unlink, path)
        self.file_pass = self.useFixture(fixtures.MockPatchObject(
            restore_checks, 'check_file', autospec=True,
            side_effect=restore_checks.check_file)).mock

    def _restore(self, backup, observe_hook=None, service=None):
        """The staged restore as driver_owned runs it, checked."""
        service = service or self._service()
        os.ftruncate(self.fd, 0)
        chain = chain_reader.ChainReader(service, backup, SIZE)
        check = staging_checks.StagingCheck(service, backup, SIZE, chain)
        with check:
            observe = check.observe
            if observe_hook is not None:
                observe = observe_hook(observe)
            writer = staging.SparseStagingWriter(self.fd, observer=observe)
            with transfer.WriteBehind(writer) as behind:
                service.restore(backup, self.volume.id, behind, False)
            os.ftruncate(self.fd, SIZE)
            check.finish(self.fd)
        return check

    def _file(self):
        return os.pread(self.fd, SIZE + 1, 0)

    def _object_path(self, backup, number):
        name = '%s-%05d' % (backup.service_metadata, number)
        return name, os.path.join(self.tmp, backup.container, name)

    @ddt.data('zlib', 'zstd', 'none')
    def test_chain_checked_while_written(self, algorithm):
        self.override_config('backup_compression_algorithm', algorithm)
        for backup in self._chain():
            self._restoring(backup)
            check = self._restore(backup)
            self.assertSameBytes(self._stock_restore(backup), self._file())
            self.assertIsNone(check.given_up)
            self.assertEqual(SIZE // BLOCK, check.blocks_checked)
            # Blocks that two objects share (objects not aligned to hash
            # blocks) are the only ones read back.
            self.assertLessEqual(check.bytes_reread, 8 * BLOCK)
        self.file_pass.assert_not_called()

    def test_flipped_byte_stops_the_restore_at_its_object(self):
        self.override_config('backup_compression_algorithm', 'none')
        self._write(0, chains._data(b'a', SIZE))
        full = self._restoring(self._backup())
        name, path = self._object_path(full, 2)
        _flip(path, 100000)
        written = []

        def hook(observe):
            def spy(offset, length, data):
                written.append(offset)
                return observe(offset, length, data)
            return spy

        exc = self.assertRaises(exception.InvalidBackup, self._restore,
                                full, hook)
        start = (OBJECT + 100000) // BLOCK * BLOCK
        self.assertIn('offset %d, length %d' % (start, BLOCK), str(exc))
        self.assertIn('%s of backup %s' % (name, full.id), str(exc))
        # Found while its object was written: the restore stopped there,
        # before the objects after it.
        self.assertEqual([0, OBJECT], written)
        self.file_pass.assert_not_called()

    def test_damage_in_an_incremental_is_found(self):
        self.override_config('backup_compression_algorithm', 'none')
        full, incr1, incr2 = self._chain()
        self._restoring(incr2)
        service = self._service()
        metadata = service._read_metadata(incr2)
        [entry] = metadata['objects'][:1]
        [(name, info)] = entry.items()
        _flip(os.path.join(self.tmp, incr2.container, name),
              info['length'] // 2)
        exc = self.assertRaises(exception.InvalidBackup, self._restore,
                                incr2)
        self.assertIn('%s of backup %s' % (name, incr2.id), str(exc))
        self.assertIn('is damaged', str(exc))

    def test_damage_overwritten_by_a_newer_object_is_not_restored(self):
        # Only what the restore leaves is checked: a damaged full
        # backup's bytes that an incremental replaces do not matter.
        self.override_config('backup_compression_algorithm', 'none')
        self._write(0, chains._data(b'a', SIZE))
        full = self._backup()
        self._write(OBJECT, chains._data(b'z', BLOCK))
        incr = self._restoring(self._backup(full))
        _name, path = self._object_path(full, 2)
        _flip(path, 10)
        check = self._restore(incr)
        self.assertIsNone(check.given_up)
        self.assertEqual(bytes(self.disk), self._file())

    def test_unannounced_write_checks_the_file_after_the_restore(self):
        self.override_config('backup_compression_algorithm', 'zlib')
        full, incr1, _incr2 = self._chain()
        self._restoring(incr1)

        def hook(observe):
            def first_unknown(offset, length, data):
                hook.calls += 1
                if hook.calls == 1:
                    return observe(offset + 1, length, data)
                return observe(offset, length, data)
            hook.calls = 0
            return first_unknown

        check = self._restore(incr1, hook)
        self.assertIn('where the metadata announced', check.given_up)
        self.file_pass.assert_called_once_with(self.fd, mock.ANY)
        self.assertSameBytes(self._stock_restore(incr1), self._file())

    def test_file_pass_after_giving_up_still_finds_damage(self):
        self.override_config('backup_compression_algorithm', 'none')
        self._write(0, chains._data(b'a', SIZE))
        full = self._restoring(self._backup())
        name, path = self._object_path(full, 3)
        _flip(path, 5)

        def hook(observe):
            return lambda offset, length, data: observe(-1, length, data)

        exc = self.assertRaises(exception.InvalidBackup, self._restore,
                                full, hook)
        self.assertIn('offset %d, length %d' % (2 * OBJECT, BLOCK),
                      str(exc))
        self.assertIn(name, str(exc))
        self.file_pass.assert_called_once_with(self.fd, mock.ANY)

    def test_objects_of_zeros_are_compared_not_hashed(self):
        self.override_config('backup_compression_algorithm', 'zlib')
        self._write(0, chains._data(b'a', 100))
        full = self._restoring(self._backup())
        check = self._restore(full)
        self.assertEqual(BLOCK, check.bytes_hashed)
        self.assertEqual(SIZE // BLOCK, check.blocks_checked)

    def test_list_not_fitting_the_disk(self):
        self.override_config('backup_compression_algorithm', 'zlib')
        self._write(0, chains._data(b'a', 100))
        full = self._restoring(self._backup())
        service = self._service()
        real = service.get_object_reader
        sha_name = service._sha256_filename(full)

        def short_list(container, name, extra_metadata=None):
            if name != sha_name:
                return real(container, name, extra_metadata=extra_metadata)
            with real(container, name) as reader:
                listed = json.loads(reader.read())
            listed['sha256s'] = listed['sha256s'][:-1]

            @contextlib.contextmanager
            def one():
                yield io.BytesIO(json.dumps(listed).encode())
            return one()

        with mock.patch.object(service, 'get_object_reader',
                               side_effect=short_list):
            exc = self.assertRaises(exception.InvalidBackup, self._restore,
                                    full, None, service)
        self.assertIn('fewer digests than blocks', str(exc))
