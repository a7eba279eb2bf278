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

import types

from oslo_vmware import exceptions as vexc
import testtools

from cinder_vmdk_backup.vmware import leftovers
from tests.unit.vmware import fakes


def vm_list(*names):
    objects = [types.SimpleNamespace(
        obj=fakes.moref(name),
        propSet=[types.SimpleNamespace(name='name', val=name)])
        for name in names]
    return types.SimpleNamespace(objects=objects)


class LeftoversTestCase(testtools.TestCase):

    node = leftovers.node_tag('host-a:cinder-backup')

    def test_name_round_trip(self):
        name = leftovers.temp_vm_name(self.node, 'vol-1', now=1700000000.7)
        self.assertEqual('cvb-tmp-%s-1700000000-vol-1' % self.node, name)
        self.assertEqual((self.node, 1700000000),
                         leftovers.parse_temp_vm_name(name))
        self.assertLessEqual(len(leftovers.temp_vm_name(
            self.node, 'f' * 36)), 80)

    def test_only_ours_and_older_than_start(self):
        other = leftovers.node_tag('host-b:cinder-backup')
        self.assertTrue(leftovers.is_leftover(
            'cvb-tmp-%s-1000000000-v' % self.node, self.node, 1000000001))
        self.assertFalse(leftovers.is_leftover(
            'cvb-tmp-%s-1000000002-v' % self.node, self.node, 1000000001))
        self.assertFalse(leftovers.is_leftover(
            'cvb-tmp-%s-1000000000-v' % other, self.node, 1000000001))
        self.assertFalse(leftovers.is_leftover('volume-1', self.node,
                                               1000000001))
        self.assertFalse(leftovers.is_leftover(None, self.node, 1))

    def test_remove_leftovers(self):
        names = ['volume-1', 'cvb-tmp-%s-1000000000-v1' % self.node,
                 'cvb-tmp-%s-2000000000-v2' % self.node,
                 'cvb-tmp-%s-1000000000-v3' % self.node]
        results = [vm_list(*names[:2]), vm_list(*names[2:]), None]
        session = fakes.FakeSession(handlers={
            'get_objects': lambda *a, **k: results.pop(0),
            'continue_retrieval': lambda *a, **k: results.pop(0)})
        session.handlers['Destroy_Task'] = self._destroy
        removed = leftovers.remove_leftovers(session, self.node,
                                             1500000000)
        self.assertEqual([names[3]], removed)

    def _destroy(self, ref):
        if ref.value.endswith('-v1'):
            raise vexc.VimException('locked')
        return fakes.moref('task', 'Task')
