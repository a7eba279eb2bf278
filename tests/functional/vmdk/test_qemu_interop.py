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

"""The stream-optimized codec against the real qemu-img, both ways.

qemu-img (qemu-utils) writes stream-optimized VMDKs in its own layout
(grain directory and tables in the header area, no footer) and reads
VMware's layout, which is the one our writer produces; so each direction
exercises the other side's parser. Sources are sparse files; the big case
is a 5 GiB sparse disk with data beyond 4 GiB.
"""

import concurrent.futures
import io
import os
import shutil
import struct
import subprocess

import ddt
import fixtures
from oslotest import base

from cinder_vmdk_backup.vmdk import errors
from cinder_vmdk_backup.vmdk import format as fmt
from cinder_vmdk_backup.vmdk import reader
from cinder_vmdk_backup.vmdk import writer

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
GRAIN = 64 * KiB
QEMU_IMG = shutil.which('qemu-img')


def _text(size, seed=0):
    line = b'%d cinder-backup: volume grain written at offset %d\n'
    return b''.join(line % (seed, i) for i in range(size // 20 + 1))[:size]


#: name -> (capacity, [(offset, data)])
CASES = {
    'one_sector': (512, [(0, os.urandom(512))]),
    'one_zero_sector': (512, []),
    'not_a_grain_multiple': (MiB + 3 * 512,
                             [(0, _text(70000)),
                              (MiB, os.urandom(3 * 512))]),
    'all_zero_written': (4 * MiB, [(0, bytes(4 * MiB))]),
    'fully_random': (4 * MiB, [(0, os.urandom(4 * MiB))]),
    'last_grain_zero': (2 * MiB, [(0, _text(2 * MiB - GRAIN, 1)),
                                  (2 * MiB - GRAIN, bytes(GRAIN))]),
    'two_grain_tables': (40 * MiB, [(5 * KiB, _text(200 * KiB, 2)),
                                    (33 * MiB, os.urandom(GRAIN)),
                                    (39 * MiB, _text(MiB, 3))]),
    'sparse_beyond_4_gib': (5 * GiB + 7 * 512,
                            [(0, _text(GRAIN, 4)),
                             (3 * GiB, os.urandom(300 * KiB)),
                             (4 * GiB + MiB + 512, _text(MiB, 5)),
                             (5 * GiB, os.urandom(7 * 512))]),
}


class _ForwardOnly(object):
    """Reads a file the way an HTTP response is read: forwards only."""

    def __init__(self, fileobj):
        self._file = fileobj

    def read(self, n=-1):
        return self._file.read(n)


def _run(*argv):
    return subprocess.run((QEMU_IMG,) + argv, capture_output=True,
                          text=True, check=False)


@ddt.ddt
class QemuInteropTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        if QEMU_IMG is None:
            self.fail('qemu-img is not installed (tools/install-peers.sh)')
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def _path(self, name):
        return os.path.join(self.tmp, name)

    def _source(self, name):
        capacity, writes = CASES[name]
        path = self._path(name + '.raw')
        with open(path, 'wb') as f:
            f.truncate(capacity)
            for offset, data in writes:
                f.seek(offset)
                f.write(data)
        return path, capacity

    def _assert_decodes_to(self, vmdk_path, raw_path, executor=None):
        """Decode with our reader, forwards only; compare with raw_path."""
        with open(vmdk_path, 'rb') as stream, \
                open(raw_path, 'rb') as expected:
            disk = reader.StreamOptimizedReader(_ForwardOnly(stream),
                                                executor=executor)
            self.assertEqual(os.path.getsize(raw_path), disk.capacity)
            fd = expected.fileno()
            covered = 0
            for offset, length, data in disk.iter_extents():
                self.assertEqual(covered, offset)
                covered += length
                if data is not None:
                    self.assertEqual(os.pread(fd, length, offset),
                                     bytes(data), 'data at %d' % offset)
                else:
                    self._assert_zeros(fd, offset, length)
            self.assertEqual(disk.capacity, covered)

    def _assert_zeros(self, fd, offset, length):
        end = offset + length
        pos = offset
        while pos < end:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                return
            if pos >= end:
                return
            chunk = os.pread(fd, min(MiB, end - pos), pos)
            self.assertFalse(chunk.strip(b'\0'), 'zeros at %d' % pos)
            pos += len(chunk)

    @ddt.data(*sorted(CASES))
    def test_qemu_vmdk_decodes_like_qemu(self, name):
        source, _capacity = self._source(name)
        vmdk = self._path('qemu.vmdk')
        result = _run('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                      'subformat=streamOptimized', source, vmdk)
        self.assertEqual(0, result.returncode, result.stderr)
        back = self._path('qemu.raw')
        result = _run('convert', '-f', 'vmdk', '-O', 'raw', vmdk, back)
        self.assertEqual(0, result.returncode, result.stderr)
        self._assert_decodes_to(vmdk, back)
        self._assert_decodes_to(vmdk, source)

    @ddt.data(*[(name, level) for name in sorted(CASES)
                for level in (0, 1)])
    @ddt.unpack
    def test_our_vmdk_passes_qemu_check_and_compare(self, name, level):
        source, capacity = self._source(name)
        vmdk = self._path('ours.vmdk')
        with open(source, 'rb') as src, open(vmdk, 'wb') as sink:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                encoder = writer.StreamOptimizedWriter(
                    src, capacity, executor=pool, compression_level=level)
                length = encoder.length
                self.assertEqual(length, encoder.write_to(sink))
        self.assertEqual(length, os.path.getsize(vmdk))
        result = _run('check', vmdk)
        self.assertEqual(0, result.returncode, result.stdout + result.stderr)
        self.assertIn('No errors were found', result.stdout)
        result = _run('compare', '-f', 'raw', '-F', 'vmdk', source, vmdk)
        self.assertEqual(0, result.returncode, result.stdout + result.stderr)
        self.assertIn('Images are identical', result.stdout)
        info = _run('info', '--output=json', vmdk)
        self.assertIn('"virtual-size": %d' % capacity, info.stdout)
        self._assert_decodes_to(vmdk, source)

    def _qemu_vmdk(self, name):
        source, _capacity = self._source(name)
        vmdk = self._path('qemu.vmdk')
        result = _run('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                      'subformat=streamOptimized', source, vmdk)
        self.assertEqual(0, result.returncode, result.stderr)
        return source, vmdk

    def test_qemu_vmdk_decodes_on_an_executor(self):
        source, vmdk = self._qemu_vmdk('two_grain_tables')
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            self._assert_decodes_to(vmdk, source, executor=pool)

    def _fault(self, stream):
        try:
            disk = reader.StreamOptimizedReader(io.BytesIO(bytes(stream)))
            for _extent in disk.iter_extents():
                pass
        except errors.VmdkError as exc:
            return exc
        self.fail('the damaged VMDK decoded')

    @staticmethod
    def _end_of_grains(stream):
        """Offset of the first sector after qemu's grains (its EOS)."""
        offset = fmt.unpack_header(stream)[1].overhead * fmt.SECTOR
        while True:
            _lba, size = fmt.GRAIN_MARKER.unpack_from(stream, offset)
            if not size:
                return offset
            offset += fmt.sectors_for(12 + size) * fmt.SECTOR

    @ddt.data(True, False)
    def test_damaged_grain_table_of_qemu_is_corrupt(self, with_eos):
        _source, vmdk = self._qemu_vmdk('two_grain_tables')
        with open(vmdk, 'rb') as f:
            stream = bytearray(f.read())
        if not with_eos:
            del stream[self._end_of_grains(stream):]
        gd_offset = fmt.unpack_header(stream)[1].gd_offset * fmt.SECTOR
        k = 1  # the disk's second and last grain table
        table = struct.unpack_from('<I', stream, gd_offset + 4 * k)[0]
        table *= fmt.SECTOR
        last = max(i for i in range(512) if struct.unpack_from(
            '<I', stream, table + 4 * i)[0])
        # The disk's last grain listed past the end of the file, as a
        # damaged entry can: corrupt, not "stream ends before the grain".
        struct.pack_into('<I', stream, table + 4 * last, 1 << 24)
        exc = self._fault(stream)
        self.assertIsInstance(exc, errors.VmdkCorrupt)
        self.assertIn('grain table %d' % k, str(exc))
        self.assertNotIn('stream ends', str(exc))

    def test_damaged_flags_of_qemu_are_corrupt(self):
        _source, vmdk = self._qemu_vmdk('one_sector')
        with open(vmdk, 'rb') as f:
            stream = bytearray(f.read())
        stream[10] = 0  # compressed grains and markers gone
        exc = self._fault(stream)
        self.assertIsInstance(exc, errors.VmdkCorrupt)
        self.assertIn('flags', str(exc))
        self.assertIn('corrupt', str(exc))
        self.assertNotIn('not streamOptimized', str(exc))
        self.assertEqual(8, exc.offset)

    def test_cut_qemu_vmdk_is_truncated(self):
        _source, vmdk = self._qemu_vmdk('two_grain_tables')
        with open(vmdk, 'rb') as f:
            stream = f.read()
        overhead = fmt.unpack_header(stream)[1].overhead * fmt.SECTOR
        end = self._end_of_grains(stream)
        for cut in (0, 100, fmt.SECTOR + 7, overhead - 1, overhead + 5,
                    (overhead + end) // 2, end - 7):
            exc = self._fault(stream[:cut])
            self.assertIsInstance(exc, errors.VmdkTruncated, (cut, exc))

    def test_zero_size_disk(self):
        """A zero-size disk round-trips through our codec.

        qemu-img 7.2 opens no zero-size stream-optimized VMDK, not even one
        it wrote itself, so only our side is checked here, plus that qemu's
        refusal is the same for both files.
        """
        source = self._path('empty.raw')
        open(source, 'wb').close()
        vmdk = self._path('ours.vmdk')
        with open(source, 'rb') as src, open(vmdk, 'wb') as sink:
            writer.StreamOptimizedWriter(src, 0).write_to(sink)
        with open(vmdk, 'rb') as stream:
            disk = reader.StreamOptimizedReader(_ForwardOnly(stream))
            self.assertEqual(0, disk.capacity)
            self.assertEqual(b'', disk.read())
        theirs = self._path('qemu.vmdk')
        _run('convert', '-f', 'raw', '-O', 'vmdk', '-o',
             'subformat=streamOptimized', source, theirs)
        ours_info = _run('info', vmdk)
        theirs_info = _run('info', theirs)
        self.assertEqual(theirs_info.returncode, ours_info.returncode)
