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

import hashlib
import json
import os
import subprocess  # nosec B404: the OpenStack client, qemu-io, virsh
import sys
import time
from xml.etree import ElementTree

import fixtures
import testtools

from tests.functional.deploy import deployment
from tests.functional.deploy import kvm_instance
from tests.functional.kvm import guest

NOVA_VENV = os.environ.get('CVB_NOVA_VENV', '/opt/cvb-nova')
NEUTRON_VENV = os.environ.get('CVB_NEUTRON_VENV', '/opt/cvb-neutron')
BUILD_TIMEOUT = 300


class NovaDeployment(deployment.Deployment):
    """The kvm profile, with Nova."""

    def __init__(self):
        super(NovaDeployment, self).__init__('kvm')

    def _script_env(self):
        env = super(NovaDeployment, self)._script_env()
        env.update(CVB_DEPLOY_NOVA='1', CVB_NOVA_VENV=NOVA_VENV,
                   CVB_NEUTRON_VENV=NEUTRON_VENV)
        return env

    @property
    def libvirt_uri(self):
        with open(os.path.join(self.dir, 'libvirt.uri')) as f:
            return f.read().strip()

    @property
    def nova_env(self):
        return deployment.read_env(os.path.join(self.dir, 'nova.env'))

    def nova_volume_path(self, volume_id):
        """Where Nova's NFS volume driver has the volume's file.

        ``<nfs_mount_point_base>/<md5 hex of the export>/volume-<id>``
        (nova.virt.libvirt.volume.fs: the mount point of the export).
        """
        env = self.nova_env
        digest = hashlib.md5(env['NOVA_NFS_EXPORT'].encode(),
                             usedforsecurity=False).hexdigest()
        return os.path.join(env['NOVA_MOUNT_BASE'], digest,
                            'volume-%s' % volume_id)

    def dumpxml(self, domain):
        """``virsh dumpxml`` of a domain on the profile's libvirtd."""
        return self._run(['virsh', '-q', '-c', self.libvirt_uri, 'dumpxml',
                          domain])[1]


def missing_nova_prerequisites():
    missing = []
    for name in ('nova-compute', 'placement-manage', 'gunicorn'):
        if not os.path.exists(os.path.join(NOVA_VENV, 'bin', name)):
            missing.append('%s in %s' % (name, NOVA_VENV))
    for name in ('neutron-db-manage', 'gunicorn'):
        if not os.path.exists(os.path.join(NEUTRON_VENV, 'bin', name)):
            missing.append('%s in %s' % (name, NEUTRON_VENV))
    return missing


