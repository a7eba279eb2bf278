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

import os
import stat
import types
from unittest import mock

import fixtures
from oslo_vmware import exceptions as vexc
import testtools

from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import hotadd
from tests.unit.vmware import fakes

moref = fakes.moref
vobj = fakes.vobj

DISK_UUID = '6000C291-aBcD-0000-1111-222233334444'
FILE = '[LocalDS_0] vm1/vm1.vmdk'


def controller(key, bus=0, cls='ParaVirtualSCSIController'):
    return vobj(cls, key=key, busNumber=bus)


def disk(key, controller_key, unit, file_name=FILE, disk_uuid=DISK_UUID):
    return vobj('VirtualDisk', key=key, controllerKey=controller_key,
                unitNumber=unit, backing=vobj(
                    'VirtualDiskFlatVer2BackingInfo', fileName=file_name,
                    uuid=disk_uuid))


class ProxySession(fakes.FakeSession):
    """A proxy VM whose device list follows its reconfigurations."""

    def __init__(self, devices, added_uuid=DISK_UUID, **kwargs):
        super(ProxySession, self).__init__(**kwargs)
        self.devices = list(devices)
        self.added_uuid = added_uuid
        self.specs = []
        self.properties[('proxy', 'config.hardware.device')] = self.devices
        self.handlers['ReconfigVM_Task'] = self._reconfigure

    def _reconfigure(self, vm, spec):
        self.specs.append(spec)
        for change in spec.deviceChange:
            device = change.device
            if change.operation == 'remove':
                self.devices.remove(device)
            elif device.__class__.__name__ == 'VirtualDisk':
                device.backing.uuid = self.added_uuid
                self.devices.append(device)
            else:
                self.devices.append(device)
        return moref('task-reconfig', 'Task')


class DeviceDirMixin(object):

    def make_device(self, data, disk_uuid=DISK_UUID):
        """A file standing in for a block device, linked as udev does."""
        path = os.path.join(self.dev_dir, 'loop-%s' % disk_uuid[-4:])
        with open(path, 'wb') as f:
            f.write(data)
        os.symlink(path, hotadd.device_link(self.dev_dir, disk_uuid))
        return path


class FindProxyTestCase(testtools.TestCase):

    def test_by_bios_uuid_first(self):
        found = moref('vm-proxy')
        session = fakes.FakeSession(handlers={
            'FindByUuid': lambda index, **kw: (
                None if kw['instanceUuid'] else found)})
        uuid = '4210d1c3-0000-1111-2222-333344445555'
        self.assertEqual((found, None), hotadd.find_proxy(session, uuid))
        self.assertEqual([False], [c[2]['instanceUuid']
                                   for c in session.calls])

    def test_by_instance_uuid(self):
        found = moref('vm-proxy')
        session = fakes.FakeSession(handlers={
            'FindByUuid': lambda index, **kw: (
                found if kw['instanceUuid'] else None)})
        self.assertEqual(
            (found, None),
            hotadd.find_proxy(session, '4210d1c3-0000-1111-2222-33334444'
                                       '5555'))

    def test_by_name(self):
        found = moref('vm-9')
        result = types.SimpleNamespace(objects=[
            types.SimpleNamespace(obj=moref('vm-1'), propSet=[
                types.SimpleNamespace(name='name', val='other')]),
            types.SimpleNamespace(obj=found, propSet=[
                types.SimpleNamespace(name='name', val='backup-proxy')])])
        session = fakes.FakeSession(handlers={
            'get_objects': lambda *a, **kw: result,
            'cancel_retrieval': lambda *a: None})
        self.assertEqual((found, None),
                         hotadd.find_proxy(session, 'backup-proxy'))

    def test_unknown_name(self):
        session = fakes.FakeSession(handlers={
            'get_objects': lambda *a, **kw: types.SimpleNamespace(
                objects=[]),
            'continue_retrieval': lambda *a: None})
        proxy, why = hotadd.find_proxy(session, 'nope')
        self.assertIsNone(proxy)
        self.assertIn('no VM of this vCenter is the proxy nope', why)

    @mock.patch.object(hotadd, 'host_uuid', autospec=True)
    def test_default_is_this_hosts_bios_uuid(self, host_uuid):
        host_uuid.return_value = '4210d1c3-0000-1111-2222-333344445555'
        session = fakes.FakeSession(handlers={
            'FindByUuid': lambda index, **kw: None})
        proxy, why = hotadd.find_proxy(session, None)
        self.assertIsNone(proxy)
        self.assertIn('4210d1c3-0000-1111-2222-333344445555', why)
        self.assertEqual(2, len(session.calls))

    @mock.patch.object(hotadd, 'host_uuid', autospec=True,
                       return_value=None)
    def test_no_bios_uuid(self, host_uuid):
        proxy, why = hotadd.find_proxy(fakes.FakeSession(), None)
        self.assertIsNone(proxy)
        self.assertIn('no proxy VM is configured', why)

    def test_host_uuid_file(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'u')
        with open(path, 'w') as f:
            f.write('4210D1C3-AAAA\n')
        self.assertEqual('4210d1c3-aaaa', hotadd.host_uuid(path))
        self.assertIsNone(hotadd.host_uuid(path + '.missing'))


