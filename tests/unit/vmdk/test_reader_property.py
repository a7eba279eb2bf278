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

"""Property tests: whatever bytes arrive, the reader fails cleanly and says
what kind of fault it found.

Hypothesis damages valid streams of both layouts one region at a time (a
header field, a grain marker, a grain table entry, the footer, ...) and
asserts the *kind* of the outcome each region allows: a damaged structure
is :class:`~.errors.VmdkCorrupt`, a cut stream
:class:`~.errors.VmdkTruncated`, bytes the format ignores change nothing.
It also builds streams from generated headers and records: every one must
decode to exactly the capacity or raise a VmdkError, nothing else
(struct.error, IndexError, MemoryError, zlib.error, a hang). Examples are
capped so the module runs in a few seconds.
"""

import io
import os
import zlib

from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from oslotest import base

from cinder_vmdk_backup.vmdk import errors
from cinder_vmdk_backup.vmdk import format as fmt
from cinder_vmdk_backup.vmdk import reader
from tests.unit.vmdk import streams

GRAIN = streams.GRAIN
SECTOR = fmt.SECTOR
_SETTINGS = settings(max_examples=150, deadline=2000, database=None,
                     suppress_health_check=[HealthCheck.too_slow])
_TEXT = (b'a line of log text %d ' * 4000)[:GRAIN]
_DATA = _TEXT + os.urandom(GRAIN) + bytes(GRAIN) + _TEXT[:3 * SECTOR]
#: VMware's layout (our writer's output), qemu's (tables in the header)
_BASES = [
    streams.encode(_DATA),
    streams.front_layout(len(_DATA) // SECTOR,
                         [(0, _DATA[:GRAIN]), (128, _DATA[GRAIN:2 * GRAIN]),
                          (384, _DATA[3 * GRAIN:])], descriptor=True),
]

OK = 'decodes as before'
CORRUPT = 'corrupt'
TRUNCATED = 'truncated'
UNSUPPORTED = 'unsupported'
_KINDS = [(errors.VmdkTruncated, TRUNCATED), (errors.VmdkCorrupt, CORRUPT),
          (errors.VmdkUnsupported, UNSUPPORTED)]

#: fields of the header: (name, start, stop, outcomes allowed)
_HEADER_FIELDS = [
    ('magic', 0, 4, {CORRUPT}),
    ('version', 4, 8, {CORRUPT}),
    ('flags', 8, 12, None),  # depends on the bits; see _flags_outcomes
    ('capacity', 12, 20, {CORRUPT}),
    ('grain size', 20, 28, {CORRUPT}),
    # a shorter descriptor that still holds all its text reads the same
    ('descriptor offset and size', 28, 44, {CORRUPT, OK}),
    ('entries per grain table', 44, 48, {CORRUPT}),
    ('redundant directory offset (unused)', 48, 56, {OK}),
    ('grain directory offset', 56, 64, {CORRUPT}),
    ('overhead', 64, 72, {CORRUPT}),
    ('unclean shutdown byte (unused)', 72, 73, {OK}),
    ('newline detection characters', 73, 77, {CORRUPT}),
    ('compression algorithm', 77, 79, {CORRUPT}),
    ('header padding', 79, SECTOR, {OK}),
]
#: footer fields the reader compares with the header's
_FOOTER_CHECKED = [(0, 28), (44, 48), (56, 64), (77, 79)]


def _flags_outcomes(flags, front):
    """Damaged flags: corrupt unless they still describe this stream.

    In VMware's layout the footer repeats the flags, so any change is.
    """
    stream_bits = fmt.FLAG_COMPRESSED | fmt.FLAG_MARKERS
    if (not front or flags & ~fmt.KNOWN_FLAGS or
            flags & stream_bits != stream_bits):
        return {CORRUPT}
    return {OK}


def _footer_outcomes(position):
    for start, stop in _FOOTER_CHECKED:
        if start <= position < stop:
            return {CORRUPT}
    return {OK}


