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

"""End to end: instance-group backups of a running instance.

Two profiles: kvm (below) and plugin (VMware, vcsim: see
:class:`VmwareInstanceGroupDeploymentTest`, the same scenario with the
instance a vCenter VM as Nova's VMware driver makes it).

The kvm profile of tools/deploy (real cinder-api with the plugin's
extension, scheduler, volume and backup services, RabbitMQ, MariaDB,
Keystone, libvirt and QEMU), driven by the plugin's OpenStack client
commands (``openstack volume instance group ...``) as a user would:

- an instance (kvm_instance.py, a stand-in for Nova until it is in the
  deployment) with a boot volume and two data volumes, each with its own
  data, the tiny guest writing numbered records to all three disks;
- its instance group created from its attachments;
- a backup set while it runs (synchronous), the data changed, a second,
  incremental set (asynchronous, followed in the list);
- a restore refused while the instance runs; the instance stopped, the
  first set restored: every disk as the instance sees it (the domain's
  disk files) holds the first set's data, and the guest's records on the
  three disks show one cut; the instance boots from the restored disk;
- the sets deleted oldest first (the newer one, incremental on it, still
  restores byte for byte, in place and onto new volumes), the group
  delete refused while a set exists, then the group deleted with the
  volumes and the instance still there.
"""

import json
import os
import subprocess  # nosec B404: qemu-io
import time
import uuid

from oslo_utils import units
import testtools

from tests.functional.deploy import deployment
from tests.functional.deploy import kvm_instance
from tests.functional.deploy import nova
from tests.functional.deploy import test_kvm_profile
from tests.functional.deploy import test_openstack_cli as cli
from tests.functional.kvm import guest
from tests.functional import vcsim as vcsim_fixture

RING = 2048
#: Each volume's own data, away from the guest's ring.
REGION = test_kvm_profile.REGION
SET_TIMEOUT = 600
#: VMware: (offset, length) written into each 1 GiB volume before the
#: first set, and what changes before the second.
VMDK_REGIONS = ((0, units.Mi), (300 * units.Mi, units.Mi),
                (units.Gi - units.Mi, units.Mi))
VMDK_CHANGES = ((300 * units.Mi + 64 * units.Ki, 64 * units.Ki),
                (600 * units.Mi, 64 * units.Ki))


class GroupCommands(object):
    """``openstack volume instance group ...`` for a deployment test."""

    def group(self, *args, **kwargs):
        return self.osc('volume', 'instance', 'group', *args, **kwargs)

    def refused(self, *args):
        """The command fails; its error text."""
        try:
            self.group(*args, json=False)
        except deployment.DeploymentError as exc:
            return str(exc)
        self.fail('openstack volume instance group %s was not refused'
                  % ' '.join(args))

    def wait_set(self, group_id, name, statuses=('available',)):
        deadline = time.monotonic() + SET_TIMEOUT
        while True:
            sets = {s['Name']: s for s in
                    self.group('backup', 'list', '--long', group_id)}
            found = sets.get(name)
            if found and found['Status'] in statuses:
                return found
            if found and found['Status'] == 'error':
                self.fail('backup set %s failed: %s' % (name, found))
            if time.monotonic() > deadline:
                self.fail('backup set %s not %s after %ss: %s'
                          % (name, statuses, SET_TIMEOUT, found))
            time.sleep(2)


