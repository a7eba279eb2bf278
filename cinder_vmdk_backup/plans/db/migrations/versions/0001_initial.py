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

"""Backup plans and their runs.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0001_initial'
down_revision = None
branch_labels = None
depends_on = None


def _datetime():
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql',
                                      'mariadb')


def upgrade():
    op.create_table(
        'cvb_backup_plans',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('project_id', sa.String(255), nullable=False),
        sa.Column('user_id', sa.String(255)),
        sa.Column('name', sa.String(255)),
        sa.Column('description', sa.String(255)),
        sa.Column('target_type', sa.String(32), nullable=False),
        sa.Column('target_id', sa.String(255), nullable=False),
        sa.Column('minute', sa.String(255), nullable=False),
        sa.Column('hour', sa.String(255), nullable=False),
        sa.Column('day_of_month', sa.String(255), nullable=False),
        sa.Column('month', sa.String(255), nullable=False),
        sa.Column('day_of_week', sa.String(255), nullable=False),
        sa.Column('timezone', sa.String(64), nullable=False),
        sa.Column('active', sa.Boolean, nullable=False),
        sa.Column('keep', sa.Integer, nullable=False),
        sa.Column('full_every', sa.Integer, nullable=False),
        sa.Column('bandwidth_mib_s', sa.Float),
        sa.Column('exclude', sa.Text, nullable=False),
        sa.Column('next_run_at', _datetime()),
        sa.Column('runs_since_full', sa.Integer, nullable=False),
        sa.Column('created_at', _datetime(), nullable=False),
        sa.Column('updated_at', _datetime()),
        sa.Column('deleted_at', _datetime()),
        sa.Column('deleted', sa.Boolean, nullable=False),
        mysql_engine='InnoDB',
        mysql_charset='utf8mb4',
    )
    op.create_index('cvb_backup_plans_due_idx', 'cvb_backup_plans',
                    ['deleted', 'active', 'next_run_at'])
    op.create_index('cvb_backup_plans_project_idx', 'cvb_backup_plans',
                    ['project_id', 'deleted'])
    op.create_index('cvb_backup_plans_target_idx', 'cvb_backup_plans',
                    ['target_type', 'target_id'])

    op.create_table(
        'cvb_backup_plan_runs',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('plan_id', sa.String(36),
                  sa.ForeignKey('cvb_backup_plans.id'), nullable=False),
        sa.Column('project_id', sa.String(255), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('scheduled_for', _datetime()),
        sa.Column('started_at', _datetime()),
        sa.Column('finished_at', _datetime()),
        sa.Column('heartbeat_at', _datetime()),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('host', sa.String(255)),
        sa.Column('full', sa.Boolean),
        sa.Column('backup_ids', sa.Text, nullable=False),
        sa.Column('group_snapshot_ids', sa.Text, nullable=False),
        sa.Column('deleted_backup_ids', sa.Text, nullable=False),
        sa.Column('error', sa.Text),
        sa.Column('created_at', _datetime(), nullable=False),
        sa.Column('updated_at', _datetime()),
        mysql_engine='InnoDB',
        mysql_charset='utf8mb4',
    )
    op.create_index('cvb_backup_plan_runs_plan_idx', 'cvb_backup_plan_runs',
                    ['plan_id', 'created_at'])
    op.create_index('cvb_backup_plan_runs_status_idx',
                    'cvb_backup_plan_runs', ['status'])
