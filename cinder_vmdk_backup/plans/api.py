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

"""Backup plans in cinder-api: check, compute the next slot, store.

What a user asks for is checked against what exists before anything is
stored: the target (a volume, an instance group, a volume type) must be
visible in the caller's scope, the exclusions must exist in the plan's
project (volumes, or instances with volumes attached there) or be members
of the planned group, the schedule must be a valid cron schedule (its
first slot becomes ``next_run_at``), the numbers must be in range. A
refused request stores nothing and raises
:class:`~cinder_vmdk_backup.exception.InvalidBackupPlan` naming what is
wrong.

"Run now" stores a ``queued`` run; a runner of any cinder-backup service
claims it (:mod:`cinder_vmdk_backup.plans.runner`): cinder-api never
talks to cinder-backup for plans, the database is their only link.

Requests and answers are plain dicts: a request's ``target`` is
``{"volume_id" | "instance_group_id" | "volume_type": ...}`` and its
``schedule`` the five cron fields and ``timezone``, as the API's body has
them; a plan is the DB API's dict (flat schedule fields, ``target_type``
and ``target_id``).
"""

from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.volume import volume_types
from oslo_log import log as logging
from oslo_utils import importutils
from oslo_utils import timeutils

from cinder_vmdk_backup import exception as cvb_exception

LOG = logging.getLogger(__name__)

DB_API_MODULE = 'cinder_vmdk_backup.plans.db.api'
SCHEDULE_CLASS = 'cinder_vmdk_backup.plans.schedule.Schedule'
VOLUME_API_CLASS = 'cinder.volume.api.API'
GROUP_API_CLASS = 'cinder_vmdk_backup.group.api.API'

VOLUME = 'volume'
INSTANCE_GROUP = 'instance_group'
VOLUME_TYPE = 'volume_type'

#: The request's target key -> the plan's target_type.
TARGET_KEYS = {'volume_id': VOLUME,
               'instance_group_id': INSTANCE_GROUP,
               'volume_type': VOLUME_TYPE}

#: The cron fields, in Schedule's order, then the zone.
CRON_FIELDS = ('minute', 'hour', 'day_of_month', 'month', 'day_of_week')
SCHEDULE_FIELDS = CRON_FIELDS + ('timezone',)
#: Schedule fields a new plan may leave out.
SCHEDULE_DEFAULTS = {'day_of_month': '*', 'month': '*',
                     'day_of_week': '*', 'timezone': 'UTC'}

#: Defaults of a new plan for what the request leaves out. A full backup
#: every run unless asked otherwise: incrementals are the user's choice
#: (they tie retention to chains).
PLAN_DEFAULTS = {'active': True, 'full_every': 1, 'bandwidth_mib_s': None,
                 'exclude': [], 'description': None, 'name': None}

#: What the request may change on an existing plan, besides target and
#: schedule.
_SIMPLE_KEYS = ('name', 'description', 'active', 'keep', 'full_every',
                'bandwidth_mib_s', 'exclude')

QUEUED = 'queued'
RUNNING = 'running'
MANUAL = 'manual'

#: Runs shown with a plan and listed by default.
RUNS_LIMIT = 20


def _invalid(reason):
    return cvb_exception.InvalidBackupPlan(reason=reason)


