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

"""plans.api with its peers autospec'd: the DB API (the contract's
signatures), Cinder's volume API, the instance-group API, the schedule.

What goes to the database for a request, and what is refused before
anything is stored. tests/functional/plans/test_api_db.py runs the same
API over Cinder's and the plans' real databases.
"""

import datetime
from unittest import mock

from cinder import context
from cinder import exception
from cinder.tests.unit import test
from cinder.volume import api as volume_api
import ddt

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.group import api as group_api
from cinder_vmdk_backup.plans import api as plans_api

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
NEXT = datetime.datetime(2026, 12, 7, 1, 30, tzinfo=UTC)
PROJECT = '6f2b0b9e4c9a4d3e8f1a2b3c4d5e6f70'
OTHER = '0a1b2c3d4e5f40718293a4b5c6d7e8f9'
USER = 'c853ca26e8ea4797'
PLAN = '7e57a1a0-1b2c-4d3e-8f4a-5b6c7d8e9f00'
RUN = '7e57a1a0-2222-4333-8444-555555555555'
VOL_A = 'aaaaaaaa-0000-4000-8000-00000000000a'
VOL_B = 'bbbbbbbb-0000-4000-8000-00000000000b'
GROUP = '3b1f7e0a-5c2d-4e8f-9a6b-7c1d2e3f4a5b'
TYPE = 'c0ffee00-0000-4000-8000-000000000001'


class StubDB(object):
    """The plans DB API's signatures (the session contract)."""

    def plan_create(self, context, values):
        raise NotImplementedError()

    def plan_get(self, context, plan_id):
        raise NotImplementedError()

    def plan_get_all(self, context, filters=None, marker=None, limit=None):
        raise NotImplementedError()

    def plan_update(self, context, plan_id, values):
        raise NotImplementedError()

    def plan_delete(self, context, plan_id):
        raise NotImplementedError()

    def run_create(self, plan_id, values):
        raise NotImplementedError()

    def run_get_all(self, context, plan_id, limit=20):
        raise NotImplementedError()

    def runs_unfinished(self, plan_id=None):
        raise NotImplementedError()


class StubSchedule(object):

    def __init__(self, minute, hour, day_of_month, month, day_of_week,
                 timezone):
        pass

    def next_after(self, when):
        raise NotImplementedError()


def stored_plan(**changes):
    plan = {'id': PLAN, 'project_id': PROJECT, 'user_id': USER,
            'name': 'nightly', 'description': None, 'target_type': 'volume',
            'target_id': VOL_A, 'minute': '30', 'hour': '2',
            'day_of_month': '*', 'month': '*', 'day_of_week': '*',
            'timezone': 'Europe/Berlin', 'active': True, 'keep': 7,
            'full_every': 1, 'bandwidth_mib_s': None, 'exclude': [],
            'next_run_at': NEXT, 'runs_since_full': 0}
    plan.update(changes)
    return plan


def request(**changes):
    body = {'target': {'volume_id': VOL_A},
            'schedule': {'minute': '30', 'hour': '2',
                         'timezone': 'Europe/Berlin'},
            'keep': 7}
    body.update(changes)
    return body


