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

"""The main job: backup and restore of a VMDK volume, end to end.

Run through ``tools/demo.sh`` (``tools/demo.sh --instance`` runs the
scenario of a running Nova server instead: ``tools/demo_instance.py``).
It uses the deployment of ``tools/deploy`` (profile ``plugin``:
cinder.conf written the way the README tells an operator, vcsim as
vCenter, the posix backup driver in a local directory, or with
``CVB_DEPLOY_BACKUP_STORE=swift`` Cinder's Swift driver on the
deployment's Swift cluster) and the real ``openstack`` command-line
client.
"""

import hashlib
import os
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)
os.environ.setdefault('CVB_TEST_DEPLOY_DIR', '/var/tmp/cvb-demo-%s')

from oslo_utils import units  # noqa: E402

# (The tests package silences eventlet's deprecation banner when imported,
# before anything imports eventlet; vcsim's certificate is verified against
# the deployment's own CA, so no request warns of an unverified one.)
from tests.functional.deploy import deployment  # noqa: E402
from tests.functional import vcsim as vcsim_fixture  # noqa: E402

SIZE_GB = 1
#: (offset, length) of the data the demo writes into the 1 GiB volume.
REGIONS = ((0, 4 * units.Mi), (256 * units.Mi, 16 * units.Mi),
           (SIZE_GB * units.Gi - units.Mi, units.Mi))
#: The region changed before the incremental backup.
CHANGE = (256 * units.Mi + 64 * units.Ki, 256 * units.Ki)


def pattern(seed, length):
    """Deterministic, incompressible bytes."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(b'%s-%d' % (seed, counter)).digest()
        counter += 1
    return bytes(out[:length])


class Demo(object):

    def __init__(self):
        self.dep = deployment.Deployment('plugin')
        self.rows = []
        self.image = bytearray(SIZE_GB * units.Gi)

    def say(self, text):
        print(text, flush=True)

    def timed(self, label, func, *args):
        started = time.monotonic()
        result = func(*args)
        seconds = time.monotonic() - started
        self.say('  %-44s %6.1f s' % (label, seconds))
        return result, seconds

    def osc(self, *args):
        return self.dep.openstack(*args)

    def write(self, volume_id, offset, data):
        path = self.dep.vcsim.disk_path(volume_id)
        vcsim_fixture.seed_disk(self.dep.vcsim, path, data, offset=offset)
        self.image[offset:offset + len(data)] = data

    def create_volume(self, name):
        volume = self.osc('volume', 'create', '--size', str(SIZE_GB), name)
        return self.dep.wait('volume', volume['id'], ('available',))['id']

    def backup(self, name, volume_id, *extra):
        backup = self.osc('volume', 'backup', 'create', '--name', name,
                          *(extra + (volume_id,)))
        self.dep.wait('volume backup', backup['id'], ('available',),
                      timeout=900)
        return backup['id']

    def restore_to_new(self, backup_id, name):
        result = self.osc('volume', 'backup', 'restore', backup_id, name)
        volume_id = result['volume_id']
        self.dep.wait('volume backup', backup_id, ('available',),
                      timeout=900)
        self.dep.wait('volume', volume_id, ('available',),
                      failures=('error', 'error_restoring'))
        return volume_id

    def run(self):
        if not self.dep.claim():
            raise SystemExit('another run holds %s' % self.dep.deploy_dir)
        try:
            self.say('Starting Cinder (api, scheduler, volume, backup) with '
                     'cinder-vmdk-backup against vcsim ...')
            self.timed('deployment up', self.dep.start)
            return self._scenario()
        finally:
            self.say('Stopping the deployment ...')
            self.dep.stop()
            self.dep.release()

    def _scenario(self):
        volume, _ = self.timed('openstack volume create (1 GiB)',
                               self.create_volume, 'demo-volume')
        for i, (offset, length) in enumerate(REGIONS):
            self.write(volume, offset, pattern(b'base%d' % i, length))
        written = sum(length for _offset, length in REGIONS)
        self.say('  wrote %d MiB of data into its disk'
                 % (written // units.Mi))

        full, full_s = self.timed('openstack volume backup create',
                                  self.backup, 'demo-full', volume)
        self.write(volume, CHANGE[0], pattern(b'change', CHANGE[1]))
        expected = bytes(self.image)
        incr, incr_s = self.timed('openstack volume backup create '
                                  '--incremental', self.backup, 'demo-incr',
                                  volume, '--incremental')
        restored, restore_s = self.timed(
            'openstack volume backup restore (new volume)',
            self.restore_to_new, incr, 'demo-restored')

        path = self.dep.vcsim.disk_path(restored)
        actual = vcsim_fixture.read_disk(self.dep.vcsim, path)
        same = actual == expected
        full_bytes = self.dep.stored_bytes(full)
        incr_bytes = self.dep.stored_bytes(incr)
        self.say('')
        self.say('Summary')
        self.say('  volume size                 %d GiB (%d MiB written)'
                 % (SIZE_GB, written // units.Mi))
        self.say('  backup store                %s' % self.dep.backup_store)
        self.say('  full backup                 %.1f s, %d bytes stored'
                 % (full_s, full_bytes))
        self.say('  incremental backup          %.1f s, %d bytes stored '
                 '(%.2f%% of the full one)'
                 % (incr_s, incr_bytes, 100.0 * incr_bytes / max(full_bytes,
                                                                 1)))
        self.say('  restore to a new volume     %.1f s' % restore_s)
        self.say('  restored data               %s' % (
            'identical, byte for byte' if same else
            'DIFFERENT (%d bytes read, %d expected)' % (len(actual),
                                                        len(expected))))
        return 0 if same else 1


if __name__ == '__main__':
    if sys.argv[1:] == ['--instance']:
        import demo_instance
        sys.exit(demo_instance.main())
    if sys.argv[1:]:
        raise SystemExit('usage: tools/demo.sh [--instance]')
    missing = deployment.missing_prerequisites()
    if missing:
        raise SystemExit('missing: %s (run tools/install-peers.sh)'
                         % ', '.join(missing))
    sys.exit(Demo().run())
