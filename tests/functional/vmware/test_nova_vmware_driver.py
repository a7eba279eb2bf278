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

"""Nova 34's own VMware driver with the plugin's volumes, in vcsim.

Nova's ``VMwareVCDriver`` runs in Nova's virtualenv
(``tests/functional/vmware/nova_compute.py``) against the test's patched
vcsim and is called as nova-compute calls it: ``get_volume_connector``,
``spawn`` of a server booted from a volume (no image), ``attach_volume``
and ``detach_volume`` with the connection info the plugin's VMDK driver
returns (``driver_volume_type`` ``vmdk``), ``power_off``/``power_on``,
``destroy``. No stand-in makes vCenter state here: the instance VM, its
disks and its extraConfig ``volume-<id>`` are Nova's. On that state the
plugin backs up an in-use volume (Cinder's clone of an attached volume)
and an instance's volumes with one snapshot of its running VM, restores
them into the attached volumes of the stopped instance, and Nova still
finds and detaches the restored disks.

The patched vcsim needs patches 0018 (a disk's UUID is its file's, as
vSphere's ddb.uuid: Nova records the backing's disk UUID and everyone
finds the instance's disk by it) and 0019 (SCSI controllers report
``scsiCtlrUnitNumber``: Nova's second attach reads it).
"""

import json
import os
import subprocess  # nosec B404: Nova's driver runs in its own virtualenv
import uuid

from cinder.objects import fields
from cinder.tests.unit import utils as test_utils
from oslo_vmware import vim_util
from testtools import content

