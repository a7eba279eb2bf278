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

"""The stand-in instance's own rules, without a deployment (fast).

Its Cinder calls go to a recording stand-in of ``Deployment.attachments``
answering as cinder_attachments.py does; libvirt is not used (no domain is
defined).
"""

import json
import os
from xml.etree import ElementTree

import fixtures
import testtools

from tests.functional.deploy import kvm_instance


class _Attachments(object):
    """Answers cinder_attachments.py's commands; records them."""

    def __init__(self, directory, fmt='qcow2', kind='local'):
        self.directory = directory
        self.fmt = fmt
        self.kind = kind
        self.calls = []
        self._volumes = {}

    def attachments(self, command, *args):
        self.calls.append((command,) + args)
        if command == 'reserve':
            attachment = 'att-%d' % len(self.calls)
            self._volumes[attachment] = args[0]
            return {'id': attachment}
        if command == 'update':
            volume = self._volumes[args[0]]
            path = os.path.join(self.directory, 'volume-%s' % volume)
            open(path, 'a').close()
            return {'id': args[0], 'connection_info': {
                'driver_volume_type': self.kind,
                'data': {'device_path': path, 'format': self.fmt,
                         'name': 'volume-%s' % volume,
                         'access_mode': 'rw'}}}
        return None


class KvmInstanceTest(testtools.TestCase):

    def setUp(self):
        super(KvmInstanceTest, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path

    def _instance(self, **kwargs):
        dep = _Attachments(self.dir, **kwargs)
        return dep, kvm_instance.KvmInstance(dep, conn=None)

    def test_attach_in_order_with_mountpoints(self):
        dep, instance = self._instance()
        instance.attach('v1')
        instance.attach('v2')
        self.assertEqual(['/dev/vda', '/dev/vdb'],
                         [d.mountpoint for d in instance.disks])
        updates = [json.loads(c[2]) for c in dep.calls if c[0] == 'update']
        self.assertEqual(['/dev/vda', '/dev/vdb'],
                         [u['mountpoint'] for u in updates])
        self.assertEqual([('reserve', 'v1', instance.id)],
                         [c for c in dep.calls if c[0] == 'reserve'][:1])
        self.assertEqual(2, len([c for c in dep.calls
                                 if c[0] == 'complete']))

    def test_domain_xml_is_file_qcow2_disks(self):
        _dep, instance = self._instance()
        instance.attach('v1')
        instance.attach('v2')
        root = ElementTree.fromstring(instance.domain_xml())
        self.assertEqual(instance.id, root.findtext('uuid'))
        self.assertEqual('instance-%s' % instance.id.replace('-', '')[:8],
                         root.findtext('name'))
        disks = root.findall('devices/disk')
        self.assertEqual(['file', 'file'], [d.get('type') for d in disks])
        self.assertEqual(['qcow2', 'qcow2'],
                         [d.find('driver').get('type') for d in disks])
        self.assertEqual(['vda', 'vdb'],
                         [d.find('target').get('dev') for d in disks])
        self.assertEqual([os.path.join(self.dir, 'volume-v%d' % i)
                          for i in (1, 2)],
                         [d.find('source').get('file') for d in disks])
        self.assertEqual(['v1', 'v2'], [d.findtext('serial') for d in disks])

    def test_raw_format_refused_and_attachment_deleted(self):
        dep, instance = self._instance(fmt='raw')
        self.assertRaisesRegex(kvm_instance.InstanceError, 'not qcow2',
                               instance.attach, 'v1')
        self.assertEqual([], instance.disks)
        self.assertEqual(['reserve', 'update', 'delete'],
                         [c[0] for c in dep.calls])

    def test_non_file_connection_refused(self):
        _dep, instance = self._instance(kind='iscsi')
        self.assertRaisesRegex(kvm_instance.InstanceError,
                               'not a file volume', instance.attach, 'v1')

    def test_detach_deletes_the_attachment(self):
        dep, instance = self._instance()
        instance.attach('v1')
        instance.attach('v2')
        instance.detach('v1')
        self.assertEqual(['/dev/vdb'],
                         [d.mountpoint for d in instance.disks])
        self.assertEqual(('delete', 'att-1'), dep.calls[-1])
        # The freed target is the next one used.
        self.assertEqual('/dev/vda', instance.attach('v3').mountpoint)
