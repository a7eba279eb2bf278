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

import os
import tempfile

import ddt
from oslotest import base

from cinder_vmdk_backup.kvm import naming


@ddt.ddt
class NamingTestCase(base.BaseTestCase):

    def test_transient_names_parse_back(self):
        path = naming.transient_path('/v/volume-1', naming.FROZEN,
                                     'ab' * 8)
        self.assertEqual(('volume-1', naming.FROZEN, 'ab' * 8),
                         naming.parse(path))

    @ddt.data('volume-1', 'volume-1.cvb-frozen-zz', 'x.cvb-other-' + 'a' * 16,
              'volume-1.cvb-overlay-' + 'a' * 15)
    def test_names_not_ours(self, name):
        self.assertIsNone(naming.parse(name))

    def test_lock_excludes_threads_of_one_process(self):
        with tempfile.TemporaryDirectory() as directory:
            image = os.path.join(directory, 'volume-1')
            with naming.image_lock(image) as taken:
                self.assertTrue(taken)
                with naming.image_lock(image, blocking=False) as again:
                    self.assertFalse(again)
            with naming.image_lock(image, blocking=False) as after:
                self.assertTrue(after)