class DatastoreTestCase(testtools.TestCase):

    def session(self, mounts):
        return fakes.FakeSession(properties={
            ('proxy', 'runtime.host'): moref('host-1', 'HostSystem'),
            ('ds-1', 'host'): mounts})

    def mount(self, host, mounted=True, accessible=True):
        return vobj('DatastoreHostMount', key=moref(host, 'HostSystem'),
                    mountInfo=vobj('HostMountInfo', mounted=mounted,
                                   accessible=accessible))

    def test_mounted_on_the_proxys_host(self):
        session = self.session([self.mount('host-2'), self.mount('host-1')])
        self.assertIsNone(hotadd.datastore_reachable(
            session, moref('proxy'), moref('ds-1', 'Datastore')))

    def test_not_mounted_there(self):
        session = self.session([self.mount('host-2')])
        why = hotadd.datastore_reachable(session, moref('proxy'),
                                         moref('ds-1', 'Datastore'))
        self.assertIn('ds-1 is not mounted on host host-1', why)

    def test_inaccessible(self):
        session = self.session([self.mount('host-1', accessible=False)])
        self.assertIsNotNone(hotadd.datastore_reachable(
            session, moref('proxy'), moref('ds-1', 'Datastore')))


class HotAddedDiskTestCase(DeviceDirMixin, testtools.TestCase):

    def setUp(self):
        super(HotAddedDiskTestCase, self).setUp()
        self.dev_dir = self.useFixture(fixtures.TempDir()).path
        self.state = self.useFixture(fixtures.TempDir()).path
        self.logs = self.useFixture(fixtures.FakeLogger())

    def records(self):
        return [n for n in os.listdir(self.state)
                if n.startswith('cvb-owner-%s-' % hotadd.RECORD_KIND)]

    def test_attach_read_only_find_device_detach(self):
        device = self.make_device(b'x' * 8192)
        session = ProxySession([controller(1000), disk(2000, 1000, 0,
                                                       '[ds] proxy.vmdk')])
        with hotadd.HotAddedDisk(session, moref('proxy'), FILE, 8192,
                                 device_dir=self.dev_dir, timeout=1,
                                 state_dir=self.state,
                                 snapshot=moref('snap-1', 'Snapshot')
                                 ) as hot:
            self.assertEqual(device, hot.path)
            [record] = self.records()
            mode = os.stat(os.path.join(self.state, record)).st_mode
            self.assertEqual(0o600, stat.S_IMODE(mode))
            added = session.specs[0].deviceChange
            self.assertEqual(['add'], [c.operation for c in added])
            new = added[0].device
            self.assertEqual((1000, 1), (new.controllerKey, new.unitNumber))
            self.assertEqual('independent_nonpersistent',
                             new.backing.diskMode)
            self.assertEqual(FILE, new.backing.fileName)
            self.assertEqual(8, new.capacityInKB)
        self.assertEqual(['remove'], [c.operation for c in
                                      session.specs[1].deviceChange])
        self.assertEqual(1, len(session.devices) - 1)
        self.assertEqual([], self.records())

    def test_reading_a_device_too_small_removes_the_disk(self):
        self.make_device(b'x' * 8192)
        session = ProxySession([controller(1000)])

        def read():
            with hotadd.reading(session, moref('proxy'), FILE, 16384, 16384,
                                self.dev_dir, 1, self.state):
                self.fail('a short device was read')

        exc = self.assertRaises(hotadd.DeviceTooSmall, read)
        self.assertIn('holds 8192 bytes of the 16384 to read', str(exc))
        self.assertEqual(['add', 'remove'],
                         [c.operation for spec in session.specs
                          for c in spec.deviceChange])
        self.assertEqual(1, len(session.devices))
        self.assertEqual([], self.records())

    def test_same_file_of_another_operation_stays(self):
        self.make_device(b'\0' * 4096)
        theirs = disk(2000, 1000, 0)
        session = ProxySession([controller(1000), theirs])
        with hotadd.HotAddedDisk(session, moref('proxy'), FILE, 4096,
                                 device_dir=self.dev_dir, timeout=1) as hot:
            self.assertEqual(1, hot.device.unitNumber)
        self.assertEqual([theirs], session.devices[1:])

    def test_nothing_removed_when_never_added(self):
        session = ProxySession([controller(1000), disk(2000, 1000, 0)])
        session.properties[('proxy', 'config.hardware.device')] = (
            vexc.VimException('gone'))
        self.assertRaises(vexc.VimException, hotadd.HotAddedDisk(
            session, moref('proxy'), FILE, 4096, device_dir=self.dev_dir,
            timeout=1, state_dir=self.state).__enter__)
        self.assertEqual([], session.specs)
        self.assertEqual([], self.records())

    def test_writable_disk_is_persistent(self):
        self.make_device(b'\0' * 4096)
        session = ProxySession([controller(1000)])
        with hotadd.HotAddedDisk(session, moref('proxy'), FILE, 4096,
                                 writable=True, device_dir=self.dev_dir,
                                 timeout=1):
            pass
        self.assertEqual('independent_persistent',
                         session.specs[0].deviceChange[0].device.backing
                         .diskMode)

    def test_controller_added_when_units_are_full(self):
        self.make_device(b'\0' * 4096)
        devices = [controller(1000, bus=0)] + [
            disk(2000 + u, 1000, u, '[ds] d%d.vmdk' % u)
            for u in hotadd._SCSI_UNITS]
        session = ProxySession(devices)
        with hotadd.HotAddedDisk(session, moref('proxy'), FILE, 4096,
                                 device_dir=self.dev_dir, timeout=1):
            changes = session.specs[0].deviceChange
            self.assertEqual(['ParaVirtualSCSIController', 'VirtualDisk'],
                             [c.device.__class__.__name__ for c in changes])
            self.assertEqual(1, changes[0].device.busNumber)
            self.assertEqual((changes[0].device.key, 0),
                             (changes[1].device.controllerKey,
                              changes[1].device.unitNumber))

    def test_device_never_appears_disk_removed(self):
        session = ProxySession([controller(1000)])
        exc = self.assertRaises(
            hotadd.DeviceNotFound, hotadd.HotAddedDisk(
                session, moref('proxy'), FILE, 4096,
                device_dir=self.dev_dir, timeout=0.3,
                state_dir=self.state).__enter__)
        self.assertIn('wwn-0x6000c291abcd00001111222233334444', str(exc))
        self.assertEqual(['add', 'remove'],
                         [s.deviceChange[0].operation
                          for s in session.specs])
        self.assertEqual([controller(1000).__class__.__name__],
                         [d.__class__.__name__ for d in session.devices])
        self.assertEqual([], self.records())

    def test_failed_removal_leaves_the_record(self):
        self.make_device(b'\0' * 4096)
        session = ProxySession([controller(1000)])
        hot = hotadd.HotAddedDisk(session, moref('proxy'), FILE, 4096,
                                  device_dir=self.dev_dir, timeout=1,
                                  state_dir=self.state).__enter__()
        session.handlers['ReconfigVM_Task'] = vexc.VimException('busy')
        hot.detach()
        self.assertIn('it is removed when this service restarts',
                      self.logs.output)
        self.assertEqual(1, len(self.records()))

    def test_device_link_name(self):
        self.assertEqual('/d/wwn-0x6000c291abcd00001111222233334444',
                         hotadd.device_link('/d', DISK_UUID))
        self.assertEqual('/d/wwn-0x6000c29aabbcc',
                         hotadd.device_link('/d', '60 00 C2 9a-ab bc c'))


