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

"""Views of the instance-group API: backup sets and groups.

The set list is exactly the specification's "List": one entry per backup
set with its member backups; keys group.api does not fill are answered as
null rather than left out, so a client can rely on the shape.
"""

SET_KEYS = ('id', 'group_id', 'project_id', 'user_id', 'name',
            'description', 'status', 'group_type_id', 'created_at')

BACKUP_KEYS = (
    'id', 'user_id', 'project_id', 'volume_id', 'availability_zone',
    'container', 'parent_id', 'status', 'fail_reason', 'size',
    'display_name', 'display_description', 'service_metadata', 'service',
    'object_count', 'temp_volume_id', 'temp_snapshot_id',
    'num_dependent_backups', 'snapshot_id', 'data_timestamp',
    'restore_volume_id', 'encryption_key_id', 'created_at')

GROUP_KEYS = ('id', 'name', 'description', 'status', 'project_id',
              'user_id', 'group_type_id', 'instance_id',
              'availability_zone', 'created_at')

VOLUME_KEYS = ('id', 'mountpoint', 'boot')


def _pick(record, keys):
    return {key: record.get(key) for key in keys}


class ViewBuilder(object):
    """Builds the answer bodies from group.api's plain dicts."""

    def backup(self, backup):
        view = _pick(backup, BACKUP_KEYS)
        view['metadata'] = dict(backup.get('metadata') or {})
        return view

    def backup_set(self, backup_set):
        view = _pick(backup_set, SET_KEYS)
        view['backups'] = [self.backup(b)
                           for b in backup_set.get('backups') or []]
        return view

    def sets(self, backup_sets):
        """The specification's List: a JSON list, not an object."""
        return [self.backup_set(s) for s in backup_sets]

    def group(self, group):
        view = _pick(group, GROUP_KEYS)
        view['volumes'] = [_pick(v, VOLUME_KEYS)
                           for v in group.get('volumes') or []]
        return view

    def detail(self, group):
        return {'instance_group': self.group(group)}

    def detail_list(self, groups):
        return {'instance_groups': [self.group(g) for g in groups]}
