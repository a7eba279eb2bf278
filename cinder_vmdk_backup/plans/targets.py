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

"""What one run of a backup plan backs up, and how far it has got.

A run asks Cinder for backups the way a user would (Cinder's backup API,
or the instance-group API for a group), in the plan owner's project, and
never waits for them: :meth:`Targets.progress` reads their state again at
every tick of the runner. Backups carry :data:`PLAN_KEY`, :data:`RUN_KEY`
and, when the plan caps the rate, :data:`BANDWIDTH_KEY` in their metadata
from their creation on (a set's member backups too: the group API puts
them there), so the cap holds from the first byte.

An instance-group plan makes one set of the group's volumes per run (full
when the run is, else each member incremental where it can be). Its
``exclude`` lists member volumes left out of every set (a scratch disk:
the set then holds the others, taken at one point in time; a restore of it
leaves the excluded volume alone) or the group's instance (no set at all).
"""

from cinder.backup import api as backup_api
from cinder import context as cinder_context
from cinder import exception
from cinder import objects
from cinder.objects import fields
from cinder.volume import api as volume_api
from cinder.volume import volume_types
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

PLAN_KEY = 'cvb_backup_plan_id'
RUN_KEY = 'cvb_backup_plan_run_id'
BANDWIDTH_KEY = 'cvb_bandwidth_mib_s'

VOLUME = 'volume'
INSTANCE_GROUP = 'instance_group'
VOLUME_TYPE = 'volume_type'

#: Volume states Cinder backs up (in-use with ``force``).
BACKUP_SOURCE_STATES = ('available', 'in-use')
#: Backup states that count as made (a restore in progress reads a made
#: backup).
_MADE = (fields.BackupStatus.AVAILABLE, fields.BackupStatus.RESTORING)


def plan_context(plan):
    """An admin context scoped to the plan owner's project.

    Backups, quotas and user messages of a run belong to the plan's
    project and user, as if its owner had asked; admin so that a policy
    change made after the plan was created cannot stop the nightly run
    half way (the plan's API checked the owner's rights).
    """
    return cinder_context.RequestContext(
        user_id=plan['user_id'], project_id=plan['project_id'],
        is_admin=True)


class Outcome(object):
    """Where the backups of a run stand.

    :ivar done: no backup or set of the run is still being made
    :ivar made: ids of the backups made (sets: their member backups)
    :ivar failures: one text per backup or set that failed
    """

    def __init__(self):
        self.done = True
        self.made = []
        self.failures = []


