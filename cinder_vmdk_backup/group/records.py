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

"""Backup sets in Cinder's records: what cinder-api and cinder-backup share.

A backup set is a ``GroupSnapshot``; its member backups are found by their
metadata (``group_snapshot_id``). An operation on a set (restore, restore
to new volumes) leaves its outcome on the set's member backups under
:data:`OPERATION_KEY` as ``"<operation id> <state> <host>"`` (state
``running``, ``ok`` or ``error``) and the reason of a failure under
:data:`ERROR_KEY`: that is what a synchronous request in cinder-api waits
for, and how the janitor of a restarted cinder-backup finds the operations
its host left running.
"""

from oslo_utils import timeutils

from cinder.db import api as db
from cinder import objects

GROUP_KEY = 'instance_group_id'
SET_KEY = 'group_snapshot_id'
INSTANCE_KEY = 'instance_id'
MOUNTPOINT_KEY = 'mountpoint'
BOOT_KEY = 'boot_volume'
CONSISTENCY_KEY = 'consistency'
RETIRED_KEY = 'instance_group_retired'
OPERATION_KEY = 'instance_group_operation'
ERROR_KEY = 'instance_group_operation_error'
NEW_VOLUME_KEY = 'instance_group_new_volume'
SERVER_KEY = 'instance_group_server'

RUNNING = 'running'
OK = 'ok'
ERROR = 'error'

#: Longest text a metadata value or a description holds.
TEXT_LIMIT = 255


def admin(context):
    return context if context.is_admin else context.elevated()


def group_backups(context, group_id, read_deleted='no'):
    """Every backup of the group's sets (retired ones included)."""
    ctxt = admin(context)
    return list(objects.BackupList.get_all(
        ctxt, filters={'metadata': {GROUP_KEY: group_id}}))


def set_backups(context, group_snapshot_id):
    """The member backups of one set, in the order of their mountpoints."""
    backups = objects.BackupList.get_all(
        admin(context), filters={'metadata': {SET_KEY: group_snapshot_id}})
    return sorted(backups, key=lambda b: ((b.metadata or {}).get(
        MOUNTPOINT_KEY, ''), b.volume_id))


def is_retired(backup):
    return (backup.metadata or {}).get(RETIRED_KEY) == 'True'


def set_metadata(backup, **values):
    """Add string values to a backup's metadata and save it."""
    metadata = dict(backup.metadata or {})
    metadata.update({key: str(value)[:TEXT_LIMIT]
                     for key, value in values.items()})
    backup.metadata = metadata
    backup.save()


def clear_metadata(backup, *keys):
    """Remove keys from a backup's metadata (saved, deletes included)."""
    metadata = dict(backup.metadata or {})
    if any(key in metadata for key in keys):
        for key in keys:
            metadata.pop(key, None)
        backup.metadata = metadata
        backup.save()


def mark_operation(backups, operation_id, state, host, reason=None):
    for backup in backups:
        values = {OPERATION_KEY: '%s %s %s' % (operation_id, state, host)}
        if reason is not None:
            values[ERROR_KEY] = reason
        set_metadata(backup, **values)


def operation_of(backup):
    """``(operation id, state, host)`` of a backup's last operation."""
    value = (backup.metadata or {}).get(OPERATION_KEY)
    if not value:
        return None, None, None
    parts = value.split(' ', 2)
    return tuple(parts + [None] * (3 - len(parts)))


def unlock_group(context, group_id):
    """Put an instance group back to ``available`` (the end of a lock)."""
    db.group_update(admin(context), group_id, {'status': 'available',
                                               'updated_at':
                                                   timeutils.utcnow()})
