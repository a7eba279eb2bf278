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

"""Instance groups in cinder-api: validate, record, lock, hand over.

Every request is checked first (the group exists and is visible, the
instance is the group's, the set is chosen unambiguously, Cinder's own
policies allow it, volumes and backups are in a state that allows it) and
a refused request changes nothing. An accepted one then takes the group's
lock (``available -> updating``, else :class:`InstanceGroupBusy`), records
what Cinder's backup API would (backups ``creating`` with their quota
committed, the set as a ``GroupSnapshot``, its point-in-time records as
``Snapshot`` rows), and casts the work to one cinder-backup host that is up
in the group's availability zone. A synchronous request then reads the
database until the operation has ended, at most ``[instance_groups]
sync_timeout`` seconds.
"""

import random
import time
import uuid

from cinder.common import constants
from cinder import context as cinder_context
from cinder.db import api as db
from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.objects import fields
from cinder.policies import backups as backup_policy
from cinder.policies import group_actions as group_action_policy
from cinder.policies import group_snapshots as group_snapshot_policy
from cinder.policies import groups as group_policy
from cinder import quota
from cinder import quota_utils
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import excutils
from oslo_utils import timeutils

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.group import members as group_members
from cinder_vmdk_backup.group import records
from cinder_vmdk_backup.group import rpcapi as group_rpcapi
from cinder_vmdk_backup import opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.instance_group_opts, group='instance_groups')
QUOTAS = quota.QUOTAS

SHUT_DOWN = 'shutoff'

#: Seconds after which a group's lock that no operation holds is released
#: (see :meth:`API._release_stale_lock`): far longer than cinder-api needs
#: between taking a lock and handing the work to cinder-backup.
STALE_LOCK_SECONDS = 300
_SET_BUSY = (fields.GroupSnapshotStatus.CREATING,
             fields.GroupSnapshotStatus.DELETING)
_BACKUP_BUSY = (fields.BackupStatus.CREATING, fields.BackupStatus.RESTORING,
                fields.BackupStatus.DELETING)
BUSY_STATUSES = ('available', 'in-use')

#: Metadata keys of a member backup that belong to its set (a caller's
#: metadata cannot give them).
_SET_KEYS = (records.GROUP_KEY, records.SET_KEY, records.INSTANCE_KEY,
             records.MOUNTPOINT_KEY, records.BOOT_KEY, records.CONSISTENCY_KEY,
             records.RETIRED_KEY, records.OPERATION_KEY, records.ERROR_KEY,
             records.NEW_VOLUME_KEY, records.SERVER_KEY)

_BACKUP_FIELDS = (
    'id', 'user_id', 'project_id', 'volume_id', 'availability_zone',
    'container', 'parent_id', 'status', 'fail_reason', 'size',
    'display_name', 'display_description', 'service_metadata', 'service',
    'object_count', 'temp_volume_id', 'temp_snapshot_id',
    'num_dependent_backups', 'snapshot_id', 'data_timestamp',
    'restore_volume_id', 'encryption_key_id', 'created_at')


def backup_dict(backup):
    entry = {name: backup.get(name) if name in backup else None
             for name in _BACKUP_FIELDS}
    entry['metadata'] = dict(backup.metadata or {})
    return entry


