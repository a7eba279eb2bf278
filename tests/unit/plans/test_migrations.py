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

"""The plan tables' migrations, up from an empty database (sqlite)."""

from alembic import autogenerate
from alembic import migration as alembic_migration
from oslotest import base
import sqlalchemy as sa

from cinder_vmdk_backup.plans.db import api
from cinder_vmdk_backup.plans.db import migration
from cinder_vmdk_backup.plans.db import models
from tests import plans_db


class MigrationsTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.db = self.useFixture(plans_db.PlansDatabase(sync=False))
        self.engine = api.get_engine()

    def tables(self):
        return set(sa.inspect(self.engine).get_table_names())

    def test_up_from_empty(self):
        self.assertIsNone(migration.db_version())
        self.assertEqual(set(), self.tables())
        migration.db_sync()
        self.assertEqual(migration.head(), migration.db_version())
        self.assertEqual('0001_initial', migration.db_version())
        self.assertEqual({'cvb_alembic_version', 'cvb_backup_plans',
                          'cvb_backup_plan_runs'}, self.tables())
        migration.db_sync()  # idempotent
        self.assertEqual(migration.head(), migration.db_version())

    def test_beside_cinder_migrations(self):
        # A database where Cinder's alembic has its own version table: the
        # plugin's sync neither reads nor changes it.
        with self.engine.begin() as conn:
            conn.execute(sa.text('CREATE TABLE alembic_version '
                                 '(version_num VARCHAR(32) NOT NULL)'))
            conn.execute(sa.text("INSERT INTO alembic_version VALUES "
                                 "('cinder-head')"))
        self.assertIsNone(migration.db_version())
        migration.db_sync()
        with self.engine.connect() as conn:
            self.assertEqual('cinder-head', alembic_migration.MigrationContext
                             .configure(conn).get_current_revision())
        self.assertEqual('0001_initial', migration.db_version())

    def test_models_match_migrations(self):
        migration.db_sync()
        with self.engine.connect() as conn:
            context = alembic_migration.MigrationContext.configure(
                conn, opts={'include_name': migration.include_name,
                            'compare_type': True,
                            'version_table': migration.VERSION_TABLE})
            diff = autogenerate.compare_metadata(context,
                                                 models.Base.metadata)
        self.assertEqual([], diff)
