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

"""Backup chains in Cinder's real posix driver, DB and managers.

The chain is written into the posix driver by the plugin's extent hand-off
(Cinder's format, object for object, with Cinder's 32 KiB digest blocks;
it reads only the regions written, which keeps the module quick) and,
after the pruning, extended by Cinder's own ``backup()``: a stock
incremental on top of the re-parented chain. The synthetic full replaces
an incremental in the middle; the old backups are deleted through Cinder's
backup API and its real BackupManager; every backup left is restored with
Cinder's stock ``restore()`` and compared byte for byte with the disk as
it was when that backup was taken.
"""

import hashlib
import os
from unittest import mock

import fixtures
from oslo_service import loopingcall
from oslo_utils import units

from cinder.backup import api as cinder_backup_api
from cinder.backup.drivers import posix
from cinder.backup import manager as cinder_manager
from cinder import context
from cinder.db import api as cinder_db
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup.backup import handoff

POSIX = 'cinder.backup.drivers.posix.PosixBackupDriver'
HOST = 'backup-node'


def pattern(seed, length):
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(b'%s-%d' % (seed, counter)).digest()
        counter += 1
    return bytes(out[:length])


def _extents(fd, kind_from, kind_to):
    """(start, end) of the data (or the holes) of a sparse file."""
    end = os.fstat(fd).st_size
    offset = 0
    while offset < end:
        try:
            start = os.lseek(fd, offset, kind_from)
        except OSError:
            return
        stop = os.lseek(fd, start, kind_to) if kind_to else end
        yield start, min(stop, end)
        offset = stop


def _digest(path):
    """Size and the non-zero MiB blocks of a file: equal iff identical."""
    sha = hashlib.sha256()
    zero = bytes(units.Mi)
    with open(path, 'rb') as f:
        fd = f.fileno()
        sha.update(b'%d' % os.fstat(fd).st_size)
        for start, end in _extents(fd, os.SEEK_DATA, os.SEEK_HOLE):
            block = start - start % units.Mi
            while block < end:
                data = os.pread(fd, units.Mi, block)
                if data != zero[:len(data)]:
                    sha.update(b'%d:' % block + data)
                block += units.Mi
    return sha.hexdigest()


class _FileSource(object):
    """A hand-off source over the test's disk file (see driver_owned)."""

    def __init__(self, path, changed):
        self._file = open(path, 'rb')
        self._changed = sorted(changed)

    def close(self):
        self._file.close()

    def read_at(self, offset, view):
        done = 0
        while done < len(view):
            n = os.preadv(self._file.fileno(), [view[done:]], offset + done)
            if not n:
                raise EOFError('end of the disk at %d' % (offset + done))
            done += n

    def zero_ranges(self):
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        position = 0
        for start, end in _extents(fd, os.SEEK_DATA, os.SEEK_HOLE):
            if start > position:
                yield position, start - position
            position = end
        if position < size:
            yield position, size - position

    def changed_ranges(self, parent):
        return self._changed, None


class ChainTestCase(test.TestCase):
    """Cinder's DB, posix driver, backup API and BackupManager; a disk."""

    def setUp(self):
        super(ChainTestCase, self).setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.posix_dir = os.path.join(self.tmp, 'posix')
        os.makedirs(self.posix_dir)
        self.override_config('backup_driver', POSIX)
        self.override_config('backup_posix_path', self.posix_dir)
        self.override_config('backup_compression_algorithm', 'zstd')
        self.override_config('backup_enable_progress_timer', False)
        self.override_config('backup_file_size', 64 * units.Mi)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.manager = cinder_manager.BackupManager(host=HOST)
        self.assertRaises(loopingcall.LoopingCallDone,
                          self.manager._setup_backup_driver, self.ctxt)
        self.service = posix.PosixBackupDriver(self.ctxt)
        self.backup_api = cinder_backup_api.API()
        for name, kwargs in (
                ('_get_available_backup_service_host',
                 {'return_value': HOST}),):
            patcher = mock.patch.object(self.backup_api, name, autospec=True,
                                        **kwargs)
            patcher.start()
            self.addCleanup(patcher.stop)
        # cinder-api's cast reaches the real BackupManager at once.
        patcher = mock.patch.object(
            self.backup_api.backup_rpcapi, 'delete_backup', autospec=True,
            side_effect=lambda ctxt, backup: self.manager.delete_backup(
                ctxt, backup))
        patcher.start()
        self.addCleanup(patcher.stop)
        self.volume = test_utils.create_volume(self.ctxt, size=1,
                                               status='available')
        self.disk = os.path.join(self.tmp, 'disk')
        with open(self.disk, 'wb') as f:
            f.truncate(units.Gi)
        self.expected = {}
        self.changed = []
        # The hand-off hashes as Cinder's posix driver does (32 KiB).
        self.override_config('driver_owned_backup_hash_block_kb', 32)

    def _write(self, offset, data):
        with open(self.disk, 'r+b') as f:
            f.seek(offset)
            f.write(data)
        self.changed.append((offset, len(data)))

    def _backup(self, parent=None, stock=False):
        """A backup of the disk now: Cinder's own or the hand-off's."""
        backup = test_utils.create_backup(
            self.ctxt, volume_id=self.volume.id,
            status=fields.BackupStatus.CREATING, service=POSIX, size=1,
            parent_id=parent.id if parent else None, host=HOST,
            container='plans')
        if stock:
            with open(self.disk, 'rb') as f:
                self.service.backup(backup, f)
        else:
            source = _FileSource(self.disk, self.changed)
            try:
                handoff.backup(self.service, backup, source, units.Gi,
                               'the test disk')
            finally:
                source.close()
        self.changed = []
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        if parent:
            cinder_db.backup_add_dependent(self.ctxt, parent.id)
        self.expected[backup.id] = _digest(self.disk)
        return backup

    def _restore(self, backup_id, existing=False):
        backup = objects.Backup.get_by_id(self.ctxt, backup_id)
        target = os.path.join(self.tmp, 'restored')
        with open(target, 'wb') as f:
            f.truncate(units.Gi)
            if existing:
                # Not a new volume: junk wherever the backups hold zeros.
                for offset in range(0, units.Gi, 128 * units.Mi):
                    f.seek(offset + 3 * units.Mi)
                    f.write(b'\xff' * units.Mi)
        backup.status = fields.BackupStatus.RESTORING
        backup.save()
        try:
            with open(target, 'r+b') as f:
                self.service.restore(backup, self.volume.id, f,
                                     not existing)
        finally:
            backup.status = fields.BackupStatus.AVAILABLE
            backup.save()
        digest = _digest(target)
        os.unlink(target)
        return digest

    def _chain(self):
        """F0 <- I1 <- I2 <- I3, with data changed, added and zeroed."""
        self._write(0, pattern(b'a', 4 * units.Mi))
        self._write(300 * units.Mi, pattern(b'b', 2 * units.Mi))
        self._write(units.Gi - 64 * units.Ki, pattern(b'c', 64 * units.Ki))
        f0 = self._backup()
        self._write(units.Mi + 4096, pattern(b'd', 100 * units.Ki))
        self._write(600 * units.Mi, pattern(b'e', 3 * units.Mi))
        i1 = self._backup(f0)
        # Data that becomes zeros, and a new region.
        self._write(300 * units.Mi, bytes(2 * units.Mi))
        self._write(700 * units.Mi, pattern(b'f', units.Mi))
        i2 = self._backup(i1)
        self._write(0, pattern(b'g', 32 * units.Ki))
        i3 = self._backup(i2)
        return f0, i1, i2, i3
