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

"""The HotAdd transport against vcsim: this host plays the proxy VM.

vcsim started with ``VCSIM_HOTADD_DIR`` (patch 0017) attaches a disk file
added to a VM to a loop device of this host and links it as
``<dir>/wwn-0x<disk uuid>``, as udev does in a proxy VM's guest. A proxy VM
is made in the inventory (no SCSI controller: the plugin adds one), and the
driver the BackupManager loaded finds it by this host's BIOS UUID (the
file the plugin reads is pointed at one holding the proxy's). A volume
attached to a running instance is backed up through a snapshot of the
instance's VM (``_read_frozen_disk``: HotAdd of the snapshot's disk),
restored through the manager into a new volume and into an existing one
(HotAdd of a new disk, then the swap), byte for byte. Each fallback takes
NBD and says why; a process killed with a disk hot-added leaves it to the
next start's janitor.
"""

import inspect
import json
import os
import re
import subprocess
import sys
import uuid

from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import utils as test_utils
import fixtures
from oslo_utils import units
from oslo_vmware import vim_util
from testtools import content

from cinder_vmdk_backup.vmware import hotadd
from cinder_vmdk_backup.vmware import vmsnapshot
from tests.functional.deploy import nova
from tests.functional import vcsim as vcsim_fixture
from tests.functional.vmware import test_backup_flows as flows
from tests.functional.vmware import test_janitor

REGIONS = ((0, 64 * units.Ki), (7 * units.Mi + 512, units.Mi),
           (units.Gi - units.Mi, units.Mi))
PROXY_UUID = '4230aa11-0000-4000-8000-%012x' % os.getpid()
TIMEOUT = 5


def _hotadd_supported():
    return 'hotadd' in inspect.signature(
        vcsim_fixture.VcsimFixture.__init__).parameters


def _tail(path, size=3000):
    """The end of a worker's log, or why there is none."""
    try:
        with open(path) as f:
            return f.read()[-size:]
    except OSError as exc:
        return 'no log: %s' % exc


