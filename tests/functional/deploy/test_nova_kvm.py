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

"""End to end, kvm profile with a real Nova (CVB_DEPLOY_NOVA=1).

tools/deploy/up.sh kvm with CVB_DEPLOY_NOVA=1 runs, besides Cinder with
the plugin's Qcow2VolumeDriver, Placement, nova-api, nova-conductor,
nova-scheduler and nova-compute (libvirt driver, QEMU/TCG) on a libvirtd
of the profile's own. The qcow2 backend returns NFS connections
(``qcow2_connection_type = nfs``, export ``127.0.0.1:<the profile's qcow2
directory>``): Nova 34's LibvirtNFSVolumeDriver mounts the export under
``[libvirt] nfs_mount_point_base`` (the deployment's NFS stand-in turns
that mount into a bind mount: this kernel has no NFS client) and gives
libvirt the file at ``<base>/<md5 of the export>/volume-<id>`` with the
connection's format, qcow2. Nova asks the deployment's Neutron API (ML2,
no agent) about servers even without a network. This test checks, with
the real clients:

- the deployment's Nova is up: its three services report 'up' and the
  hypervisor is registered (``openstack compute service list``,
  ``openstack hypervisor list``);
- ``openstack server create --volume ... --nic none``: a server booted
  from a plugin volume (the tiny writing guest written into it) becomes
  ACTIVE; its domain (``virsh dumpxml`` on the profile's libvirt) has the
  volume as a file disk, driver type qcow2, at the path under the mount
  base; that path is a mount point made by the stand-in (its log says
  so); the guest's records advance in the volume's qcow2 file, read from
  outside;
- a backup while the server runs (``--force``): frozen online through
  the domain at the mount-point path (one atomic snapshot, merged back),
  restored into a new volume with a consistent ring of the guest's
  records; the server runs on, on its volume alone;
- ``openstack server stop``: SHUTOFF, the guest writes no more; a backup
  of its (in-use) volume (``--force``), restored into a new volume, holds
  the guest's records as the server left them;
  ``openstack server start``: ACTIVE, the guest writes again;
- ``openstack server delete``: the server is gone, Nova unmounted the
  export (its last detach) and removed the mount point, the volume is
  available again and its qcow2 file intact.
"""

import os
import subprocess  # nosec B404: qemu-img
import sys
import time

from tests.functional.deploy import kvm_instance
from tests.functional.deploy import nova_servers
from tests.functional.kvm import guest

BUILD_TIMEOUT = nova_servers.BUILD_TIMEOUT


class NovaKvmTest(nova_servers.NovaServerTestCase):
    """A server of the deployment's Nova on the plugin's qcow2 volume."""

    def test_server_boots_from_plugin_volume(self):
        self._nova_is_up()
        volume_id = self._boot_volume()
        path = self.dep.volume_path(volume_id)
        started = time.monotonic()
        server_id = self.osc('server', 'create', '--flavor', 'cvb.tiny',
                             '--volume', volume_id, '--nic', 'none',
                             'cvb-nova-server')['id']
        self._server_status(server_id, ('ACTIVE',))
        self.figures['build_seconds'] = round(time.monotonic() - started, 1)

        # Nova's NFS volume driver gave libvirt the file under the mount
        # base, as qcow2; the mount point is a mount (the stand-in's bind
        # mount of the profile's qcow2 directory).
        nova_path = self.dep.nova_volume_path(volume_id)
        self.assertEqual({nova_path: 'qcow2'}, self._disks(server_id))
        mount_point = os.path.dirname(nova_path)
        self.assertTrue(os.path.ismount(mount_point), mount_point)
        self.assertEqual(os.stat(path).st_ino, os.stat(nova_path).st_ino)
        with open(os.path.join(self.dep.dir, 'log',
                               'nfs-standin.log')) as f:
            standin = f.read()
        self.assertIn('did: mount --bind %s %s' % (
            os.path.realpath(os.path.join(self.dep.dir, 'qcow2')),
            mount_point), standin)
        self.assertEqual('in-use', self.osc('volume', 'show',
                                            volume_id)['status'])

        # The guest runs: its records advance in the plugin's qcow2 file.
        self.figures['guest_newest_record'] = self._timed(
            'first_records', self._records_advance, path)

        # A backup while the server runs (--force): the plugin freezes the
        # volume online through the domain, which sees it at the mount
        # point (an external snapshot there, merged back by an active
        # block commit). Restored into a new volume: a consistent ring of
        # the guest's records; the server runs on, on its volume alone.
        running_id = self._timed('running_backup', self._backup, volume_id,
                                 'cvb-nova-running')
        self.assertEqual('running', self._domain_state(server_id))
        self.assertEqual({nova_path: 'qcow2'}, self._disks(server_id))
        froze = [line for service in ('cinder-backup', 'cinder-volume')
                 for line in self.dep.log(service).splitlines()
                 if 'Froze disk(s)' in line]
        self.assertEqual(1, len(froze), froze)
        at_backup = kvm_instance.read_records(self.dep.volume_path(
            self._timed('running_restore', self._restore, running_id)))
        self.assertGreaterEqual(guest.consistent_run(at_backup),
                                self.figures['guest_newest_record'])

        # Stopped: the domain is shut off, the guest writes no more (the
        # share stays mounted: the volume stays attached).
        self.osc('server', 'stop', server_id, json=False)
        self._timed('stop', self._server_status, server_id, ('SHUTOFF',))
        self.assertEqual('shut off', self._domain_state(server_id))
        stopped = kvm_instance.read_records(path)
        time.sleep(2)
        self.assertEqual(stopped, kvm_instance.read_records(path))
        self.assertTrue(os.path.ismount(mount_point))

        # A backup of the stopped server's (in-use) volume, restored into
        # a new volume: the guest's records as the server left them.
        backup_id = self._timed('stopped_backup', self._backup, volume_id)
        restored_id = self._timed('restore', self._restore, backup_id)
        self.assertEqual(stopped, kvm_instance.read_records(
            self.dep.volume_path(restored_id)))

        # Started again: the guest boots from the volume and writes again.
        self.osc('server', 'start', server_id, json=False)
        self._timed('start', self._server_status, server_id, ('ACTIVE',))
        self.assertEqual({nova_path: 'qcow2'}, self._disks(server_id))
        self._records_change(path, stopped)

        # Deleted: Nova's last detach unmounts the share and removes the
        # mount point; the volume is available with its data.
        self.osc('server', 'delete', server_id, json=False)
        self._timed('delete', self.dep.wait_gone, 'server', server_id,
                    timeout=BUILD_TIMEOUT)
        self.dep.wait('volume', volume_id, ('available',), timeout=120)
        self.assertFalse(os.path.exists(mount_point), mount_point)
        self.assertEqual([], [m for m in nova_servers.mount_points()
                              if m.startswith(mount_point)])
        subprocess.run(['qemu-img', 'check', '-q', path],  # nosec B603 B607
                       check=True)
        self.assertNotEqual(0, max(kvm_instance.read_records(path)))


if __name__ == '__main__':
    sys.exit('run with stestr')
