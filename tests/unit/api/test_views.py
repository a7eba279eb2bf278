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

"""View builders of the instance-group API."""

import datetime

from oslotest import base

from cinder_vmdk_backup.api.views import instance_groups as views

SPEC_SET_KEYS = {'id', 'group_id', 'project_id', 'user_id', 'name',
                 'description', 'status', 'group_type_id', 'backups',
                 'created_at'}
SPEC_BACKUP_KEYS = {
    'id', 'user_id', 'project_id', 'volume_id', 'availability_zone',
    'container', 'parent_id', 'status', 'fail_reason', 'size',
    'display_name', 'display_description', 'service_metadata', 'service',
    'object_count', 'temp_volume_id', 'temp_snapshot_id',
    'num_dependent_backups', 'snapshot_id', 'data_timestamp',
    'restore_volume_id', 'encryption_key_id', 'created_at', 'metadata'}


class ViewBuilderTestCase(base.BaseTestCase):

    def setUp(self):
        super(ViewBuilderTestCase, self).setUp()
        self.builder = views.ViewBuilder()

    def test_set_list_has_the_spec_keys_exactly(self):
        when = datetime.datetime(2026, 12, 6, 8, 0)
        metadata = {'instance_group_id': 'g', 'group_snapshot_id': 's',
                    'instance_id': 'i', 'mountpoint': '/dev/vda'}
        sets = self.builder.sets([{
            'id': 's', 'name': 'backup2', 'created_at': when,
            'group_snapshot_internal': 'x',
            'backups': [{'id': 'b', 'size': 1, 'data_timestamp': when,
                         'metadata': metadata, 'host': 'not shown'}]}])
        (entry,) = sets
        self.assertEqual(SPEC_SET_KEYS, set(entry))
        self.assertEqual('backup2', entry['name'])
        self.assertIsNone(entry['status'])
        self.assertIs(when, entry['created_at'])
        (backup,) = entry['backups']
        self.assertEqual(SPEC_BACKUP_KEYS, set(backup))
        self.assertEqual(metadata, backup['metadata'])
        self.assertIsNot(metadata, backup['metadata'])
        self.assertIsNone(backup['parent_id'])

    def test_set_without_backups(self):
        (entry,) = self.builder.sets([{'id': 's', 'backups': None}])
        self.assertEqual([], entry['backups'])

    def test_group(self):
        view = self.builder.detail({
            'id': 'g', 'instance_id': 'i', 'secret': 'x',
            'volumes': [{'id': 'v', 'mountpoint': '/dev/vda', 'boot': True,
                         'host': 'not shown'}]})['instance_group']
        self.assertEqual(set(views.GROUP_KEYS) | {'volumes'}, set(view))
        self.assertEqual([{'id': 'v', 'mountpoint': '/dev/vda',
                           'boot': True}], view['volumes'])
        self.assertEqual({'instance_groups': []},
                         self.builder.detail_list([]))