class API(object):
    """The instance-group operations of cinder-api (see the contract)."""

    def __init__(self, rpcapi=None):
        self._rpcapi = rpcapi

    @property
    def rpcapi(self):
        if self._rpcapi is None:
            self._rpcapi = group_rpcapi.InstanceGroupAPI()
        return self._rpcapi

    # -- groups -----------------------------------------------------------

    def create(self, context, instance_id, name=None, description=None):
        context.authorize(group_policy.CREATE_POLICY)
        group = group_members.create_group(context, instance_id, name=name,
                                           description=description)
        return self._group_dict(context, group)

    def get(self, context, group_id):
        return self._group_dict(context, self._get_group(context, group_id))

    def get_all(self, context, instance_id=None):
        context.authorize(group_policy.GET_ALL_POLICY)
        return [self._group_dict(context, group) for group in
                group_members.instance_groups(context, instance_id)]

    def update_members(self, context, group_id, instance_id,
                       add_volumes=None, remove_volumes=None):
        group = self._get_group(context, group_id)
        context.authorize(group_policy.UPDATE_POLICY, target_obj=group)
        self._check_instance(context, group, instance_id)
        self._lock(group)
        try:
            group_members.update_members(context, group, instance_id,
                                         add_volumes=add_volumes,
                                         remove_volumes=remove_volumes)
        finally:
            records.unlock_group(context, group.id)
        group.refresh()
        return self._group_dict(context, group)

    def delete(self, context, group_id):
        group = self._get_group(context, group_id)
        context.authorize(group_action_policy.DELETE_POLICY,
                          target_obj=group)
        # Cinder's DB call requires an admin context; the group itself was
        # looked up in the caller's scope above.
        if (objects.GroupSnapshotList.get_all_by_group(context.elevated(),
                                                       group.id)
                or records.group_backups(context, group.id)):
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'instance group %s still has backup sets (retired backups '
                'kept for newer sets included); delete them first') %
                group.id)
        self._lock(group)
        try:
            for member in group_members.members(context, group):
                group_members.leave(context, member['volume'])
            group.destroy()
        except Exception:
            with excutils.save_and_reraise_exception():
                records.unlock_group(context, group.id)
        LOG.info('Instance group %s deleted (its volumes are kept).',
                 group.id)

    # -- sets -------------------------------------------------------------

    def list_sets(self, context, group_id):
        group = self._get_group(context, group_id)
        context.authorize(group_snapshot_policy.GET_ALL_POLICY)
        return [self._set_dict(context, group_snapshot) for group_snapshot in
                self._sets(context, group)]

    def backup(self, context, group_id, instance_id, name, description=None,
               wait=True, incremental=None, metadata=None,
               exclude_volumes=None):
        """Back up the group's volumes as one set (see :meth:`start_backup`).

        :param wait: wait for the set's end (at most ``[instance_groups]
            sync_timeout``) and answer with its outcome; else answer at
            once with ``{'msg': 'Backup request submitted'}`` (the answer
            of the API route; :meth:`start_backup` gives the set's id)
        """
        group_snapshot_id = self.start_backup(
            context, group_id, instance_id, name, description=description,
            incremental=incremental, metadata=metadata,
            exclude_volumes=exclude_volumes)
        if not wait:
            return {'msg': 'Backup request submitted'}
        group = self._get_group(context, group_id)
        return self._wait(lambda: self._backup_result(
            context, group, instance_id, group_snapshot_id))

    def start_backup(self, context, group_id, instance_id, name,
                     description=None, incremental=None, metadata=None,
                     exclude_volumes=None):
        """Record a set of the group's volumes and hand it to cinder-backup.

        :param incremental: ``False``: a full backup of every member;
            ``None`` or ``True``: each member incremental on its newest
            available backup of an earlier set, full where it has none
        :param metadata: string keys and values put on every member backup
            when it is created (before any data moves, so a backup plan's
            ``cvb_bandwidth_mib_s`` holds from the first byte); the set's
            own keys (:mod:`.records`) cannot be given
        :param exclude_volumes: ids of member volumes left out of the set
            (e.g. a scratch disk); at least one member must remain
        :returns: the set's id (``GroupSnapshot`` id), ``creating``
        :raises InstanceGroupInvalid: a refused request (nothing changed)
        """
        group = self._get_group(context, group_id)
        found = self._check_instance(context, group, instance_id)
        found = self._without(group, found, exclude_volumes)
        extra = self._extra_metadata(metadata)
        context.authorize(group_snapshot_policy.CREATE_POLICY,
                          target_obj=group)
        for member in found:
            volume = member['volume']
            context.authorize(backup_policy.CREATE_POLICY, target_obj=volume)
            if volume.status not in BUSY_STATUSES:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'volume %(vol)s is %(status)s; a backup needs every '
                    'member available or in-use') %
                    {'vol': volume.id, 'status': volume.status})
        if incremental is False:
            parents = {member['volume'].id: None for member in found}
        else:
            parents = self._parents(context, group, found)
        host = self._backup_host(context, group.availability_zone,
                                 [p.host for p in parents.values() if p])
        # Cinder makes a group snapshot only of a group that is not
        # 'updating': the set's row comes first, then the lock (a refused
        # lock removes it again).
        group_snapshot = objects.GroupSnapshot(
            context=context, group_id=group.id,
            user_id=context.user_id, project_id=context.project_id,
            name=name, description=description,
            status=fields.GroupSnapshotStatus.CREATING,
            group_type_id=group.group_type_id)
        self._create_set(group, group_snapshot)
        try:
            self._lock(group)
        except Exception:
            with excutils.save_and_reraise_exception():
                group_snapshot.destroy()
        try:
            backups = self._record_set(
                context, group, group_snapshot, found, parents,
                instance_id, name, description, host, extra)
        except Exception:
            with excutils.save_and_reraise_exception():
                group_snapshot.destroy()
                records.unlock_group(context, group.id)
        self._cast(context, group, group_snapshot, lambda: (
            self.rpcapi.backup_set(context, host, group_snapshot.id)))
        LOG.info('Backup set %(set)s of instance group %(group)s '
                 '(%(count)d volumes, %(kind)s) handed to %(host)s.',
                 {'set': group_snapshot.id, 'group': group.id,
                  'count': len(backups), 'host': host,
                  'kind': 'full' if incremental is False else
                  'incremental where possible'})
        return group_snapshot.id

    @staticmethod
    def _without(group, found, exclude_volumes):
        """The members left once ``exclude_volumes`` are taken out."""
        if not found:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'instance group %s has no member volume') % group.id)
        excluded = set(exclude_volumes or ())
        if not excluded:
            return found
        unknown = excluded - {m['volume'].id for m in found}
        if unknown:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'volumes %(vols)s to exclude are not members of instance '
                'group %(group)s') % {'vols': ', '.join(sorted(unknown)),
                                      'group': group.id})
        kept = [m for m in found if m['volume'].id not in excluded]
        if not kept:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'every volume of instance group %s is excluded') % group.id)
        return kept

    @staticmethod
    def _extra_metadata(metadata):
        """The caller's metadata for the member backups, checked."""
        extra = {}
        for key, value in (metadata or {}).items():
            if not isinstance(key, str) or not key or len(key) > \
                    records.TEXT_LIMIT:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'backup metadata key %r is not a string of 1 to '
                    '%d characters') % (key, records.TEXT_LIMIT))
            value = '' if value is None else str(value)
            if len(value) > records.TEXT_LIMIT:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'backup metadata value of %(key)s is longer than '
                    '%(limit)d characters') % {'key': key,
                                               'limit': records.TEXT_LIMIT})
            extra[key] = value
        reserved = sorted(set(extra) & set(_SET_KEYS))
        if reserved:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'backup metadata keys %s belong to the backup set itself')
                % ', '.join(reserved))
        return extra

    def restore(self, context, group_id, instance_id, group_snapshot_id=None,
                name=None, wait=True):
        group = self._get_group(context, group_id)
        found = self._check_instance(context, group, instance_id)
        group_snapshot = self._select_set(context, group, group_snapshot_id,
                                          name)
        backups = self._usable_backups(context, group_snapshot,
                                       backup_policy.RESTORE_POLICY)
        by_volume = {m['volume'].id: m['volume'] for m in found}
        for backup in backups:
            volume = by_volume.get(backup.volume_id)
            if volume is None:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'volume %s of the set is no longer a member of the '
                    'group; restore the set to new volumes instead') %
                    backup.volume_id)
            if volume.status not in BUSY_STATUSES:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'volume %(vol)s is %(status)s, not available or '
                    'in-use') % {'vol': volume.id, 'status': volume.status})
            if volume.size < backup.size:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'volume %(vol)s (%(vsize)d GiB) is smaller than its '
                    'backup %(backup)s (%(bsize)d GiB)') %
                    {'vol': volume.id, 'vsize': volume.size,
                     'backup': backup.id, 'bsize': backup.size})
        host = self._backup_host(context, group.availability_zone,
                                 [b.host for b in backups])
        self._check_shut_down(context, host, instance_id,
                              [b.volume_id for b in backups])
        self._lock(group)
        operation_id = str(uuid.uuid4())
        try:
            self._start_restore(context, backups, by_volume, host,
                                operation_id)
        except Exception:
            with excutils.save_and_reraise_exception():
                records.unlock_group(context, group.id)
        try:
            self._cast(context, group, None, lambda: self.rpcapi.restore_set(
                context, host, group.id, group_snapshot.id, operation_id),
                backups=backups, operation_id=operation_id, host=host)
        except Exception:
            with excutils.save_and_reraise_exception():
                for backup in backups:
                    backup.status = fields.BackupStatus.AVAILABLE
                    backup.save()
                    volume = by_volume[backup.volume_id]
                    db.volume_update(context, volume.id,
                                     {'status': volume.previous_status})
        if not wait:
            return {'msg': 'Restore request submitted'}
        return self._wait(lambda: self._operation_result(
            context, 'restore', group, instance_id, group_snapshot.id,
            operation_id))

    def restore_new(self, context, group_id, instance_id,
                    group_snapshot_id=None, name=None, volume_type=None,
                    availability_zone=None, volumes=None, server=None,
                    wait=True):
        group = self._get_group(context, group_id)
        self._check_instance(context, group, instance_id)
        group_snapshot = self._select_set(context, group, group_snapshot_id,
                                          name)
        backups = self._usable_backups(context, group_snapshot,
                                       backup_policy.RESTORE_POLICY)
        volumes = volumes or {}
        unknown = set(volumes) - {b.volume_id for b in backups}
        if unknown:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'volumes %s are not in the backup set') %
                ', '.join(sorted(unknown)))
        requests = {}
        for backup in backups:
            wanted = dict(volumes.get(backup.volume_id) or {})
            wanted.setdefault('volume_type', volume_type)
            wanted.setdefault('availability_zone', availability_zone)
            requests[backup.volume_id] = wanted
        # The backups' zone picks the cinder-backup that restores, as
        # Cinder's own restore does (backup.availability_zone), whatever
        # zone the new volumes are asked for.
        zones = [b.availability_zone for b in backups if b.availability_zone]
        host = self._backup_host(
            context, zones[0] if zones else group.availability_zone,
            [b.host for b in backups])
        self._lock(group)
        operation_id = str(uuid.uuid4())
        try:
            for backup in backups:
                # Outcomes of an earlier restore to new volumes.
                records.clear_metadata(backup, records.NEW_VOLUME_KEY,
                                       records.SERVER_KEY)
            records.mark_operation(backups, operation_id, records.RUNNING,
                                   host)
        except Exception:
            with excutils.save_and_reraise_exception():
                records.unlock_group(context, group.id)
        self._cast(context, group, None, lambda: self.rpcapi.restore_set_new(
            context, host, group.id, group_snapshot.id, operation_id,
            requests, server=server),
            backups=backups, operation_id=operation_id, host=host)
        if not wait:
            return {'msg': 'Restore request submitted'}
        return self._wait(lambda: self._operation_result(
            context, 'restore_new', group, instance_id, group_snapshot.id,
            operation_id))

    def delete_backup(self, context, group_id, instance_id,
                      group_snapshot_id=None, name=None):
        group = self._get_group(context, group_id)
        self._check_instance(context, group, instance_id)
        group_snapshot = self._select_set(context, group, group_snapshot_id,
                                          name, statuses=('available',
                                                          'error'))
        context.authorize(group_snapshot_policy.DELETE_POLICY,
                          target_obj=group_snapshot)
        backups = records.set_backups(context, group_snapshot.id)
        for backup in backups:
            context.authorize(backup_policy.DELETE_POLICY, target_obj=backup)
            if backup.status not in (fields.BackupStatus.AVAILABLE,
                                     fields.BackupStatus.ERROR):
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'backup %(backup)s is %(status)s') %
                    {'backup': backup.id, 'status': backup.status})
        host = self._backup_host(context, group.availability_zone,
                                 [b.host for b in backups])
        self._lock(group)
        try:
            group_snapshot.status = fields.GroupSnapshotStatus.DELETING
            group_snapshot.save()
            for backup in backups:
                # The host that deletes (its janitor finds the set again).
                backup.host = host
                backup.save()
        except Exception:
            with excutils.save_and_reraise_exception():
                records.unlock_group(context, group.id)
        self._cast(context, group, None, lambda: self.rpcapi.delete_set(
            context, host, group.id, group_snapshot.id))
        result = self._wait(lambda: self._delete_result(
            context, group, instance_id, group_snapshot.id, backups))
        return result

    # -- checks -------------------------------------------------------------

    def _get_group(self, context, group_id):
        try:
            group = objects.Group.get_by_id(context, group_id)
        except exception.GroupNotFound:
            raise cvb_exception.InstanceGroupNotFound(group_id=group_id)
        if (not group_members.is_instance_group(context, group) or (
                not context.is_admin
                and group.project_id != context.project_id)):
            raise cvb_exception.InstanceGroupNotFound(group_id=group_id)
        context.authorize(group_policy.GET_POLICY, target_obj=group)
        return group

    @staticmethod
    def _check_instance(context, group, instance_id):
        found = group_members.members(context, group)
        owner = group_members.instance_of(context, group, found)
        if not instance_id or owner != instance_id:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'instance %(instance)s does not belong to instance group '
                '%(group)s') % {'instance': instance_id, 'group': group.id})
        return found

    @staticmethod
    def _sets(context, group):
        # (Admin context for Cinder's DB call; ``group`` was found in the
        # caller's scope.)
        sets = objects.GroupSnapshotList.get_all_by_group(context.elevated(),
                                                          group.id)
        return sorted(sets, key=lambda s: s.created_at)

    def _select_set(self, context, group, group_snapshot_id, name,
                    statuses=('available',)):
        """The set a request names (see the contract's selection rules)."""
        if group_snapshot_id:
            try:
                chosen = objects.GroupSnapshot.get_by_id(context,
                                                         group_snapshot_id)
            except exception.GroupSnapshotNotFound:
                chosen = None
            if chosen is None or chosen.group_id != group.id:
                raise cvb_exception.BackupSetNotFound(
                    name=group_snapshot_id, group_id=group.id)
            if name and chosen.name != name:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'backup set %(id)s is named %(real)s, not %(name)s; '
                    'give one of them or both of the same set') %
                    {'id': chosen.id, 'real': chosen.name, 'name': name})
        elif name:
            named = [s for s in self._sets(context, group) if s.name == name]
            if not named:
                raise cvb_exception.BackupSetNotFound(name=name,
                                                      group_id=group.id)
            if len(named) > 1:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'the name %(name)s is ambiguous (%(count)d backup sets '
                    'have it), give group_snapshot_id') %
                    {'name': name, 'count': len(named)})
            chosen = named[0]
        else:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'give group_snapshot_id or name of a backup set'))
        if chosen.status not in statuses:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'backup set %(id)s is %(status)s, not %(want)s') %
                {'id': chosen.id, 'status': chosen.status,
                 'want': ' or '.join(statuses)})
        return chosen

    @staticmethod
    def _usable_backups(context, group_snapshot, policy):
        backups = records.set_backups(context, group_snapshot.id)
        if not backups:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'backup set %s has no backup') % group_snapshot.id)
        for backup in backups:
            context.authorize(policy, target_obj=backup)
            if backup.status != fields.BackupStatus.AVAILABLE:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'backup %(backup)s of the set is %(status)s, not '
                    'available') % {'backup': backup.id,
                                    'status': backup.status})
        return backups

    def _check_shut_down(self, context, host, instance_id, volume_ids):
        """Refuse unless cinder-backup on ``host`` says it is shut down.

        No answer is no proof: it refuses too.
        """
        try:
            state, who = self.rpcapi.instance_power_state(
                context, host, instance_id, volume_ids)
        except Exception as exc:
            LOG.warning('cinder-backup on %(host)s could not tell whether '
                        'instance %(instance)s is shut down: %(exc)s',
                        {'host': host, 'instance': instance_id,
                         'exc': type(exc).__name__})
            state, who = 'unknown', 'nobody (cinder-backup on %s did not ' \
                'answer)' % host
        LOG.info('Instance %(instance)s is %(state)s (%(who)s).',
                 {'instance': instance_id, 'state': state, 'who': who})
        if state != SHUT_DOWN:
            raise cvb_exception.InstanceNotShutDown(
                instance_id=instance_id, state=state, who=who)

    # -- lock, host, hand-over ---------------------------------------------

    @classmethod
    def _create_set(cls, group, group_snapshot):
        """Create the set's row; Cinder refuses it while a lock is held."""
        for attempt in (1, 2):
            try:
                group_snapshot.create()
                return
            except exception.InvalidGroup:
                group.refresh()
                if attempt == 2 or not cls._release_stale_lock(group):
                    raise cvb_exception.InstanceGroupBusy(
                        group_id=group.id, status=group.status)
                group.refresh()

    @classmethod
    def _lock(cls, group):
        """Take the group's lock, or raise :class:`InstanceGroupBusy`.

        A lock that nothing holds any more (the cinder-api that took it
        died before it handed the work over) is released first: see
        :meth:`_release_stale_lock`.
        """
        for attempt in (1, 2):
            if group.conditional_update(
                    {'status': fields.GroupStatus.UPDATING,
                     'updated_at': timeutils.utcnow()},
                    {'status': fields.GroupStatus.AVAILABLE}):
                return
            group.refresh()
            if attempt == 2 or not cls._release_stale_lock(group):
                raise cvb_exception.InstanceGroupBusy(group_id=group.id,
                                                      status=group.status)
            group.refresh()

    @staticmethod
    def _release_stale_lock(group):
        """Unlock a group whose lock no operation holds; tell if it was.

        A lock is stale when the group has been ``updating`` for more than
        :data:`STALE_LOCK_SECONDS` while no set is being made or deleted by
        a cinder-backup (a set ``creating`` or ``deleting`` with member
        backups), no member backup is ``creating``, ``restoring`` or
        ``deleting`` and no operation is recorded as running on one: what
        a cinder-api that died between taking the lock and handing the
        work to cinder-backup leaves. (A cinder-backup that dies releases
        its own locks when it starts again.) Sets left ``creating``
        without any backup are removed with it. The release is a
        compare-and-swap on the lock's time, so two requests that find
        the same stale lock release it once.
        """
        if group.status != fields.GroupStatus.UPDATING:
            return False
        locked_at = (timeutils.normalize_time(group.updated_at)
                     if group.updated_at else None)
        if locked_at and not timeutils.is_older_than(locked_at,
                                                     STALE_LOCK_SECONDS):
            return False
        admin = records.admin(group._context)
        orphans = []
        for group_snapshot in objects.GroupSnapshotList.get_all_by_group(
                admin, group.id):
            if group_snapshot.status not in _SET_BUSY:
                continue
            if records.set_backups(admin, group_snapshot.id):
                return False
            orphans.append(group_snapshot)
        for backup in records.group_backups(admin, group.id):
            if (backup.status in _BACKUP_BUSY or
                    records.operation_of(backup)[1] == records.RUNNING):
                return False
        if not group.conditional_update(
                {'status': fields.GroupStatus.AVAILABLE},
                {'status': fields.GroupStatus.UPDATING,
                 'updated_at': locked_at}):
            return False
        for group_snapshot in orphans:
            group_snapshot.destroy()
        LOG.warning('Instance group %(group)s had been locked since '
                    '%(since)s by an operation that no service runs any '
                    'more; lock released (%(sets)d empty backup set(s) '
                    'removed).', {'group': group.id, 'since': locked_at,
                                  'sets': len(orphans)})
        return True

    @staticmethod
    def _backup_host(context, availability_zone, preferred=()):
        """A cinder-backup host that is up, in the AZ; ``preferred`` first.

        The hosts of earlier backups are preferred (a posix store is
        often local to its host, as Cinder's backup API knows).
        """
        services = objects.ServiceList.get_all_by_topic(
            cinder_context.get_admin_context(), constants.BACKUP_TOPIC,
            disabled=False)
        up = [s.host for s in services
              if (not availability_zone
                  or s.availability_zone == availability_zone)
              and s.is_up]
        if not up:
            raise exception.ServiceNotFound(service_id='cinder-backup')
        for host in preferred:
            if host in up:
                return host
        # (Spreads the load; not a secret.)
        return random.choice(up)  # nosec B311

    def _cast(self, context, group, group_snapshot, cast, backups=(),
              operation_id=None, host=None):
        try:
            cast()
        except Exception as exc:
            with excutils.save_and_reraise_exception():
                LOG.error('Could not hand the operation on instance group '
                          '%(group)s to cinder-backup: %(exc)s',
                          {'group': group.id, 'exc': exc})
                if group_snapshot is not None:
                    group_snapshot.status = fields.GroupSnapshotStatus.ERROR
                    group_snapshot.save()
                if operation_id:
                    records.mark_operation(backups, operation_id,
                                           records.ERROR, host,
                                           reason=str(exc))
                records.unlock_group(context, group.id)

    # -- records ------------------------------------------------------------

    @staticmethod
    def _parents(context, group, found):
        """The newest available backup of each member in earlier sets."""
        parents = {}
        existing = records.group_backups(context, group.id)
        for member in found:
            volume_id = member['volume'].id
            candidates = [b for b in existing
                          if b.volume_id == volume_id
                          and b.status == fields.BackupStatus.AVAILABLE]
            parents[volume_id] = max(
                candidates, key=lambda b: (b.data_timestamp or b.created_at),
                default=None)
        return parents

    def _record_set(self, context, group, group_snapshot, found, parents,
                    instance_id, name, description, host, extra=None):
        total = sum(m['volume'].size for m in found)
        try:
            reservations = QUOTAS.reserve(context, backups=len(found),
                                          backup_gigabytes=total)
        except exception.OverQuota as exc:
            quota_utils.process_reserve_over_quota(
                context, exc, resource='backups', size=total)
        made = []
        changed_volumes = []
        try:
            backups = []
            for member in found:
                volume = member['volume']
                previous = volume.status
                if not volume.conditional_update(
                        {'status': 'backing-up',
                         'previous_status': previous},
                        {'status': previous}):
                    raise cvb_exception.InstanceGroupInvalid(reason=_(
                        'volume %s changed status meanwhile') % volume.id)
                changed_volumes.append((volume, previous))
                snapshot = objects.Snapshot(
                    context=context, volume_id=volume.id,
                    group_snapshot_id=group_snapshot.id,
                    user_id=context.user_id, project_id=context.project_id,
                    status=fields.SnapshotStatus.AVAILABLE,
                    volume_size=volume.size, use_quota=False,
                    volume_type_id=volume.volume_type_id,
                    display_name=name,
                    display_description='Point in time of backup set %s' %
                                        group_snapshot.id,
                    progress='100%')
                snapshot.create()
                made.append(snapshot)
                parent = parents.get(volume.id)
                metadata = dict(extra or {})
                metadata.update({
                    records.GROUP_KEY: group.id,
                    records.SET_KEY: group_snapshot.id,
                    records.INSTANCE_KEY: instance_id,
                    records.MOUNTPOINT_KEY: member['mountpoint'] or '',
                    records.BOOT_KEY: str(member['boot']),
                })
                backup = objects.Backup(
                    context=context, user_id=context.user_id,
                    project_id=context.project_id, display_name=name,
                    display_description=description, volume_id=volume.id,
                    status=fields.BackupStatus.CREATING, container=None,
                    parent_id=parent.id if parent else None,
                    size=volume.size, snapshot_id=snapshot.id, host=host,
                    availability_zone=group.availability_zone,
                    metadata=metadata)
                backup.create()
                made.append(backup)
                backups.append(backup)
            QUOTAS.commit(context, reservations)
        except Exception:
            with excutils.save_and_reraise_exception():
                for volume, previous in changed_volumes:
                    db.volume_update(context, volume.id,
                                     {'status': previous})
                for record in reversed(made):
                    try:
                        record.destroy()
                    except Exception:
                        LOG.exception('Could not remove %s.', record)
                QUOTAS.rollback(context, reservations)
        return backups

    @staticmethod
    def _start_restore(context, backups, by_volume, host, operation_id):
        changed = []
        try:
            for backup in backups:
                volume = by_volume[backup.volume_id]
                previous = volume.status
                if not volume.conditional_update(
                        {'status': fields.VolumeStatus.RESTORING_BACKUP,
                         'previous_status': previous},
                        {'status': previous}):
                    raise cvb_exception.InstanceGroupInvalid(reason=_(
                        'volume %s changed status meanwhile') % volume.id)
                changed.append((volume, previous))
                backup.status = fields.BackupStatus.RESTORING
                backup.restore_volume_id = volume.id
                backup.host = host
                backup.save()
            records.mark_operation(backups, operation_id, records.RUNNING,
                                   host)
        except Exception:
            with excutils.save_and_reraise_exception():
                for volume, previous in changed:
                    db.volume_update(context, volume.id,
                                     {'status': previous})
                for backup in backups:
                    if backup.status == fields.BackupStatus.RESTORING:
                        backup.status = fields.BackupStatus.AVAILABLE
                        backup.save()

    # -- answers ------------------------------------------------------------

    @staticmethod
    def _wait(check):
        """Poll ``check`` until it answers or the sync timeout passes.

        The first reads come quickly (an operation may end within a
        second), then every ``poll_interval`` seconds: waiting a whole
        interval after an end costs a synchronous request up to that long.
        """
        deadline = time.monotonic() + CONF.instance_groups.sync_timeout
        interval = min(0.1, CONF.instance_groups.poll_interval)
        while True:
            result = check()
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                return {'still_running': True,
                        'msg': _('The operation is still running; see the '
                                 'list of backup sets for its outcome.')}
            time.sleep(interval)
            interval = min(interval * 2, CONF.instance_groups.poll_interval)

    @staticmethod
    def _answer(operation, success, instance_id, group, group_snapshot_id,
                backups, **extra):
        answer = {'operation': operation, 'success': success,
                  'instance_id': instance_id, 'group_id': group.id,
                  'group_snapshot_id': group_snapshot_id,
                  'volume_id': [b.volume_id for b in backups],
                  'backup_id': [b.id for b in backups]}
        answer.update(extra)
        return answer

    def _backup_result(self, context, group, instance_id, group_snapshot_id):
        group_snapshot = objects.GroupSnapshot.get_by_id(
            context, group_snapshot_id)
        if group_snapshot.status == fields.GroupSnapshotStatus.CREATING:
            return None
        backups = records.set_backups(context, group_snapshot_id)
        answer = self._answer(
            'backup',
            group_snapshot.status == fields.GroupSnapshotStatus.AVAILABLE,
            instance_id, group, group_snapshot_id, backups,
            volume_snapshot_id=[b.snapshot_id for b in backups])
        if not answer['success']:
            # A failed set keeps no backup (their rows are deleted); the
            # reason is the set's description.
            answer['msg'] = group_snapshot.description
            answer['volume_id'] = [
                m['volume'].id for m in group_members.members(context, group)]
        return answer

    def _operation_result(self, context, operation, group, instance_id,
                          group_snapshot_id, operation_id):
        backups = records.set_backups(context, group_snapshot_id)
        states = [records.operation_of(b) for b in backups]
        if any(op != operation_id or state == records.RUNNING
               for op, state, _host in states):
            return None
        failed = [b for b, (_op, state, _h) in zip(backups, states)
                  if state == records.ERROR]
        extra = {}
        if operation == 'restore_new':
            extra['new_volume_id'] = [
                (b.metadata or {}).get(records.NEW_VOLUME_KEY)
                for b in backups]
            extra['server_id'] = next(
                (b.metadata[records.SERVER_KEY] for b in backups
                 if (b.metadata or {}).get(records.SERVER_KEY)), None)
        answer = self._answer(operation, not failed, instance_id, group,
                              group_snapshot_id, backups, **extra)
        if failed:
            answer['msg'] = failed[0].metadata.get(records.ERROR_KEY)
        return answer

    def _delete_result(self, context, group, instance_id, group_snapshot_id,
                       backups):
        try:
            group_snapshot = objects.GroupSnapshot.get_by_id(
                context, group_snapshot_id)
        except exception.GroupSnapshotNotFound:
            return self._answer('delete_backup', True, instance_id, group,
                                group_snapshot_id, backups)
        if group_snapshot.status == fields.GroupSnapshotStatus.DELETING:
            return None
        answer = self._answer('delete_backup', False, instance_id, group,
                              group_snapshot_id, backups)
        answer['msg'] = group_snapshot.description
        return answer

    def _group_dict(self, context, group):
        found = group_members.members(context, group)
        return {
            'id': group.id, 'name': group.name,
            'description': group.description, 'status': group.status,
            'project_id': group.project_id, 'user_id': group.user_id,
            'group_type_id': group.group_type_id,
            'instance_id': group_members.instance_of(context, group, found),
            'availability_zone': group.availability_zone,
            'created_at': group.created_at,
            'volumes': [{'id': m['volume'].id, 'mountpoint': m['mountpoint'],
                         'boot': m['boot']} for m in found],
        }

    def _set_dict(self, context, group_snapshot):
        backups = [b for b in records.set_backups(context, group_snapshot.id)
                   if not records.is_retired(b)]
        return {
            'id': group_snapshot.id, 'group_id': group_snapshot.group_id,
            'project_id': group_snapshot.project_id,
            'user_id': group_snapshot.user_id, 'name': group_snapshot.name,
            'description': group_snapshot.description,
            'status': group_snapshot.status,
            'group_type_id': group_snapshot.group_type_id,
            'backups': [backup_dict(b) for b in backups],
            'created_at': group_snapshot.created_at,
        }
