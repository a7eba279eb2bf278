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

"""Faults and bad requests around a server of the deployment's real Nova.

One deployment (kvm profile, CVB_DEPLOY_NOVA=1) for the whole scenario,
through the real clients:

- nova-compute killed (SIGKILL, by its PID file) while a ``--force``
  backup of its running server's volume is streaming (the volume holds
  64 MiB of data besides the guest; the backup is capped at 4 MiB/s with
  its ``cvb_bandwidth_mib_s`` metadata, so the kill lands after the
  freeze, before the merge): the backup ends available (nova-compute is
  not on its path) and restores a consistent ring and the data; the
  domain runs on, on its volume alone at the mount-point path, with no
  overlay in its chain or beside the volume; nova-compute started again
  with its own command line reports up, and the server stops, its image
  checks clean with a consistent ring, and starts again;
- a restore of that backup onto the running server's (in-use) volume is
  refused by Cinder with its reason; the volume stays in-use, the backup
  available, and the guest's records run on from where they were (no
  older point was written back);
- a backup of the in-use volume without ``--force`` and a delete of it
  are refused with their reasons, and change nothing.
"""

import os
import subprocess  # nosec B404: qemu-img, qemu-io
import sys
import time
from xml.etree import ElementTree

from tests.functional.deploy import deployment
from tests.functional.deploy import kvm_instance
from tests.functional.deploy import nova_servers
from tests.functional.kvm import guest

BUILD_TIMEOUT = nova_servers.BUILD_TIMEOUT
MIB = 1024 * 1024
#: Data beside the guest's records (sectors 0-2048), read by the backup.
DATA_OFFSET = 64 * MIB
DATA_BYTES = 64 * MIB
DATA_PATTERN = 0x5a
#: The backup's cap: 64 MiB take about 16 s, the kill lands mid-way.
CAP_MIB_S = 4


