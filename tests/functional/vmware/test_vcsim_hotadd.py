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

"""vcsim's DisableMethods (patch 0016) and HotAdd (patch 0017).

Through oslo.vmware, as the plugin calls them: the methods a source
disabled fail with vSphere's MethodDisabled fault naming that source; a
disk hot-added to a proxy VM appears as a loop device under a
``wwn-0x<uuid>`` link, a snapshot's disk read-only with the snapshot's
bytes, a writable disk writing into the VM's disk; removal, vcsim's exit
and the fixture's cleanup after a SIGKILL leave no loop device attached.
"""

import os
import shutil
import sys
import uuid

from oslo_utils import units
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util
import testtools

from tests.functional import vcsim as vcsim_fixture

SOURCE = 'org.openstack.storage'
LOCKED = ('PowerOnVM_Task', 'CreateSnapshot_Task', 'ReconfigVM_Task',
          'RelocateVM_Task', 'Destroy_Task')


# oslo.vmware's invoke_api has a parameter named ``method``, as has
# DisableMethods: called through a function of a module instead.
def disable_methods(vim, entities, methods, source):
    factory = vim.client.factory
    requests = []
    for name in methods:
        request = factory.create('ns0:DisabledMethodRequest')
        request.method = name
        request.reasonId = 'restore'
        requests.append(request)
    return vim.DisableMethods(vim.service_content.authorizationManager,
                              entity=entities, method=requests,
                              sourceId=source)


def enable_methods(vim, entities, methods, source):
    return vim.EnableMethods(vim.service_content.authorizationManager,
                             entity=entities, method=list(methods),
                             sourceId=source)


def _this_module():
    return sys.modules[__name__]


def _task(session, method, ref, **kwargs):
    task = session.invoke_api(session.vim, method, ref, **kwargs)
    return getattr(session.wait_for_task(task), 'result', None)


def _vm_and_disk(session, name):
    result = session.invoke_api(
        vim_util, 'get_objects', session.vim, 'VirtualMachine', 100,
        ['name', 'config.hardware.device'])
    for obj in result.objects:
        props = dict((p.name, p.val) for p in obj.propSet)
        if props['name'] == name:
            disks = [d for d in props['config.hardware.device'].VirtualDevice
                     if d.__class__.__name__ == 'VirtualDisk']
            return obj.obj, disks[0] if disks else None
    raise AssertionError('no VM %s' % name)