class InstanceGroupDeploymentTest(GroupCommands,
                                  test_kvm_profile.KvmDeploymentBase):
    """The instance-group scenario on the kvm profile."""

    def region(self, volume_id):
        with open(self.raw(volume_id, '%s.raw' % volume_id), 'rb') as f:
            f.seek(REGION[0])
            return f.read(REGION[1])

    def write_region(self, volume_id, seed):
        subprocess.run(  # nosec B603 B607
            ['qemu-io', '-f', 'qcow2', '-c',
             'write -P %d %d %d' % ((seed, ) + REGION),
             self.dep.volume_path(volume_id)],
            check=True, stdout=subprocess.DEVNULL)

    def one_cut(self, instance, volumes):
        """The newest records on the disks, checked to be one cut.

        The guest writes record N to vda, then vdb, then vdc: a point in
        time holds (a, b, c) with a >= b >= c >= a - 1.
        """
        newest = [guest.consistent_run(instance.records(v)) for v in volumes]
        self.assertTrue(newest[0] >= newest[1] >= newest[2] >= newest[0] - 1,
                        'not one point in time across the disks: %s'
                        % newest)
        return newest

    def test_instance_group_backup_and_restore(self):
        vols = [self.create_volume(name)
                for name in ('ig-boot', 'ig-data1', 'ig-data2')]
        seeds1 = (0x11, 0x22, 0x33)
        seeds2 = (0x44, 0x55, 0x66)
        for vol, seed in zip(vols, seeds1):
            self.write_region(vol, seed)
        kvm_instance.install_guest(self.dep.volume_path(vols[0]), disks=3,
                                   ring=RING)
        instance = kvm_instance.KvmInstance(self.dep, self.conn)
        self.addCleanup(instance.cleanup)
        for vol in vols:
            instance.attach(vol)
        instance.define()

        group = self.group('create', '--name', 'ig-test', instance.id)
        group_id = group['ID']
        self.assertEqual(instance.id, group['Instance ID'])
        members = {m['id']: m for m in group['Volumes']}
        self.assertEqual(set(vols), set(members))
        self.assertEqual('/dev/vda', members[vols[0]]['mountpoint'])
        self.assertTrue(members[vols[0]]['boot'])
        found = self.group('list', '--instance', instance.id)
        self.assertEqual([group_id], [g['ID'] for g in found])

        instance.start()
        for vol in vols:
            self.wait_for_records(instance, vol)

        # A set while the instance runs (synchronous answer).
        first = self.timed('set1_backup', self.group, 'backup', 'create',
                           group_id, '--instance', instance.id,
                           '--name', 'set1')
        self.assertTrue(first['Success'], first)
        self.assertEqual(3, len(first['Backup IDs']))
        self.assertEqual(sorted(vols), sorted(first['Volume IDs']))
        self.assertTrue(instance.running)
        self.wait_set(group_id, 'set1')
        for vol in vols:
            self.assert_no_overlay(vol)

        # Change every disk (instance stopped for qemu-io), run again and
        # take an incremental set, asynchronously.
        instance.stop()
        for vol, seed in zip(vols, seeds2):
            self.write_region(vol, seed)
        instance.start()
        self.wait_for_records(instance, vols[0])
        submitted = self.group('backup', 'create', group_id, '--instance',
                               instance.id, '--name', 'set2', '--async')
        self.assertIn('submitted', submitted['Message'])
        second = self.wait_set(group_id, 'set2')
        # Incremental, volume by volume, on the first set (Cinder's API
        # shows no parent id: each side of the chain says it instead).
        for b in second['Backup IDs']:
            self.assertTrue(self.osc('volume', 'backup', 'show',
                                     b)['is_incremental'], b)
        for b in first['Backup IDs']:
            self.assertTrue(self.osc('volume', 'backup', 'show',
                                     b)['has_dependent_backups'], b)

        # No restore while the instance runs; nothing changed.
        error = self.refused('backup', 'restore', group_id, '--instance',
                             instance.id, '--name', 'set1')
        self.assertIn('shut down', error)
        self.assertTrue(instance.running)

        # Stopped: the first set back onto the instance's own volumes.
        instance.stop()
        restored = self.timed('set1_restore', self.group, 'backup',
                              'restore', group_id, '--instance', instance.id,
                              '--set', first['Backup Set ID'])
        self.assertTrue(restored['Success'], restored)
        for vol, seed in zip(vols, seeds1):
            shown = self.dep.wait('volume', vol, ('in-use',))
            self.assertEqual([instance.id],
                             [a.get('server_id')
                              for a in shown.get('attachments') or []])
            # The domain's own disk file, as the instance sees it.
            self.assertIn("<source file='%s'" % self.dep.volume_path(vol),
                          instance.domain.XMLDesc(0))
            self.assertEqual(bytes([seed]) * REGION[1], self.region(vol),
                             'volume %s does not hold the first set' % vol)
        cut = self.one_cut(instance, vols)
        self.figures['set1_cut'] = cut
        # It boots from the restored boot disk and writes on from there.
        instance.start()
        self.wait_for_records(instance, vols[0], above=cut[0])
        instance.stop()

        # Oldest set first: the newer, incremental one still restores.
        deleted = self.group('backup', 'delete', group_id, '--instance',
                             instance.id, '--name', 'set1')
        self.assertTrue(deleted['Success'], deleted)
        self.assertEqual(['set2'], [s['Name'] for s in self.group(
            'backup', 'list', group_id)])
        restored = self.group('backup', 'restore', group_id, '--instance',
                              instance.id, '--name', 'set2')
        self.assertTrue(restored['Success'], restored)
        for vol, seed in zip(vols, seeds2):
            self.dep.wait('volume', vol, ('in-use',))
            self.assertEqual(bytes([seed]) * REGION[1], self.region(vol))
        self.one_cut(instance, vols)

        # The same set onto new volumes: the original volumes untouched.
        made = self.timed('set2_restore_new', self.group, 'backup',
                          'restore', 'new', group_id, '--instance',
                          instance.id, '--name', 'set2')
        self.assertTrue(made['Success'], made)
        self.assertEqual(3, len(made['New Volume IDs']), made)
        news = dict(zip(made['Volume IDs'], made['New Volume IDs']))
        self.assertEqual(set(vols), set(news))
        for vol, seed in zip(vols, seeds2):
            shown = self.dep.wait('volume', news[vol], ('available',))
            self.assertFalse(shown.get('attachments'), shown)
            self.assertEqual(bytes([seed]) * REGION[1],
                             self.region(news[vol]))
            self.assertEqual(
                guest.consistent_run(instance.records(vol)),
                guest.consistent_run(kvm_instance.read_records(
                    self.dep.volume_path(news[vol]))))
            self.dep.wait('volume', vol, ('in-use',))
        for new in news.values():
            self.osc('volume', 'delete', new, json=False)

        # The group stays while it has a set; then it goes, alone.
        error = self.refused('delete', group_id)
        self.assertIn('backup sets', error)
        self.group('backup', 'delete', group_id, '--instance', instance.id,
                   '--name', 'set2')
        self.group('delete', group_id, json=False)
        self.assertEqual([], self.group('list', '--instance', instance.id))
        for vol in vols:
            self.dep.wait('volume', vol, ('in-use',))
        self.assertTrue(os.path.exists(self.dep.volume_path(vols[0])))
        self.assertEqual(instance.id,
                         self.conn.lookupByUUIDString(instance.id)
                         .UUIDString())


