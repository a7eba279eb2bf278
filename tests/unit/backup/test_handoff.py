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

"""The extent hand-off against Cinder's real posix backup driver.

Cinder's test base class gives an sqlite database; backups are written by
Cinder's ``PosixBackupDriver`` into a temporary directory. Each test backs
the same data up twice, through the hand-off and through Cinder's own
``backup()``, and compares: the sha256 lists are identical (at equal block
size) and Cinder's own ``restore()`` gives back the very bytes.
"""

import contextlib
import hashlib
import io
import json
import logging
import os
import resource
import time

import ddt
import fixtures
from oslo_utils import units

from cinder.backup.drivers import posix
from cinder import context
from cinder import exception
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import driver_owned
from cinder_vmdk_backup.backup import handoff

KIB = units.Ki
MIB = units.Mi


def _pattern(seed, length):
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(b'%s-%d' % (seed, counter)).digest()
        counter += 1
    return bytes(out[:length])


def _with(data, offset, piece):
    return data[:offset] + piece + data[offset + len(piece):]


class Source(object):
    """The source protocol, recorded: what was read, at which offsets."""

    def __init__(self, data, zeros=(), changed=None, reason=None,
                 read_at=None):
        self.data = data
        self.zeros = list(zeros)
        self.changed = changed
        self.reason = reason
        self.reads = []
        self.parents = []
        self.hook = None
        self.stream = io.BytesIO(data)

    def zero_ranges(self):
        return iter(self.zeros)


class ChangesSource(Source):

    def changed_ranges(self, parent):
        self.parents.append(parent.id)
        return self.changed, self.reason


class RandomSource(ChangesSource):

    def read_at(self, offset, view):
        if self.hook:
            self.hook(offset)
        self.reads.append((offset, len(view)))
        view[:] = self.data[offset:offset + len(view)]


class PlainStream(Source):
    """A sequential source that knows nothing of changes."""

    def read(self, length):
        if self.hook:
            self.hook(self.stream.tell())
        self.reads.append((self.stream.tell(), length))
        return self.stream.read(length)


class StreamSource(PlainStream, ChangesSource):
    pass


def _zero_ranges(data, granule=4 * KIB):
    """The all-zero granules of ``data``, as (offset, length), merged."""
    ranges = []
    for offset in range(0, len(data), granule):
        piece = data[offset:offset + granule]
        if piece.count(0) == len(piece):
            if ranges and sum(ranges[-1]) == offset:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + len(piece))
            else:
                ranges.append((offset, len(piece)))
    return ranges