class DisableMethodsTestCase(testtools.TestCase):
    """One vcsim (one powered-off VM per pool) for the class."""

    @classmethod
    def setUpClass(cls):
        super(DisableMethodsTestCase, cls).setUpClass()
        vcsim = vcsim_fixture.VcsimFixture(vms=1,
                                           extra_args=['-autostart=false'])
        vcsim.setUp()
        cls.addClassCleanup(vcsim.cleanUp)
        cls.vcsim = vcsim
        cls.session = vcsim.session()

    def _vm(self):
        vm, _disk = _vm_and_disk(self.session, 'DC0_H0_VM0')
        return vm

    def _disable(self, vm, methods, source=SOURCE):
        self.session.invoke_api(_this_module(), 'disable_methods',
                                self.session.vim, [vm], methods, source)

    def _enable(self, vm, methods, source=SOURCE):
        self.session.invoke_api(_this_module(), 'enable_methods',
                                self.session.vim, [vm], methods, source)

    def _disabled(self, vm):
        value = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, vm,
            'disabledMethod')
        return sorted(getattr(value, 'string', None) or [])

    def _assert_disabled(self, source, method, ref, **kwargs):
        exc = self.assertRaises(vexc.VimFaultException, _task,
                                self.session, method, ref, **kwargs)
        self.assertEqual(['MethodDisabled'], exc.fault_list)
        self.assertEqual(source, exc.details.get('source'))
        self.assertIn(source, str(exc))

    def test_disabled_methods_fail_with_their_source(self):
        vm = self._vm()
        self.addCleanup(self._enable, vm, [])
        self._disable(vm, LOCKED)
        self.assertEqual(sorted(LOCKED), self._disabled(vm))

        self._assert_disabled(SOURCE, 'PowerOnVM_Task', vm)
        self._assert_disabled(SOURCE, 'CreateSnapshot_Task', vm, name='s',
                              memory=False, quiesce=False)
        spec = self.session.vim.client.factory.create(
            'ns0:VirtualMachineConfigSpec')
        spec.annotation = 'changed during a restore'
        self._assert_disabled(SOURCE, 'ReconfigVM_Task', vm, spec=spec)
        self._assert_disabled(SOURCE, 'Destroy_Task', vm)
        # A method not disabled still works; the VM is unchanged.
        self.assertEqual('poweredOff', self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, vm,
            'runtime.powerState'))

        # Another source's EnableMethods does not lift the lock.
        self._enable(vm, ['PowerOnVM_Task'], source='org.example.other')
        self._assert_disabled(SOURCE, 'PowerOnVM_Task', vm)

        self._enable(vm, LOCKED)
        self.assertEqual([], self._disabled(vm))
        _task(self.session, 'PowerOnVM_Task', vm)
        self.addCleanup(_task, self.session, 'PowerOffVM_Task', vm)
        _task(self.session, 'ReconfigVM_Task', vm, spec=spec)

    def test_union_over_sources(self):
        vm = self._vm()
        self.addCleanup(self._enable, vm, [], 'org.example.b')
        self.addCleanup(self._enable, vm, [])
        self._disable(vm, ['PowerOnVM_Task', 'RelocateVM_Task'])
        self._disable(vm, ['PowerOnVM_Task'], source='org.example.b')
        self.assertEqual(['PowerOnVM_Task', 'RelocateVM_Task'],
                         self._disabled(vm))
        # Enabling everything the first source disabled (no method named)
        # leaves the second source's lock.
        self._enable(vm, [])
        self.assertEqual(['PowerOnVM_Task'], self._disabled(vm))
        self._assert_disabled('org.example.b', 'PowerOnVM_Task', vm)
        self._enable(vm, ['PowerOnVM_Task'], source='org.example.b')
        self.assertEqual([], self._disabled(vm))

    def test_unknown_entity(self):
        missing = vim_util.get_moref('vm-does-not-exist', 'VirtualMachine')
        self.assertRaises(
            vexc.ManagedObjectNotFoundException, self.session.invoke_api,
            _this_module(), 'disable_methods', self.session.vim, [missing],
            ['PowerOnVM_Task'], SOURCE)


def _loop_devices_usable():
    return (os.geteuid() == 0 and os.path.exists('/dev/loop-control')
            and shutil.which('losetup') is not None)


def hot_add(session, proxy, file_name, mode):
    """Add the disk file to the proxy VM; the device as the proxy lists it.

    On the proxy's first SCSI controller, the next free unit.
    """
    factory = session.vim.client.factory
    devices = session.invoke_api(
        vim_util, 'get_object_property', session.vim, proxy,
        'config.hardware.device').VirtualDevice
    controller = [d for d in devices
                  if d.__class__.__name__.endswith('SCSIController')][0]
    used = set(d.unitNumber for d in devices
               if getattr(d, 'controllerKey', None) == controller.key)
    backing = factory.create('ns0:VirtualDiskFlatVer2BackingInfo')
    backing.fileName = file_name
    backing.diskMode = mode
    disk = factory.create('ns0:VirtualDisk')
    disk.key = -1
    disk.controllerKey = controller.key
    disk.unitNumber = min(set(range(16)) - used - {7})
    disk.capacityInKB = 0
    disk.backing = backing
    change = factory.create('ns0:VirtualDeviceConfigSpec')
    change.operation = 'add'
    change.device = disk
    spec = factory.create('ns0:VirtualMachineConfigSpec')
    spec.deviceChange = [change]
    _task(session, 'ReconfigVM_Task', proxy, spec=spec)
    devices = session.invoke_api(
        vim_util, 'get_object_property', session.vim, proxy,
        'config.hardware.device').VirtualDevice
    return [d for d in devices if d.__class__.__name__ == 'VirtualDisk'
            and d.backing.fileName == file_name][-1]


