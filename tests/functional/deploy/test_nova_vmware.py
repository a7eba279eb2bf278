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

"""End to end: servers of a real Nova on VMware (the plugin profile).

The plugin profile with ``CVB_DEPLOY_NOVA=1`` (tools/deploy/nova.sh):
Nova 34's nova-api, -conductor, -scheduler and Placement, and a
nova-compute with Nova's own VMware driver (``vmwareapi.VMwareVCDriver``)
against the profile's vcsim, the vCenter the plugin's VMDK driver uses.
Through the ``openstack`` client and the plugin's group commands, as a
user would:

- a server booted from a VMDK volume (``server create --volume``), a data
  volume hot-plugged (``server add volume``): Nova's VM in vCenter has the
  volumes' own disk files;
- a backup of the attached data volume while the server runs
  (``--force``), nova-compute killed (SIGKILL) while the backup's export
  stalls: the backup completes and restores onto a new volume byte for
  byte; nova-compute started again serves the server;
- an instance group of the server, a set while it runs (one snapshot of
  Nova's VM), the disks changed;
- a restore in place refused while Nova reports the server ACTIVE; the
  server stopped through Nova, the set restored in place (the disks Nova's
  VM has hold the set's data), the server started again;
- the set restored onto new volumes, and a new server booted from them
  through Nova (its VM has the new volumes' disks);
- the fault: the server deleted while a set of it runs (its first disk
  export stalled until Nova has destroyed the VM): the set ends in error
  (the VM was deleted while a disk was read), no backup, snapshot or VM
  is left behind, Nova detached the restored disks, and the volumes are
  available and keep the set's data.

vcsim runs no guest: what a guest would read is the disk file Nova's VM
has for each volume, compared byte for byte.
"""

import time

from oslo_utils import units
from oslo_vmware import vim_util
import testtools

from cinder_vmdk_backup.vmware import vmsnapshot
from tests.functional.deploy import nova
from tests.functional.deploy import nova_servers
from tests.functional.deploy import test_instance_groups as groups
from tests.functional.deploy import test_openstack_cli as cli
from tests.functional import vcsim as vcsim_fixture

#: (offset, length) of each volume's data, and what changes after the set.
REGIONS = ((0, units.Mi), (300 * units.Mi, units.Mi),
           (units.Gi - units.Mi, units.Mi))
CHANGES = ((300 * units.Mi + 64 * units.Ki, 64 * units.Ki),
           (600 * units.Mi, 64 * units.Ki))


