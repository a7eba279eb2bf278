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

"""alembic environment of the backup plan tables.

The revisions are versioned in ``cvb_alembic_version`` and only the
plugin's ``cvb_`` tables are considered, so that they share Cinder's
database without either project's migrations seeing the other's.
:mod:`cinder_vmdk_backup.plans.db.migration` runs them with a connection
in ``config.attributes['connection']``.
"""

from alembic import context
import sqlalchemy as sa

from cinder_vmdk_backup.plans.db import migration
from cinder_vmdk_backup.plans.db import models


def _configure(**kw):
    context.configure(target_metadata=models.Base.metadata,
                      version_table=migration.VERSION_TABLE,
                      include_name=migration.include_name, **kw)


def run_migrations_offline():
    _configure(url=context.config.get_main_option('sqlalchemy.url'),
               literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connection = context.config.attributes.get('connection')
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(
        context.config.get_main_option('sqlalchemy.url'),
        poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
