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

"""End to end: instance-group backups of a real Nova server (kvm profile).

The kvm profile with Nova (CVB_DEPLOY_NOVA=1, nova_servers.py), driven by
the real ``openstack`` client and the plugin's commands
(``openstack volume instance group ...``):

- a server booted from a plugin volume holding the tiny writing guest,
  with a data volume given at boot (``--block-device``). The guest writes
  to its boot disk only: Nova 34's libvirt driver gives the domain
  ``<os><boot dev='hd'/></os>`` and no per-device boot order, whatever
  the block devices' ``boot_index``; libvirt turns that into
  ``bootindex=1`` on the first disk and ``-boot strict=on``, and SeaBIOS
  then makes a BIOS drive of that disk alone. The domain and QEMU's
  command line are checked for exactly that. The data volumes' data is
  written from the host;
- a third volume hot-plugged (``server add volume``);
- the group created from the server's attachments (three volumes, the
  boot volume's mountpoint kept);
- a set while the server runs: the three disks frozen in one atomic
  libvirt snapshot, merged back, the server running on its own files;
- a restore in place refused while Nova says the server is ACTIVE;
- the server stopped, the data volumes changed from the host, the set
  restored in place: the guest's records as at the set's point in time
  (after those seen before it, before those of the stop), the data
  volumes' data as at the set;
- the server started: the guest boots from the restored volume and
  writes again;
- a fault: the server deleted while a set of it runs (asynchronous): the
  set ends available or in error with a reason, and nothing is left:
  no freeze file in the qcow2 directory, no domain, no mount, no backup
  or snapshot left creating or deleting, the volumes available with
  clean images;
- the set restored onto new volumes with a new server booted by the
  plugin through Nova: it boots from the restored boot volume and its
  guest writes; the new data volumes hold the set's data.
"""

import os
import subprocess  # nosec B404: qemu-io, qemu-img
import sys
import time
from xml.etree import ElementTree

from tests.functional.deploy import kvm_instance
from tests.functional.deploy import nova_servers
from tests.functional.deploy import test_instance_groups as groups
from tests.functional.deploy import test_kvm_profile
from tests.functional.kvm import guest

REGION = test_kvm_profile.REGION
BUILD_TIMEOUT = nova_servers.BUILD_TIMEOUT
#: The parts of the names of the plugin's freeze and restore files.
FREEZE_FILES = ('.cvb-frozen-', '.cvb-overlay-', '.cvb-restore-')


