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

import ddt
from oslotest import base

from cinder_vmdk_backup.vmdk import format as fmt


@ddt.ddt
class FormatTestCase(base.BaseTestCase):

    def test_header_round_trip(self):
        header = fmt.new_header(12345, 2, 128, gd_offset=77)
        raw = fmt.pack_header(header)
        self.assertEqual(fmt.SECTOR, len(raw))
        self.assertEqual((fmt.MAGIC, header), fmt.unpack_header(raw))
        self.assertEqual(b'\n \r\n', raw[73:77])
        self.assertEqual(fmt.STREAM_FLAGS, header.flags)
        self.assertEqual(0x30001, header.flags)

    def test_meta_marker(self):
        raw = fmt.meta_marker(4, fmt.MARKER_GT)
        self.assertEqual(fmt.SECTOR, len(raw))
        self.assertEqual((4, 0, 1), fmt.META_MARKER.unpack_from(raw))

    @ddt.data((0, 0), (1, 1), (128 * 512, 1), (128 * 512 + 1, 2),
              (2 ** 37, 2 ** 37 // (128 * 512)))
    @ddt.unpack
    def test_gt_count(self, sectors, tables):
        self.assertEqual(tables, fmt.gt_count(sectors))

    @ddt.data(('ide', 2 * 1024 * 1024, (2080, 16, 63)),
              ('ide', 200 * 1024 * 1024 * 2, (16383, 16, 63)),
              ('lsilogic', 100 * 2048, (100, 64, 32)),
              ('lsilogic', 1536 * 2048, (768, 128, 32)),
              ('buslogic', 10 * 1024 * 2048, (1305, 255, 63)),
              ('lsilogic', 2 * 1024 * 1024 * 2048, (267349, 255, 63)),
              ('lsilogic', 1, (1, 64, 32)))
    @ddt.unpack
    def test_geometry(self, adapter, sectors, expected):
        self.assertEqual(expected, fmt.geometry(sectors, adapter))

    @ddt.data(('lsiLogic', 'lsilogic'), ('LSILOGIC', 'lsilogic'),
              ('busLogic', 'buslogic'), ('ide', 'ide'),
              ('paraVirtual', 'lsilogic'), ('lsiLogicsas', 'lsilogic'))
    @ddt.unpack
    def test_adapter_names(self, name, ddb):
        self.assertEqual(ddb, fmt.descriptor_adapter_type(name))

    @ddt.data('sata', None, '')
    def test_unknown_adapter(self, name):
        self.assertRaises(ValueError, fmt.descriptor_adapter_type, name)

    def test_descriptor_round_trip(self):
        text = fmt.build_descriptor(4096, 'lsilogic', 13, 0xabc,
                                    'f' * 32, 'x.vmdk')
        entries, extents = fmt.parse_descriptor(text)
        self.assertEqual([('RW', 4096, 'SPARSE')], extents)
        self.assertEqual('streamOptimized', entries['createType'])
        self.assertEqual('00000abc', entries['CID'])
        self.assertEqual('13', entries['ddb.virtualHWVersion'])
        self.assertEqual('f' * 32, entries['ddb.longContentID'])
        self.assertEqual('64', entries['ddb.geometry.heads'])

    @ddt.data((0, 0), (1, 1), (512, 1), (513, 2))
    @ddt.unpack
    def test_sectors_for(self, nbytes, sectors):
        self.assertEqual(sectors, fmt.sectors_for(nbytes))