class DeviceSourceTestCase(testtools.TestCase):

    def setUp(self):
        super(DeviceSourceTestCase, self).setUp()
        # On the worktree's file system: tmpfs refuses O_DIRECT.
        self.dir = self.useFixture(fixtures.TempDir(
            rootdir=os.path.dirname(__file__))).path
        self.data = os.urandom(3 * hotadd._ALIGN + 100) + bytes(
            hotadd.IO_BYTES)
        self.path = os.path.join(self.dir, 'dev')
        with open(self.path, 'wb') as f:
            f.write(self.data)

    def _check_random_access(self, mode):
        source = hotadd.DeviceSource(self.path, len(self.data),
                                     mode=mode)
        self.addCleanup(source.close)
        for offset, length in ((0, 10), (4095, 4098), (7, 3 * 4096),
                               (len(self.data) - 50, 50),
                               (100, hotadd.IO_BYTES + 300)):
            view = bytearray(length)
            source.read_at(offset, view)
            self.assertEqual(self.data[offset:offset + length], view,
                             (mode, offset, length))
        # Past the device's end: an error, never zeros.
        view = bytearray(b'\1' * 5050)
        exc = self.assertRaises(hotadd.DeviceTooSmall, source.read_at,
                                len(self.data) - 50, view)
        self.assertIn('ended before its size', str(exc))

    def test_direct(self):
        self._check_random_access('direct')

    def test_fadvise(self):
        self._check_random_access('fadvise')

    def test_device_smaller_than_the_volume_refused(self):
        fds = len(os.listdir('/proc/self/fd'))
        for mode in ('direct', 'fadvise'):
            exc = self.assertRaises(hotadd.DeviceTooSmall,
                                    hotadd.DeviceSource, self.path,
                                    len(self.data) + 1, mode=mode)
            self.assertIn('the device %s ended before its size: it holds '
                          '%d bytes of the %d to read' % (
                              self.path, len(self.data),
                              len(self.data) + 1), str(exc))
            # Not a set-up error NBD would get round.
            self.assertIs(False, exc.fallback)
            self.assertIsInstance(exc, errors.TransferError)
        self.assertEqual(fds, len(os.listdir('/proc/self/fd')))

    def test_sequential_fill_and_readinto(self):
        source = hotadd.DeviceSource(self.path, len(self.data))
        self.addCleanup(source.close)
        first = bytearray(1000)
        source.fill(first)
        rest = bytearray(len(self.data))
        n = source.readinto(rest)
        self.assertEqual(len(self.data) - 1000, n)
        self.assertEqual(self.data, bytes(first) + bytes(rest[:n]))
        self.assertEqual(0, source.readinto(bytearray(10)))