class PosixTestBase(test.TestCase):
    """Cinder's database and posix backup driver, and what tests need."""

    def setUp(self):
        super(PosixTestBase, self).setUp()
        self.posix_dir = self.useFixture(fixtures.TempDir()).path
        self.override_config('backup_posix_path', self.posix_dir)
        self.override_config('backup_compression_algorithm', 'zlib')
        self.override_config('backup_enable_progress_timer', False)
        self.override_config('backup_file_size', MIB)
        self.override_config('backup_sha_block_size_bytes', 32 * KIB)
        self.override_config('driver_owned_backup_hash_block_kb', 32)
        self.override_config('driver_owned_backup_object_mb', 1)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.volume = test_utils.create_volume(self.ctxt, size=1)
        self.service = posix.PosixBackupDriver(self.ctxt)
        self.tmp = self.useFixture(fixtures.TempDir()).path

    # -- helpers -----------------------------------------------------------

    def _new_backup(self, parent=None, size=1):
        return test_utils.create_backup(
            self.ctxt, self.volume.id, parent_id=parent and parent.id,
            size=size)

    def _stock(self, data, parent=None):
        backup = self._new_backup(parent)
        self.service.backup(backup, io.BytesIO(data))
        backup.refresh()
        return backup

    def _handoff(self, source, parent=None, size=None):
        backup = self._new_backup(parent)
        handoff.backup(self.service, backup, source,
                       len(source.data) if size is None else size,
                       'volume %s' % self.volume.id)
        backup.refresh()
        return backup

    def _shas(self, backup):
        return self.service._read_sha256file(backup)

    def _objects(self, backup):
        return [list(entry.values())[0]
                for entry in self.service._read_metadata(backup)['objects']]

    def _restored(self, backup, length, before=None):
        """Cinder's own restore onto an existing volume holding junk."""
        path = os.path.join(self.tmp, 'restored')
        with open(path, 'wb') as f:
            f.write(before if before is not None
                    else _pattern(b'junk', length))
        backup.status = fields.BackupStatus.RESTORING
        backup.save()
        with open(path, 'r+b') as f:
            self.service.restore(backup, self.volume.id, f, False)
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        with open(path, 'rb') as f:
            return f.read(length)

    def _files(self):
        found = []
        for root, _dirs, files in os.walk(self.posix_dir):
            found.extend(os.path.join(root, name) for name in files)
        return found

    def _data(self):
        """3 MiB + 36 KiB + 100 bytes: data, zeros, a short last block."""
        length = 3 * MIB + 36 * KIB + 100
        data = bytearray(length)
        for offset, size in ((0, 100 * KIB), (MIB + 8 * KIB, 200 * KIB),
                             (2 * MIB + 512 * KIB, 64 * KIB),
                             (length - 40 * KIB, 40 * KIB)):
            data[offset:offset + size] = _pattern(b'%d' % offset, size)
        # Allocated zeros: read, found zero.
        data[50 * KIB:60 * KIB] = bytes(10 * KIB)
        return bytes(data)


