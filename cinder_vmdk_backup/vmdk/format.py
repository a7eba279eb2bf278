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

"""On-disk structures of the stream-optimized VMDK format.

The layout follows VMware's Virtual Disk Format 5.0 specification: a
512-byte sparse extent header (magic ``KDMV``, version 3), an embedded text
descriptor, then grains, each behind a grain marker (LBA, compressed size)
and padded to a sector, then metadata markers for grain tables, the grain
directory, the footer (a copy of the header that holds the real grain
directory offset) and the end-of-stream marker.

Shared by :mod:`reader` and :mod:`writer`; pure functions, no I/O.
"""

import collections
import re
import struct

SECTOR = 512
MAGIC = b'KDMV'
VERSION = 3
#: grain directory offset meaning "read it from the footer"
GD_AT_END = 0xFFFFFFFFFFFFFFFF
COMPRESSION_DEFLATE = 1

FLAG_NL_DETECT = 1 << 0
FLAG_RGD = 1 << 1
FLAG_ZERO_GRAIN = 1 << 2
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
KNOWN_FLAGS = (FLAG_NL_DETECT | FLAG_RGD | FLAG_ZERO_GRAIN |
               FLAG_COMPRESSED | FLAG_MARKERS)
STREAM_FLAGS = FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS

DEFAULT_GRAIN_SECTORS = 128
GTES_PER_GT = 512
GTE_SIZE = 4
GT_SECTORS = GTES_PER_GT * GTE_SIZE // SECTOR

MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3
MARKER_NAMES = {MARKER_EOS: 'end-of-stream', MARKER_GT: 'grain table',
                MARKER_GD: 'grain directory', MARKER_FOOTER: 'footer'}

#: magic, version, flags, capacity, grainSize, descriptorOffset,
#: descriptorSize, numGTEsPerGT, rgdOffset, gdOffset, overHead,
#: uncleanShutdown, 4 newline-detection characters, compressAlgorithm
_HEADER = struct.Struct('<4sIIQQQQIQQQB4sH')
_NL_CHARS = b'\n \r\n'
#: grain marker: LBA (sectors), compressed size (bytes); data follows
GRAIN_MARKER = struct.Struct('<QI')
#: metadata marker: numSectors, size (0), type
META_MARKER = struct.Struct('<QII')

Header = collections.namedtuple(
    'Header', ['version', 'flags', 'capacity', 'grain_size',
               'descriptor_offset', 'descriptor_size', 'gtes_per_gt',
               'rgd_offset', 'gd_offset', 'overhead', 'nl_chars',
               'compression'])


def pack_header(header):
    """Return the 512-byte sector of a sparse extent header."""
    raw = _HEADER.pack(MAGIC, header.version, header.flags, header.capacity,
                       header.grain_size, header.descriptor_offset,
                       header.descriptor_size, header.gtes_per_gt,
                       header.rgd_offset, header.gd_offset, header.overhead,
                       0, header.nl_chars, header.compression)
    return raw + bytes(SECTOR - len(raw))


def unpack_header(sector):
    """Return ``(magic, Header)`` of the first bytes of a sector."""
    fields = _HEADER.unpack_from(sector, 0)
    return fields[0], Header(*(fields[1:11] + fields[12:14]))


def new_header(capacity_sectors, descriptor_sectors, overhead,
               gd_offset=GD_AT_END, grain_size=DEFAULT_GRAIN_SECTORS):
    """Return the Header of a stream-optimized extent written by us."""
    return Header(version=VERSION, flags=STREAM_FLAGS,
                  capacity=capacity_sectors, grain_size=grain_size,
                  descriptor_offset=1 if descriptor_sectors else 0,
                  descriptor_size=descriptor_sectors,
                  gtes_per_gt=GTES_PER_GT, rgd_offset=0, gd_offset=gd_offset,
                  overhead=overhead, nl_chars=_NL_CHARS,
                  compression=COMPRESSION_DEFLATE)


def nl_chars_ok(header):
    return header.nl_chars == _NL_CHARS


def meta_marker(num_sectors, marker_type):
    """Return the 512-byte sector of a metadata marker."""
    return META_MARKER.pack(num_sectors, 0, marker_type) + bytes(SECTOR - 16)