class DeviceWriterTestCase(testtools.TestCase):

    def setUp(self):
        super(DeviceWriterTestCase, self).setUp()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 'dev')
        with open(self.path, 'wb') as f:
            f.write(b'\xff' * (2 * hotadd.IO_BYTES))

    def test_writes_data_skips_zero_blocks(self):
        writer = hotadd.DeviceWriter(self.path)
        writer.write_at(5, b'a' * 100)
        writer.write_at(hotadd.IO_BYTES // 2,
                        bytes(hotadd.IO_BYTES) + b'b' * 10)
        writer.finish()
        writer.close()
        with open(self.path, 'rb') as f:
            got = f.read()
        self.assertEqual(b'\xff' * 5 + b'a' * 100 + b'\xff', got[:106])
        # The all-zero block was not written: the new disk reads zeros.
        half = hotadd.IO_BYTES // 2
        self.assertEqual(b'\xff' * hotadd.IO_BYTES,
                         got[half:half + hotadd.IO_BYTES])
        self.assertEqual(b'b' * 10, got[half + hotadd.IO_BYTES:][:10])
        self.assertEqual(110, writer.bytes_written)

    def test_refuses_data_beyond_the_disk(self):
        writer = hotadd.DeviceWriter(self.path)
        self.addCleanup(writer.close)
        self.assertRaises(errors.TransferError, writer.write_at,
                          2 * hotadd.IO_BYTES - 1, b'ab')