from tests.functional.deploy import nova as instance_vm
from tests.functional import vcsim as vcsim_fixture
from tests.functional.vmware import test_backup_flows as flows
from tests.functional.vmware import test_group_backup as group_flows

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
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, 'ab') as log:
            self.process = subprocess.Popen(  # nosec B603
                [NOVA_PYTHON, WORKER, log_path], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, universal_newlines=True)
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

    # The group backup as the group endpoint calls it (on self.volumes).
    _driver_of_manager = group_flows.GroupBackupTestCase._driver_of_manager
    _group_backup = group_flows.GroupBackupTestCase._group_backup
    _snapshots = group_flows.GroupBackupTestCase._snapshots

    def setUp(self):
        super(NovaVmwareDriverTestCase, self).setUp()
        if not os.path.exists(NOVA_PYTHON):
            self.skipTest('no Nova virtualenv at %s' % NOVA_VENV)
        log_path = os.path.join(self.tmp, 'nova-compute.log')
        self.addCleanup(self._assert_no_password, log_path)
        self.addOnException(lambda _exc_info: self.addDetail(
            'nova-compute.log', content.content_from_file(
                log_path, buffer_now=True)))
        self.nova = NovaCompute(self.vcsim, log_path)
        self.addCleanup(self.nova.close)

    def _assert_no_password(self, log_path):
        with open(log_path, errors='replace') as log:
            self.assertNotIn(self.vcsim.password, log.read())

    def _spawn(self):
        instance_uuid = str(uuid.uuid4())
        self.nova.spawn(uuid=instance_uuid, name='cvb-nova')
        self.addCleanup(self._destroy, instance_uuid)
        return instance_uuid

    def _destroy(self, instance_uuid):
        if instance_uuid in self.nova.instances():
            self.nova.destroy(uuid=instance_uuid)

    def _attach(self, volume, instance_uuid, mountpoint, connector):
        """Cinder's attachment and its record (Nova attaches the disk)."""
        info = self.driver.initialize_connection(volume, connector)
        self.assertEqual('vmdk', info['driver_volume_type'])
        test_utils.attach_volume(self.ctxt, volume.id, instance_uuid,
                                 'compute-1', mountpoint)
        volume.refresh()
        return info

    def _instance(self, instance_uuid, vm_ref):
        """Nova's VM, seen through the stand-in's readers."""
        instance = instance_vm.InstanceVM(self.session, instance_uuid,
                                          self.vcsim.datastore_name)
        instance.ref = vm_ref
        return instance

    def _disk_path(self, vm_ref, instance_uuid, volume):
        """The instance's disk of the volume, found as Cinder finds it."""
        return self._instance(instance_uuid, vm_ref).disk_path(volume.id)

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
        inventory = self.nova.inventory(provider_uuid=str(uuid.uuid4()))
        self.assertEqual(resource['vcpus'], inventory['VCPU']['total'])
        self.assertEqual(resource['memory_mb'],
                         inventory['MEMORY_MB']['total'])
        self.assertEqual(resource['local_gb'], inventory['DISK_GB']['total'])

    def test_attach_backup_in_use_and_detach(self):
        disk = flows.Disk(seed=b'nova')
        instance_uuid = self._spawn()
        vm_ref = self._instance_vm(instance_uuid)
        self.assertEqual([], self._disk_files(vm_ref))
        connector = self.nova.connector(uuid=instance_uuid)
        self.assertEqual(vim_util.get_moref_value(vm_ref),
                         connector['instance'])

        volume = self._vmdk_volume(disk=disk, status='in-use')
        info = self._attach(volume, instance_uuid, '/dev/sdb', connector)
        self.nova.attach_volume(uuid=instance_uuid, connection_info=info,
                                mountpoint='/dev/sdb')
        # The instance VM has the backing's disk file, found the way
        # Cinder finds it: by the UUID in extraConfig volume-<id>.
        path = self._vmdk_path(volume)
        self.assertEqual([path], self._disk_files(vm_ref))
        self.assertEqual(path, self._disk_path(vm_ref, instance_uuid, volume))

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

    def test_boot_from_volume_group_backup_and_restore(self):
        self.disks = [flows.Disk(seed=b'root'), flows.Disk(seed=b'data')]
        instance_uuid = str(uuid.uuid4())
        # Before spawn, as nova-compute does: no VM yet, no 'instance'.
        connector = self.nova.connector(uuid=instance_uuid)
        self.assertNotIn('instance', connector)
        root = self._vmdk_volume(disk=self.disks[0], status='in-use')
        root_info = self._attach(root, instance_uuid, '/dev/sda', connector)
        self.nova.spawn(uuid=instance_uuid, name='cvb-bfv',
                        root_connection_info=root_info)
        self.addCleanup(self._destroy, instance_uuid)
        vm_ref = self._instance_vm(instance_uuid)
        connector = self.nova.connector(uuid=instance_uuid)
        data = self._vmdk_volume(disk=self.disks[1], status='in-use')
        data_info = self._attach(data, instance_uuid, '/dev/sdb', connector)
        self.nova.attach_volume(uuid=instance_uuid,
                                connection_info=data_info,
                                mountpoint='/dev/sdb')
        self.volumes = [root, data]
        self.assertEqual(sorted(self._vmdk_path(v) for v in self.volumes),
                         sorted(self._disk_files(vm_ref)))

        # Running (spawn powered it on): one snapshot of Nova's VM.
        driver = self._driver_of_manager()
        self.assertEqual('running', driver.instance_power_state(
            self.ctxt, instance_uuid, self.volumes)[0])
        backups, facts = self._group_backup(self.volumes)
        self.assertEqual('crash-consistent', facts['consistency'])
        self.assertEqual([], self._snapshots(
            self._instance(instance_uuid, vm_ref)))
        for disk in self.disks:
            disk.write(0, b'\xee' * 4096)  # what the guest writes later
        for disk, volume in zip(self.disks, self.volumes):
            vcsim_fixture.seed_disk(self.vcsim, self._vmdk_path(volume),
                                    b'\xee' * 4096)
            self._assert_data(disk, volume)

        # Stopped through Nova: restored into the attached volumes.
        self.nova.power_off(uuid=instance_uuid)
        self.assertEqual('shutoff', driver.instance_power_state(
            self.ctxt, instance_uuid, self.volumes)[0])
        for backup, volume, seed in zip(backups, self.volumes,
                                        (b'root', b'data')):
            self._restore(backup, volume)
            self.assertEqual(fields.BackupStatus.AVAILABLE, backup.status)
            path = self._disk_path(vm_ref, instance_uuid, volume)
            self.assertEqual(self._vmdk_path(volume), path)
            self._assert_data(flows.Disk(seed=seed), volume, path)
        self._assert_nothing_left()

        # Nova still finds and manages the restored disks.
        self.nova.power_on(uuid=instance_uuid)
        self.nova.detach_volume(uuid=instance_uuid,
                                connection_info=data_info,
                                mountpoint='/dev/sdb')
        self.assertEqual([self._vmdk_path(root)], self._disk_files(vm_ref))
        self.nova.destroy(uuid=instance_uuid, root_connection_info=root_info)
        self.assertNotIn(instance_uuid, self.nova.instances())
        for volume, seed in zip(self.volumes, (b'root', b'data')):
            self._assert_data(flows.Disk(seed=seed), volume)
