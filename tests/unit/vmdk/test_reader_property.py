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

"""Property tests: whatever bytes arrive, the reader fails cleanly.

Hypothesis mutates, truncates and extends valid streams of both layouts and
builds streams from generated headers and records. Every one must either
decode to exactly the capacity or raise a VmdkError; nothing else (no
struct.error, IndexError, MemoryError, zlib.error, hang). Examples are
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
_SETTINGS = settings(max_examples=150, deadline=2000, database=None,
                     suppress_health_check=[HealthCheck.too_slow])
_TEXT = (b'a line of log text %d ' * 4000)[:GRAIN]
_DATA = _TEXT + os.urandom(GRAIN) + bytes(GRAIN) + _TEXT[:3 * fmt.SECTOR]
_BASES = [
    streams.encode(_DATA),
    streams.front_layout(len(_DATA) // fmt.SECTOR,
                         [(0, _DATA[:GRAIN]), (128, _DATA[GRAIN:2 * GRAIN]),
                          (384, _DATA[3 * GRAIN:])]),
]


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
        return result
    total, capacity = result
    testcase.assertEqual(capacity, total)
    return None


_mutations = st.lists(st.tuples(st.integers(min_value=0),
                                st.integers(min_value=0, max_value=255)),
                      max_size=8)


class ReaderPropertyTestCase(base.BaseTestCase):

    @_SETTINGS
    @given(base_index=st.integers(0, len(_BASES) - 1), mutations=_mutations,
           cut=st.none() | st.integers(min_value=0),
           tail=st.binary(max_size=600))
    def test_mutated_streams(self, base_index, mutations, cut, tail):
        stream = bytearray(_BASES[base_index])
        for position, value in mutations:
            stream[position % len(stream)] = value
        if cut is not None:
            del stream[cut % (len(stream) + 1):]
        _check(self, bytes(stream) + tail)

    @_SETTINGS
    @given(base_index=st.integers(0, len(_BASES) - 1),
           cut=st.integers(min_value=1))
    def test_truncated_streams_never_succeed(self, base_index, cut):
        stream = _BASES[base_index]
        cut = cut % len(stream)
        if base_index == 1 and cut >= len(stream) - fmt.SECTOR:
            cut = len(stream) - fmt.SECTOR - 1
        self.assertIsInstance(_decode(stream[:cut]), errors.VmdkError)

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
        stream = stream.ljust(128 * fmt.SECTOR, b'\0')
        for first, second in records:
            if isinstance(second, bytes):
                stream += streams.grain(first * 128,
                                        body=zlib.compress(second))
            else:
                stream += fmt.meta_marker(second, first) + \
                    bytes(second * fmt.SECTOR)
        _check(self, stream)

    @_SETTINGS
    @given(kinds=st.lists(st.sampled_from('ztr'), max_size=6),
           tail=st.integers(0, 127), threads=st.integers(1, 3))
    def test_writer_output_decodes_to_its_input(self, kinds, tail, threads):
        parts = {'z': bytes(GRAIN), 't': _TEXT, 'r': os.urandom(GRAIN)}
        data = b''.join(parts[k] for k in kinds) + \
            os.urandom(tail * fmt.SECTOR)
        stream = streams.encode(data, threads=threads)
        self.assertEqual(data, reader.StreamOptimizedReader(
            io.BytesIO(stream)).read())