def hot_remove(session, proxy, disk):
    factory = session.vim.client.factory
    change = factory.create('ns0:VirtualDeviceConfigSpec')
    change.operation = 'remove'
    change.device = disk
    spec = factory.create('ns0:VirtualMachineConfigSpec')
    spec.deviceChange = [change]
    _task(session, 'ReconfigVM_Task', proxy, spec=spec)


def link_name(disk):
    return 'wwn-0x' + disk.backing.uuid.replace('-', '').replace(
        ' ', '').lower()


@testtools.skipUnless(_loop_devices_usable(),
                      'loop devices need root, /dev/loop-control, losetup')
class HotAddTestCase(testtools.TestCase):
    """vcsim with HotAdd on; a proxy VM with a known BIOS UUID."""

    @classmethod
    def setUpClass(cls):
        super(HotAddTestCase, cls).setUpClass()
        vcsim = vcsim_fixture.VcsimFixture(
            vms=1, extra_args=['-autostart=false'], hotadd=True)
        vcsim.setUp()
        cls.addClassCleanup(vcsim.cleanUp)
        cls.vcsim = vcsim
        cls.session = vcsim.session()
        cls.bios_uuid = str(uuid.uuid4())
        cls.instance_uuid = str(uuid.uuid4())
        cls.proxy = vcsim_fixture.make_proxy_vm(
            vcsim, cls.session, bios_uuid=cls.bios_uuid,
            instance_uuid=cls.instance_uuid)

    def _device(self, disk):
        link = os.path.join(self.vcsim.hotadd_dir, link_name(disk))
        self.assertTrue(os.path.islink(link), link)
        device = os.readlink(link)
        self.assertRegex(device, r'^/dev/loop[0-9]+$')
        return link, device

    def _assert_released(self, link, device, data_file):
        self.assertFalse(os.path.lexists(link))
        backing = vcsim_fixture.loop_backing_file(device)
        self.assertFalse(backing and backing.startswith(data_file),
                         '%s still attached to %s' % (device, backing))

    def test_proxy_found_by_its_uuids(self):
        search = self.session.vim.service_content.searchIndex
        found = self.session.invoke_api(
            self.session.vim, 'FindByUuid', search, uuid=self.bios_uuid,
            vmSearch=True)
        self.assertEqual(self.proxy.value, found.value)
        found = self.session.invoke_api(
            self.session.vim, 'FindByUuid', search, uuid=self.instance_uuid,
            vmSearch=True, instanceUuid=True)
        self.assertEqual(self.proxy.value, found.value)

    def test_snapshot_disk_read_only_shows_the_snapshot(self):
        vm, disk = _vm_and_disk(self.session, 'DC0_H0_VM0')
        path = disk.backing.fileName
        before = os.urandom(256 * units.Ki)
        after = os.urandom(128 * units.Ki)
        vcsim_fixture.seed_disk(self.vcsim, path, before, offset=4096)
        snap = _task(self.session, 'CreateSnapshot_Task', vm, name='bk',
                     memory=False, quiesce=False)
        self.addCleanup(_task, self.session, 'RemoveSnapshot_Task', snap,
                        removeChildren=False)
        frozen = vcsim_fixture.read_disk(self.vcsim, path)
        vcsim_fixture.seed_disk(self.vcsim, path, after, offset=4096)

        # The snapshot's disk, by the name its configuration gives it.
        config = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, snap,
            'config')
        snap_disk = [d for d in config.hardware.device
                     if d.__class__.__name__ == 'VirtualDisk'][0]
        added = hot_add(self.session, self.proxy, snap_disk.backing.fileName,
                        'independent_nonpersistent')
        self.assertRegex(added.backing.uuid,
                         r'^6000C29[0-9a-f]-[0-9a-f]{4}-[0-9a-f]{4}-'
                         r'[0-9a-f]{4}-[0-9a-f]{12}$')
        link, device = self._device(added)
        with open(device, 'rb') as f:
            shown = f.read()
        self.assertEqual(len(frozen), len(shown))
        self.assertEqual(frozen, shown)
        self.assertNotEqual(vcsim_fixture.read_disk(self.vcsim, path), shown)
        self.assertRaises(OSError, self._write_device, device, b'x' * 512)

        hot_remove(self.session, self.proxy, added)
        self._assert_released(link, device, self.vcsim.datastore_path)
        # Removing the device (no file operation) keeps the disks.
        self.assertEqual(after, vcsim_fixture.read_disk(
            self.vcsim, path)[4096:4096 + len(after)])

    @staticmethod
    def _write_device(device, data, offset=0):
        fd = os.open(device, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def test_writable_disk_writes_reach_the_vms_disk(self):
        vm, disk = _vm_and_disk(self.session, 'DC0_H0_VM0')
        path = disk.backing.fileName
        added = hot_add(self.session, self.proxy, path, 'persistent')
        link, device = self._device(added)
        self.assertEqual(self.vcsim.datastore_file(path)[:-5] + '-flat.vmdk',
                         vcsim_fixture.loop_backing_file(device))
        data = os.urandom(192 * units.Ki)
        self._write_device(device, data, 64 * units.Ki)
        hot_remove(self.session, self.proxy, added)
        self._assert_released(link, device, self.vcsim.datastore_path)
        raw = vcsim_fixture.read_disk(self.vcsim, path)
        self.assertEqual(data, raw[64 * units.Ki:64 * units.Ki + len(data)])
        # vcsim made two distinct serials for two adds of one file.
        again = hot_add(self.session, self.proxy, path, 'persistent')
        self.addCleanup(hot_remove, self.session, self.proxy, again)
        self.assertNotEqual(added.backing.uuid, again.backing.uuid)

    def test_missing_file_fails_and_leaves_nothing(self):
        self.assertRaises(
            vexc.FileNotFoundException, hot_add, self.session, self.proxy,
            '[%s] nothere/nothere.vmdk' % self.vcsim.datastore_name,
            'independent_nonpersistent')
        self.assertEqual({}, self.vcsim.hotadd_links())


@testtools.skipUnless(_loop_devices_usable(),
                      'loop devices need root, /dev/loop-control, losetup')
class HotAddExitTestCase(testtools.TestCase):
    """What vcsim's exit leaves: one vcsim per test."""

    def _attached(self):
        vc = self.useFixture(vcsim_fixture.VcsimFixture(
            vms=1, extra_args=['-autostart=false'], hotadd=True))
        session = vc.session()
        proxy = vcsim_fixture.make_proxy_vm(vc, session)
        _vm, disk = _vm_and_disk(session, 'DC0_H0_VM0')
        added = hot_add(session, proxy, disk.backing.fileName,
                        'independent_nonpersistent')
        link = os.path.join(vc.hotadd_dir, link_name(added))
        device = os.readlink(link)
        self.assertTrue(vcsim_fixture.loop_backing_file(device))
        return vc, link, device

    def test_sigterm_detaches(self):
        vc, link, device = self._attached()
        vc.stop()
        self.assertFalse(os.path.lexists(link))
        backing = vcsim_fixture.loop_backing_file(device) or ''
        self.assertFalse(backing.startswith(vc.tmp))
        self.assertEqual([], vc.release_loop_devices())

    def test_sigkill_leaves_them_to_the_fixture(self):
        vc, link, device = self._attached()
        vc.kill()
        # vcsim could not clean up: the device is still attached.
        self.assertTrue(os.path.islink(link))
        self.assertTrue(vcsim_fixture.loop_backing_file(device).startswith(
            vc.tmp))
        self.assertEqual([device], vc.release_loop_devices())
        self.assertFalse(os.path.lexists(link))
        backing = vcsim_fixture.loop_backing_file(device) or ''
        self.assertFalse(backing.startswith(vc.tmp))
