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

"""Python client of the plugin's backup-verification API.

The routes of ``/v3/{project_id}/backup-verifications`` and the set route
``POST /instance-groups/{group_id}/verify_backup``, through the same
keystoneauth1 adapter as :class:`~cinder_vmdk_backup.client.
instance_groups.InstanceGroupClient` (Cinder's ``block-storage``
endpoint). A refused request raises an exception of
:mod:`cinder_vmdk_backup.client.exceptions` with Cinder's message.
"""

import time

from oslo_utils import uuidutils

from cinder_vmdk_backup.client import exceptions
from cinder_vmdk_backup.client.i18n import _
from cinder_vmdk_backup.client import instance_groups

_BASE = '/backup-verifications'

#: Statuses of a verification that has not ended.
ACTIVE = ('queued', 'running')


class VerificationTimeout(exceptions.ClientException):
    """A waited-for verification did not end in time."""


class VerificationClient(instance_groups.InstanceGroupClient):
    """Client of the verification routes (same transport and arguments)."""

    def verify(self, backup_id, deep=False):
        """Queue the verification of a backup and of its chain.

        :param deep: also restore it into a scratch file and compare
        :returns: the backup's verification dict, ``status`` ``queued``
        """
        answer = self._request('POST', _BASE, {'verification': {
            'backup_id': backup_id, 'deep': bool(deep)}})
        return answer['verification']

    def get(self, backup_id):
        """The last verification of a backup (``unverified``: none)."""
        answer = self._request('GET', '%s/%s' % (
            _BASE, instance_groups._quote(backup_id)))
        return answer['verification']

    def list(self, status=None, volume_id=None, all_projects=False):
        """The caller's backups, each with its last verification."""
        params = {}
        if status:
            params['status'] = status
        if volume_id:
            params['volume_id'] = volume_id
        if all_projects:
            params['all_tenants'] = 'true'
        answer = self._request('GET', _BASE, params=params or None)
        return answer['verifications']

    def verify_set(self, group_id, instance_id, group_snapshot_id=None,
                   name=None, deep=False):
        """Queue the verification of every backup of an instance's set.

        :returns: ``{verification_id, group_id, group_snapshot_id,
            backups: [verification dict, ...]}``
        """
        body = {'instance_id': instance_id, 'deep': bool(deep)}
        self._set_selector(body, group_snapshot_id, name)
        answer = self._request('POST', '/instance-groups/%s/verify_backup'
                               % instance_groups._quote(group_id), body)
        return answer['verification']

    def resolve_backup_id(self, name_or_id):
        """The id of a backup given by id (used as is) or by name.

        :raises NotFound: no backup of the caller has that name
        :raises NoUniqueMatch: several have it
        """
        if uuidutils.is_uuid_like(name_or_id):
            return name_or_id
        answer = self._request('GET', '/backups',
                               params={'name': name_or_id})
        found = [b['id'] for b in answer.get('backups') or []
                 if b.get('name') == name_or_id]
        if len(found) == 1:
            return found[0]
        if found:
            raise exceptions.NoUniqueMatch(
                _('More than one backup is named %s; give its ID')
                % name_or_id)
        raise exceptions.NotFound(
            _('No backup with a name or ID of %s exists.') % name_or_id)

    def wait(self, backup_ids, verification_id, timeout=3600,
             interval=2.0, progress=None, clock=time.monotonic,
             sleep=time.sleep):
        """Read the backups' verifications until ``verification_id`` ends.

        :param progress: called with each backup's verification dict after
            every read (e.g. to print its progress)
        :returns: the final verification dicts, in the order of
            ``backup_ids``
        :raises VerificationTimeout: not ended within ``timeout`` seconds
        """
        deadline = clock() + timeout
        pending = list(backup_ids)
        done = {}
        while True:
            for backup_id in list(pending):
                entry = self.get(backup_id)
                if progress is not None:
                    progress(entry)
                ours = entry.get('verification_id') == verification_id
                if not ours or entry.get('status') not in ACTIVE:
                    # Another verification took over the record: this one
                    # is over (its result was replaced).
                    done[backup_id] = entry
                    pending.remove(backup_id)
            if not pending:
                return [done[b] for b in backup_ids]
            if clock() >= deadline:
                raise VerificationTimeout(
                    _('The verification %(ver)s of backup(s) %(backups)s '
                      'did not end within %(timeout)s s') %
                    {'ver': verification_id,
                     'backups': ', '.join(pending), 'timeout': timeout})
            sleep(interval)
