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

"""The instance-group API over the real group.api and Cinder's database.

Nothing is replaced: Cinder's v3 router with the extension, the plugin's
and Cinder's policies, ``cinder_vmdk_backup.group.api.API`` (imported by
the controller as in cinder-api) and Cinder's objects on its test
database (SQLite). Operations that cast to cinder-backup are left to the
service part's tests; these cover the groups' life: create, find, list
sets, scoping, delete. Skipped while ``group.api`` is not there.
"""

from cinder import objects

objects.register_all()

from cinder import context  # noqa: E402
from cinder.tests.unit import utils as cinder_utils  # noqa: E402
from oslo_serialization import jsonutils  # noqa: E402
from oslo_utils import importutils  # noqa: E402

from cinder_vmdk_backup.api.contrib import instance_groups  # noqa: E402
from tests.unit.api.contrib import test_instance_groups as base  # noqa

INSTANCE_ID = base.INSTANCE_ID
PROJECT = base.PROJECT


class RealGroupApiTestCase(base.RouterTestCase):

    def setUp(self):
        super(RealGroupApiTestCase, self).setUp()
        try:
            importutils.import_class(instance_groups.GROUP_API_CLASS)
        except ImportError:
            self.skipTest('cinder_vmdk_backup.group.api is not there yet')
        # The controller imports the real API.
        self.load_group_api.side_effect = lambda: importutils.import_class(
            instance_groups.GROUP_API_CLASS)()
        self.ctx = context.RequestContext(base.USER, PROJECT,
                                          roles=['member', 'reader'],
                                          is_admin=False)
        admin = context.get_admin_context()
        vtype = cinder_utils.create_volume_type(admin, name='fast')
        self.volumes = {}
        for mountpoint in ('/dev/vda', '/dev/vdb'):
            volume = cinder_utils.create_volume(
                self.ctx, status='in-use', volume_type_id=vtype.id,
                host='node1@fast#pool1', availability_zone='nova',
                bootable=mountpoint == '/dev/vda')
            cinder_utils.attach_volume(self.ctx, volume.id, INSTANCE_ID,
                                       'node1', mountpoint)
            self.volumes[mountpoint] = volume.id

    def json(self, response, status):
        self.assertEqual(status, response.status_int, response.body)
        return jsonutils.loads(response.body) if response.body else None

    def test_group_life(self):
        created = self.json(self.request('POST', body={'instance_group': {
            'instance_id': INSTANCE_ID, 'description': 'web'}}),
            201)['instance_group']
        group_id = created['id']
        self.assertEqual('instance-%s' % INSTANCE_ID, created['name'])
        self.assertEqual(INSTANCE_ID, created['instance_id'])
        self.assertEqual(PROJECT, created['project_id'])
        self.assertEqual(
            sorted([{'id': self.volumes['/dev/vda'],
                     'mountpoint': '/dev/vda', 'boot': True},
                    {'id': self.volumes['/dev/vdb'],
                     'mountpoint': '/dev/vdb', 'boot': False}],
                   key=lambda v: v['mountpoint']),
            sorted(created['volumes'], key=lambda v: v['mountpoint']))
        for volume_id in self.volumes.values():
            self.assertEqual(group_id, objects.Volume.get_by_id(
                self.ctx, volume_id).group_id)

        # A second group of the same instance is refused.
        self.json(self.request('POST', body={'instance_group': {
            'instance_id': INSTANCE_ID}}), 400)

        found = self.json(self.request(
            'GET', query='?instance_id=%s' % INSTANCE_ID,
            roles=('reader',)), 200)['instance_groups']
        self.assertEqual([group_id], [g['id'] for g in found])

        self.assertEqual([], self.json(self.request(
            'GET', '/' + group_id, roles=('reader',)), 200))
        self.json(self.request('GET', '/' + group_id,
                               project_id=base.OTHER_PROJECT), 404)
        self.json(self.request('DELETE', '/' + group_id,
                               roles=('reader',)), 403)

        self.json(self.request('DELETE', '/' + group_id), 200)
        self.json(self.request('GET', '/' + group_id), 404)
        for volume_id in self.volumes.values():
            volume = objects.Volume.get_by_id(self.ctx, volume_id)
            self.assertIsNone(volume.group_id)
            self.assertEqual('in-use', volume.status)

    def test_instance_without_volumes(self):
        other = base.OTHER_INSTANCE
        message = self.assertFault(self.request('POST', body={
            'instance_group': {'instance_id': other}}), 400)
        self.assertIn(other, message)