class NovaFaultsTest(nova_servers.NovaServerTestCase):
    """Faults and refused requests around a running server's volume."""

    def test_faults_around_a_running_server(self):
        volume_id = self._boot_volume(name='cvb-nova-faults')
        path = self.dep.volume_path(volume_id)
        self._qemu_io(path, 'write -P 0x%x %d %d' % (
            DATA_PATTERN, DATA_OFFSET, DATA_BYTES))
        server_id = self.osc('server', 'create', '--flavor', 'cvb.tiny',
                             '--volume', volume_id, '--nic', 'none',
                             'cvb-nova-faults')['id']
        self._server_status(server_id, ('ACTIVE',))
        nova_path = self.dep.nova_volume_path(volume_id)
        self.assertEqual({nova_path: 'qcow2'}, self._disks(server_id))
        self._records_advance(path)

        backup_id = self._backup_with_compute_killed(volume_id, server_id)
        self._disk_is_clean(server_id, nova_path)
        restored = self.dep.volume_path(
            self._timed('restore', self._restore, backup_id))
        self.figures['backup_newest_record'] = guest.consistent_run(
            kvm_instance.read_records(restored))
        self._qemu_io(restored, 'read -P 0x%x %d %d' % (
            DATA_PATTERN, DATA_OFFSET, DATA_BYTES), read_only=True)

        self._restore_onto_running_volume_refused(backup_id, volume_id,
                                                  path)
        self._in_use_requests_refused(volume_id)

        # nova-compute (started again) serves the server: stop, a clean
        # image with a consistent ring, start, the guest writes again.
        self.osc('server', 'stop', server_id, json=False)
        self._timed('stop', self._server_status, server_id, ('SHUTOFF',))
        subprocess.run(['qemu-img', 'check', '-q', path],  # nosec B603 B607
                       check=True)
        stopped = kvm_instance.read_records(path)
        self.assertGreaterEqual(guest.consistent_run(stopped),
                                self.figures['backup_newest_record'])
        self._qemu_io(path, 'read -P 0x%x %d %d' % (
            DATA_PATTERN, DATA_OFFSET, DATA_BYTES), read_only=True)
        self.osc('server', 'start', server_id, json=False)
        self._timed('start', self._server_status, server_id, ('ACTIVE',))
        self.assertEqual({nova_path: 'qcow2'}, self._disks(server_id))
        self._records_change(path, stopped)

    # -- the steps ---------------------------------------------------------

    def _backup_with_compute_killed(self, volume_id, server_id):
        """A capped ``--force`` backup; nova-compute killed while it reads.

        :returns: the backup's ID (available)
        """
        backup = self.osc(
            'volume', 'backup', 'create', '--force', '--name',
            'cvb-nova-faults', '--property',
            'cvb_bandwidth_mib_s=%d' % CAP_MIB_S, volume_id)
        # Mid-way: the volume is frozen (the overlay the domain writes to
        # is there) and the backup still runs.
        overlays = self._wait_for_overlay(backup['id'])
        self._kill_compute()
        self.assertTrue(any(os.path.exists(o) for o in overlays),
                        'the backup ended before nova-compute was killed')
        self.assertIn(self.osc('volume', 'backup', 'show',
                               backup['id'])['status'],
                      ('creating', 'backing-up'))
        shown = self._timed('killed_compute_backup', self.dep.wait,
                            'volume backup', backup['id'],
                            ('available', 'error'), timeout=BUILD_TIMEOUT)
        # Nova is not on a Cinder backup's path: it completes.
        self.assertEqual('available', shown['status'],
                         shown.get('fail_reason'))
        self.assertEqual('running', self._domain_state(server_id))
        self._restart_compute()
        return backup['id']

    def _wait_for_overlay(self, backup_id, timeout=120):
        """Wait until the frozen volume's overlay exists; return its path."""
        qcow2_dir = os.path.join(self.dep.dir, 'qcow2')
        deadline = time.monotonic() + timeout
        while True:
            overlays = self._transient_files(qcow2_dir)
            if overlays:
                return overlays
            status = self.dep.shell.query('volume', 'backup', 'show',
                                          backup_id)['status']
            if status not in ('creating', 'backing-up'):
                self.fail('backup %s is %s: no overlay was seen while it '
                          'ran' % (backup_id, status))
            if time.monotonic() > deadline:
                self.fail('no overlay after %ss' % timeout)
            time.sleep(0.2)

    def _disk_is_clean(self, server_id, nova_path):
        """The domain runs on its volume alone, no overlay left anywhere."""
        self.assertEqual('running', self._domain_state(server_id))
        self.assertEqual({nova_path: 'qcow2'}, self._disks(server_id))
        xml = ElementTree.fromstring(self.dep.dumpxml(server_id))
        chain = [s.get('file') for s in xml.findall(
            './devices/disk/backingStore//source')]
        self.assertEqual([], chain)
        for where in (os.path.join(self.dep.dir, 'qcow2'),
                      os.path.dirname(nova_path),
                      os.path.join(self.dep.dir, 'libvirt-private')):
            self.assertEqual([], self._transient_files(where), where)

    def _restore_onto_running_volume_refused(self, backup_id, volume_id,
                                             path):
        before = guest.consistent_run(kvm_instance.read_records(path))
        error = self.assertRaises(
            deployment.DeploymentError, self.osc, 'volume', 'backup',
            'restore', '--force', backup_id, volume_id)
        self.assertIn('Volume to be restored to must be available',
                      str(error))
        self.figures['restore_refused'] = str(error).rsplit(', ', 1)[-1]
        self.assertEqual('in-use', self.osc('volume', 'show',
                                            volume_id)['status'])
        self.assertEqual('available', self.osc('volume', 'backup', 'show',
                                               backup_id)['status'])
        # Nothing written back: the ring runs on past where it was.
        after = self._records_advance(path)
        self.assertGreater(after, before)
        self.assertGreater(after, self.figures['backup_newest_record'])

    def _in_use_requests_refused(self, volume_id):
        error = self.assertRaises(
            deployment.DeploymentError, self.osc, 'volume', 'backup',
            'create', '--name', 'cvb-nova-unforced', volume_id)
        self.assertIn('force', str(error))
        error = self.assertRaises(
            deployment.DeploymentError, self.osc, 'volume', 'delete',
            volume_id, json=False)
        self.assertIn('must not be migrating, attached', str(error))
        self.assertEqual('in-use', self.osc('volume', 'show',
                                            volume_id)['status'])
        self.assertNotIn('cvb-nova-unforced', [
            b['Name'] for b in self.osc('volume', 'backup', 'list')])

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _transient_files(directory):
        found = []
        for root, _dirs, files in os.walk(directory):
            found += [os.path.join(root, f) for f in files
                      if '.cvb-overlay-' in f or '.cvb-frozen-' in f]
        return found

    @staticmethod
    def _qemu_io(path, command, read_only=False):
        cmd = ['qemu-io', '-f', 'qcow2'] + (['-r'] if read_only else []) + \
            ['-c', command, path]
        out = subprocess.run(cmd, check=True,  # nosec B603 B607
                             stdout=subprocess.PIPE).stdout.decode()
        if 'Pattern verification failed' in out:
            raise AssertionError('%s: %s' % (path, out[-500:]))


if __name__ == '__main__':
    sys.exit('run with stestr')
