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

"""Nova 34's own VMware driver attaches the plugin's volumes in vcsim.

Nova's ``VMwareVCDriver`` runs in Nova's virtualenv
(``tests/functional/vmware/nova_compute.py``) against the test's patched
vcsim: it spawns a server booted from a volume (a VM without disks), gives
its volume connector to the plugin's VMDK driver, attaches the volume with
the connection info the plugin returns (``driver_volume_type`` ``vmdk``)
and detaches it, as nova-compute does. No stand-in makes vCenter state
here: the instance VM, its disk and its extraConfig ``volume-<id>`` are
Nova's. The plugin then backs up the in-use volume (Cinder's clone of an
attached volume finds the disk through that state) and the restore holds
the volume's bytes.
"""

import json
import os
import subprocess  # nosec B404: Nova's driver runs in its own virtualenv
import uuid

from cinder.objects import fields
from cinder.tests.unit import utils as test_utils
from oslo_vmware import vim_util

from tests.functional.deploy import nova as instance_vm
from tests.functional.vmware import test_backup_flows as flows

NOVA_VENV = os.environ.get('CVB_NOVA_VENV', '/opt/cvb-nova')
NOVA_PYTHON = os.path.join(NOVA_VENV, 'bin', 'python')
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'nova_compute.py')
_ANSWER_TIMEOUT = 300


class NovaDriverError(Exception):
    pass


class NovaCompute(object):
    """Nova's VMwareVCDriver in a child process (nova_compute.py)."""

    def __init__(self, vcsim, log_path):
        self.log_path = log_path
        self.process = subprocess.Popen(  # nosec B603
            [NOVA_PYTHON, WORKER, log_path], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            universal_newlines=True)
        self.node = self._request({
            'host_ip': vcsim.host, 'host_port': vcsim.port,
            'host_username': vcsim.username,
            'host_password': vcsim.password, 'ca_file': vcsim.ca_file,
            'cluster_name': vcsim.cluster_name,
            'datastore_regex': '^%s$' % vcsim.datastore_name})

    def _request(self, request):
        self.process.stdin.write(json.dumps(request) + '\n')
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise NovaDriverError('Nova driver process exited (rc %s); '
                                  'see %s' % (self.process.wait(),
                                              self.log_path))
        answer = json.loads(line)
        if 'error' in answer:
            raise NovaDriverError('%s\n%s' % (answer['error'],
                                              answer['trace']))
        return answer['ok']

    def __getattr__(self, call):
        if call.startswith('_'):
            raise AttributeError(call)
        return lambda **kwargs: self._request(dict(kwargs, call=call))

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(_ANSWER_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class NovaVmwareDriverTestCase(flows.VmdkBackupTestBase):

    def setUp(self):
        super(NovaVmwareDriverTestCase, self).setUp()
        if not os.path.exists(NOVA_PYTHON):
            self.skipTest('no Nova virtualenv at %s' % NOVA_VENV)
        self.nova = NovaCompute(self.vcsim,
                                os.path.join(self.tmp, 'nova-compute.log'))
        self.addCleanup(self.nova.close)

    def _spawn(self):
        instance_uuid = str(uuid.uuid4())
        self.nova.spawn(uuid=instance_uuid, name='cvb-bfv')
        self.addCleanup(self._destroy, instance_uuid)
        return instance_uuid

    def _destroy(self, instance_uuid):
        if instance_uuid in self.nova.instances():
            self.nova.destroy(uuid=instance_uuid)

    def _instance_vm(self, instance_uuid):
        refs = self.session.invoke_api(
            self.session.vim, 'FindAllByUuid',
            self.session.vim.service_content.searchIndex,
            uuid=instance_uuid, vmSearch=True, instanceUuid=True)
        self.assertEqual(1, len(refs))
        return refs[0]

    def _disk_files(self, vm_ref):
        return [d.backing.fileName
                for d in instance_vm._devices(self.session, vm_ref)
                if d.__class__.__name__ == 'VirtualDisk']

    def test_resource_of_the_cluster(self):
        resource = self.nova.resource()
        self.assertEqual(self.nova.node, resource['hypervisor_hostname'])
        self.assertGreater(resource['vcpus'], 0)
        self.assertGreater(resource['local_gb'], 0)

    def test_attach_backup_in_use_and_detach(self):
        disk = flows.Disk(seed=b'nova')
        instance_uuid = self._spawn()
        vm_ref = self._instance_vm(instance_uuid)
        self.assertEqual([], self._disk_files(vm_ref))
        connector = self.nova.connector(uuid=instance_uuid)
        self.assertEqual(vim_util.get_moref_value(vm_ref),
                         connector['instance'])

        volume = self._vmdk_volume(disk=disk, status='in-use')
        info = self.driver.initialize_connection(volume, connector)
        self.assertEqual('vmdk', info['driver_volume_type'])
        self.nova.attach_volume(uuid=instance_uuid, connection_info=info,
                                mountpoint='/dev/sdb')
        test_utils.attach_volume(self.ctxt, volume.id, instance_uuid,
                                 'compute-1', '/dev/sdb')
        volume.refresh()
        # The instance VM has the backing's disk file, found the way
        # Cinder finds it: by the UUID in extraConfig volume-<id>.
        path = self._vmdk_path(volume)
        self.assertEqual([path], self._disk_files(vm_ref))
        instance = instance_vm.InstanceVM(self.session, instance_uuid,
                                          self.vcsim.datastore_name)
        instance.ref = vm_ref
        self.assertEqual(path, instance.disk_path(volume.id))

        # backup create --force: the volume service clones the attached
        # volume from the instance's VM, the backup reads the clone.
        clone = self._create_volume(host=flows.VMDK_HOST, size=1,
                                    status='available')
        self.driver.create_cloned_volume(clone, volume)
        self._assert_data(disk, clone)
        backup = self._backup(volume, device=clone)
        self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(backup, new)
        self._assert_data(disk, new)

        self.nova.detach_volume(uuid=instance_uuid, connection_info=info,
                                mountpoint='/dev/sdb')
        self.assertEqual([], self._disk_files(vm_ref))
        self._assert_data(disk, volume)
        self.nova.destroy(uuid=instance_uuid)
        self.assertNotIn(instance_uuid, self.nova.instances())
        self._assert_data(disk, volume)
        self._assert_nothing_left()