class NovaInstanceGroupTest(groups.GroupCommands,
                            nova_servers.NovaServerTestCase):
    """Instance-group sets of a server of the deployment's Nova."""

    # -- the host's view of the server ------------------------------------

    def _boot_orders(self, server_id):
        """{source file: boot order or None} of the domain's file disks."""
        orders = {}
        for path, disk in self._file_disks(server_id):
            boot = disk.find('boot')
            orders[path] = None if boot is None else boot.get('order')
        return orders

    def _qemu_command_line(self, server_id):
        """The arguments of the QEMU process that runs the server."""
        for pid in os.listdir('/proc'):
            if not pid.isdigit():
                continue
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as f:
                    args = [a.decode(errors='replace')
                            for a in f.read().split(b'\0') if a]
            except OSError:
                continue
            if args and 'qemu' in os.path.basename(args[0]) and \
                    server_id in args:
                return args
        self.fail('no QEMU process runs server %s' % server_id)

    def _write_region(self, volume_id, seed):
        subprocess.run(  # nosec B603 B607
            ['qemu-io', '-f', 'qcow2', '-c',
             'write -P %d %d %d' % ((seed, ) + REGION),
             self.dep.volume_path(volume_id)],
            check=True, stdout=subprocess.DEVNULL)

    def _holds(self, volume_id, seed):
        """Whether the volume's region holds the seed's pattern."""
        # (qemu-io ends with 1 when the pattern does not match.)
        proc = subprocess.run(  # nosec B603 B607
            ['qemu-io', '-r', '-U', '-f', 'qcow2', '-c',
             'read -P %d %d %d' % ((seed, ) + REGION),
             self.dep.volume_path(volume_id)],
            check=False, stdout=subprocess.PIPE)
        out = proc.stdout.decode()
        return (proc.returncode == 0 and
                'read %d/%d bytes' % (REGION[1], REGION[1]) in out and
                'verification failed' not in out)

    def _freeze_files(self):
        qcow2 = os.path.join(self.dep.dir, 'qcow2')
        return sorted(name for name in os.listdir(qcow2)
                      if any(part in name for part in FREEZE_FILES))

    def _froze_lines(self):
        return [line for service in ('cinder-backup', 'cinder-volume')
                for line in self.dep.log(service).splitlines()
                if 'Froze disk(s)' in line]

    # -- the scenario -------------------------------------------------------

    def _boot_server(self, data):
        """A server on the guest's boot volume, ``data`` given at boot."""
        boot = self._boot_volume(name='cvb-ig-boot')
        started = time.monotonic()
        server_id = self.osc(
            'server', 'create', '--flavor', 'cvb.tiny', '--volume', boot,
            '--block-device',
            'source_type=volume,uuid=%s,destination_type=volume' % data,
            '--nic', 'none', 'cvb-ig-server')['id']
        self._server_status(server_id, ('ACTIVE',))
        self.figures['build_seconds'] = round(time.monotonic() - started, 1)
        return server_id, boot

    def _check_bios_drives(self, server_id, boot, data):
        """Nova's boot order: the boot disk is the only BIOS drive."""
        xml = ElementTree.fromstring(self.dep.dumpxml(server_id))
        self.assertEqual(['hd'], [b.get('dev')
                                  for b in xml.findall('./os/boot')])
        self.assertEqual({self.dep.nova_volume_path(boot): None,
                          self.dep.nova_volume_path(data): None},
                         self._boot_orders(server_id))
        args = self._qemu_command_line(server_id)
        self.assertEqual('strict=on', args[args.index('-boot') + 1])
        booting = [a for a in args if '"bootindex"' in a]
        self.assertEqual(1, len(booting), booting)
        self.assertIn('"serial":"%s"' % boot, booting[0])

    def _volume(self, name, seed):
        """A 1 GiB plugin volume, its region written from the host."""
        volume_id = self.osc('volume', 'create', '--size', '1', name)['id']
        self.dep.wait('volume', volume_id, ('available',))
        self._write_region(volume_id, seed)
        return volume_id

    def _newest(self, path):
        return guest.consistent_run(kvm_instance.read_records(path))

    def test_group_sets_of_a_nova_server(self):
        test_started = time.monotonic()
        seeds1 = {'data': 0x22, 'third': 0x33}
        seeds2 = {'data': 0x55, 'third': 0x66}
        data = self._volume('cvb-ig-data', seeds1['data'])
        server_id, boot = self._boot_server(data)
        path = self.dep.volume_path(boot)
        self._check_bios_drives(server_id, boot, data)
        self.figures['first_record'] = self._timed(
            'first_records', self._records_advance, path)

        # A third volume, hot-plugged.
        third = self._volume('cvb-ig-third', seeds1['third'])
        self.osc('server', 'add', 'volume', server_id, third, json=False)
        self._timed('hotplug', self.dep.wait, 'volume', third, ('in-use',),
                    timeout=BUILD_TIMEOUT)
        vols = [boot, data, third]
        nova_paths = {self.dep.nova_volume_path(v): 'qcow2' for v in vols}
        self.assertEqual(nova_paths, self._disks(server_id))

        # The group, from the server's attachments.
        group = self.group('create', '--name', 'cvb-ig-nova', server_id)
        group_id = group['ID']
        self.assertEqual(server_id, group['Instance ID'])
        members = {m['id']: m for m in group['Volumes']}
        self.assertEqual(set(vols), set(members))
        self.assertEqual('/dev/vda', members[boot]['mountpoint'])
        self.assertEqual([True, False, False],
                         [members[v]['boot'] for v in vols])
        self.assertEqual([group_id], [g['ID'] for g in self.group(
            'list', '--instance', server_id)])

        # A set while the server runs: the three disks frozen in one
        # atomic snapshot through the domain, merged back; the server
        # runs on, on its own files.
        before = self._newest(path)
        froze_before = len(self._froze_lines())
        first = self._timed('set1_backup', self.group, 'backup', 'create',
                            group_id, '--instance', server_id,
                            '--name', 'set1')
        self.assertTrue(first['Success'], first)
        self.assertEqual(sorted(vols), sorted(first['Volume IDs']))
        self.assertEqual(3, len(first['Backup IDs']))
        self.wait_set(group_id, 'set1')
        froze = self._froze_lines()[froze_before:]
        self.assertEqual(1, len(froze), froze)
        self.assertIn('Froze disk(s) vda, vdb, vdc of domain ', froze[0])
        self.assertIn('in one atomic snapshot', froze[0])
        self.assertEqual('running', self._domain_state(server_id))
        self.assertEqual(nova_paths, self._disks(server_id))
        self.assertEqual([], self._freeze_files())
        for b in first['Backup IDs']:
            self.assertEqual('crash-consistent', self.osc(
                'volume', 'backup', 'show', b)['metadata']['consistency'])

        # No restore in place while Nova says the server runs; nothing
        # changed, the guest writes on.
        error = self.refused('backup', 'restore', group_id, '--instance',
                             server_id, '--name', 'set1')
        self.assertIn('not shut down', error)
        self.assertIn('Nova server %s (status ACTIVE)' % server_id, error)
        self.assertEqual('running', self._domain_state(server_id))
        self.assertEqual(nova_paths, self._disks(server_id))
        self._records_advance(path)

        # Stopped: the guest writes no more. The data volumes changed
        # from the host, then the set restored in place.
        self.osc('server', 'stop', server_id, json=False)
        self._timed('stop', self._server_status, server_id, ('SHUTOFF',))
        stopped = kvm_instance.read_records(path)
        time.sleep(2)
        self.assertEqual(stopped, kvm_instance.read_records(path))
        at_stop = guest.consistent_run(stopped)
        for name, vol in (('data', data), ('third', third)):
            self._write_region(vol, seeds2[name])
        restored = self._timed('set1_restore', self.group, 'backup',
                               'restore', group_id, '--instance', server_id,
                               '--set', first['Backup Set ID'])
        self.assertTrue(restored['Success'], restored)
        for vol in vols:
            shown = self.dep.wait('volume', vol, ('in-use',))
            self.assertEqual([server_id],
                             [a.get('server_id')
                              for a in shown.get('attachments') or []])
        self.assertEqual(nova_paths, self._disks(server_id))
        # The guest's records of the set's point in time: after those
        # seen before it began, before those of the stop (it wrote on).
        at_set = self._newest(path)
        self.figures.update(record_before_set=before, record_of_set=at_set,
                            record_at_stop=at_stop)
        self.assertLessEqual(before, at_set)
        self.assertLess(at_set, at_stop)
        for name, vol in (('data', data), ('third', third)):
            self.assertTrue(self._holds(vol, seeds1[name]),
                            '%s volume does not hold the set' % name)

        # Started: the guest boots from the restored volume and writes
        # again, from the set's records on.
        restored_records = kvm_instance.read_records(path)
        self.osc('server', 'start', server_id, json=False)
        self._timed('start', self._server_status, server_id, ('ACTIVE',))
        self._records_change(path, restored_records)
        self.assertGreater(self._newest(path), at_set)

        # The fault: the server deleted while a set of it runs.
        self._server_deleted_during_set(group_id, server_id, vols)

        # The set onto new volumes, and a new server booted from them by
        # the plugin through Nova.
        self._restore_new_with_server(group_id, server_id, vols, seeds1)
        self.figures['test_seconds'] = round(
            time.monotonic() - test_started, 1)

    def _server_deleted_during_set(self, group_id, server_id, vols):
        started = time.monotonic()
        submitted = self.group('backup', 'create', group_id, '--instance',
                               server_id, '--name', 'set2', '--async')
        self.assertIn('submitted', submitted['Message'])
        self.osc('server', 'delete', server_id, json=False)
        self.dep.wait_gone('server', server_id, timeout=BUILD_TIMEOUT)
        ended = self._set_ended_after_delete(group_id, 'set2', started)
        if ended['Status'] == 'error':
            # The reason names the volume or the domain.
            reason = ended['Description']
            self.assertTrue(any(v in reason for v in vols) or
                            'domain' in reason, reason)
        for vol in vols:
            self.dep.wait('volume', vol, ('available',),
                          timeout=BUILD_TIMEOUT)
        self.assertEqual([], self._freeze_files())
        self.assertEqual('', self.dep._run(
            ['virsh', '-q', '-c', self.dep.libvirt_uri, 'list', '--all',
             '--name'])[1].strip())
        base = self.dep.nova_env['NOVA_MOUNT_BASE']
        self.assertEqual([], [m for m in nova_servers.mount_points()
                              if m.startswith(base + '/')])
        self.assertEqual([], [b for b in self.osc('volume', 'backup', 'list')
                              if b['Status'] in ('creating', 'deleting')])
        self.assertEqual([], [s for s in self.osc('volume', 'snapshot',
                                                  'list')
                              if s['Status'] in ('creating', 'deleting')])
        for vol in vols:
            subprocess.run(  # nosec B603 B607
                ['qemu-img', 'check', '-q', self.dep.volume_path(vol)],
                check=True)
            info = subprocess.run(  # nosec B603 B607
                ['qemu-img', 'info', self.dep.volume_path(vol)],
                check=True, stdout=subprocess.PIPE).stdout
            self.assertNotIn(b'backing file', info, vol)

    def _restore_new_with_server(self, group_id, server_id, vols, seeds):
        boot, data, third = vols
        new_server, news = self._restore_new_server(group_id, server_id,
                                                    vols, 'set1')
        self.assertEqual({self.dep.nova_volume_path(news[v]): 'qcow2'
                          for v in vols}, self._disks(new_server))
        self._records_advance(self.dep.volume_path(news[boot]))
        for name, vol in (('data', data), ('third', third)):
            self.assertTrue(self._holds(news[vol], seeds[name]),
                            'new %s volume does not hold the set' % name)


if __name__ == '__main__':
    sys.exit('run with stestr')
