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

from oslo_config import cfg
import testtools

from cinder_vmdk_backup import opts


class ListOptsTestCase(testtools.TestCase):

    def test_every_option_listed_once(self):
        listed = [(group, opt.dest)
                  for group, group_opts in opts.list_opts()
                  for opt in group_opts]
        self.assertEqual(len(listed), len(set(listed)))
        self.assertIn(('backend_defaults', 'vmware_backup_staging_dir'),
                      listed)
        self.assertIn(('instance_groups', 'sync_timeout'), listed)

    def test_options_register_on_a_config(self):
        conf = cfg.ConfigOpts()
        for group, group_opts in opts.list_opts():
            conf.register_opts(group_opts, group=group)
        conf([])
        self.assertEqual(
            0, conf.backend_defaults.vmware_backup_compression_level)