class API(object):
    """The backup-plan operations of cinder-api.

    :param db: the plans DB API (default: :mod:`cinder_vmdk_backup.plans.
        db.api`, imported on first use)
    :param volume_api: Cinder's volume API (target and exclusion lookups)
    :param group_api: the instance-group API (group lookups)
    :param clock: returns the aware UTC "now" (tests inject one)
    :param schedule_class: :class:`cinder_vmdk_backup.plans.schedule.
        Schedule` (imported on first use) or a stand-in
    """

    def __init__(self, db=None, volume_api=None, group_api=None,
                 clock=None, schedule_class=None):
        self._db = db
        self._schedule_class = schedule_class
        self._volume_api = volume_api
        self._group_api = group_api
        self._clock = clock or (lambda: timeutils.utcnow(with_timezone=True))

    # Made on first use: the extension's import stays light.
    @property
    def db(self):
        if self._db is None:
            self._db = importutils.import_module(DB_API_MODULE)
        return self._db

    @property
    def volume_api(self):
        if self._volume_api is None:
            self._volume_api = importutils.import_object(VOLUME_API_CLASS)
        return self._volume_api

    @property
    def group_api(self):
        if self._group_api is None:
            self._group_api = importutils.import_object(GROUP_API_CLASS)
        return self._group_api

    # -- plans --------------------------------------------------------------

    def create(self, context, request):
        """Check and store a new plan.

        :param request: the body's ``backup_plan`` (``target``,
            ``schedule``, ``keep`` and optional ``name``, ``description``,
            ``active``, ``full_every``, ``bandwidth_mib_s``, ``exclude``)
        :returns: the stored plan
        :raises InvalidBackupPlan: anything refused (nothing stored)
        """
        values = dict(PLAN_DEFAULTS)
        values.update({k: request[k] for k in _SIMPLE_KEYS if k in request})
        if 'keep' not in request:
            raise _invalid(_("'keep' is required: how many backup sets the "
                             "plan keeps"))
        if 'target' not in request or 'schedule' not in request:
            raise _invalid(_("a plan needs a 'target' and a 'schedule'"))
        target_type, target_id, project_id, target = self._target(
            context, request['target'])
        schedule = dict(SCHEDULE_DEFAULTS)
        schedule.update(request['schedule'])
        values.update(self._schedule(schedule))
        values.update(
            project_id=project_id, user_id=context.user_id,
            target_type=target_type, target_id=target_id,
            runs_since_full=0)
        self._check_numbers(values)
        values['exclude'] = self._exclusions(
            context, target_type, target, project_id, values['exclude'])
        plan = self.db.plan_create(context, values)
        LOG.info('Backup plan %(plan)s created: %(type)s %(target)s, next '
                 'run at %(next)s.',
                 {'plan': plan['id'], 'type': target_type,
                  'target': target_id, 'next': plan['next_run_at']})
        return plan

    def get(self, context, plan_id):
        """The plan, in the caller's scope (else BackupPlanNotFound)."""
        return self.db.plan_get(context, plan_id)

    def get_all(self, context, filters=None, marker=None, limit=None):
        """Plans of the caller's project.

        An admin asking with ``all_projects`` sees every project's.
        """
        return self.db.plan_get_all(context, filters=filters, marker=marker,
                                    limit=limit)

    def update(self, context, plan_id, request):
        """Change a plan; what the request leaves out stays as it is.

        A changed schedule, or a plan made active again, gets its next
        slot from now on (slots missed while it was paused are not
        caught up). A changed target checks the exclusions again.
        """
        plan = self.db.plan_get(context, plan_id)
        values = {k: request[k] for k in _SIMPLE_KEYS if k in request}
        merged = dict(plan, **values)
        target = None
        if 'target' in request:
            target_type, target_id, project_id, target = self._target(
                context, request['target'])
            if project_id != plan['project_id']:
                raise _invalid(_(
                    "the new target is in project %(new)s, the plan in "
                    "%(old)s: a plan's target stays in its project") % {
                        'new': project_id, 'old': plan['project_id']})
            values.update(target_type=target_type, target_id=target_id)
            merged.update(target_type=target_type, target_id=target_id)
        new_schedule = dict((k, plan[k]) for k in SCHEDULE_FIELDS)
        new_schedule.update(request.get('schedule') or {})
        reactivated = values.get('active') and not plan['active']
        if 'schedule' in request or reactivated:
            values.update(self._schedule(new_schedule))
        self._check_numbers(merged)
        if 'target' in request or 'exclude' in request:
            if target is None:
                target = self._lookup(context, plan['target_type'],
                                      plan['target_id'])
            values['exclude'] = self._exclusions(
                context, merged['target_type'], target, plan['project_id'],
                merged['exclude'] or [])
        if not values:
            return plan
        plan = self.db.plan_update(context, plan_id, values)
        LOG.info('Backup plan %(plan)s changed (%(keys)s).',
                 {'plan': plan_id, 'keys': ', '.join(sorted(values))})
        return plan

    def delete(self, context, plan_id):
        """Delete a plan (soft): its runs and its backups are kept."""
        self.db.plan_get(context, plan_id)
        self.db.plan_delete(context, plan_id)
        LOG.info('Backup plan %s deleted (its backups are kept).', plan_id)

    # -- runs ---------------------------------------------------------------

    def run_now(self, context, plan_id):
        """Queue a manual run of the plan for a runner to claim.

        :raises BackupPlanBusy: a run of the plan is queued or running
        :returns: the queued run
        """
        self.db.plan_get(context, plan_id)
        pending = [run for run in self.db.runs_unfinished(plan_id=plan_id)
                   if run['status'] in (QUEUED, RUNNING)]
        if pending:
            raise cvb_exception.BackupPlanBusy(
                plan_id=plan_id, run_id=pending[0]['id'],
                status=pending[0]['status'])
        # (The run's project is the plan's: the DB API sets it.)
        run = self.db.run_create(plan_id, {
            'kind': MANUAL, 'status': QUEUED,
            'scheduled_for': self._clock()})
        LOG.info('Run %(run)s of backup plan %(plan)s queued.',
                 {'run': run['id'], 'plan': plan_id})
        return run

    def runs(self, context, plan_id, limit=RUNS_LIMIT):
        """The plan's runs, newest first."""
        self.db.plan_get(context, plan_id)
        return self.db.run_get_all(context, plan_id, limit=limit)

    # -- checks -------------------------------------------------------------

    def _schedule(self, schedule):
        """The plan's schedule fields and first slot after now."""
        if self._schedule_class is None:
            self._schedule_class = importutils.import_class(SCHEDULE_CLASS)
        # (The API takes an integer for a single value: stored as text.)
        fields = {k: str(schedule[k]) for k in SCHEDULE_FIELDS}
        parsed = self._schedule_class(*(fields[k] for k in SCHEDULE_FIELDS))
        fields['next_run_at'] = parsed.next_after(self._clock())
        return fields

    @staticmethod
    def _check_numbers(values):
        for key in ('keep', 'full_every'):
            value = values.get(key)
            if (not isinstance(value, int) or isinstance(value, bool)
                    or value < 1):
                raise _invalid(_("'%(key)s' must be a whole number of at "
                                 "least 1, not %(value)r") %
                               {'key': key, 'value': value})
        rate = values.get('bandwidth_mib_s')
        if rate is not None and (isinstance(rate, bool) or not isinstance(
                rate, (int, float)) or not rate > 0):
            raise _invalid(_("'bandwidth_mib_s' must be a number above 0 "
                             "(MiB/s) or null (no cap), not %r") % (rate,))

    def _target(self, context, target):
        """``(target_type, target_id, project_id, looked-up target)``."""
        keys = [k for k in TARGET_KEYS if target.get(k)]
        if len(keys) != 1 or len(target) != 1:
            raise _invalid(_("the target names exactly one of %s") %
                           ', '.join(sorted(TARGET_KEYS)))
        target_type = TARGET_KEYS[keys[0]]
        found = self._lookup(context, target_type, target[keys[0]])
        if target_type == VOLUME_TYPE:
            return target_type, found['id'], context.project_id, found
        return (target_type, found['id'], found['project_id'], found)

    def _lookup(self, context, target_type, identity):
        """The target in the caller's scope, or InvalidBackupPlan."""
        if target_type == VOLUME:
            try:
                volume = self.volume_api.get(context, identity)
            except exception.NotFound:
                raise _invalid(_("target volume %s not found") % identity)
            return {'id': volume.id, 'project_id': volume.project_id}
        if target_type == INSTANCE_GROUP:
            try:
                return self.group_api.get(context, identity)
            except exception.NotFound:
                raise _invalid(_("target instance group %s not found") %
                               identity)
        try:
            vtype = volume_types.get_by_name_or_id(context, identity)
        except exception.NotFound:
            raise _invalid(_("target volume type %s not found") % identity)
        return {'id': vtype['id'], 'name': vtype['name']}

    def _exclusions(self, context, target_type, target, project_id,
                    exclude):
        """The checked exclusion list (duplicates dropped, order kept)."""
        exclude = list(dict.fromkeys(exclude or []))
        if not exclude:
            return []
        if target_type == VOLUME:
            raise _invalid(_("a plan of one volume has nothing to exclude "
                             "(exclude: %s)") % ', '.join(exclude))
        if target_type == INSTANCE_GROUP:
            members = {v['id'] for v in target.get('volumes') or []}
            unknown = [i for i in exclude if i not in members]
            if unknown:
                raise _invalid(_(
                    "exclude: %(ids)s not a volume of instance group "
                    "%(group)s") % {'ids': ', '.join(unknown),
                                    'group': target['id']})
            if members and members.issubset(exclude):
                raise _invalid(_("exclude leaves no volume of instance "
                                 "group %s to back up") % target['id'])
            return exclude
        unknown = [i for i in exclude
                   if not self._in_project(context, i, project_id)]
        if unknown:
            raise _invalid(_(
                "exclude: %(ids)s neither a volume of project %(project)s "
                "nor an instance with a volume of it attached") % {
                    'ids': ', '.join(unknown), 'project': project_id})
        return exclude

    def _in_project(self, context, identity, project_id):
        """Whether ``identity`` is a volume of the project.

        Or an instance with a volume of the project attached.
        """
        try:
            volume = self.volume_api.get(context, identity)
        except exception.NotFound:
            volume = None
        if volume is not None:
            return volume.project_id == project_id
        admin = context.elevated()
        attachments = objects.VolumeAttachmentList.get_all_by_instance_uuid(
            admin, identity)
        for attachment in attachments:
            try:
                volume = objects.Volume.get_by_id(admin,
                                                  attachment.volume_id)
            except exception.NotFound:
                continue
            if volume.project_id == project_id:
                return True
        return False