def sectors_for(nbytes):
    """Number of sectors that hold nbytes."""
    return (nbytes + SECTOR - 1) // SECTOR


def gt_count(capacity_sectors, grain_size=DEFAULT_GRAIN_SECTORS):
    """Number of grain tables (and grain directory entries) of a disk."""
    grains = (capacity_sectors + grain_size - 1) // grain_size
    return (grains + GTES_PER_GT - 1) // GTES_PER_GT


# -- descriptor -------------------------------------------------------------

#: adapter type names of vSphere/Cinder and the descriptor's names
_ADAPTERS = {
    'ide': 'ide',
    'buslogic': 'buslogic',
    'lsilogic': 'lsilogic',
    'lsilogicsas': 'lsilogic',
    'paravirtual': 'lsilogic',
    'legacyesx': 'legacyESX',
}
_IDE_MAX_CYLINDERS = 16383


def descriptor_adapter_type(adapter_type):
    """Map a vSphere/Cinder adapter type to the descriptor's ddb name.

    :raises ValueError: for an unknown adapter type
    """
    try:
        return _ADAPTERS[adapter_type.lower()]
    except (KeyError, AttributeError):
        raise ValueError('unknown adapter type %r' % (adapter_type,))


def geometry(capacity_sectors, adapter):
    """Return ``(cylinders, heads, sectors)`` for a descriptor adapter.

    IDE disks get the ATA translation (16 heads, 63 sectors, at most 16383
    cylinders). SCSI disks get the BIOS translation VMware applies by size:
    64/32 below 1 GiB, 128/32 below 2 GiB, 255/63 above, with cylinders not
    capped (VMware writes e.g. 261083 cylinders for 2 TiB).
    """
    if adapter == 'ide':
        heads, sectors = 16, 63
        cylinders = min(capacity_sectors // (heads * sectors),
                        _IDE_MAX_CYLINDERS)
    else:
        if capacity_sectors < (1 << 30) // SECTOR:
            heads, sectors = 64, 32
        elif capacity_sectors < (2 << 30) // SECTOR:
            heads, sectors = 128, 32
        else:
            heads, sectors = 255, 63
        cylinders = capacity_sectors // (heads * sectors)
    return max(cylinders, 1), heads, sectors


def build_descriptor(capacity_sectors, adapter, hw_version, cid,
                     long_content_id, extent_name='disk.vmdk'):
    """Return the text of an embedded stream-optimized descriptor."""
    cylinders, heads, sectors = geometry(capacity_sectors, adapter)
    lines = [
        '# Disk DescriptorFile',
        'version=1',
        'encoding="UTF-8"',
        'CID=%08x' % cid,
        'parentCID=ffffffff',
        'createType="streamOptimized"',
        '',
        '# Extent description',
        'RW %d SPARSE "%s"' % (capacity_sectors, extent_name),
        '',
        '# The Disk Data Base',
        '#DDB',
        '',
        'ddb.adapterType = "%s"' % adapter,
        'ddb.geometry.cylinders = "%d"' % cylinders,
        'ddb.geometry.heads = "%d"' % heads,
        'ddb.geometry.sectors = "%d"' % sectors,
        'ddb.longContentID = "%s"' % long_content_id,
        'ddb.virtualHWVersion = "%d"' % hw_version,
    ]
    return '\n'.join(lines) + '\n'


_KEY_VALUE = re.compile(r'^\s*([A-Za-z0-9_.]+)\s*=\s*"?([^"]*)"?\s*$')
_EXTENT = re.compile(r'^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)')


def parse_descriptor(text):
    """Return ``(entries, extents)`` of a descriptor's text.

    entries maps keys (``createType``, ``ddb.adapterType``, ...) to values;
    extents is a list of ``(access, sectors, type)`` tuples.
    """
    entries = {}
    extents = []
    for line in text.splitlines():
        if line.lstrip().startswith('#'):
            continue
        extent = _EXTENT.match(line)
        if extent:
            extents.append((extent.group(1), int(extent.group(2)),
                            extent.group(3)))
            continue
        match = _KEY_VALUE.match(line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries, extents
