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

"""Storage of backup plans and their runs (oslo.db, alembic).

The tables (``cvb_backup_plans``, ``cvb_backup_plan_runs``) live in
``[backup_plans] connection``, by default Cinder's own database: a
deployment already runs, backs up and replicates it, and every cinder-api
and cinder-backup node reaches it. Their migrations are versioned in
``cvb_alembic_version``, apart from Cinder's ``alembic_version``, so that
neither project's ``db sync`` sees the other's revisions.
"""