class VmwareInstanceGroupDeploymentTest(GroupCommands,
                                        cli.DeploymentBase,
                                        testtools.TestCase):
    """The instance-group scenario on the plugin (VMware, vcsim) profile.

    The instance is a VM in vcsim made as Nova's VMware driver makes it
    (nova.InstanceVM), its two volumes attached through Cinder's
    attachment API as Nova attaches them (boot at /dev/sda, data at
    /dev/sdb). Its disks are written through vcsim's datastore (as the
    guest would); a set is taken while the VM is powered on (the plugin
    snapshots the VM once and reads every disk from that snapshot), then,
    the data changed, an incremental set, asynchronously. Restores are
    refused while the VM runs; with it powered off the plugin restores
    into new disk files and re-points the instance VM's disks at them:
    what is compared byte for byte is the file of each of the instance
    VM's disk devices, as the instance sees it. The newer set is also
    restored onto new volumes with a changed placement (another volume
    type, backend and zone for one volume, the originals' for the other).
    """

    profile = 'plugin'
    # A second backend in another zone, and its volume type (up.sh), for
    # the restore onto new volumes with a changed placement.
    deploy_env = {'CVB_DEPLOY_SECOND_BACKEND': '1'}
    second_backend = 'vmware-az2'
    second_zone = 'cvb-az2'
    figures_title = 'plugin profile instance-group'

    def timed(self, name, func, *args):
        started = time.monotonic()
        result = func(*args)
        self.figures['%s_seconds' % name] = round(
            time.monotonic() - started, 1)
        return result

    def instance_vm(self):
        instance = nova.InstanceVM(self.vc.session(), str(uuid.uuid4()),
                                   self.vc.datastore_name)
        instance.create()
        self.addCleanup(instance.destroy)
        return instance

    def attach(self, instance, volume_id, mountpoint):
        """Attach as Nova does; undone (in reverse) when the test ends."""
        attachment = self.dep.attachments(
            'reserve', volume_id, instance.uuid)['id']
        self.addCleanup(self.dep.attachments, 'delete', attachment)
        connection = self.dep.attachments(
            'update', attachment, json.dumps(instance.connector(mountpoint)))
        instance.attach_volume(connection['connection_info'])
        self.addCleanup(instance.detach_volume, volume_id)
        self.dep.attachments('complete', attachment)
        shown = self.dep.wait('volume', volume_id, ('in-use',))
        self.assertEqual([instance.uuid],
                         [a.get('server_id')
                          for a in shown.get('attachments') or []])
        self.assertEqual(mountpoint, shown['attachments'][0].get('device'))

    def write_disk(self, instance, volume_id, disk, offset, data):
        """Write into the disk the instance VM has for the volume."""
        vcsim_fixture.seed_disk(self.vc, instance.disk_path(volume_id), data,
                                offset=offset)
        return disk.write(offset, data)

    def assert_instance_disks(self, instance, expected):
        """Each volume's disk, as the instance VM sees it, and attached."""
        for vol, disk in expected.items():
            shown = self.dep.wait('volume', vol, ('in-use',))
            self.assertEqual([instance.uuid],
                             [a.get('server_id')
                              for a in shown.get('attachments') or []])
            path = instance.disk_path(vol)
            # The volume's backing and the instance use the same file.
            self.assertEqual(self.vc.disk_path(vol), path)
            self.assert_disk(vol, disk, path=path)

    def test_instance_group_backup_and_restore(self):
        vols = [self.create_volume(name) for name in ('ig-boot', 'ig-data')]
        instance = self.instance_vm()
        for vol, mountpoint in zip(vols, ('/dev/sda', '/dev/sdb')):
            self.attach(instance, vol, mountpoint)
        disks1 = {}
        for vol, seed in zip(vols, (b'boot', b'data')):
            disk = cli.Disk()
            for i, (offset, length) in enumerate(VMDK_REGIONS):
                disk = self.write_disk(instance, vol, disk, offset,
                                       cli.pattern(b'%s1-%d' % (seed, i),
                                                   length))
            disks1[vol] = disk

        group = self.group('create', '--name', 'ig-vmware', instance.uuid)
        group_id = group['ID']
        self.assertEqual(instance.uuid, group['Instance ID'])
        members = {m['id']: m for m in group['Volumes']}
        self.assertEqual(set(vols), set(members))
        self.assertEqual('/dev/sda', members[vols[0]]['mountpoint'])
        self.assertTrue(members[vols[0]]['boot'])
        self.assertEqual('/dev/sdb', members[vols[1]]['mountpoint'])
        self.assertFalse(members[vols[1]]['boot'])
        found = self.group('list', '--instance', instance.uuid)
        self.assertEqual([group_id], [g['ID'] for g in found])

        instance.power_on()
        # A set while the VM runs (synchronous answer).
        first = self.timed('set1_backup', self.group, 'backup', 'create',
                           group_id, '--instance', instance.uuid,
                           '--name', 'set1')
        self.assertTrue(first['Success'], first)
        self.assertEqual(2, len(first['Backup IDs']))
        self.assertEqual(sorted(vols), sorted(first['Volume IDs']))
        self.assertEqual('poweredOn', instance.power_state)
        self.wait_set(group_id, 'set1')
        # Read from one snapshot of the running VM (no VMware Tools in
        # vcsim's VM: crash-consistent), each backup saying where it was.
        for b in first['Backup IDs']:
            shown = self.osc('volume', 'backup', 'show', b)
            meta, vol = shown['metadata'], shown['volume_id']
            self.assertEqual(
                {'instance_group_id': group_id,
                 'instance_id': instance.uuid,
                 'mountpoint': members[vol]['mountpoint'],
                 'boot_volume': str(members[vol]['boot']),
                 'consistency': 'crash-consistent'},
                {k: meta.get(k) for k in (
                    'instance_group_id', 'instance_id', 'mountpoint',
                    'boot_volume', 'consistency')}, b)

        # The data changes; an incremental set, asynchronously.
        disks2 = {}
        for vol, seed in zip(vols, (b'boot', b'data')):
            disk = disks1[vol]
            for i, (offset, length) in enumerate(VMDK_CHANGES):
                disk = self.write_disk(instance, vol, disk, offset,
                                       cli.pattern(b'%s2-%d' % (seed, i),
                                                   length))
            disks2[vol] = disk
        started = time.monotonic()
        submitted = self.group('backup', 'create', group_id, '--instance',
                               instance.uuid, '--name', 'set2', '--async')
        self.assertIn('submitted', submitted['Message'])
        second = self.wait_set(group_id, 'set2')
        self.figures['set2_backup_async_seconds'] = round(
            time.monotonic() - started, 1)
        self.assertEqual(2, len(second['Backup IDs']))
        for b in second['Backup IDs']:
            self.assertTrue(self.osc('volume', 'backup', 'show',
                                     b)['is_incremental'], b)
        for b in first['Backup IDs']:
            self.assertTrue(self.osc('volume', 'backup', 'show',
                                     b)['has_dependent_backups'], b)
        self.figures['set1_stored_bytes'] = sum(
            self.dep.stored_bytes(b) for b in first['Backup IDs'])
        self.figures['set2_stored_bytes'] = sum(
            self.dep.stored_bytes(b) for b in second['Backup IDs'])

        # Every backup of the incremental set verified, with its chain
        # (set1's backups), under one verification id.
        verified = self.timed('set2_verify', self.group, 'backup', 'verify',
                              group_id, '--instance-id', instance.uuid,
                              '--name', 'set2', '--wait')
        self.assertEqual('ok', verified['Status'], verified)
        self.assertEqual(second['ID'], verified['Backup Set ID'])
        self.assertEqual(sorted(second['Backup IDs']),
                         sorted(b['backup_id'] for b in verified['Backups']))
        self.assertEqual({'ok'}, {b['status'] for b in verified['Backups']})
        self.assertEqual([], verified['Problems'])

        # No restore while the VM runs; nothing changed.
        error = self.refused('backup', 'restore', group_id, '--instance',
                             instance.uuid, '--name', 'set1')
        self.assertIn('shut down', error)
        self.assertEqual('poweredOn', instance.power_state)
        self.assert_instance_disks(instance, disks2)

        # Powered off: the first set back onto the instance's volumes.
        instance.power_off()
        paths = {vol: instance.disk_path(vol) for vol in vols}
        restored = self.timed('set1_restore', self.group, 'backup',
                              'restore', group_id, '--instance',
                              instance.uuid, '--set', first['Backup Set ID'])
        self.assertTrue(restored['Success'], restored)
        self.assert_instance_disks(instance, disks1)
        # Restored into new files; the instance VM was re-pointed.
        for vol in vols:
            self.assertNotEqual(paths[vol], instance.disk_path(vol))

        # Oldest set first: the newer, incremental one still restores.
        deleted = self.group('backup', 'delete', group_id, '--instance',
                             instance.uuid, '--name', 'set1')
        self.assertTrue(deleted['Success'], deleted)
        self.assertEqual(['set2'], [s['Name'] for s in self.group(
            'backup', 'list', group_id)])
        restored = self.timed('set2_restore', self.group, 'backup',
                              'restore', group_id, '--instance',
                              instance.uuid, '--name', 'set2')
        self.assertTrue(restored['Success'], restored)
        self.assert_instance_disks(instance, disks2)

        # The same set onto new volumes with a changed placement: the boot
        # volume's on the second backend (its volume type, its zone), the
        # data volume's where the originals are (per-volume choice).
        made = self.timed(
            'set2_restore_new_placed', self.group, 'backup', 'restore',
            'new', group_id, '--instance', instance.uuid, '--name', 'set2',
            '--volume-type', self.second_backend,
            '--availability-zone', self.second_zone,
            '--volume', '%s:type=__DEFAULT__,az=nova' % vols[1])
        self.assertTrue(made['Success'], made)
        news = dict(zip(made['Volume IDs'], made['New Volume IDs']))
        self.assertEqual(set(vols), set(news))
        placed = {vols[0]: (self.second_backend, self.second_zone,
                            'cvb-plugin@%s' % self.second_backend),
                  vols[1]: ('__DEFAULT__', 'nova', 'cvb-plugin@vmware')}
        for vol, (vtype, zone, host) in placed.items():
            shown = self.dep.wait('volume', news[vol], ('available',))
            self.assertFalse(shown.get('attachments'), shown)
            self.assertEqual(
                (vtype, zone, host),
                (shown['type'], shown['availability_zone'],
                 shown['os-vol-host-attr:host'].split('#')[0]), shown)
            self.assert_disk(news[vol], disks2[vol])
        # The instance's own volumes and disks as they were.
        self.assert_instance_disks(instance, disks2)
        for new in news.values():
            self.osc('volume', 'delete', new, json=False)
        for new in news.values():
            self.dep.wait_gone('volume', new)

        # The group stays while it has a set; then it goes, alone.
        error = self.refused('delete', group_id)
        self.assertIn('backup sets', error)
        self.group('backup', 'delete', group_id, '--instance', instance.uuid,
                   '--name', 'set2')
        self.group('delete', group_id, json=False)
        self.assertEqual([], self.group('list', '--instance', instance.uuid))
        for b in first['Backup IDs'] + second['Backup IDs']:
            self.dep.wait_gone('volume backup', b)
        self.assertEqual('poweredOff', instance.power_state)
        self.assert_instance_disks(instance, disks2)
