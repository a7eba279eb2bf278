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

"""Create and upgrade the backup plan tables (alembic).

What ``cinder-vmdk-backup-manage db sync`` and ``db version`` run. The
alembic configuration is built here rather than read from an
``alembic.ini``: the database URL is the service's (``[backup_plans]
connection`` or Cinder's ``[database] connection``), never a file's.
"""

import os

from alembic import command as alembic_api
from alembic import config as alembic_config
from alembic import migration as alembic_migration

#: alembic's version table of the plugin, apart from Cinder's
#: ``alembic_version``.
VERSION_TABLE = 'cvb_alembic_version'

#: Prefix of every table the migrations own.
TABLE_PREFIX = 'cvb_'

_MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'migrations')


def include_name(name, type_, parent_names):
    """Whether alembic considers a database object: only the cvb_ tables."""
    if type_ == 'table':
        return name.startswith(TABLE_PREFIX)
    return True


def _config(connection):
    config = alembic_config.Config()
    config.set_main_option('script_location', _MIGRATIONS)
    config.attributes['connection'] = connection
    return config


def _engine(engine):
    if engine is not None:
        return engine
    from cinder_vmdk_backup.plans.db import api
    return api.get_engine()


def db_sync(version=None, engine=None):
    """Upgrade the plan tables to ``version`` (default: the newest).

    :param version: an alembic revision id, or None for ``head``
    :param engine: an SQLAlchemy engine; default the plans database's
    """
    with _engine(engine).begin() as connection:
        alembic_api.upgrade(_config(connection), version or 'head')


def db_version(engine=None):
    """Return the revision the plan tables are at, None before any sync."""
    with _engine(engine).connect() as connection:
        context = alembic_migration.MigrationContext.configure(
            connection, opts={'version_table': VERSION_TABLE})
        return context.get_current_revision()


def head():
    """Return the newest revision the migrations know."""
    from alembic import script
    return script.ScriptDirectory(_MIGRATIONS).get_current_head()
