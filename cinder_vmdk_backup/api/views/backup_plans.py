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

"""Views of the backup-plan API: plans and their runs.

A plan is answered in the shape it is asked for: ``target`` as
``{"volume_id" | "instance_group_id" | "volume_type": id}`` and
``schedule`` as the five cron fields and ``timezone``; what the DB API's
dict has flat (target_type, the cron fields) is regrouped here. Times are
ISO 8601 in UTC. Keys the record lacks are answered as null, so a client
can rely on the shape.
"""

import datetime

from cinder_vmdk_backup.plans import api as plans_api

PLAN_KEYS = ('id', 'name', 'description', 'project_id', 'user_id',
             'active', 'keep', 'full_every', 'bandwidth_mib_s',
             'next_run_at', 'runs_since_full', 'created_at', 'updated_at')

RUN_KEYS = ('id', 'plan_id', 'project_id', 'kind', 'status',
            'scheduled_for', 'started_at', 'finished_at', 'heartbeat_at',
            'host', 'full', 'error')

RUN_LIST_KEYS = ('backup_ids', 'group_snapshot_ids', 'deleted_backup_ids')

_TARGET_KEY = {target_type: key
               for key, target_type in plans_api.TARGET_KEYS.items()}


def _value(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(
                tzinfo=None)
        return value.isoformat() + 'Z'
    return value


def _pick(record, keys):
    return {key: _value(record.get(key)) for key in keys}


class ViewBuilder(object):
    """Builds the answer bodies from plans.api's plain dicts."""

    def plan(self, plan):
        view = _pick(plan, PLAN_KEYS)
        key = _TARGET_KEY.get(plan.get('target_type'), 'unknown')
        view['target'] = {key: plan.get('target_id')}
        view['schedule'] = {key: plan.get(key)
                            for key in plans_api.SCHEDULE_FIELDS}
        view['exclude'] = list(plan.get('exclude') or [])
        return view

    def run(self, run):
        view = _pick(run, RUN_KEYS)
        for key in RUN_LIST_KEYS:
            view[key] = list(run.get(key) or [])
        return view

    def detail(self, plan, runs=None):
        view = self.plan(plan)
        if runs is not None:
            view['runs'] = [self.run(r) for r in runs]
        return {'backup_plan': view}

    def detail_list(self, plans):
        return {'backup_plans': [self.plan(p) for p in plans]}

    def run_detail(self, run):
        return {'backup_plan_run': self.run(run)}

    def run_list(self, runs):
        return {'backup_plan_runs': [self.run(r) for r in runs]}
