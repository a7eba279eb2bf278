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

"""The main job with an instance: ``tools/demo.sh --instance``.

The kvm profile of ``tools/deploy`` with a real Nova (CVB_DEPLOY_NOVA=1):
a server boots from a plugin qcow2 volume holding a tiny guest that writes
numbered records to its disk. With the ``openstack`` client, as a user
would, the demo backs the running server up (an instance-group backup set:
the volume frozen online through libvirt, merged back), lets the guest
write on, stops the server, restores the set onto the server's own volume
(a restore in place needs the server shut down; a single-volume restore
onto an attached volume is refused by Cinder), starts the server and reads
the guest's records: they go on from the restored point.
"""

import signal
import sys
import time

from tests.functional.deploy import deployment
from tests.functional.deploy import kvm_instance
from tests.functional.deploy import nova_servers
from tests.functional.kvm import guest

#: Seconds the demo waits for a server, a backup set or a restore.
TIMEOUT = 600
#: Records the guest writes on after the backup before the server stops.
WRITE_ON = 20


def missing_prerequisites():
    return (deployment.missing_prerequisites() +
            deployment.missing_kvm_prerequisites() +
            nova_servers.missing_nova_prerequisites())


class InstanceDemo(object):

    def __init__(self):
        self.dep = nova_servers.NovaDeployment()
        self.started = time.monotonic()
        self.figures = []

    # -- output -------------------------------------------------------------

    def say(self, text):
        print('[%6.1f s] %s' % (time.monotonic() - self.started, text),
              flush=True)

    def timed(self, label, func, *args, **kwargs):
        started = time.monotonic()
        result = func(*args, **kwargs)
        seconds = time.monotonic() - started
        self.say('  %s: %.1f s' % (label, seconds))
        self.figures.append((label, seconds))
        return result

    # -- the clients --------------------------------------------------------

    def osc(self, *args, **kwargs):
        return self.dep.openstack(*args, **kwargs)

    def group(self, *args, **kwargs):
        return self.osc('volume', 'instance', 'group', *args, **kwargs)

    def newest(self):
        """The guest's newest record in the boot volume (ring checked)."""
        return guest.consistent_run(kvm_instance.read_records(self.path))

    def wait_records(self, above, timeout=120):
        """Wait until the guest's newest record is above ``above``."""
        deadline = time.monotonic() + timeout
        while True:
            newest = self.newest()
            if newest > above:
                return newest
            if time.monotonic() > deadline:
                raise deployment.DeploymentError(
                    'the guest wrote no record above %d in %ss (newest %d)'
                    % (above, timeout, newest))
            time.sleep(0.5)

    def server(self, server_id, status):
        return self.dep.wait('server', server_id, (status,), timeout=TIMEOUT,
                             failures=('ERROR',))

    def wait_set(self, group_id, name):
        deadline = time.monotonic() + TIMEOUT
        while True:
            sets = {s['Name']: s for s in
                    self.group('backup', 'list', '--long', group_id)}
            found = sets.get(name) or {}
            if found.get('Status') == 'available':
                return found
            if found.get('Status') == 'error' or \
                    time.monotonic() > deadline:
                raise deployment.DeploymentError(
                    'backup set %s: %s' % (name, found or 'not listed'))
            time.sleep(1)

    def _server_action(self, server_id, action, status):
        self.osc('server', action, server_id, json=False)
        return self.server(server_id, status)

    def _backup_set(self, group_id, server_id, name):
        made = self.group('backup', 'create', group_id, '--instance',
                          server_id, '--name', name)
        self.wait_set(group_id, name)
        return made

    def _restore_set(self, group_id, server_id, name, volume_id):
        self.group('backup', 'restore', group_id, '--instance', server_id,
                   '--name', name)
        self.dep.wait('volume', volume_id, ('in-use',), timeout=TIMEOUT)

    # -- the run ------------------------------------------------------------

    def run(self):
        if not self.dep.claim():
            raise SystemExit('another run holds %s' % self.dep.deploy_dir)
        # SIGTERM ends the run as Ctrl-C does: through the finally below.
        signal.signal(signal.SIGTERM, _interrupted)
        try:
            self.say('Starting the kvm profile with Nova (Keystone, '
                     'MariaDB, RabbitMQ, Cinder with the plugin\'s qcow2 '
                     'driver, Placement, Nova, Neutron API, libvirtd) ...')
            self.timed('deployment up', self.dep.start)
            return self._scenario()
        finally:
            # A second Ctrl-C must not cut the clean-up short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.say('Stopping everything the demo started ...')
            self.dep.stop()
            self.dep.release()
            self.say('Stopped.')

    def _scenario(self):
        say = self.say
        say('1. A bootable 1 GiB plugin volume with the writing guest')
        volume = self.osc('volume', 'create', '--size', '1', '--bootable',
                          'demo-boot')
        volume_id = volume['id']
        self.dep.wait('volume', volume_id, ('available',))
        self.path = self.dep.volume_path(volume_id)
        kvm_instance.install_guest(self.path, disks=1)
        say('  volume %s, guest in its boot sector (%s)'
            % (volume_id, self.path))

        say('2. openstack server create --volume ... --nic none')
        server_id = self.osc('server', 'create', '--flavor', 'cvb.tiny',
                             '--volume', volume_id, '--nic', 'none',
                             'demo-server')['id']
        self.timed('server create, until ACTIVE', self.server, server_id,
                   'ACTIVE')
        first = self.wait_records(0)
        say('  the guest writes: newest record %d' % first)
        later = self.wait_records(first + 5)
        say('  ... and on: newest record %d' % later)

        say('3. A backup while the server runs (instance group set)')
        group_id = self.group('create', '--name', 'demo-group',
                              server_id)['ID']
        before = self.newest()
        made = self.timed('backup set (server running)', self._backup_set,
                          group_id, server_id, 'demo-running')
        after = self.newest()
        say('  backups %s; the guest\'s newest record was %d before, %d '
            'after' % (', '.join(made['Backup IDs']), before, after))
        state = self.dep._run(['virsh', '-q', '-c', self.dep.libvirt_uri,
                               'domstate', server_id])[1].strip()
        say('  the server stayed %s' % state)

        say('4. The guest writes on; the server stops')
        self.wait_records(after + WRITE_ON)
        self.timed('server stop, until SHUTOFF', self._server_action,
                   server_id, 'stop', 'SHUTOFF')
        stopped = self.newest()
        say('  stopped at record %d' % stopped)

        say('5. The set restored onto the server\'s own volume')
        self.timed('restore in place', self._restore_set, group_id, server_id,
                   'demo-running', volume_id)
        restored = self.newest()
        say('  the volume now ends at record %d (the backup\'s point, '
            'between %d and %d)' % (restored, before, after))

        say('6. The server starts from the restored volume')
        self.timed('server start, until ACTIVE', self._server_action,
                   server_id, 'start', 'ACTIVE')
        resumed = self.wait_records(restored)
        say('  the guest writes on from the restored point: %d, %d, ...'
            % (restored, resumed))
        ok = before <= restored <= after < stopped and resumed > restored

        say('')
        say('Summary')
        for label, seconds in self.figures:
            say('  %-34s %6.1f s' % (label, seconds))
        say('  records: backup at %d (taken between %d and %d), stopped at '
            '%d, restored to %d, resumed at %d: %s'
            % (restored, before, after, stopped, restored, resumed,
               'as expected' if ok else 'NOT AS EXPECTED'))
        say('  (the whole demo so far: %.0f s)'
            % (time.monotonic() - self.started))
        return 0 if ok else 1


def _interrupted(signum, frame):
    raise KeyboardInterrupt()


def main():
    missing = missing_prerequisites()
    if missing:
        raise SystemExit('missing: %s (run tools/install-peers.sh)'
                         % ', '.join(missing))
    try:
        return InstanceDemo().run()
    except KeyboardInterrupt:
        print('Interrupted; everything the demo started is stopped.',
              file=sys.stderr)
        return 130