class JanitorTestCase(testtools.TestCase):

    def setUp(self):
        super(JanitorTestCase, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.logs = self.useFixture(fixtures.FakeLogger())

    def dead_record(self, file_name, snapshot='snapshot-7'):
        record = hotadd.ownership.Record(
            self.dir, hotadd.RECORD_KIND,
            {'proxy': 'proxy', 'file': file_name, 'snapshot': snapshot})
        os.close(record._fd)  # what a kill does
        record._fd = None
        return record.path

    def test_removes_disks_of_gone_processes_only(self):
        dead = self.dead_record(FILE)
        live = hotadd.ownership.Record(
            self.dir, hotadd.RECORD_KIND,
            {'proxy': 'proxy', 'file': '[ds] live.vmdk', 'snapshot': None})
        self.addCleanup(live.release)
        session = ProxySession([controller(1000), disk(2000, 1000, 0),
                                disk(2001, 1000, 1, '[ds] live.vmdk')])
        self.assertEqual([FILE], hotadd.remove_leftovers(session, self.dir))
        self.assertEqual(['[ds] live.vmdk'],
                         [d.backing.fileName for d in session.devices[1:]])
        self.assertFalse(os.path.exists(dead))
        self.assertTrue(os.path.exists(live.path))
        self.assertIn('a disk of snapshot snapshot-7', self.logs.output)

    def test_disk_gone_already(self):
        dead = self.dead_record(FILE)
        session = ProxySession([controller(1000)])
        self.assertEqual([], hotadd.remove_leftovers(session, self.dir))
        self.assertEqual([], session.specs)
        self.assertFalse(os.path.exists(dead))

    def test_failure_keeps_the_record(self):
        dead = self.dead_record(FILE)
        session = ProxySession([controller(1000), disk(2000, 1000, 0)])
        session.handlers['ReconfigVM_Task'] = vexc.VimException('busy')
        self.assertEqual([], hotadd.remove_leftovers(session, self.dir))
        self.assertTrue(os.path.exists(dead))
        self.assertIn('Could not remove disk', self.logs.output)


class ProxyCacheTestCase(testtools.TestCase):

    def setUp(self):
        super(ProxyCacheTestCase, self).setUp()
        self.find = self.useFixture(fixtures.MockPatchObject(
            hotadd, 'find_proxy', autospec=True)).mock
        self.find.return_value = (moref('vm-proxy'), None)
        self.now = [100.0]
        self.cache = hotadd.ProxyCache(ttl=300, clock=lambda: self.now[0])
        self.session = fakes.FakeSession()

    def test_found_once_per_ttl(self):
        self.assertEqual((moref('vm-proxy'), None, False),
                         self.cache.find(self.session, 'p'))
        self.now[0] += 299
        self.assertEqual((moref('vm-proxy'), None, True),
                         self.cache.find(self.session, 'p'))
        self.assertEqual(1, self.find.call_count)
        self.now[0] += 1
        self.assertEqual((moref('vm-proxy'), None, False),
                         self.cache.find(self.session, 'p'))
        self.assertEqual(2, self.find.call_count)

    def test_other_wanted_value_looked_up(self):
        self.cache.find(self.session, 'p')
        self.cache.find(self.session, 'q')
        self.assertEqual([mock.call(self.session, 'p'),
                          mock.call(self.session, 'q')],
                         self.find.call_args_list)

    def test_not_found_is_not_kept(self):
        self.find.return_value = (None, 'no VM is the proxy p')
        self.assertEqual((None, 'no VM is the proxy p', False),
                         self.cache.find(self.session, 'p'))
        self.find.return_value = (moref('vm-new'), None)
        self.assertEqual((moref('vm-new'), None, False),
                         self.cache.find(self.session, 'p'))

    def test_forget(self):
        self.cache.find(self.session, 'p')
        self.cache.forget(moref('vm-other'))
        self.assertTrue(self.cache.find(self.session, 'p')[2])
        self.cache.forget(moref('vm-proxy'))
        self.find.return_value = (moref('vm-new'), None)
        self.assertEqual((moref('vm-new'), None, False),
                         self.cache.find(self.session, 'p'))
        self.cache.forget()
        self.assertFalse(self.cache.find(self.session, 'p')[2])

    def test_ttl_zero_keeps_nothing(self):
        cache = hotadd.ProxyCache(ttl=0)
        cache.find(self.session, 'p')
        cache.find(self.session, 'p')
        self.assertEqual(2, self.find.call_count)
