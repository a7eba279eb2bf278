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

"""A private, migrated plans database for tests (an sqlite file).

``self.useFixture(plans_db.PlansDatabase())`` points ``[backup_plans]
connection`` at a fresh sqlite file in a temporary directory, runs the
migrations (``db_sync``, as ``cinder-vmdk-backup-manage db sync`` does) and
drops the engine again at cleanup. Shared by the tests of every part of
backup plans.
"""

import os

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture

from cinder_vmdk_backup.plans.db import api
from cinder_vmdk_backup.plans.db import migration


class PlansDatabase(fixtures.Fixture):

    def __init__(self, url=None, sync=True):
        super().__init__()
        self._url = url
        self._sync = sync

    def _setUp(self):
        if self._url is None:
            directory = self.useFixture(fixtures.TempDir()).path
            self.path = os.path.join(directory, 'plans.sqlite')
            self._url = 'sqlite:///' + self.path
        self.url = self._url
        conf = self.useFixture(config_fixture.Config(cfg.CONF))
        conf.config(connection=self.url, group='backup_plans')
        api.reset_engine()
        self.addCleanup(api.reset_engine)
        if self._sync:
            migration.db_sync()