@ddt.ddt
class HandoffTestCase(PosixTestBase):

    # -- full backups ------------------------------------------------------

    @ddt.data(RandomSource, StreamSource)
    def test_full_is_cinders(self, source_class):
        data = self._data()
        stock = self._stock(data)
        source = source_class(data, zeros=_zero_ranges(data, 64 * KIB))
        ours = self._handoff(source)
        self.assertEqual(self._shas(stock)['sha256s'],
                         self._shas(ours)['sha256s'])
        self.assertEqual(32 * KIB, self._shas(ours)['chunk_size'])
        self.assertEqual(data, self._restored(ours, len(data)))
        self.assertEqual(data, self._restored(stock, len(data)))
        self.assertEqual(len(self._objects(ours)), ours.object_count)
        for obj in self._objects(ours):
            if obj['md5'] != hashlib.md5(bytes(obj['length'])).hexdigest():
                self.assertLessEqual(obj['length'], MIB)
        if source_class is RandomSource:
            for offset, length in source.reads:
                self.assertFalse(any(
                    zero <= offset and offset + length <= zero + zlength
                    for zero, zlength in source.zeros))

    def test_sha_file_is_byte_identical_to_json_dumps(self):
        data = self._data()
        ours = self._handoff(RandomSource(data))
        path = os.path.join(self.posix_dir, ours.container,
                            self.service._sha256_filename(ours))
        with open(path, 'rb') as f:
            raw = f.read()
        self.assertEqual(json.dumps(json.loads(raw), sort_keys=True,
                                    indent=2).encode('utf-8'), raw)
        self.assertEqual(
            ['backup_description', 'backup_id', 'backup_name',
             'chunk_size', 'created_at', 'sha256s', 'version',
             'volume_id'], sorted(json.loads(raw)))

    def test_holes_are_not_read_and_stored_as_zero_objects(self):
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_vmdk_backup.backup.handoff.MAX_ZERO_OBJECT', 2 * MIB))
        data = bytes(5 * MIB) + _pattern(b'x', 64 * KIB)
        source = RandomSource(data, zeros=[(0, 5 * MIB)])
        ours = self._handoff(source)
        self.assertEqual([(5 * MIB, 64 * KIB)], source.reads)
        objs = self._objects(ours)
        self.assertEqual([(0, 2 * MIB), (2 * MIB, 2 * MIB),
                          (4 * MIB, MIB), (5 * MIB, 64 * KIB)],
                         [(o['offset'], o['length']) for o in objs])
        self.assertEqual(hashlib.md5(bytes(2 * MIB)).hexdigest(),
                         objs[0]['md5'])
        # The volume held data: the holes overwrite it.
        self.assertEqual(data, self._restored(ours, len(data)))
        self.assertEqual(self._shas(self._stock(data))['sha256s'],
                         self._shas(ours)['sha256s'])

    def test_hash_block_zero_is_the_services(self):
        self.override_config('driver_owned_backup_hash_block_kb', 0)
        self.override_config('backup_sha_block_size_bytes', 64 * KIB)
        self.service = posix.PosixBackupDriver(self.ctxt)
        data = self._data()
        ours = self._handoff(RandomSource(data))
        self.assertEqual(64 * KIB, self._shas(ours)['chunk_size'])
        self.assertEqual(self._shas(self._stock(data))['sha256s'],
                         self._shas(ours)['sha256s'])

    def test_objects_are_whole_blocks(self):
        self.override_config('driver_owned_backup_hash_block_kb', 96)
        data = _pattern(b'w', 3 * MIB)
        ours = self._handoff(RandomSource(data))
        lengths = [o['length'] for o in self._objects(ours)]
        self.assertEqual(3 * MIB, sum(lengths))
        self.assertEqual([960 * KIB] * 3, lengths[:3])
        self.assertEqual(data, self._restored(ours, len(data)))

    @ddt.data('none', 'zstd', 'bz2')
    def test_other_algorithms(self, algorithm):
        self.override_config('backup_compression_algorithm', algorithm)
        self.service = posix.PosixBackupDriver(self.ctxt)
        data = bytes(3 * MIB) + _pattern(b'y', 100 * KIB)
        ours = self._handoff(RandomSource(data, zeros=[(0, 3 * MIB)]))
        objs = self._objects(ours)
        # Zero objects stay within the object size.
        self.assertEqual([MIB, MIB, MIB, 100 * KIB],
                         [o['length'] for o in objs])
        self.assertEqual(data, self._restored(ours, len(data)))

    # -- incremental backups -------------------------------------------------

    def _changed_data(self, data):
        changed = _with(data, 40 * KIB, _pattern(b'c1', 1000))
        changed = _with(changed, 2 * MIB + 520 * KIB,
                        _pattern(b'c2', 70 * KIB))
        return changed

    def test_incremental_with_changed_ranges(self):
        data = self._data()
        full = self._handoff(RandomSource(data, zeros=_zero_ranges(data)))
        new = self._changed_data(data)
        stock = self._stock(new, parent=full)
        changed = [(40 * KIB, 1000), (2 * MIB + 520 * KIB, 70 * KIB)]
        source = RandomSource(new, zeros=_zero_ranges(new), changed=changed)
        ours = self._handoff(source, parent=full)
        self.assertEqual([full.id], source.parents)
        self.assertEqual(self._shas(stock)['sha256s'],
                         self._shas(ours)['sha256s'])
        # Only the blocks the changes touch were read and stored.
        self.assertEqual([(32 * KIB, 32 * KIB),
                          (2 * MIB + 512 * KIB, 96 * KIB)], source.reads)
        self.assertEqual([(32 * KIB, 32 * KIB),
                          (2 * MIB + 512 * KIB, 96 * KIB)],
                         [(o['offset'], o['length'])
                          for o in self._objects(ours)])
        self.assertEqual(new, self._restored(ours, len(new)))
        # Cinder's own incremental on top of the hand-off full, 32 KiB.
        self.assertEqual(new, self._restored(stock, len(new)))

    def test_zero_ranges_asked_after_the_changes(self):
        # A source may skip an expensive zero-range query once it knows
        # the changes (VMware CBT); the stored backup is the same.
        data = self._data()
        full = self._handoff(RandomSource(data, zeros=_zero_ranges(data)))
        new = self._changed_data(data)
        changed = [(40 * KIB, 1000), (2 * MIB + 520 * KIB, 70 * KIB)]
        calls = []

        class Ordered(RandomSource):
            def changed_ranges(self, parent):
                calls.append('changed_ranges')
                return super(Ordered, self).changed_ranges(parent)

            def zero_ranges(self):
                calls.append('zero_ranges')
                return iter(self.zeros if 'skip' not in calls else ())

        asked = self._handoff(Ordered(new, zeros=_zero_ranges(new),
                                      changed=changed), parent=full)
        self.assertEqual(['changed_ranges', 'zero_ranges'], calls)
        calls.append('skip')
        skipped = self._handoff(Ordered(new, zeros=_zero_ranges(new),
                                        changed=changed), parent=full)
        self.assertEqual(self._shas(asked)['sha256s'],
                         self._shas(skipped)['sha256s'])
        self.assertEqual(
            [(o['offset'], o['length'], o['md5'])
             for o in self._objects(asked)],
            [(o['offset'], o['length'], o['md5'])
             for o in self._objects(skipped)])

    def test_incremental_on_a_stock_full(self):
        self.override_config('driver_owned_backup_hash_block_kb', 1024)
        data = self._data()
        full = self._stock(data)
        new = self._changed_data(data)
        changed = [(40 * KIB, 1000), (2 * MIB + 520 * KIB, 70 * KIB)]
        ours = self._handoff(RandomSource(new, changed=changed),
                             parent=full)
        # The parent's block size is kept.
        self.assertEqual(32 * KIB, self._shas(ours)['chunk_size'])
        # Cinder's incremental at the same block size: the same digests.
        stock = self._stock(new, parent=full)
        self.assertEqual(self._shas(stock)['sha256s'],
                         self._shas(ours)['sha256s'])
        self.assertEqual(new, self._restored(ours, len(new)))

    @ddt.data((None, 'the bitmap of the parent is missing'),
              ('nomethod', None))
    @ddt.unpack
    def test_doubt_reads_everything(self, changed, reason):
        data = self._data()
        full = self._handoff(RandomSource(data))
        new = self._changed_data(data)
        source = RandomSource(new, changed=changed, reason=reason)
        if changed == 'nomethod':
            source = PlainStream(new, read_at=False)
        log = self.useFixture(fixtures.FakeLogger(
            name='cinder_vmdk_backup.backup.handoff', level=logging.INFO))
        ours = self._handoff(source, parent=full)
        lines = [line for line in log.output.splitlines()
                 if 'reads the whole volume' in line]
        self.assertEqual(1, len(lines), log.output)
        self.assertIn('Backup %s of volume %s reads the whole volume: '
                      % (ours.id, self.volume.id), lines[0])
        self.assertIn(reason or 'does not report what changed', lines[0])
        self.assertEqual(len(new), sum(length for _o, length in
                                       source.reads))
        # Still an incremental: only what differs is stored.
        self.assertEqual([32 * KIB, 96 * KIB],
                         [o['length'] for o in self._objects(ours)])
        self.assertEqual(self._shas(self._stock(new, parent=full))[
            'sha256s'], self._shas(ours)['sha256s'])
        self.assertEqual(new, self._restored(ours, len(new)))

    def test_size_change_is_a_doubt(self):
        data = self._data()
        full = self._handoff(RandomSource(data))
        backup = self._new_backup(full, size=2)
        log = self.useFixture(fixtures.FakeLogger(
            name='cinder_vmdk_backup.backup.handoff', level=logging.INFO))
        bigger = data + _pattern(b'tail', 300 * KIB)
        source = RandomSource(bigger, changed=[])
        handoff.backup(self.service, backup, source, len(bigger), 'volume v')
        self.assertIn('its size changed', log.output)
        self.assertEqual(bigger, self._restored(backup, len(bigger)))

    def test_parent_with_fewer_digests_is_refused(self):
        data = self._data()
        full = self._handoff(RandomSource(data))
        longer = data + _pattern(b'more', 100 * KIB)
        backup = self._new_backup(full)
        files = sorted(self._files())
        error = self.assertRaises(
            exception.InvalidBackup, handoff.backup, self.service, backup,
            RandomSource(longer, changed=[]), len(longer), 'volume v')
        self.assertIn('fewer digests', str(error))
        self.assertEqual(files, sorted(self._files()))

    def test_data_turned_to_zeros(self):
        data = self._data()
        full = self._handoff(RandomSource(data, zeros=_zero_ranges(data)))
        new = _with(data, MIB, bytes(512 * KIB))  # a discard
        source = RandomSource(new, zeros=_zero_ranges(new),
                              changed=[(MIB, 512 * KIB)])
        ours = self._handoff(source, parent=full)
        self.assertEqual([], source.reads)
        self.assertEqual(self._shas(self._stock(new, parent=full))[
            'sha256s'], self._shas(ours)['sha256s'])
        objs = self._objects(ours)
        self.assertEqual([(MIB, 224 * KIB)],
                         [(o['offset'], o['length']) for o in objs])
        # Restored over the full's data: the zeros overwrite it.
        self.assertEqual(new, self._restored(ours, len(new)))

    def test_unchanged_volume(self):
        data = self._data()
        full = self._handoff(RandomSource(data))
        source = RandomSource(data, changed=[])
        ours = self._handoff(source, parent=full)
        self.assertEqual([], source.reads)
        self.assertEqual(0, ours.object_count)
        self.assertEqual(self._shas(full)['sha256s'],
                         self._shas(ours)['sha256s'])
        self.assertEqual(data, self._restored(ours, len(data)))

    def test_stock_incremental_on_a_large_block_handoff_full(self):
        self.override_config('driver_owned_backup_hash_block_kb', 1024)
        data = self._data()
        full = self._handoff(RandomSource(data))
        self.assertEqual(MIB, self._shas(full)['chunk_size'])
        self.assertEqual(data, self._restored(full, len(data)))
        error = self.assertRaises(exception.InvalidBackup, self._stock,
                                  data, full)
        self.assertIn('Hash block size has changed', str(error))

    # -- cancel and failure ------------------------------------------------

    def test_cancel_deletes_everything(self):
        data = self._data()
        source = RandomSource(data)
        backup = self._new_backup()

        def cancel(offset):
            if offset >= 2 * MIB:
                row = objects.Backup.get_by_id(self.ctxt, backup.id)
                row.status = fields.BackupStatus.DELETING
                row.save()

        source.hook = cancel
        self.assertIsNone(handoff.backup(self.service, backup, source,
                                         len(data), 'volume v'))
        self.assertEqual([], self._files())

    @ddt.data(RandomSource, StreamSource)
    def test_failure_deletes_everything(self, source_class):
        data = self._data()
        source = source_class(data)

        def fail(offset):
            if offset >= 2 * MIB:
                raise IOError('disk gone')

        source.hook = fail
        backup = self._new_backup()
        self.assertRaises(IOError, handoff.backup, self.service, backup,
                          source, len(data), 'volume v')
        self.assertEqual([], self._files())

    def test_failure_writing_metadata_deletes_everything(self):
        data = self._data()
        self.useFixture(fixtures.MockPatchObject(
            self.service, '_write_metadata', autospec=True,
            side_effect=IOError('full')))
        self.assertRaises(IOError, self._handoff, RandomSource(data))
        self.assertEqual([], self._files())

    def test_progress_is_notified(self):
        notify = self.useFixture(fixtures.MockPatch(
            'cinder.volume.volume_utils.notify_about_backup_usage',
            autospec=True)).mock
        self.service.data_block_num = 1
        self._handoff(RandomSource(self._data()))
        percents = [call.kwargs['extra_usage_info']['backup_percent']
                    for call in notify.call_args_list]
        self.assertGreater(len(percents), 2)
        self.assertEqual(100, percents[-1])
        self.assertEqual(sorted(percents), percents)

    # -- scale -------------------------------------------------------------

    def test_sparse_tebibyte_full_and_incremental(self):
        self.override_config('driver_owned_backup_hash_block_kb', 1024)
        self.override_config('driver_owned_backup_object_mb', 32)
        size = units.Ti
        regions = [(0, 4 * MIB), (300 * units.Gi + 3 * MIB, MIB),
                   (size - 2 * MIB, 2 * MIB)]

        class Sparse(RandomSource):
            data = b''

            def read_at(self, offset, view):
                self.reads.append((offset, len(view)))
                for start, length in regions:
                    lo, hi = max(start, offset), min(start + length,
                                                     offset + len(view))
                    if lo < hi:
                        view[lo - offset:hi - offset] = _pattern(
                            b'%d' % start, length)[lo - start:hi - start]

        zeros, at = [], 0
        for start, length in regions:
            if start > at:
                zeros.append((at, start - at))
            at = start + length
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        full = self._handoff(Sparse(b'', zeros=zeros), size=size)
        full_time = time.monotonic() - started
        objs = self._objects(full)
        self.assertEqual(full.object_count, len(objs))
        self.assertEqual(size, sum(o['length'] for o in objs))
        started = time.monotonic()
        source = Sparse(b'', zeros=zeros,
                        changed=[(300 * units.Gi + 3 * MIB, 4096)])
        incremental = self._handoff(source, parent=full, size=size)
        incremental_time = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.assertEqual([(300 * units.Gi + 3 * MIB, MIB)], source.reads)
        self.assertEqual(0, incremental.object_count)
        print('1 TiB sparse: full %.1f s, incremental %.1f s, peak RSS '
              'growth %d MiB, %d objects' % (
                  full_time, incremental_time, (peak - before) // 1024,
                  full.object_count))
        self.assertLess(peak - before, 200 * 1024)


