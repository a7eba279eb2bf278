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

"""Backup verification in cinder-api: check, record, hand over.

A request is checked first (the backup is visible to the caller, it and
every backup of its chain are ``available``, a cinder-backup is up to run
it); an accepted one is recorded on the backup as ``queued``
(:func:`records.queue`, which refuses a backup already being verified with
:class:`~cinder_vmdk_backup.exception.VerificationBusy`) and cast to one
cinder-backup host. The verification then runs there
(:mod:`cinder_vmdk_backup.verification.endpoint`), leaving its progress and
result in the backup's metadata, where :meth:`API.get` and
:meth:`API.get_all` read them. Nothing here changes a backup's status.

Every answer is a plain dict: the verification record of
:func:`records.read` (``status`` ``unverified`` for a backup never
verified) with the backup's id, name, status, volume and project.
"""

import uuid

from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.objects import fields
from cinder.policies import backups as backup_policy
from oslo_log import log as logging
from oslo_utils import excutils

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.group import api as group_api
from cinder_vmdk_backup.group import records as group_records
from cinder_vmdk_backup.verification import records
from cinder_vmdk_backup.verification import rpcapi

LOG = logging.getLogger(__name__)

#: Status of a backup that has no verification record.
UNVERIFIED = 'unverified'
#: Statuses of a verification that has not ended.
ACTIVE = ('queued', 'running')

_RECORD_KEYS = ('status', 'verification_id', 'deep', 'started_at',
                'finished_at', 'progress', 'summary', 'problems',
                'problem_count')