class NovaVmwareDeploymentTest(groups.GroupCommands, nova_servers.NovaApi,
                               cli.DeploymentBase, testtools.TestCase):
    """A real Nova server on the plugin's VMDK volumes, backed up."""

    profile = 'plugin'
    # (vcsim's about.fullName adds "(govmomi simulator)".)
    HYPERVISOR_TYPE = 'VMware vCenter Server'
    figures_title = 'plugin profile with Nova'
    deploy_env = {'CVB_DEPLOY_NOVA': '1',
                  'CVB_NOVA_VENV': nova_servers.NOVA_VENV,
                  'CVB_NEUTRON_VENV': nova_servers.NEUTRON_VENV}

    def setUp(self):
        missing = nova_servers.missing_nova_prerequisites('oslo_vmware')
        if missing:
            # (Before the deployment starts: cli.DeploymentBase starts it.)
            testtools.TestCase.setUp(self)
            self.skipTest('the plugin profile with Nova needs %s '
                          '(tools/deploy/install.sh)' % ', '.join(missing))
        super(NovaVmwareDeploymentTest, self).setUp()

    # -- Nova and its VM in vCenter -------------------------------------

    def nova_vm(self, server_id):
        """The VM Nova's driver made for the server (its instance UUID)."""
        session = self.vc.session()
        ref = vmsnapshot.find_instance_vm(session, server_id)
        self.assertIsNotNone(ref, 'no VM of server %s in vCenter'
                             % server_id)
        vm = nova.InstanceVM(session, server_id, self.vc.datastore_name)
        vm.ref = ref
        return vm

    def vm_disk_files(self, vm):
        """The disk files of the VM's disks."""
        return sorted(d.backing.fileName for d in nova._devices(
            vm.session, vm.ref) if nova._type_name(d) == 'VirtualDisk')

    def write_disk(self, vm, volume_id, disk, offset, data):
        """Write into the disk the server's VM has for the volume."""
        vcsim_fixture.seed_disk(self.vc, vm.disk_path(volume_id), data,
                                offset=offset)
        return disk.write(offset, data)

    def assert_server_disks(self, server_id, vm, expected):
        """Each volume attached to the server; its VM's disk holds it."""
        for vol, disk in expected.items():
            shown = self.dep.wait('volume', vol, ('in-use',))
            self.assertEqual([server_id],
                             [a.get('server_id')
                              for a in shown.get('attachments') or []])
            self.assert_disk(vol, disk, path=vm.disk_path(vol))

    # -- the scenario -----------------------------------------------------

    def test_server_backup_group_restore(self):
        self._nova_is_up()
        boot = self.create_volume('nova-vmware-boot', '--bootable')
        data = self.create_volume('nova-vmware-data')
        vols = (boot, data)
        disks1 = {}
        for vol, seed in zip(vols, (b'boot', b'data')):
            disk = cli.Disk()
            for i, (offset, length) in enumerate(REGIONS):
                disk = self.write(vol, disk, offset,
                                  cli.pattern(b'%s1-%d' % (seed, i), length))
            disks1[vol] = disk

        # A server booted from the VMDK volume, the data volume hot-plugged.
        server = self._timed(
            'server_create', self.osc, 'server', 'create', '--flavor',
            'cvb.tiny', '--volume', boot, '--nic', 'none', 'cvb-nova-vmware')
        server_id = server['id']
        self.addCleanup(self._delete_server_quietly, server_id)
        self._timed('server_active', self._server_status, server_id,
                    ('ACTIVE', ))
        self._timed('server_add_volume', self.osc, 'server', 'add',
                    'volume', server_id, data, json=False)
        self.dep.wait('volume', data, ('in-use',))
        vm = self.nova_vm(server_id)
        self.assertEqual('poweredOn', vm.power_state)
        # Nova's VM has the volumes' own disk files (no copies).
        self.assertEqual(sorted(self.vc.disk_path(v) for v in vols),
                         self.vm_disk_files(vm))
        self.assert_server_disks(server_id, vm, disks1)

        # A backup of the attached volume while the server runs, with
        # nova-compute killed while it reads.
        single = self._timed('in_use_backup',
                             self._backup_with_compute_killed, data)
        copy = self._timed('in_use_restore_new', self.restore, single,
                           'nova-vmware-copy')
        self.assert_disk(copy, disks1[data])
        self.osc('volume', 'delete', copy, json=False)
        self.assertEqual('ACTIVE',
                         self.osc('server', 'show', server_id)['status'])

        # The server's instance group; a set while it runs.
        group = self.group('create', '--name', 'nova-vmware', server_id)
        group_id = group['ID']
        members = {m['id']: m for m in group['Volumes']}
        self.assertEqual(set(vols), set(members))
        self.assertTrue(members[boot]['boot'])
        self.assertFalse(members[data]['boot'])
        first = self._timed('set1_backup', self.group, 'backup', 'create',
                            group_id, '--instance', server_id,
                            '--name', 'set1')
        self.assertTrue(first['Success'], first)
        self.assertEqual(sorted(vols), sorted(first['Volume IDs']))
        self.wait_set(group_id, 'set1')
        self.assertEqual('poweredOn', vm.power_state)

        # The disks change while the server runs.
        disks2 = {}
        for vol, seed in zip(vols, (b'boot', b'data')):
            disk = disks1[vol]
            for i, (offset, length) in enumerate(CHANGES):
                disk = self.write_disk(vm, vol, disk, offset,
                                       cli.pattern(b'%s2-%d' % (seed, i),
                                                   length))
            disks2[vol] = disk

        # No restore in place while Nova reports the server ACTIVE.
        error = self.refused('backup', 'restore', group_id, '--instance',
                             server_id, '--name', 'set1')
        self.assertIn(server_id, error)
        self.assertIn('ACTIVE', error)
        self.assert_server_disks(server_id, vm, disks2)

        # Stopped through Nova, restored in place, started again.
        self._timed('server_stop', self._server_action, server_id, 'stop',
                    'SHUTOFF')
        self.assertEqual('poweredOff', vm.power_state)
        restored = self._timed('set1_restore', self.group, 'backup',
                               'restore', group_id, '--instance', server_id,
                               '--name', 'set1')
        self.assertTrue(restored['Success'], restored)
        self.assert_server_disks(server_id, vm, disks1)
        self._timed('server_start', self._server_action, server_id,
                    'start', 'ACTIVE')
        self.assertEqual('poweredOn', vm.power_state)
        self.assert_server_disks(server_id, vm, disks1)

        # The set onto new volumes, and a new server booted from them
        # through Nova.
        self._restore_new_with_server(group_id, server_id, vols, disks1)

        # The fault: the server deleted while a set of it runs. Nova
        # detaches the restored disks (found by the UUIDs the plugin left
        # in its VM's extraConfig) and destroys its VM under the set.
        self._server_deleted_during_set(group_id, server_id)
        for vol in vols:
            shown = self.dep.wait('volume', vol, ('available',))
            self.assertFalse(shown.get('attachments'), shown)
            self.assert_disk(vol, disks1[vol])
        self.assertEqual([], self.vm_names(('volume-',)))
        self.group('backup', 'delete', group_id, '--instance', server_id,
                   '--name', 'set1')
        for name in [s['Name'] for s in self.group('backup', 'list',
                                                   group_id)]:
            self.group('backup', 'delete', group_id, '--instance',
                       server_id, '--name', name)
        self.group('delete', group_id, json=False)
        for b in first['Backup IDs']:
            self.dep.wait_gone('volume backup', b)
        self.osc('volume', 'backup', 'delete', single, json=False)
        self.dep.wait_gone('volume backup', single)

    def _backup_with_compute_killed(self, volume_id):
        """A ``--force`` backup; nova-compute killed while its export stalls.

        :returns: the backup's ID (available)
        """
        stalls = self.vc.log().count('NFC transfer stalls')
        self.vc.set_nfc_fault(stall_after_bytes=units.Mi, count=1)
        try:
            backup = self.osc('volume', 'backup', 'create', '--force',
                              '--name', 'in-use', volume_id)
            self._wait_for_stall(stalls)
            self._kill_compute()
            self.assertIn(self.osc('volume', 'backup', 'show',
                                   backup['id'])['status'],
                          ('creating', 'backing-up'))
        finally:
            self.vc.clear_faults()
        shown = self.dep.wait('volume backup', backup['id'],
                              ('available', 'error'),
                              timeout=nova_servers.BUILD_TIMEOUT)
        # Nova is not on a Cinder backup's path: it completes.
        self.assertEqual('available', shown['status'],
                         shown.get('fail_reason'))
        self._timed('compute_restart', self._restart_compute)
        return backup['id']

    def _restore_new_with_server(self, group_id, server_id, vols, disks):
        new_server, news = self._restore_new_server(group_id, server_id,
                                                    vols, 'set1')
        vm = self.nova_vm(new_server)
        self.assertEqual('poweredOn', vm.power_state)
        self.assert_server_disks(new_server, vm, {
            news[v]: disks[v] for v in vols})
        self._delete_server(new_server)
        for vol in vols:
            self.dep.wait('volume', news[vol], ('available',))
            self.osc('volume', 'delete', news[vol], json=False)
        for vol in vols:
            self.dep.wait_gone('volume', news[vol])

    def _server_deleted_during_set(self, group_id, server_id):
        """Delete the server while the set's first disk export stalls."""
        before = self._backup_ids()
        stalls = self.vc.log().count('NFC transfer stalls')
        self.vc.set_nfc_fault(stall_after_bytes=units.Mi, count=1)
        started = time.monotonic()
        submitted = self.group('backup', 'create', group_id, '--instance',
                               server_id, '--name', 'set2', '--async')
        self.assertIn('submitted', submitted['Message'])
        try:
            self._wait_for_stall(stalls)
            self._delete_server(server_id)
        finally:
            self.vc.clear_faults()
        ended = self._set_ended_after_delete(group_id, 'set2', started)
        # The first disk's read ended after the VM was gone: the set fails
        # (vcsim completed the reads, the later ones with zeros), and no
        # backup of it is left.
        self.assertEqual('error', ended['Status'], ended)
        self.assertIn('from the snapshot of instance %s' % server_id[:8],
                      ended['Description'])
        # (The set's description is cut at 255 characters; the log has
        # the whole reason.)
        self.assertIn('was deleted while disk', self.dep.log('cinder-backup'))
        self.assertEqual(before, self._backup_ids())
        self.assertEqual([], [b for b in self.osc('volume', 'backup', 'list')
                              if b['Status'] in ('creating', 'deleting',
                                                 'restoring')])
        self.assertEqual([], [s for s in self.osc('volume', 'snapshot',
                                                  'list')
                              if s['Status'] in ('creating', 'deleting')])
        self.assertIsNone(vmsnapshot.find_instance_vm(self.vc.session(),
                                                      server_id))

    def _backup_ids(self):
        return sorted(b['ID'] for b in self.osc('volume', 'backup', 'list'))

    def _wait_for_stall(self, before, timeout=120):
        """Until vcsim's log has more NFC stalls than ``before``."""
        deadline = time.monotonic() + timeout
        while self.vc.log().count('NFC transfer stalls') <= before:
            if time.monotonic() > deadline:
                self.fail('no NFC transfer stalled in %ss' % timeout)
            time.sleep(0.1)

    def vm_names(self, keep=()):
        """Names of vCenter's VMs, but those starting with ``keep``."""
        session = self.vc.session()
        result = session.invoke_api(vim_util, 'get_objects', session.vim,
                                    'VirtualMachine', 100, ['name'])
        names = []
        while result:
            for obj in result.objects:
                name = {p.name: p.val for p in obj.propSet}['name']
                if not name.startswith(tuple(keep)):
                    names.append(name)
            result = session.invoke_api(vim_util, 'continue_retrieval',
                                        session.vim, result)
        return sorted(names)

    def _server_action(self, server_id, action, status):
        self.osc('server', action, server_id, json=False)
        return self._server_status(server_id, (status, ))

    def _delete_server(self, server_id):
        self.osc('server', 'delete', '--wait', server_id, json=False)

    def _delete_server_quietly(self, server_id):
        try:
            self._delete_server(server_id)
        except Exception:  # nosec B110: gone already, or the test failed
            pass