class HotAddTestCase(flows.VmdkBackupTestBase):

    def setUp(self):
        if not _hotadd_supported():
            self.skipTest('the vcsim fixture has no HotAdd (patch 0017)')
        # The base class starts vcsim: with HotAdd on (the default of its
        # hotadd argument, for this test).
        init = vcsim_fixture.VcsimFixture.__init__
        defaults = dict(zip(('vms', 'extra_args', 'hotadd'),
                            init.__defaults__), hotadd=True)
        self.useFixture(fixtures.MockPatchObject(
            init, '__defaults__', (defaults['vms'], defaults['extra_args'],
                                   True)))
        super(HotAddTestCase, self).setUp()
        self.assertIsNotNone(self.vcsim.hotadd_dir)
        self.addOnException(lambda _exc: self.addDetail(
            'vcsim-hotadd', content.text_content('\n'.join(
                line for line in self.vcsim.log().splitlines()
                if 'hotadd' in line))))
        uuid_file = os.path.join(self.tmp, 'product_uuid')
        with open(uuid_file, 'w') as f:
            f.write(PROXY_UUID.upper() + '\n')
        self.useFixture(fixtures.MockPatchObject(hotadd, 'PRODUCT_UUID',
                                                 uuid_file))
        self._set('vmware_backup_hotadd_device_dir', self.vcsim.hotadd_dir)
        self._set('vmware_backup_hotadd_device_timeout', TIMEOUT)
        self.proxy = self._make_proxy()
        self.instance_uuid = str(uuid.uuid4())
        self.instance = nova.InstanceVM(self.session, self.instance_uuid,
                                        self.vcsim.datastore_name)
        self.instance.create()
        self.disk = flows.Disk(regions=REGIONS, seed=b'hot')
        self.volume = self._attached_volume(self.disk)
        # vcsim attaches a loop device for every disk added to any VM with
        # an existing file: the instance's too. Only the proxy's count.
        self.instance_links = set(os.listdir(self.vcsim.hotadd_dir))

    # -- helpers -----------------------------------------------------------

    def _set(self, name, value):
        self.override_config(name, value, group='vmdk')

    def _first(self, type_, prop, pick=None):
        result = self.session.invoke_api(
            vim_util, 'get_objects', self.session.vim, type_, 100,
            properties_to_collect=[prop])
        for obj in result.objects:
            values = {p.name: p.val for p in obj.propSet}
            if pick is None or pick(obj, values):
                return obj.obj, values.get(prop)
        raise AssertionError('no %s' % type_)

    def _make_proxy(self, name='backup-proxy', host=None, host_pool=None,
                    bios_uuid=PROXY_UUID):
        """A powered-on VM without disks or controllers: this host."""
        factory = self.session.vim.client.factory
        _cluster, pool = self._first('ClusterComputeResource',
                                     'resourcePool')
        _dc, folder = self._first('Datacenter', 'vmFolder')
        spec = factory.create('ns0:VirtualMachineConfigSpec')
        spec.name = name
        spec.uuid = bios_uuid
        spec.guestId = 'otherGuest64'
        spec.numCPUs = 1
        spec.memoryMB = 64
        files = factory.create('ns0:VirtualMachineFileInfo')
        files.vmPathName = '[%s]' % self.vcsim.datastore_name
        spec.files = files
        task = self.session.invoke_api(self.session.vim, 'CreateVM_Task',
                                       folder, config=spec, pool=pool)
        ref = self.session.wait_for_task(task).result
        if host is not None:
            # (vcsim cannot create a VM on a host without datastores.)
            relocate = factory.create('ns0:VirtualMachineRelocateSpec')
            relocate.host = host
            relocate.pool = host_pool
            task = self.session.invoke_api(self.session.vim,
                                           'RelocateVM_Task', ref,
                                           spec=relocate)
            self.session.wait_for_task(task)
        task = self.session.invoke_api(self.session.vim, 'PowerOnVM_Task',
                                       ref)
        self.session.wait_for_task(task)
        return ref

    def _prop(self, ref, name):
        return self.session.invoke_api(vim_util, 'get_object_property',
                                       self.session.vim, ref, name)

    def _proxy_disks(self, proxy=None):
        return [d.backing.fileName
                for d in hotadd._devices(self.session, proxy or self.proxy)
                if d.__class__.__name__ == 'VirtualDisk']

    def _attached_volume(self, disk):
        volume = self._vmdk_volume(disk=disk, status='in-use')
        info = self.driver.initialize_connection(volume,
                                                 self.instance.connector())
        self.instance.attach_volume(info)
        test_utils.attach_volume(self.ctxt, volume.id, self.instance.uuid,
                                 'compute-1', '/dev/sdb')
        return objects.Volume.get_by_id(self.ctxt, volume.id)

    def _power(self, on):
        task = self.session.invoke_api(
            self.session.vim, 'PowerOnVM_Task' if on else 'PowerOffVM_Task',
            self.instance.ref)
        self.session.wait_for_task(task)

    def _destroy_proxy(self):
        """Power the proxy VM off and delete it."""
        for method in ('PowerOffVM_Task', 'Destroy_Task'):
            self.session.wait_for_task(self.session.invoke_api(
                self.session.vim, method, self.proxy))

    def _snapshots(self):
        info = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim,
            self.instance.ref, 'snapshot')
        return list(getattr(info, 'rootSnapshotList', None) or [])

    def _snapshot_backup(self):
        """The attached volume, backed up through a snapshot of its VM."""
        self._power(True)
        driver = self.manager._backend_drivers.driver_for(self.volume)
        service = self.manager._backup_service_class(self.ctxt)
        backup = test_utils.create_backup(
            self.ctxt, self.volume.id, status=fields.BackupStatus.CREATING,
            size=self.volume.size, service=self.manager.driver_name)
        results = driver.backup_volumes(self.ctxt, [(backup, service, None)],
                                        facts={})
        self.assertNotIsInstance(results[backup.id], Exception)
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        self._power(False)
        return backup

    def _proxy_links(self):
        return sorted(set(os.listdir(self.vcsim.hotadd_dir)) -
                      self.instance_links)

    def _nfc_gets(self):
        return len(re.findall(r'nfc GET', self.vcsim.log()))

    def _assert_no_hotadd_left(self):
        self.assertEqual([], self._proxy_disks())
        self.assertEqual([], self._proxy_links())
        self.assertEqual([], self._snapshots())
        self._assert_nothing_left()

    # -- the tests ---------------------------------------------------------

    def test_backup_and_restores_over_hotadd(self):
        backup = self._snapshot_backup()
        self.assertIn('transport HotAdd', self.logs.output)
        self.assertEqual(0, self._nfc_gets())
        self.assertRegex(self.logs.output, r'HotAdd read of .*: 1073741824 '
                                           r'bytes read')
        self._assert_no_hotadd_left()

        # Into a new volume (a new backing, written over HotAdd), streamed
        # from the backup's chain.
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(backup, new)
        self.assertEqual('available', new.status)
        self._assert_data(self.disk, new)
        # Into an existing volume holding other data (a temporary VM's new
        # disk written over HotAdd, then swapped in), through a staging
        # file this time.
        self._set('vmware_backup_restore_streaming', False)
        other = self._vmdk_volume(disk=flows.Disk(seed=b'other'))
        self._restore(backup, other)
        self.assertEqual('available', other.status)
        self._assert_data(self.disk, other)
        self.assertEqual(0, self._nfc_gets())
        self.assertNotIn('ImportVApp', self.vcsim.log())
        self.assertEqual(2, self.logs.output.count(
            'into volume %s: transport HotAdd' % new.id) +
            self.logs.output.count(
                'into volume %s: transport HotAdd' % other.id))
        self._assert_no_hotadd_left()

    def test_failed_restore_leaves_the_volume_as_it_was(self):
        backup = self._snapshot_backup()
        name = '%s-%05d' % (backup.service_metadata, 1)
        path = os.path.join(self.posix_dir, backup.container, name)
        with open(path, 'r+b') as f:
            f.seek(os.path.getsize(path) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x01]))
        before = flows.Disk(seed=b'other')
        other = self._vmdk_volume(disk=before)
        files = self._vmdk_files()
        self._restore(backup, other, fail=True)
        self.assertIn('into volume %s: transport HotAdd' % other.id,
                      self.logs.output)
        # The data went into a temporary VM's disk, never the volume's:
        # the volume holds what it held, the temporary VM and its disk
        # are gone, nothing stays on the proxy.
        self._assert_data(before, other)
        self.assertEqual(files, self._vmdk_files())
        self._assert_no_hotadd_left()

    def test_no_proxy_vm_takes_nbd(self):
        self._set('vmware_backup_proxy_vm', 'no-such-vm')
        backup = self._snapshot_backup()
        self.assertIn('transport NBD; HotAdd passed over: no VM of this '
                      'vCenter is the proxy no-such-vm', self.logs.output)
        self.assertEqual(1, self._nfc_gets())
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(backup, new)
        self._assert_data(self.disk, new)
        self.assertIn('into volume %s: transport NBD; HotAdd passed over'
                      % new.id, self.logs.output)
        self._assert_no_hotadd_left()

    def test_device_never_appears_takes_nbd(self):
        # This host looks for the device where vcsim does not link it.
        self._set('vmware_backup_hotadd_device_dir', self._dir('no-udev'))
        self._set('vmware_backup_hotadd_device_timeout', 1)
        backup = self._snapshot_backup()
        self.assertRegex(
            self.logs.output, r'transport NBD; HotAdd passed over: .*no '
                              r'device \S+/no-udev/wwn-0x[0-9a-f]+ appeared '
                              r'within 1 s')
        self.assertEqual(1, self._nfc_gets())
        # The disk that was added went again, its loop device with it.
        self._assert_no_hotadd_left()
        new = self._vmdk_volume(backing=False, status='creating')
        self._restore(backup, new)
        self._assert_data(self.disk, new)
        self.assertIn('into volume %s: transport NBD' % new.id,
                      self.logs.output)
        self._assert_no_hotadd_left()
        self.assertEqual([], self._temp_vms())

    def test_datastore_not_mounted_on_the_proxys_host_takes_nbd(self):
        # A new standalone host mounts no datastore; the proxy runs there.
        _dc, host_folder = self._first('Datacenter', 'hostFolder')
        spec = self.session.vim.client.factory.create('ns0:HostConnectSpec')
        spec.hostName = 'proxy-host.example.org'
        task = self.session.invoke_api(
            self.session.vim, 'AddStandaloneHost_Task', host_folder,
            spec=spec, addConnected=True)
        host = self.session.wait_for_task(task).result
        compute = self._prop(host, 'parent')
        pool = self._prop(compute, 'resourcePool')
        self.assertEqual([], hotadd._array(self._prop(host, 'datastore'),
                                           'ManagedObjectReference'))
        self._destroy_proxy()
        self.proxy = self._make_proxy('far-proxy', host=host,
                                      host_pool=pool)
        self.assertEqual(host.value, self._prop(self.proxy,
                                                'runtime.host').value)
        self._snapshot_backup()
        self.assertRegex(self.logs.output,
                         r'transport NBD; HotAdd passed over: datastore '
                         r'\S+ is not mounted on host %s of the proxy VM'
                         % host.value)
        self.assertEqual(1, self._nfc_gets())
        self._assert_no_hotadd_left()

    def test_device_smaller_than_the_volume_fails_the_backup(self):
        # The volume says 2 GiB, its disk (and so the device) holds 1 GiB.
        self.volume.size = 2
        self.volume.save()
        self._power(True)
        driver = self.manager._backend_drivers.driver_for(self.volume)
        service = self.manager._backup_service_class(self.ctxt)
        backup = test_utils.create_backup(
            self.ctxt, self.volume.id, status=fields.BackupStatus.CREATING,
            size=2, service=self.manager.driver_name)
        results = driver.backup_volumes(self.ctxt, [(backup, service, None)],
                                        facts={})
        self._power(False)
        error = results[backup.id]
        self.assertIsInstance(error, Exception)
        self.assertRegex(str(error), r'the device \S+ ended before its '
                                     r'size: it holds 1073741824 bytes of '
                                     r'the 2147483648 to read')
        self.assertIn('volume %s' % self.volume.id, str(error))
        # Not read again over NBD: the same disk would be as short.
        self.assertEqual(0, self._nfc_gets())
        self.assertNotIn('transport NBD', self.logs.output)
        # Nothing stays: the disk left the proxy, the snapshot is gone.
        self._assert_no_hotadd_left()
        self.assertEqual([], os.listdir(self.posix_dir))

    def test_proxy_looked_up_once_and_again_when_recreated(self):
        finds = []
        real = hotadd.find_proxy

        def find_proxy(session, wanted, max_objects=100):
            found = real(session, wanted, max_objects)
            finds.append(found[0] and found[0].value)
            return found

        self.useFixture(fixtures.MockPatchObject(
            hotadd, 'find_proxy', autospec=True, side_effect=find_proxy))
        self._snapshot_backup()
        self._snapshot_backup()
        self.assertEqual([self.proxy.value], finds)
        self.assertEqual(2, self.logs.output.count('transport HotAdd'))
        self._assert_no_hotadd_left()

        # The proxy VM deleted and made again (same BIOS UUID, another
        # reference): the cached one fails, the new one is found.
        self._destroy_proxy()
        old = self.proxy
        self.proxy = self._make_proxy()
        self.assertNotEqual(old.value, self.proxy.value)
        self._snapshot_backup()
        self.assertEqual([old.value, self.proxy.value], finds)
        self.assertEqual(3, self.logs.output.count('transport HotAdd'))
        self.assertEqual(0, self._nfc_gets())
        self._assert_no_hotadd_left()

    def test_killed_with_a_disk_hot_added_janitor_removes_it(self):
        self._power(True)
        conf = os.path.join(self.tmp, 'worker.conf')
        with open(os.path.join(self.tmp, 'cinder.conf')) as f:
            text = f.read()
        with open(conf, 'w') as f:
            f.write(text + '[vmdk]\nvmware_backup_hotadd_device_dir = %s\n'
                    'vmware_backup_hotadd_device_timeout = %d\n'
                    'vmware_backup_proxy_vm = backup-proxy\n'
                    % (self.vcsim.hotadd_dir, TIMEOUT))
        spec = {'conf': conf, 'log': os.path.join(self.tmp, 'worker.log'),
                'vm': self.instance.ref.value, 'volume_id': self.volume.id,
                'vmdk_path': self._vmdk_path(self.volume),
                'size': units.Gi}
        with open(spec['log'] + '.json', 'w') as f:
            json.dump(spec, f)
        process = subprocess.Popen(  # nosec B603
            [sys.executable, '-m', 'tests.functional.vmware.hotadd_worker',
             spec['log'] + '.json'], cwd=test_janitor.TOP,
            env=dict(os.environ, PYTHONPATH=test_janitor.TOP),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        self.addCleanup(process.wait)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        # Cinder prints a line of its own first when it runs with native
        # threads (OS_CINDER_DISABLE_EVENTLET_PATCHING).
        line = ''
        for raw in process.stdout:
            line = raw.decode().strip()
            if line.startswith('attached'):
                break
        self.assertEqual('attached DeviceSource', line, _tail(spec['log']))
        # Killed with the snapshot's disk on the proxy.
        process.kill()
        process.wait()
        process.stdout.close()
        [left] = self._proxy_disks()
        self.assertEqual(1, len(self._proxy_links()))
        [snapshot] = self._snapshots()
        self.assertTrue(snapshot.name.startswith(
            vmsnapshot.SNAPSHOT_PREFIX))
        records = [n for n in os.listdir(self.staging_dir)
                   if hotadd.RECORD_KIND in n]
        self.assertEqual(1, len(records))
        # The next start: the disk goes from the proxy, then the snapshot.
        self._new_driver()
        self.assertEqual([], self._proxy_disks())
        self.assertEqual([], self._proxy_links())
        self.assertEqual([], self._snapshots())
        self.assertEqual([], os.listdir(self.staging_dir))
        self.assertIn('Removed disk %s from the proxy VM' % left,
                      self.logs.output)