class InternalsTestCase(test.TestCase):

    def test_handoff_targets_match_this_cinder(self):
        problems = cinder_internals.check(
            [t for t in cinder_internals.TARGETS if t.group == 'handoff'])
        self.assertEqual([], problems)
        self.assertTrue(cinder_internals.usable('handoff'))


class Driver(driver_owned.DriverOwnedBackupMixin):
    """The hooks of a driver whose source is ``self.source``."""

    def __init__(self, source, staging_dir=None, check=None):
        self.source = source
        self.staging_dir = staging_dir
        self.check = check

    @contextlib.contextmanager
    def open_backup_source(self, context, backup, device):
        yield self.source

    def backup_staging_dir(self):
        return self.staging_dir

    def restore_raw_image(self, context, backup, volume, image_path):
        self.check(image_path)


@ddt.ddt
class DriverOwnedHandoffTestCase(PosixTestBase):
    """``DriverOwnedBackupMixin.backup_volume`` chooses the hand-off."""

    def _backup_volume(self, source):
        self.useFixture(fixtures.MockPatchObject(driver_owned.units, 'Gi',
                                                 len(source.data)))
        backup = self._new_backup()
        Driver(source).backup_volume(self.ctxt, backup, self.service)
        backup.refresh()
        return backup

    @ddt.data(RandomSource, PlainStream)
    def test_chunked_service_gets_the_handoff(self, source_class):
        self.override_config('driver_owned_backup_hash_block_kb', 64)
        data = bytes(MIB) + _pattern(b'd', MIB)
        source = source_class(data, zeros=[(0, MIB)])
        backup = self._backup_volume(source)
        self.assertEqual(64 * KIB, self._shas(backup)['chunk_size'])
        self.assertEqual(data, self._restored(backup, len(data)))
        if source_class is RandomSource:
            self.assertEqual([(MIB, MIB)], source.reads)

    def test_option_off_streams_into_cinders_backup(self):
        self.override_config('driver_owned_backup_extent_handoff', False)
        data = _pattern(b'd', MIB)
        source = RandomSource(data)
        source.read = source.stream.read
        backup = self._backup_volume(source)
        self.assertEqual(32 * KIB, self._shas(backup)['chunk_size'])
        self.assertEqual([], source.reads)
        self.assertEqual(data, self._restored(backup, len(data)))

    def test_mismatched_internals_stream_into_cinders_backup(self):
        self.override_config('driver_owned_backup_hash_block_kb', 64)
        usable = self.useFixture(fixtures.MockPatchObject(
            cinder_internals, 'usable', autospec=True,
            side_effect=lambda group: group != 'handoff')).mock
        data = _pattern(b'd', MIB)
        source = RandomSource(data)
        source.read = source.stream.read
        backup = self._backup_volume(source)
        usable.assert_any_call('handoff')
        self.assertEqual(32 * KIB, self._shas(backup)['chunk_size'])
        self.assertEqual(data, self._restored(backup, len(data)))

    def test_short_source_fails_the_backup(self):
        data = _pattern(b'd', MIB)
        source = PlainStream(data)
        self.useFixture(fixtures.MockPatchObject(driver_owned.units, 'Gi',
                                                 2 * MIB))
        backup = self._new_backup()
        self.assertRaises(exception.BackupDriverException,
                          Driver(source).backup_volume, self.ctxt, backup,
                          self.service)
        self.assertEqual([], self._files())

    def test_restore_of_gibibytes_of_zeros_stays_small(self):
        """Zero objects of a GiB reach the staging file as nothing."""
        size = 4 * units.Gi
        regions = [(0, MIB), (3 * units.Gi + 5 * MIB, 2 * MIB)]
        data = {start: _pattern(b'%d' % start, length)
                for start, length in regions}

        class Sparse(RandomSource):
            def read_at(self, offset, view):
                for start, length in regions:
                    lo, hi = max(start, offset), min(start + length,
                                                     offset + len(view))
                    if lo < hi:
                        view[lo - offset:hi - offset] = data[start][
                            lo - start:hi - start]

        zeros = [(MIB, 3 * units.Gi + 4 * MIB),
                 (3 * units.Gi + 7 * MIB, size - 3 * units.Gi - 7 * MIB)]
        self.override_config('driver_owned_backup_hash_block_kb', 1024)
        backup = test_utils.create_backup(self.ctxt, self.volume.id, size=4)
        handoff.backup(self.service, backup, Sparse(b'', zeros=zeros), size,
                       'volume v')
        backup.refresh()
        self.assertEqual(3, len([o for o in self._objects(backup)
                                 if o['length'] == units.Gi]))
        seen = []

        def check(path):
            with open(path, 'rb') as f:
                for start, length in regions:
                    self.assertEqual(data[start], os.pread(
                        f.fileno(), length, start))
                self.assertEqual(bytes(MIB), os.pread(f.fileno(), MIB,
                                                      2 * units.Gi))
                st = os.fstat(f.fileno())
            seen.append((st.st_size, st.st_blocks * 512))

        staging_dir = os.path.join(self.tmp, 'staging')
        backup.status = fields.BackupStatus.RESTORING
        backup.save()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        Driver(None, staging_dir, check).restore_backup(
            self.ctxt, backup, self.volume, self.service)
        elapsed = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.assertEqual(size, seen[0][0])
        self.assertLess(seen[0][1], 16 * MIB)
        print('4 GiB sparse restore: %.1f s, peak RSS growth %d MiB' % (
            elapsed, (peak - before) // 1024))
        self.assertLess(peak - before, 128 * 1024)
