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

"""Servers of a real Nova in the deployment (CVB_DEPLOY_NOVA=1).

What the tests of both profiles' Nova share (:class:`NovaApi`: Nova up,
server polls, timed steps, ``restore new`` with a server, nova-compute
killed and restarted); the kvm profile's deployment
(:class:`NovaDeployment`) and the base of the tests that boot servers from
the plugin's qcow2 volumes (:class:`NovaServerTestCase`: the deployment
started for each test, the tiny writing guest put into a boot volume, the
servers' domains and the guest's records). The tests are in
``test_nova_*.py``.
"""

import datetime
import hashlib
import os
import subprocess  # nosec B404: the OpenStack client, qemu-io, virsh
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


def missing_nova_prerequisites(driver_module='libvirt'):
    """What the deployment's Nova lacks (tools/deploy/install.sh).

    :param driver_module: the module nova-compute's driver needs in
        Nova's virtualenv (``libvirt``; ``oslo_vmware`` on VMware)
    """
    missing = []
    for name in ('nova-compute', 'placement-manage', 'gunicorn'):
        if not os.path.exists(os.path.join(NOVA_VENV, 'bin', name)):
            missing.append('%s in %s' % (name, NOVA_VENV))
    for name in ('neutron-db-manage', 'gunicorn'):
        if not os.path.exists(os.path.join(NEUTRON_VENV, 'bin', name)):
            missing.append('%s in %s' % (name, NEUTRON_VENV))
    python = os.path.join(NOVA_VENV, 'bin', 'python')
    if not missing and subprocess.run(  # nosec B603: the venv's python
            [python, '-c', 'import %s' % driver_module],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL).returncode:
        missing.append('%s in %s' % (driver_module, NOVA_VENV))
    return missing


class NovaApi(object):
    """Nova through the ``openstack`` client, for a deployment test.

    Mixed into a testtools.TestCase with an ``osc`` method and a
    ``dep`` (:class:`~.deployment.Deployment`); ``HYPERVISOR_TYPE`` is the
    start of the hypervisor type nova-compute reports.
    """

    HYPERVISOR_TYPE = None

    def _timed(self, name, func, *args, **kwargs):
        """Call ``func``; its wall time goes to ``figures`` as NAME_seconds."""
        started = time.monotonic()
        result = func(*args, **kwargs)
        self.figures['%s_seconds' % name] = round(
            time.monotonic() - started, 1)
        return result

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
        self.assertEqual('up', hypervisors[0]['State'])
        self.assertTrue(hypervisors[0]['Hypervisor Type'].startswith(
            self.HYPERVISOR_TYPE), hypervisors[0])

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

    def _restore_new_server(self, group_id, server_id, vols, name):
        """``restore new`` of set ``name`` with a new server booted by Nova.

        Needs the group commands (``self.group``). The restored boot volume
        (``vols[0]``) is bootable and the server ACTIVE.

        :returns: ``(new server ID, {volume ID: new volume ID})``
        """
        flavor = self.osc('flavor', 'show', 'cvb.tiny')['id']
        made = self._timed(
            '%s_restore_new_server' % name, self.group, 'backup', 'restore',
            'new', group_id, '--instance', server_id, '--name', name,
            '--server-name', 'cvb-ig-restored', '--flavor', flavor)
        self.assertTrue(made['Success'], made)
        new_server = made['Server ID']
        self.assertTrue(new_server, made)
        news = dict(zip(made['Volume IDs'], made['New Volume IDs']))
        self.assertEqual(set(vols), set(news))
        self._timed('new_server_active', self._server_status, new_server,
                    ('ACTIVE',))
        self.assertIn(self.osc('volume', 'show', news[vols[0]])['bootable'],
                      (True, 'true'))
        return new_server, news

    def _set_ended_after_delete(self, group_id, name, started):
        """Wait for set ``name``, asked for before its server was deleted.

        It ends ``available`` or ``error``; an error says what failed.
        Its end and the time since ``started`` (monotonic) go to
        ``figures``. Needs the group commands (``self.wait_set``).

        :returns: the set as ``backup list --long`` shows it
        """
        ended = self.wait_set(group_id, name, ('available', 'error'))
        self.figures['%s_during_delete' % name] = ended['Status']
        self.figures['%s_during_delete_seconds' % name] = round(
            time.monotonic() - started, 1)
        if ended['Status'] == 'error':
            reason = ended.get('Description') or ''
            self.figures['%s_error' % name] = reason
            self.assertTrue(reason.startswith('Failed: '), ended)
            self.assertNotIn('Message objects', reason)
        return ended

    def _kill_compute(self):
        """SIGKILL nova-compute by its PID, as a node that dies."""
        self.assertIsNotNone(self.dep.service_pid('nova-compute'))
        self.dep.kill_service('nova-compute')
        self.assertIsNone(self.dep.service_pid('nova-compute'))

    def _restart_compute(self, timeout=BUILD_TIMEOUT):
        """Start the killed nova-compute again (its own command line).

        Returns once it runs and has reported to Nova since, and Nova is
        up (:meth:`_nova_is_up`).
        """
        restarted_at = datetime.datetime.now(datetime.timezone.utc)
        self.dep.start_service('nova-compute')
        deadline = time.monotonic() + timeout
        while True:
            self.assertIsNotNone(self.dep.service_pid('nova-compute'),
                                 'nova-compute ended after its restart')
            compute = [s for s in self.osc('compute', 'service', 'list')
                       if s['Binary'] == 'nova-compute']
            updated = datetime.datetime.fromisoformat(
                compute[0]['Updated At']).replace(
                    tzinfo=datetime.timezone.utc)
            if updated > restarted_at:
                break
            if time.monotonic() > deadline:
                self.fail('the restarted nova-compute did not report in '
                          '%ss' % timeout)
            time.sleep(1)
        self._nova_is_up()