class Targets(object):
    """Starts the backups of a run and follows them.

    :param backup_api: Cinder's backup API (default: a new one)
    :param volume_api: Cinder's volume API
    :param group_api: the instance-group API (:mod:`..group.api`)
    """

    def __init__(self, backup_api=None, volume_api=None, group_api=None):
        self._backup_api = backup_api
        self._volume_api = volume_api
        self._group_api = group_api

    @property
    def backup_api(self):
        if self._backup_api is None:
            self._backup_api = backup_api.API()
        return self._backup_api

    @property
    def volume_api(self):
        if self._volume_api is None:
            self._volume_api = volume_api.API()
        return self._volume_api

    @property
    def group_api(self):
        if self._group_api is None:
            from cinder_vmdk_backup.group import api as group_api
            self._group_api = group_api.API()
        return self._group_api

    # -- start ------------------------------------------------------------

    def start(self, context, plan, run, full, adopt=None, record=None):
        """Ask for the run's backups; return ``(backup_ids, set_ids, errors)``.

        :param full: a full backup of every target (else incremental where
            the volume has an available backup to build on)
        :param adopt: the run this one retries: its backups (or sets) that
            are being made or were made are taken over, not asked for again
        :param record: called with ``(backup_ids, set_ids)`` after each
            request, so that a node that dies half way leaves them known
        """
        backup_ids, set_ids, errors = [], [], []

        def note():
            if record is not None:
                record(list(backup_ids), list(set_ids))

        if plan['target_type'] == INSTANCE_GROUP:
            set_id, error = self._start_group(context, plan, run, full,
                                              adopt)
            if set_id:
                set_ids.append(set_id)
                note()
            if error:
                errors.append(error)
            return backup_ids, set_ids, errors
        adopted = self._adoptable_backups(context, adopt)
        for volume in self.volumes(context, plan, errors):
            if volume.id in adopted:
                backup_ids.append(adopted[volume.id])
                continue
            try:
                backup = self._start_volume(context, plan, run, volume, full)
            except Exception as exc:
                LOG.warning('Backup plan %(plan)s: no backup of volume '
                            '%(volume)s: %(exc)s',
                            {'plan': plan['id'], 'volume': volume.id,
                             'exc': exc})
                errors.append('volume %s: %s' % (volume.id, exc))
                continue
            backup_ids.append(backup.id)
            note()
        return backup_ids, set_ids, errors

    def volumes(self, context, plan, errors):
        """The volumes a volume or volume-type plan backs up now.

        Excluded volumes are left out; a project-wide plan skips volumes
        in a state Cinder cannot back up (``creating``, ``error``, ...)
        and says so in ``errors``; a missing volume of a volume plan is an
        error.
        """
        excluded = set(plan.get('exclude') or ())
        if plan['target_type'] == VOLUME:
            if plan['target_id'] in excluded:
                return []
            try:
                return [objects.Volume.get_by_id(context, plan['target_id'])]
            except exception.VolumeNotFound:
                errors.append('volume %s does not exist any more' %
                              plan['target_id'])
                return []
        if plan['target_type'] != VOLUME_TYPE:
            errors.append('unknown target type %s' % plan['target_type'])
            return []
        try:
            vtype = volume_types.get_by_name_or_id(context,
                                                   plan['target_id'])
        except exception.VolumeTypeNotFound:
            errors.append('volume type %s does not exist any more' %
                          plan['target_id'])
            return []
        found = objects.VolumeList.get_all_by_project(
            context, plan['project_id'], None, None,
            filters={'volume_type_id': vtype['id']})
        chosen = []
        for volume in sorted(found, key=lambda v: v.id):
            if volume.id in excluded:
                continue
            if volume.status not in BACKUP_SOURCE_STATES:
                errors.append('volume %s is %s' % (volume.id, volume.status))
                continue
            chosen.append(volume)
        return chosen

    def _metadata(self, plan, run):
        metadata = {PLAN_KEY: plan['id'], RUN_KEY: run['id']}
        if plan.get('bandwidth_mib_s'):
            metadata[BANDWIDTH_KEY] = '%g' % plan['bandwidth_mib_s']
        return metadata

    @staticmethod
    def _name(plan, run):
        slot = run.get('scheduled_for') or run.get('started_at')
        when = slot.strftime('%Y%m%dT%H%MZ') if slot else 'now'
        return '%s-%s-%s' % (plan['name'] or 'plan', when, run['id'][:8])

    def _start_volume(self, context, plan, run, volume, full):
        incremental = not full and self.has_parent(context, volume)
        return self.backup_api.create(
            context, self._name(plan, run),
            'Backup plan %s, run %s' % (plan['id'], run['id']),
            volume.id, None, incremental=incremental, force=True,
            metadata=self._metadata(plan, run))

    @staticmethod
    def has_parent(context, volume):
        """Whether ``volume`` has an available backup to build on."""
        backups = objects.BackupList.get_all_by_volume(
            context, volume.id, volume.project_id,
            filters={'project_id': volume.project_id})
        return any(b.status == fields.BackupStatus.AVAILABLE
                   for b in backups)

    @staticmethod
    def _adoptable_backups(context, adopt):
        """Backups of the retried run still good: {volume id: backup id}.

        A backup still ``creating`` on a host whose cinder-backup is down
        is not: nothing will finish it (Cinder's scheduler still sends
        backups to a backup host that died; it ends in error only when
        that host starts again).
        """
        adopted = {}
        down = _DownHosts(context)
        for backup_id in (adopt or {}).get('backup_ids') or ():
            try:
                backup = objects.Backup.get_by_id(context, backup_id)
            except exception.BackupNotFound:
                continue
            if backup.status in _MADE or (
                    backup.status == fields.BackupStatus.CREATING and
                    not down(backup.host)):
                adopted[backup.volume_id] = backup.id
        return adopted

    def _start_group(self, context, plan, run, full, adopt):
        for set_id in (adopt or {}).get('group_snapshot_ids') or ():
            try:
                group_snapshot = objects.GroupSnapshot.get_by_id(context,
                                                                 set_id)
            except exception.GroupSnapshotNotFound:
                continue
            if group_snapshot.status in (
                    fields.GroupSnapshotStatus.CREATING,
                    fields.GroupSnapshotStatus.AVAILABLE):
                return set_id, None
        try:
            group = self.group_api.get(context, plan['target_id'])
        except Exception as exc:
            return None, 'instance group %s: %s' % (plan['target_id'], exc)
        instance_id = group.get('instance_id')
        excluded = set(plan.get('exclude') or ())
        if instance_id in excluded:
            return None, None
        # Members the plan leaves out; ids that are no longer members
        # (the volume left the group since) exclude nothing.
        members = [v['id'] for v in group.get('volumes') or ()]
        left_out = [v for v in members if v in excluded]
        if members and len(left_out) == len(members):
            return None, 'instance group %s: every member volume is ' \
                'excluded by the plan' % plan['target_id']
        try:
            set_id = self.group_api.start_backup(
                context, plan['target_id'], instance_id,
                self._name(plan, run),
                description='Backup plan %s, run %s' % (plan['id'],
                                                        run['id']),
                incremental=False if full else None,
                metadata=self._metadata(plan, run),
                exclude_volumes=left_out)
        except Exception as exc:
            LOG.warning('Backup plan %(plan)s: no backup set of instance '
                        'group %(group)s: %(exc)s',
                        {'plan': plan['id'], 'group': plan['target_id'],
                         'exc': exc})
            return None, 'instance group %s: %s' % (plan['target_id'], exc)
        return set_id, None

    # -- follow -----------------------------------------------------------

    def progress(self, context, run):
        """An :class:`Outcome` of the run's backups and sets, read now."""
        outcome = Outcome()
        down = _DownHosts(context)
        for backup_id in run.get('backup_ids') or ():
            try:
                backup = objects.Backup.get_by_id(context, backup_id)
            except exception.BackupNotFound:
                outcome.failures.append('backup %s was deleted while it was '
                                        'made' % backup_id)
                continue
            if backup.status == fields.BackupStatus.CREATING:
                if down(backup.host):
                    outcome.failures.append(
                        'backup %s of volume %s is stuck creating on %s, '
                        'whose cinder-backup service is down' % (
                            backup.id, backup.volume_id, backup.host))
                    continue
                outcome.done = False
            elif backup.status in _MADE:
                outcome.made.append(backup.id)
            else:
                outcome.failures.append('backup %s of volume %s is %s%s' % (
                    backup.id, backup.volume_id, backup.status,
                    ': %s' % backup.fail_reason if backup.fail_reason
                    else ''))
        for set_id in run.get('group_snapshot_ids') or ():
            self._set_progress(context, set_id, outcome)
        return outcome

    @staticmethod
    def _set_progress(context, set_id, outcome):
        from cinder_vmdk_backup.group import records
        try:
            group_snapshot = objects.GroupSnapshot.get_by_id(context, set_id)
        except exception.GroupSnapshotNotFound:
            outcome.failures.append('backup set %s was deleted while it was '
                                    'made' % set_id)
            return
        if group_snapshot.status == fields.GroupSnapshotStatus.CREATING:
            outcome.done = False
        elif group_snapshot.status == fields.GroupSnapshotStatus.AVAILABLE:
            outcome.made.extend(b.id for b in
                                records.set_backups(context, set_id))
        else:
            outcome.failures.append('backup set %s is %s: %s' % (
                set_id, group_snapshot.status,
                group_snapshot.description or ''))


class _DownHosts(object):
    """Whether a backup host's cinder-backup is down, asked once per host.

    Unknown (no host recorded yet) counts as up: the backup has not been
    handed to a service yet.
    """

    BINARY = 'cinder-backup'

    def __init__(self, context):
        self._context = context
        self._known = {}

    def __call__(self, host):
        if not host:
            return False
        if host not in self._known:
            try:
                service = objects.Service.get_by_args(self._context, host,
                                                      self.BINARY)
                self._known[host] = not service.is_up
            except exception.ServiceNotFound:
                self._known[host] = True
        return self._known[host]