def _regions(stream, front):
    """Return ``(name, start, stop, outcomes)`` covering a valid stream.

    outcomes is a set, or a function of the offset into the region (and,
    for the flags, of the damaged value) returning one.
    """
    regions = list(_HEADER_FIELDS)
    text_end = stream.index(b'\0', SECTOR)
    regions.append(('descriptor text', SECTOR, text_end, {CORRUPT, OK}))
    if front:
        n_gt = fmt.gt_count(len(_DATA) // SECTOR)
        gd = 21 * SECTOR
        first_gt = (21 + fmt.sectors_for(4 * n_gt)) * SECTOR
        regions += [
            ('descriptor padding', text_end, gd, {OK}),
            ('grain directory entry', gd, gd + 4 * n_gt, {CORRUPT}),
            ('grain directory padding', gd + 4 * n_gt, first_gt, {OK}),
            ('grain table entry', first_gt, first_gt + 2048 * n_gt,
             {CORRUPT}),
            ('header area padding', first_gt + 2048 * n_gt,
             streams.OVERHEAD * SECTOR, {OK}),
        ]
    else:
        regions.append(('header area padding', text_end,
                        streams.OVERHEAD * SECTOR, {OK}))
    names = {fmt.MARKER_GT: 'grain table', fmt.MARKER_GD: 'grain directory',
             fmt.MARKER_FOOTER: 'footer', fmt.MARKER_EOS: 'end-of-stream'}
    for offset, kind, value in streams.records(stream):
        if kind == 'grain':
            size = fmt.GRAIN_MARKER.unpack_from(stream, offset)[1]
            end = offset + 12 + size
            regions += [
                ('grain marker LBA', offset, offset + 8, {CORRUPT}),
                ('grain marker size', offset + 8, end - size, {CORRUPT}),
                # a zlib header can take another valid form
                ('compressed grain', end - size, end, {CORRUPT, OK}),
                ('grain padding', end, offset + fmt.sectors_for(12 + size) *
                 SECTOR, {OK}),
            ]
            continue
        name = names[kind]
        data = offset + SECTOR
        regions += [('%s marker' % name, offset, offset + 16, {CORRUPT}),
                    ('%s marker padding' % name, offset + 16, data, {OK})]
        if kind == fmt.MARKER_GT:
            regions.append(('grain table entry', data, data + 2048,
                            {CORRUPT}))
        elif kind == fmt.MARKER_GD:
            regions += [('grain directory entry', data, data + 4, {CORRUPT}),
                        ('grain directory padding', data + 4, data + SECTOR,
                         {OK})]
        elif kind == fmt.MARKER_FOOTER:
            regions.append(('footer', data, data + SECTOR, _footer_outcomes))
    return [r for r in regions if r[2] > r[1]]


_REGIONS = [_regions(stream, front=bool(i)) for i, stream in enumerate(_BASES)]


def _outcome(stream):
    """Return the kind of fault the reader reports, or OK."""
    try:
        data = reader.StreamOptimizedReader(io.BytesIO(stream)).read()
    except errors.VmdkError as exc:
        for cls, kind in _KINDS:
            if isinstance(exc, cls):
                return kind
        return exc
    if data == _DATA:
        return OK
    return 'decodes to other data'


def _decode(stream):
    """Return the decoded length, or the VmdkError raised."""
    try:
        vmdk = reader.StreamOptimizedReader(io.BytesIO(stream))
        total = sum(length for _o, length, _d in vmdk.iter_extents())
    except errors.VmdkError as exc:
        return exc
    return total, vmdk.capacity


def _check(testcase, stream):
    result = _decode(stream)
    if isinstance(result, errors.VmdkError):
        testcase.assertIsInstance(result.reason, str)
        testcase.assertIsInstance(
            result, (errors.VmdkTruncated, errors.VmdkCorrupt,
                     errors.VmdkUnsupported))
        return result
    total, capacity = result
    testcase.assertEqual(capacity, total)
    return None


class ReaderPropertyTestCase(base.BaseTestCase):

    def test_regions_cover_the_streams(self):
        for stream, regions in zip(_BASES, _REGIONS):
            covered = sorted((start, stop) for _n, start, stop, _o in regions)
            self.assertEqual(0, covered[0][0])
            self.assertEqual(len(stream), covered[-1][1])
            for (_s1, stop), (start, _s2) in zip(covered, covered[1:]):
                self.assertEqual(stop, start)

    @_SETTINGS
    @given(base_index=st.integers(0, len(_BASES) - 1), data=st.data())
    def test_damaged_region_gives_its_kind_of_error(self, base_index, data):
        stream = bytearray(_BASES[base_index])
        name, start, stop, outcomes = data.draw(
            st.sampled_from(_REGIONS[base_index]), label='region')
        position = data.draw(st.integers(start, stop - 1), label='position')
        value = data.draw(st.integers(0, 255).filter(
            lambda v: v != stream[position]), label='value')
        stream[position] = value
        if name == 'flags':
            outcomes = _flags_outcomes(
                int.from_bytes(stream[8:12], 'little'), front=base_index)
        elif callable(outcomes):
            outcomes = outcomes(position - start)
        outcome = _outcome(bytes(stream))
        self.assertIn(outcome, outcomes,
                      '%s damaged at byte %d (%d -> %d)'
                      % (name, position, _BASES[base_index][position], value))

    @_SETTINGS
    @given(base_index=st.integers(0, len(_BASES) - 1),
           cut=st.integers(min_value=0))
    def test_cut_streams_are_truncated(self, base_index, cut):
        stream = _BASES[base_index]
        cut = cut % len(stream)
        if base_index == 1 and cut == len(stream) - SECTOR:
            # qemu's layout may end right before the end-of-stream marker
            self.assertEqual(OK, _outcome(stream[:cut]))
            return
        self.assertEqual(TRUNCATED, _outcome(stream[:cut]))

    @_SETTINGS
    @given(base_index=st.integers(0, len(_BASES) - 1),
           tail=st.binary(min_size=1, max_size=600))
    def test_bytes_after_the_end(self, base_index, tail):
        outcome = _outcome(_BASES[base_index] + tail)
        self.assertEqual(OK if not tail.strip(b'\0') else CORRUPT, outcome)

    @_SETTINGS
    @given(base_index=st.integers(0, len(_BASES) - 1),
           mutations=st.lists(st.tuples(st.integers(min_value=0),
                                        st.integers(0, 255)), max_size=8),
           cut=st.none() | st.integers(min_value=0),
           tail=st.binary(max_size=600))
    def test_mutated_streams_fail_cleanly(self, base_index, mutations, cut,
                                          tail):
        stream = bytearray(_BASES[base_index])
        for position, value in mutations:
            stream[position % len(stream)] = value
        if cut is not None:
            del stream[cut % (len(stream) + 1):]
        _check(self, bytes(stream) + tail)

    @_SETTINGS
    @given(fields=st.fixed_dictionaries({
        'capacity': st.integers(0, 1 << 38),
        'grain_size': st.sampled_from([0, 1, 8, 128, 129, 4096]),
        'overhead': st.integers(0, 300),
        'gd_offset': st.sampled_from([fmt.GD_AT_END, 0, 21, 1 << 33]),
        'flags': st.sampled_from([fmt.STREAM_FLAGS, 0x30003, 0x3, 0x70001]),
        'descriptor_offset': st.integers(0, 3),
        'descriptor_size': st.integers(0, 30)}),
        records=st.lists(st.one_of(
            st.tuples(st.integers(0, 1 << 20), st.binary(max_size=300)),
            st.tuples(st.integers(0, 4), st.integers(0, 5))), max_size=6))
    def test_generated_streams(self, fields, records):
        stream = streams.header(fields.pop('capacity'),
                                **fields)
        stream = stream.ljust(128 * SECTOR, b'\0')
        for first, second in records:
            if isinstance(second, bytes):
                stream += streams.grain(first * 128,
                                        body=zlib.compress(second))
            else:
                stream += fmt.meta_marker(second, first) + \
                    bytes(second * SECTOR)
        _check(self, stream)

    @_SETTINGS
    @given(kinds=st.lists(st.sampled_from('ztr'), max_size=6),
           tail=st.integers(0, 127), workers=st.integers(0, 3))
    def test_writer_output_decodes_to_its_input(self, kinds, tail, workers):
        parts = {'z': bytes(GRAIN), 't': _TEXT, 'r': os.urandom(GRAIN)}
        data = b''.join(parts[k] for k in kinds) + \
            os.urandom(tail * SECTOR)
        stream = streams.encode(data, workers=workers)
        with streams.executor(workers) as pool:
            self.assertEqual(data, reader.StreamOptimizedReader(
                io.BytesIO(stream), executor=pool).read())