class NovaServerTestCase(NovaApi, testtools.TestCase):
    """Base of the tests of servers of the deployment's Nova.

    Each test starts the kvm profile with Nova (about two to four
    minutes on two cores) and stops it at its end.
    """

    HYPERVISOR_TYPE = 'QEMU'

    def setUp(self):
        super(NovaServerTestCase, self).setUp()
        self.dep = NovaDeployment()
        deployment.start_for_test(
            self, self.dep,
            (deployment.missing_prerequisites() +
             deployment.missing_kvm_prerequisites() +
             missing_nova_prerequisites()),
            'kvm profile with Nova')
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def osc(self, *args, **kwargs):
        return self.dep.openstack(*args, **kwargs)

    def _boot_volume(self, disks=1, name='cvb-nova-boot'):
        """A bootable 1 GiB plugin volume holding the writing guest.

        :param disks: how many disks (BIOS drives 0x80...) the guest
            writes its records to
        """
        volume = self.osc('volume', 'create', '--size', '1', '--bootable',
                          name)
        self.dep.wait('volume', volume['id'], ('available',))
        sector = os.path.join(self.tmp, 'boot.bin')
        fd = os.open(sector, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'wb') as f:
            f.write(guest.boot_sector(disks=disks, paced=True))
        subprocess.run(  # nosec B603 B607
            ['qemu-io', '-f', 'qcow2', '-c',
             'write -s %s 0 %d' % (sector, guest.SECTOR),
             self.dep.volume_path(volume['id'])],
            check=True, stdout=subprocess.DEVNULL)
        return volume['id']

    def _domain_state(self, server_id):
        return self.dep._run(['virsh', '-q', '-c', self.dep.libvirt_uri,
                              'domstate', server_id])[1].strip()

    def _file_disks(self, server_id):
        """``(source file, <disk> element)`` of the domain's file disks."""
        xml = ElementTree.fromstring(self.dep.dumpxml(server_id))
        for disk in xml.findall('./devices/disk'):
            source = disk.find('source')
            if disk.get('type') == 'file' and source is not None:
                yield source.get('file'), disk

    def _disks(self, server_id):
        """{source file: driver type} of the server's domain's file disks."""
        return {path: disk.find('driver').get('type')
                for path, disk in self._file_disks(server_id)}

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


def mount_points():
    with open('/proc/self/mountinfo') as f:
        return [line.split()[4] for line in f]
