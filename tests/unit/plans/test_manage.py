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

"""cinder-vmdk-backup-manage's command line, the migrations mocked."""

import io

import fixtures
from oslo_config import cfg
from oslotest import base

from cinder_vmdk_backup.cmd import manage
from cinder_vmdk_backup.plans.db import migration


class ManageTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.out = self.useFixture(fixtures.MonkeyPatch(
            'sys.stdout', io.StringIO())).new_value
        self.err = self.useFixture(fixtures.MonkeyPatch(
            'sys.stderr', io.StringIO())).new_value
        self.sync = self.useFixture(fixtures.MockPatchObject(
            migration, 'db_sync', autospec=True)).mock
        self.version = self.useFixture(fixtures.MockPatchObject(
            migration, 'db_version', autospec=True,
            return_value='0001_initial')).mock
        self.useFixture(fixtures.MockPatch('oslo_log.log.setup',
                                           autospec=True))

    def main(self, *args):
        return manage.main(['--config-file', '/dev/null'] + list(args),
                           conf=cfg.ConfigOpts())

    def test_sync(self):
        self.assertEqual(0, self.main('db', 'sync'))
        self.sync.assert_called_once_with(None)
        self.assertIn('0001_initial', self.out.getvalue())
        self.assertEqual(0, self.main('db', 'sync', '0001_initial'))
        self.sync.assert_called_with('0001_initial')

    def test_version(self):
        self.assertEqual(0, self.main('db', 'version'))
        self.assertEqual('0001_initial\n', self.out.getvalue())
        self.version.return_value = None
        self.assertEqual(0, self.main('db', 'version'))
        self.assertIn('None (run db sync)', self.out.getvalue())
        self.sync.assert_not_called()

    def test_failure_is_one_line_and_status_1(self):
        self.sync.side_effect = RuntimeError(
            "Can't locate revision identified by 'nope'")
        self.assertEqual(1, self.main('db', 'sync', 'nope'))
        self.assertEqual("db sync failed: Can't locate revision identified "
                         "by 'nope'\n", self.err.getvalue())

    def test_usage(self):
        self.assertRaises(SystemExit, self.main, 'db')
        self.assertRaises(SystemExit, self.main, 'db', 'drop')
        self.sync.assert_not_called()
