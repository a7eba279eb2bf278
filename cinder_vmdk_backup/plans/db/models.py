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

"""SQLAlchemy models of backup plans and their runs.

Only :mod:`.api` uses them; everything else sees plain dicts. The schema
is created by the alembic migrations in :mod:`.migrations`, not from these
models: a change here needs a new revision there (a unit test compares
the two).

Datetimes are stored naive in UTC, as Cinder stores its own, with
microseconds on MySQL/MariaDB (``DATETIME(6)``): a run's heartbeat and the
order of runs need them.
"""

from oslo_db.sqlalchemy import types as oslo_types
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy import orm

PLANS = 'cvb_backup_plans'
RUNS = 'cvb_backup_plan_runs'


def DateTime():
    """A UTC datetime column type keeping microseconds on MySQL."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql',
                                      'mariadb')


class Base(orm.DeclarativeBase):
    pass


class BackupPlan(Base):
    __tablename__ = PLANS
    __table_args__ = (
        sa.Index('cvb_backup_plans_due_idx', 'deleted', 'active',
                 'next_run_at'),
        sa.Index('cvb_backup_plans_project_idx', 'project_id', 'deleted'),
        sa.Index('cvb_backup_plans_target_idx', 'target_type',
                 'target_id'),
        {'mysql_engine': 'InnoDB', 'mysql_charset': 'utf8mb4'},
    )

    id = sa.Column(sa.String(36), primary_key=True)
    project_id = sa.Column(sa.String(255), nullable=False)
    user_id = sa.Column(sa.String(255))
    name = sa.Column(sa.String(255))
    description = sa.Column(sa.String(255))
    target_type = sa.Column(sa.String(32), nullable=False)
    target_id = sa.Column(sa.String(255), nullable=False)
    minute = sa.Column(sa.String(255), nullable=False)
    hour = sa.Column(sa.String(255), nullable=False)
    day_of_month = sa.Column(sa.String(255), nullable=False)
    month = sa.Column(sa.String(255), nullable=False)
    day_of_week = sa.Column(sa.String(255), nullable=False)
    timezone = sa.Column(sa.String(64), nullable=False)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    keep = sa.Column(sa.Integer, nullable=False)
    full_every = sa.Column(sa.Integer, nullable=False)
    bandwidth_mib_s = sa.Column(sa.Float)
    exclude = sa.Column(oslo_types.JsonEncodedList(), nullable=False)
    next_run_at = sa.Column(DateTime())
    runs_since_full = sa.Column(sa.Integer, nullable=False, default=0)
    created_at = sa.Column(DateTime(), nullable=False)
    updated_at = sa.Column(DateTime())
    deleted_at = sa.Column(DateTime())
    deleted = sa.Column(sa.Boolean, nullable=False, default=False)


class BackupPlanRun(Base):
    __tablename__ = RUNS
    __table_args__ = (
        sa.Index('cvb_backup_plan_runs_plan_idx', 'plan_id', 'created_at'),
        sa.Index('cvb_backup_plan_runs_status_idx', 'status'),
        {'mysql_engine': 'InnoDB', 'mysql_charset': 'utf8mb4'},
    )

    id = sa.Column(sa.String(36), primary_key=True)
    plan_id = sa.Column(sa.String(36), sa.ForeignKey(PLANS + '.id'),
                        nullable=False)
    project_id = sa.Column(sa.String(255), nullable=False)
    kind = sa.Column(sa.String(16), nullable=False)
    scheduled_for = sa.Column(DateTime())
    started_at = sa.Column(DateTime())
    finished_at = sa.Column(DateTime())
    heartbeat_at = sa.Column(DateTime())
    status = sa.Column(sa.String(16), nullable=False)
    host = sa.Column(sa.String(255))
    full = sa.Column(sa.Boolean)
    backup_ids = sa.Column(oslo_types.JsonEncodedList(), nullable=False)
    group_snapshot_ids = sa.Column(oslo_types.JsonEncodedList(),
                                   nullable=False)
    deleted_backup_ids = sa.Column(oslo_types.JsonEncodedList(),
                                   nullable=False)
    error = sa.Column(sa.Text)
    created_at = sa.Column(DateTime(), nullable=False)
    updated_at = sa.Column(DateTime())