@ddt.ddt
class PlansApiTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.db = mock.create_autospec(StubDB, instance=True, spec_set=True)
        self.db.plan_create.side_effect = lambda ctx, values: dict(
            values, id=PLAN)
        self.db.plan_get.return_value = stored_plan()
        self.db.plan_update.side_effect = lambda ctx, pid, values: dict(
            stored_plan(), **values)
        self.volumes = mock.create_autospec(volume_api.API, instance=True)
        self.volumes.get.side_effect = self._volume
        self.groups = mock.create_autospec(group_api.API, instance=True)
        self.groups.get.side_effect = self._group
        self.schedule = mock.create_autospec(StubSchedule)
        self.schedule.return_value.next_after.return_value = NEXT
        self.api = plans_api.API(db=self.db, volume_api=self.volumes,
                                 group_api=self.groups, clock=lambda: NOW,
                                 schedule_class=self.schedule)
        self.ctx = context.RequestContext(USER, PROJECT, roles=['member'])
        self.types = self.patch(
            'cinder.volume.volume_types.get_by_name_or_id', autospec=True,
            side_effect=self._type)

    @staticmethod
    def _volume(ctx, volume_id):
        projects = {VOL_A: PROJECT, VOL_B: PROJECT,
                    'dddddddd-0000-4000-8000-00000000000d': OTHER}
        if volume_id not in projects or (projects[volume_id] != PROJECT and
                                         not ctx.is_admin):
            raise exception.VolumeNotFound(volume_id=volume_id)
        return mock.Mock(id=volume_id, project_id=projects[volume_id])

    @staticmethod
    def _group(ctx, group_id):
        if group_id != GROUP:
            raise cvb_exception.InstanceGroupNotFound(group_id=group_id)
        return {'id': GROUP, 'project_id': PROJECT,
                'volumes': [{'id': VOL_A}, {'id': VOL_B}]}

    @staticmethod
    def _type(ctx, identity):
        if identity in ('fast', TYPE):
            return {'id': TYPE, 'name': 'fast'}
        raise exception.VolumeTypeNotFoundByName(volume_type_name=identity)

    def assertInvalid(self, call, *words):
        exc = self.assertRaises(cvb_exception.InvalidBackupPlan, call)
        for word in words:
            self.assertIn(word, str(exc))
        return exc

    # -- create -------------------------------------------------------------

    def test_create_volume_plan(self):
        plan = self.api.create(self.ctx, request(name='nightly'))
        self.assertEqual(PLAN, plan['id'])
        self.db.plan_create.assert_called_once_with(self.ctx, {
            'name': 'nightly', 'description': None, 'active': True,
            'keep': 7, 'full_every': 1, 'bandwidth_mib_s': None,
            'exclude': [], 'project_id': PROJECT, 'user_id': USER,
            'target_type': 'volume', 'target_id': VOL_A,
            'runs_since_full': 0, 'minute': '30', 'hour': '2',
            'day_of_month': '*', 'month': '*', 'day_of_week': '*',
            'timezone': 'Europe/Berlin', 'next_run_at': NEXT})
        self.schedule.assert_called_once_with(
            '30', '2', '*', '*', '*', 'Europe/Berlin')
        self.schedule.return_value.next_after.assert_called_once_with(NOW)

    def test_create_integer_cron_fields_stored_as_text(self):
        self.api.create(self.ctx, request(schedule={'minute': 0,
                                                    'hour': 3}))
        self.schedule.assert_called_once_with('0', '3', '*', '*', '*', 'UTC')

    def test_admin_plan_of_another_projects_volume(self):
        admin = context.RequestContext(USER, OTHER, is_admin=True)
        vol = 'dddddddd-0000-4000-8000-00000000000d'
        self.api.create(admin, request(target={'volume_id': vol}))
        values = self.db.plan_create.call_args[0][1]
        self.assertEqual(OTHER, values['project_id'])

    def test_create_group_plan_with_exclusion(self):
        self.api.create(self.ctx, request(
            target={'instance_group_id': GROUP}, exclude=[VOL_B, VOL_B],
            full_every=7, bandwidth_mib_s=25.5))
        values = self.db.plan_create.call_args[0][1]
        self.assertEqual(('instance_group', GROUP, [VOL_B], 7, 25.5),
                         (values['target_type'], values['target_id'],
                          values['exclude'], values['full_every'],
                          values['bandwidth_mib_s']))

    def test_create_volume_type_plan_by_name(self):
        self.api.create(self.ctx, request(target={'volume_type': 'fast'},
                                          exclude=[VOL_A]))
        values = self.db.plan_create.call_args[0][1]
        self.assertEqual(('volume_type', TYPE, PROJECT, [VOL_A]),
                         (values['target_type'], values['target_id'],
                          values['project_id'], values['exclude']))

    @ddt.data(
        ({'volume_id': VOL_B.replace('b', 'e')}, 'target volume', 'eeee'),
        ({'volume_id': 'dddddddd-0000-4000-8000-00000000000d'},
         'target volume dddddddd'),
        ({'instance_group_id': VOL_A}, 'target instance group', VOL_A),
        ({'volume_type': 'slow'}, 'target volume type slow not found'),
        ({}, 'exactly one'),
        ({'volume_id': VOL_A, 'volume_type': 'fast'}, 'exactly one'),
    )
    @ddt.unpack
    def test_create_unknown_target(self, target, *words):
        self.assertInvalid(lambda: self.api.create(
            self.ctx, request(target=target)), *words)
        self.db.plan_create.assert_not_called()

    @ddt.data(
        ({'keep': 0}, "'keep'"), ({'keep': True}, "'keep'"),
        ({'full_every': 0}, "'full_every'"),
        ({'bandwidth_mib_s': 0}, 'bandwidth_mib_s'),
        ({'bandwidth_mib_s': -1.5}, 'bandwidth_mib_s'),
        ({'exclude': [VOL_B]}, 'nothing to exclude'),
    )
    @ddt.unpack
    def test_create_refused(self, changes, words):
        self.assertInvalid(lambda: self.api.create(
            self.ctx, request(**changes)), words)
        self.db.plan_create.assert_not_called()

    def test_create_needs_keep_target_schedule(self):
        body = request()
        del body['keep']
        self.assertInvalid(lambda: self.api.create(self.ctx, body), 'keep')
        body = request()
        del body['schedule']
        self.assertInvalid(lambda: self.api.create(self.ctx, body),
                           'schedule')

    def test_create_bad_schedule(self):
        self.schedule.side_effect = cvb_exception.InvalidBackupPlan(
            reason='minute: 61 is above 59')
        self.assertInvalid(lambda: self.api.create(self.ctx, request()),
                           'minute', '61')
        self.db.plan_create.assert_not_called()

    @ddt.data(
        ([VOL_A, 'eeeeeeee-0000-4000-8000-00000000000e'],
         'eeeeeeee', 'not a volume of instance group'),
        ([VOL_A, VOL_B], 'leaves no volume'),
    )
    @ddt.unpack
    def test_group_exclusions_refused(self, exclude, *words):
        self.assertInvalid(lambda: self.api.create(self.ctx, request(
            target={'instance_group_id': GROUP}, exclude=exclude)), *words)
        self.db.plan_create.assert_not_called()

    def test_volume_type_exclusion_of_another_project(self):
        self.patch(
            'cinder.objects.VolumeAttachmentList.get_all_by_instance_uuid',
            autospec=True, return_value=[])
        admin = context.RequestContext(USER, PROJECT, is_admin=True)
        other_vol = 'dddddddd-0000-4000-8000-00000000000d'
        self.assertInvalid(lambda: self.api.create(admin, request(
            target={'volume_type': 'fast'}, exclude=[other_vol])),
            other_vol, 'neither a volume of project %s' % PROJECT)

    # -- update ---------------------------------------------------------------

    def test_update_simple_values(self):
        plan = self.api.update(self.ctx, PLAN, {'keep': 3, 'name': 'n2'})
        self.assertEqual(3, plan['keep'])
        self.db.plan_update.assert_called_once_with(
            self.ctx, PLAN, {'keep': 3, 'name': 'n2'})
        self.schedule.assert_not_called()

    def test_update_partial_schedule(self):
        self.api.update(self.ctx, PLAN, {'schedule': {'hour': '4'}})
        self.schedule.assert_called_once_with(
            '30', '4', '*', '*', '*', 'Europe/Berlin')
        values = self.db.plan_update.call_args[0][2]
        self.assertEqual(('4', NEXT), (values['hour'],
                                       values['next_run_at']))

    def test_reactivation_takes_the_next_slot_from_now(self):
        self.db.plan_get.return_value = stored_plan(
            active=False, next_run_at=NOW - datetime.timedelta(days=3))
        self.api.update(self.ctx, PLAN, {'active': True})
        values = self.db.plan_update.call_args[0][2]
        self.assertEqual((True, NEXT), (values['active'],
                                        values['next_run_at']))

    def test_update_target_and_exclusion(self):
        self.api.update(self.ctx, PLAN, {
            'target': {'instance_group_id': GROUP}, 'exclude': [VOL_A]})
        values = self.db.plan_update.call_args[0][2]
        self.assertEqual(('instance_group', GROUP, [VOL_A]),
                         (values['target_type'], values['target_id'],
                          values['exclude']))

    def test_update_exclusion_checked_against_the_stored_target(self):
        self.assertInvalid(lambda: self.api.update(
            self.ctx, PLAN, {'exclude': [VOL_B]}), 'nothing to exclude')
        self.db.plan_update.assert_not_called()

    def test_update_keep_zero(self):
        self.assertInvalid(lambda: self.api.update(
            self.ctx, PLAN, {'keep': 0}), "'keep'")
        self.db.plan_update.assert_not_called()

    def test_update_target_of_another_project_refused(self):
        admin = context.RequestContext(USER, PROJECT, is_admin=True)
        self.assertInvalid(lambda: self.api.update(admin, PLAN, {
            'target': {'volume_id': 'dddddddd-0000-4000-8000-00000000000d'}}),
            'stays in its project')

    def test_update_unknown_plan(self):
        self.db.plan_get.side_effect = cvb_exception.BackupPlanNotFound(
            plan_id=PLAN)
        self.assertRaises(cvb_exception.BackupPlanNotFound,
                          self.api.update, self.ctx, PLAN, {'keep': 2})
        self.db.plan_update.assert_not_called()

    # -- delete, runs -----------------------------------------------------

    def test_delete(self):
        self.api.delete(self.ctx, PLAN)
        self.db.plan_get.assert_called_once_with(self.ctx, PLAN)
        self.db.plan_delete.assert_called_once_with(self.ctx, PLAN)

    def test_run_now_queues_a_manual_run(self):
        self.db.runs_unfinished.return_value = []
        self.db.run_create.return_value = {'id': RUN, 'status': 'queued'}
        self.assertEqual(RUN, self.api.run_now(self.ctx, PLAN)['id'])
        self.db.run_create.assert_called_once_with(PLAN, {
            'kind': 'manual', 'status': 'queued', 'scheduled_for': NOW})

    @ddt.data('queued', 'running')
    def test_run_now_busy(self, status):
        self.db.runs_unfinished.return_value = [{'id': RUN,
                                                 'status': status}]
        exc = self.assertRaises(cvb_exception.BackupPlanBusy,
                                self.api.run_now, self.ctx, PLAN)
        self.assertIn(status, str(exc))
        self.assertIn(RUN, str(exc))
        self.db.run_create.assert_not_called()

    def test_run_now_of_a_plan_not_seen(self):
        self.db.plan_get.side_effect = cvb_exception.BackupPlanNotFound(
            plan_id=PLAN)
        self.assertRaises(cvb_exception.BackupPlanNotFound,
                          self.api.run_now, self.ctx, PLAN)
        self.db.run_create.assert_not_called()

    def test_runs(self):
        self.db.run_get_all.return_value = []
        self.assertEqual([], self.api.runs(self.ctx, PLAN, limit=5))
        self.db.plan_get.assert_called_once_with(self.ctx, PLAN)
        self.db.run_get_all.assert_called_once_with(self.ctx, PLAN,
                                                    limit=5)