class API(object):
    """The verification operations of cinder-api."""

    def __init__(self, rpc_api=None, groups=None):
        self._rpcapi = rpc_api
        self._groups = groups

    @property
    def rpcapi(self):
        if self._rpcapi is None:
            self._rpcapi = rpcapi.VerificationAPI()
        return self._rpcapi

    @property
    def groups(self):
        # Its group lookups (scope, instance, set choice) are the
        # instance-group API's own.
        if self._groups is None:
            self._groups = group_api.API()
        return self._groups

    # -- one backup ----------------------------------------------------------

    def verify(self, context, backup_id, deep=False):
        """Queue the verification of one backup (and its chain).

        :returns: the backup's record, ``queued``
        :raises BackupNotFound: not visible to the caller
        :raises InvalidBackup: the backup or one of its chain is not
            ``available``
        :raises ServiceNotFound: no cinder-backup is up to run it
        :raises VerificationBusy: a verification of it is queued or running
        """
        backup = self._get_backup(context, backup_id)
        self._check_chain(context, backup)
        host = self._host(context, backup)
        verification_id = str(uuid.uuid4())
        records.queue(backup, verification_id, deep)
        self._cast(context, host, backup, verification_id, deep)
        LOG.info('Verification %(ver)s of backup %(backup)s (deep: '
                 '%(deep)s) handed to %(host)s.',
                 {'ver': verification_id, 'backup': backup.id,
                  'deep': bool(deep), 'host': host})
        return self._entry(backup)

    def get(self, context, backup_id):
        """The verification record of one backup."""
        return self._entry(self._get_backup(context, backup_id))

    def get_all(self, context, filters=None):
        """The caller's backups, each with its verification record.

        :param filters: ``status`` (a verification status, or
            ``unverified``), ``volume_id``, ``all_tenants`` (admins: every
            project)
        """
        filters = dict(filters or {})
        status = filters.pop('status', None)
        all_tenants = filters.pop('all_tenants', False)
        context.authorize(backup_policy.GET_ALL_POLICY)
        db_filters = {}
        if filters.get('volume_id'):
            db_filters['volume_id'] = filters['volume_id']
        if context.is_admin and all_tenants:
            backups = objects.BackupList.get_all(context, filters=db_filters)
        else:
            backups = objects.BackupList.get_all_by_project(
                context, context.project_id, filters=db_filters)
        entries = [self._entry(b) for b in backups]
        if status:
            entries = [e for e in entries if e['status'] == status]
        # (Oldest first, as Cinder's own backup list.)
        return sorted(entries, key=lambda e: (str(e['created_at'] or ''),
                                              e['backup_id']))

    # -- a backup set of an instance group -----------------------------------

    def verify_set(self, context, group_id, instance_id,
                   group_snapshot_id=None, name=None, deep=False):
        """Queue the verification of every backup of a set (one id).

        :returns: ``{verification_id, group_id, group_snapshot_id,
            backups: [record, ...]}``
        :raises InstanceGroupNotFound, BackupSetNotFound,
            InstanceGroupInvalid: as the group API's lookups do
        """
        groups = self.groups
        group = groups._get_group(context, group_id)
        groups._check_instance(context, group, instance_id)
        group_snapshot = groups._select_set(context, group,
                                            group_snapshot_id, name)
        backups = [b for b in group_records.set_backups(context,
                                                        group_snapshot.id)
                   if not group_records.is_retired(b)]
        if not backups:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'backup set %s has no backup') % group_snapshot.id)
        hosts = []
        for backup in backups:
            context.authorize(backup_policy.GET_POLICY, target_obj=backup)
            self._check_chain(context, backup)
            hosts.append(self._host(context, backup))
        verification_id = str(uuid.uuid4())
        queued = []
        try:
            for backup in backups:
                records.queue(backup, verification_id, deep)
                queued.append(backup)
        except Exception as exc:
            with excutils.save_and_reraise_exception():
                # (A verification started meanwhile: the others of the set
                # do not run without it.)
                for backup in queued:
                    records.fail(backup, _(
                        'the verification of set %(set)s was refused: '
                        '%(exc)s') % {'set': group_snapshot.id, 'exc': exc})
        for backup, host in zip(backups, hosts):
            self._cast(context, host, backup, verification_id, deep)
        LOG.info('Verification %(ver)s of backup set %(set)s of instance '
                 'group %(group)s (%(count)d backups) handed over.',
                 {'ver': verification_id, 'set': group_snapshot.id,
                  'group': group.id, 'count': len(backups)})
        return {'verification_id': verification_id, 'group_id': group.id,
                'group_snapshot_id': group_snapshot.id,
                'backups': [self._entry(b) for b in backups]}

    # -- checks --------------------------------------------------------------

    @staticmethod
    def _get_backup(context, backup_id):
        # Cinder's lookup is scoped: another project's backup is not found
        # for a non-admin.
        backup = objects.Backup.get_by_id(context, backup_id)
        context.authorize(backup_policy.GET_POLICY, target_obj=backup)
        return backup

    @staticmethod
    def _check_chain(context, backup):
        """The backup and every parent it needs are ``available``.

        A parent whose record is gone is no reason to refuse: that is what
        the verification reports (``parent_missing``).
        """
        member = backup
        seen = set()
        while member is not None and member.id not in seen:
            seen.add(member.id)
            if member.status != fields.BackupStatus.AVAILABLE:
                if member is backup:
                    reason = _('backup %(id)s is %(status)s, not '
                               'available') % {'id': member.id,
                                               'status': member.status}
                else:
                    reason = _('backup %(parent)s, on which backup %(id)s '
                               'depends, is %(status)s, not available') % {
                        'parent': member.id, 'id': backup.id,
                        'status': member.status}
                raise exception.InvalidBackup(reason=reason)
            if not member.parent_id:
                break
            try:
                # (Admin: a parent may be another user's of the project.)
                member = objects.Backup.get_by_id(
                    group_records.admin(context), member.parent_id)
            except exception.BackupNotFound:
                member = None

    @staticmethod
    def _host(context, backup):
        """The backup's host if it is up, else another up cinder-backup.

        Another host is one in the backup's availability zone (Cinder's
        restore chooses the same way); it must have the backup's driver,
        which cinder-backup checks before it reads anything.
        """
        return group_api.API._backup_host(
            context, backup.availability_zone,
            [backup.host] if backup.host else [])

    def _cast(self, context, host, backup, verification_id, deep):
        try:
            self.rpcapi.verify_backup(context, host, backup.id,
                                      verification_id, deep)
        except Exception as exc:
            with excutils.save_and_reraise_exception():
                LOG.error('Could not hand the verification of backup '
                          '%(backup)s to cinder-backup on %(host)s: %(exc)s',
                          {'backup': backup.id, 'host': host,
                           'exc': type(exc).__name__})
                records.fail(backup, _('could not hand the verification to '
                                       'cinder-backup on %s') % host)

    # -- answers -------------------------------------------------------------

    @staticmethod
    def _entry(backup):
        record = records.read(backup) or {}
        entry = {key: record.get(key) for key in _RECORD_KEYS}
        entry['status'] = entry['status'] or UNVERIFIED
        entry['problems'] = list(entry['problems'] or [])
        entry['problem_count'] = entry['problem_count'] or len(
            entry['problems'])
        entry.update({
            'backup_id': backup.id,
            'backup_name': backup.display_name,
            'backup_status': backup.status,
            'volume_id': backup.volume_id,
            'project_id': backup.project_id,
            'created_at': backup.created_at,
        })
        return entry
