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

"""Builders of VMDK streams, good and bad, for the codec's tests."""

import concurrent.futures
import contextlib
import io
import struct
import zlib

from cinder_vmdk_backup.vmdk import format as fmt
from cinder_vmdk_backup.vmdk import writer

GRAIN = fmt.DEFAULT_GRAIN_SECTORS * fmt.SECTOR
OVERHEAD = writer.OVERHEAD_SECTORS
EOS = fmt.meta_marker(0, fmt.MARKER_EOS)


def executor(workers):
    """A context of a thread pool of workers, or of None (inline) for 0."""
    if not workers:
        return contextlib.nullcontext()
    return concurrent.futures.ThreadPoolExecutor(workers)


def encode(data, capacity=None, measure=True, workers=0, **kwargs):
    """Return our writer's VMDK of data (inline unless given workers)."""
    with executor(workers) as pool:
        vmdk = writer.StreamOptimizedWriter(
            io.BytesIO(data), len(data) if capacity is None else capacity,
            executor=pool, **kwargs)
        if measure:
            vmdk.length
        return b''.join(vmdk.iter_chunks())


class RecordingExecutor(concurrent.futures.Executor):
    """A thread pool that keeps every future it hands out."""

    def __init__(self, workers=2):
        self._pool = concurrent.futures.ThreadPoolExecutor(workers)
        self.futures = []
        self.shut_down = False

    def submit(self, fn, *args, **kwargs):
        future = self._pool.submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future

    def shutdown(self, wait=True, **kwargs):
        self.shut_down = True
        self._pool.shutdown(wait=wait, **kwargs)


def records(stream):
    """Return ``(offset, kind, value)`` of each marker of a valid stream.

    kind is 'grain' (value: LBA) or a marker type number (value: sectors).
    """
    out = []
    offset = OVERHEAD * fmt.SECTOR
    while offset < len(stream):
        lba, size = fmt.GRAIN_MARKER.unpack_from(stream, offset)
        if size:
            out.append((offset, 'grain', lba))
            offset += fmt.sectors_for(12 + size) * fmt.SECTOR
        else:
            marker_type = struct.unpack_from('<I', stream, offset + 12)[0]
            out.append((offset, marker_type, lba))
            offset += (1 + lba) * fmt.SECTOR
    return out


def header(capacity_sectors, **fields):
    head = fmt.new_header(capacity_sectors, 0, OVERHEAD)
    return fmt.pack_header(head._replace(**fields))


def prologue(capacity_sectors, descriptor=None, **fields):
    """Header, optional descriptor text and padding up to the grains."""
    text = b''
    if descriptor is not None:
        text = descriptor.encode()
        fields.setdefault('descriptor_offset', 1)
        fields.setdefault('descriptor_size', fmt.sectors_for(len(text)))
    head = header(capacity_sectors, **fields)
    return (head + text).ljust(OVERHEAD * fmt.SECTOR, b'\0')


def grain(lba, data=None, body=None, csize=None):
    """A grain marker; body defaults to data deflated."""
    if body is None:
        body = zlib.compress(data)
    head = fmt.GRAIN_MARKER.pack(lba, len(body) if csize is None else csize)
    raw = head + body
    return raw + bytes(-len(raw) % fmt.SECTOR)


def front_layout(capacity_sectors, grains, eos=True, padding=0,
                 descriptor=False):
    """A qemu-style stream: directory and tables in the header area.

    :param grains: list of (lba, data)
    :param descriptor: embed a streamOptimized descriptor in sectors 1-20
        (as qemu does)
    """
    n_gt = fmt.gt_count(capacity_sectors)
    gd_sector = 21
    first_gt = gd_sector + fmt.sectors_for(n_gt * 4)
    gd = [first_gt + k * fmt.GT_SECTORS for k in range(n_gt)]
    tables = [[0] * fmt.GTES_PER_GT for _ in range(n_gt)]
    body = b''
    sector = OVERHEAD
    for lba, data in grains:
        raw = grain(lba, data)
        k, index = divmod(lba // fmt.DEFAULT_GRAIN_SECTORS,
                          fmt.GTES_PER_GT)
        tables[k][index] = sector
        sector += len(raw) // fmt.SECTOR
        body += raw
    area = bytearray(OVERHEAD * fmt.SECTOR)
    if descriptor:
        text = ('# Disk DescriptorFile\nversion=1\ncreateType='
                '"streamOptimized"\nRW %d SPARSE "disk.vmdk"\n'
                % capacity_sectors).encode()
        area[fmt.SECTOR:fmt.SECTOR + len(text)] = text
        area[0:fmt.SECTOR] = header(capacity_sectors, gd_offset=gd_sector,
                                    descriptor_offset=1,
                                    descriptor_size=gd_sector - 1)
    else:
        area[0:fmt.SECTOR] = header(capacity_sectors, gd_offset=gd_sector)
    area[gd_sector * fmt.SECTOR:gd_sector * fmt.SECTOR + 4 * n_gt] = \
        struct.pack('<%dI' % n_gt, *gd)
    for k, table in enumerate(tables):
        start = gd[k] * fmt.SECTOR
        area[start:start + 2048] = struct.pack('<512I', *table)
    return bytes(area) + body + (EOS if eos else b'') + bytes(padding)
