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

"""The plans DB API of the contract, in memory, for the runner's unit tests.

Only what the runner calls; the compare-and-swap semantics of
``plan_claim_slot`` and ``run_claim`` as the contract states them.
"""

import copy
import threading
import uuid

from cinder import exception


class BackupPlanNotFound(exception.NotFound):
    message = 'Backup plan %(plan_id)s could not be found.'


class BackupPlanRunNotFound(exception.NotFound):
    message = 'Backup plan run %(run_id)s could not be found.'


class FakePlansDB(object):

    def __init__(self):
        self.plans = {}
        self.runs = []
        self._lock = threading.Lock()

    def add_plan(self, **values):
        plan = {'id': values.pop('id', None) or str(uuid.uuid4()),
                'project_id': 'project',
                'user_id': 'user', 'name': 'nightly', 'description': None,
                'target_type': 'volume', 'target_id': 'vol-1',
                'minute': '*', 'hour': '*', 'day_of_month': '*',
                'month': '*', 'day_of_week': '*', 'timezone': 'UTC',
                'active': True, 'keep': 3, 'full_every': 3,
                'bandwidth_mib_s': None, 'exclude': [],
                'next_run_at': None, 'runs_since_full': 0,
                'deleted': False}
        plan.update(values)
        self.plans[plan['id']] = plan
        return copy.deepcopy(plan)

    def add_run(self, plan_id, **values):
        run = self._new_run(plan_id, values)
        self.runs.append(run)
        return copy.deepcopy(run)

    def _new_run(self, plan_id, values):
        # (As the real API: these keys are not the caller's to set.)
        assert not {'id', 'plan_id', 'project_id'} & set(values), values
        run = {'id': str(uuid.uuid4()), 'plan_id': plan_id,
               'project_id': self.plans[plan_id]['project_id'],
               'kind': 'scheduled', 'scheduled_for': None,
               'started_at': None, 'finished_at': None,
               'heartbeat_at': None, 'status': 'queued', 'host': None,
               'full': None, 'backup_ids': [], 'group_snapshot_ids': [],
               'deleted_backup_ids': [], 'error': None}
        run.update(copy.deepcopy(values))
        return run

    def _run(self, run_id):
        for run in self.runs:
            if run['id'] == run_id:
                return run
        raise BackupPlanRunNotFound(run_id=run_id)

    # -- the contract's API -------------------------------------------------

    def plan_get(self, context, plan_id):
        plan = self.plans.get(plan_id)
        if plan is None or plan['deleted']:
            raise BackupPlanNotFound(plan_id=plan_id)
        return copy.deepcopy(plan)

    def plan_update(self, context, plan_id, values):
        with self._lock:
            self.plans[plan_id].update(values)
            return copy.deepcopy(self.plans[plan_id])

    def plans_due(self, now, limit=None):
        return [copy.deepcopy(p) for p in self.plans.values()
                if p['active'] and not p['deleted']
                and p['next_run_at'] is not None and p['next_run_at'] <= now]

    def plan_claim_slot(self, plan_id, expected_next_run_at, next_run_at,
                        run_values):
        with self._lock:
            plan = self.plans[plan_id]
            if plan['next_run_at'] != expected_next_run_at:
                return None
            plan['next_run_at'] = next_run_at
            if run_values.get('full') is not None:
                plan['runs_since_full'] = (
                    0 if run_values['full'] else plan['runs_since_full'] + 1)
            run = self._new_run(plan_id, run_values)
            self.runs.append(run)
            return copy.deepcopy(run)

    def run_create(self, plan_id, values):
        return self.add_run(plan_id, **values)

    def run_claim(self, run_id, host):
        with self._lock:
            run = self._run(run_id)
            if run['status'] != 'queued':
                return None
            run.update(status='running', host=host)
            return copy.deepcopy(run)

    def run_update(self, run_id, values):
        with self._lock:
            run = self._run(run_id)
            run.update(copy.deepcopy(values))
            return copy.deepcopy(run)

    def run_get(self, context, run_id):
        return copy.deepcopy(self._run(run_id))

    def run_get_all(self, context, plan_id, limit=20):
        runs = [r for r in self.runs if r['plan_id'] == plan_id]
        return copy.deepcopy(list(reversed(runs))[:limit])

    def runs_unfinished(self, plan_id=None):
        return [copy.deepcopy(r) for r in self.runs
                if r['status'] in ('queued', 'running')
                and (plan_id is None or r['plan_id'] == plan_id)]

    # -- the runner's batches ------------------------------------------------

    def plan_claim_slots(self, claims):
        return [self.plan_claim_slot(*claim) for claim in claims]

    def runs_recent(self, plan_ids, limit=20):
        return {plan_id: self.run_get_all(None, plan_id, limit=limit)
                for plan_id in plan_ids}

    def run_set(self, run_id, values):
        self.run_update(run_id, values)

    def run_update_if(self, run_id, expected, values):
        with self._lock:
            run = self._run(run_id)
            if any(run[k] != v for k, v in expected.items()):
                return None
            run.update(copy.deepcopy(values))
            return copy.deepcopy(run)