class NovaKvmTest(testtools.TestCase):
    """A server of the deployment's Nova on the plugin's qcow2 volume."""

    def setUp(self):
        super(NovaKvmTest, self).setUp()
        missing = (deployment.missing_prerequisites() +
                   deployment.missing_kvm_prerequisites() +
                   missing_nova_prerequisites())
        if missing:
            self.skipTest('the kvm deployment with Nova needs %s '
                          '(tools/deploy/install.sh, tools/libvirt/'
                          'install.sh)' % ', '.join(missing))
        self.dep = NovaDeployment()
        if not self.dep.claim():
            self.skipTest('another test run on this machine is using the '
                          'kvm deployment in %s' % self.dep.deploy_dir)
        self.addCleanup(self.dep.release)
        self.figures = {}
        self.addCleanup(self._report)
        self.addCleanup(self.dep.stop)
        self.dep.start()
        self.figures['up_seconds'] = round(self.dep.timings['up'], 1)
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def _report(self):
        text = json.dumps(self.figures, indent=2, sort_keys=True)
        self.addDetail('figures', testtools.content.text_content(text))
        print('\nkvm profile with Nova, figures: %s' % text)

    def osc(self, *args, **kwargs):
        return self.dep.openstack(*args, **kwargs)

    def _nova_is_up(self):
        services = {s['Binary']: s for s in
                    self.osc('compute', 'service', 'list')}
        for binary in ('nova-conductor', 'nova-scheduler', 'nova-compute'):
            self.assertIn(binary, services)
            self.assertEqual(('enabled', 'up'),
                             (services[binary]['Status'],
                              services[binary]['State']), binary)
        hypervisors = self.osc('hypervisor', 'list')
        self.assertEqual(1, len(hypervisors), hypervisors)
        self.assertEqual(('QEMU', 'up'),
                         (hypervisors[0]['Hypervisor Type'],
                          hypervisors[0]['State']))

    def _boot_volume(self):
        """A bootable 1 GiB plugin volume holding the writing guest."""
        volume = self.osc('volume', 'create', '--size', '1', '--bootable',
                          'cvb-nova-boot')
        self.dep.wait('volume', volume['id'], ('available',))
        sector = os.path.join(self.tmp, 'boot.bin')
        fd = os.open(sector, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'wb') as f:
            f.write(guest.boot_sector(disks=1, paced=True))
        subprocess.run(  # nosec B603 B607
            ['qemu-io', '-f', 'qcow2', '-c',
             'write -s %s 0 %d' % (sector, guest.SECTOR),
             self.dep.volume_path(volume['id'])],
            check=True, stdout=subprocess.DEVNULL)
        return volume['id']

    def _server_status(self, server_id, statuses, timeout=BUILD_TIMEOUT):
        """Poll ``openstack server show`` until its status is in statuses."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.osc('server', 'show', server_id)
            if shown['status'] in statuses:
                return shown
            if shown['status'] == 'ERROR':
                self.fail('server %s is ERROR: %s'
                          % (server_id, shown.get('fault')))
            if time.monotonic() > deadline:
                self.fail('server %s still %s after %ss'
                          % (server_id, shown['status'], timeout))
            time.sleep(1)

    def _domain_state(self, server_id):
        return self.dep._run(['virsh', '-q', '-c', self.dep.libvirt_uri,
                              'domstate', server_id])[1].strip()

    def _disks(self, server_id):
        """{source file: driver type} of the server's domain's file disks."""
        xml = ElementTree.fromstring(self.dep.dumpxml(server_id))
        disks = {}
        for disk in xml.findall('./devices/disk'):
            source = disk.find('source')
            if disk.get('type') == 'file' and source is not None:
                disks[source.get('file')] = disk.find('driver').get('type')
        return disks

    def _records_advance(self, path, timeout=120):
        """Wait until the guest's newest record grows; return it."""
        deadline = time.monotonic() + timeout
        first = None
        while True:
            newest = guest.consistent_run(kvm_instance.read_records(path))
            if first is None and newest:
                first = newest
            elif first is not None and newest > first:
                return newest
            if time.monotonic() > deadline:
                self.fail('the guest wrote no new record to %s in %ss '
                          '(newest %s)' % (path, timeout, newest))
            time.sleep(1)

    def _records_change(self, path, before, timeout=120):
        """Wait until the guest's ring differs from ``before``."""
        deadline = time.monotonic() + timeout
        while kvm_instance.read_records(path) == before:
            if time.monotonic() > deadline:
                self.fail('the guest wrote nothing to %s in %ss'
                          % (path, timeout))
            time.sleep(1)

    def _backup(self, volume_id, name='cvb-nova-stopped'):
        backup = self.osc('volume', 'backup', 'create', '--force', '--name',
                          name, volume_id)
        self.dep.wait('volume backup', backup['id'], ('available',),
                      timeout=BUILD_TIMEOUT)
        return backup['id']

    def _restore(self, backup_id):
        volume = self.osc('volume', 'create', '--size', '1',
                          'cvb-nova-restored')
        self.dep.wait('volume', volume['id'], ('available',))
        # (--force: the client refuses to restore into an existing volume
        # without it.)
        self.osc('volume', 'backup', 'restore', '--force', backup_id,
                 volume['id'])
        self.dep.wait('volume backup', backup_id, ('available',),
                      timeout=BUILD_TIMEOUT)
        self.dep.wait('volume', volume['id'], ('available',),
                      timeout=BUILD_TIMEOUT,
                      failures=('error', 'error_restoring'))
        return volume['id']

    def _timed(self, name, func, *args, **kwargs):
        started = time.monotonic()
        result = func(*args, **kwargs)
        self.figures['%s_seconds' % name] = round(
            time.monotonic() - started, 1)
        return result

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
        self.assertEqual([], [m for m in _mount_points()
                              if m.startswith(mount_point)])
        subprocess.run(['qemu-img', 'check', '-q', path],  # nosec B603 B607
                       check=True)
        self.assertNotEqual(0, max(kvm_instance.read_records(path)))


def _mount_points():
    with open('/proc/self/mountinfo') as f:
        return [line.split()[4] for line in f]


if __name__ == '__main__':
    sys.exit('run with stestr')
