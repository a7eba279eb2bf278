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

"""End to end on a real Swift (CVB_DEPLOY_BACKUP_STORE=swift).

tools/deploy/up.sh starts the profile with a one-replica Swift cluster
(tools/deploy/swift.sh: Debian's proxy, account, container and object
servers, Keystone auth) and Cinder's SwiftBackupDriver as cinder-backup's
backup driver. With the real ``openstack`` client, for the plugin profile
(a VMDK volume on vcsim) and the kvm profile (a qcow2 volume):

- data written into a new volume, a full backup (driver-owned): its
  objects, metadata and sha256 file are in the profile's Swift container,
  nothing in the posix directory;
- more data written, an incremental backup on top;
- the incremental restored into a new volume by the plugin's driver-owned
  restore: the volume holds the written data byte for byte;
- the cross-store check: the same incremental restored by Cinder's own
  chunked-driver restore (tests/functional/deploy/stock_restore.py: the
  Swift driver's ``restore()`` over the whole chain, nothing of the plugin
  loaded) into a file: byte for byte the same data.

Each profile runs in a deployment directory of its own
(``CVB_TEST_DEPLOY_DIR`` with ``swift-<profile>``), so the two tests may
run on two workers at once. Start-up times (the whole profile, Swift's
part of it) and the step times are in the test's details.
"""

import json
import os
import re
import subprocess  # nosec B404: qemu-io, qemu-img, the stock restore
import sys
import time

import fixtures
from oslo_utils import units
import testtools

from tests.functional.deploy import deployment
from tests.functional.deploy import test_openstack_cli as cli
from tests.functional import vcsim as vcsim_fixture

SIZE = units.Gi
BACKUP_TIMEOUT = 300
STOCK_RESTORE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'stock_restore.py')
#: (offset, length) written before the full backup, and before the
#: incremental (one inside a written region, one over zeros).
REGIONS = ((0, units.Mi), (300 * units.Mi, 2 * units.Mi),
           (SIZE - units.Mi, units.Mi))
CHANGES = ((300 * units.Mi + 64 * units.Ki, 64 * units.Ki),
           (600 * units.Mi, 64 * units.Ki))


def missing_swift_prerequisites():
    """What the Swift store needs besides the deployment's prerequisites."""
    missing = []
    for server in ('proxy', 'account', 'container', 'object'):
        if not os.path.exists('/usr/bin/swift-%s-server' % server):
            missing.append('swift-%s' % server)
    if not os.path.exists('/usr/bin/swift-ring-builder'):
        missing.append('swift')
    if subprocess.run(  # nosec B603
            ['/usr/bin/python3', '-c', 'import keystonemiddleware'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            check=False).returncode:
        missing.append('python3-keystonemiddleware')
    try:
        import swiftclient  # noqa: F401
    except ImportError:
        missing.append('python-swiftclient in %s' % sys.prefix)
    return missing


class SwiftDeployment(deployment.Deployment):
    """A profile of up.sh with its backups in the deployment's Swift."""

    def __init__(self, profile):
        super(SwiftDeployment, self).__init__(profile)
        self.deploy_dir = deployment.DEPLOY_DIR % ('swift-%s' % profile)
        self.dir = os.path.join(self.deploy_dir, profile)
        self.up_output = ''

    def _script_env(self):
        env = super(SwiftDeployment, self)._script_env()
        env['CVB_DEPLOY_BACKUP_STORE'] = 'swift'
        return env

    def _script(self, name, timeout):
        output = super(SwiftDeployment, self)._script(name, timeout)
        if name == 'up.sh':
            self.up_output = output
        return output

    def swift_seconds(self):
        """Seconds up.sh spent starting Swift (None: not in its log)."""
        marks = dict(
            (m.group(2), int(m.group(1))) for m in re.finditer(
                r'cvb-deploy \[(\d+)s\]: (starting Swift|Swift is up)',
                self.up_output))
        if len(marks) != 2:
            return None
        return marks['Swift is up'] - marks['starting Swift']


class _SwiftStoreScenario(object):
    """The scenario; the test classes name the profile and the disk I/O."""

    profile = None

    def setUp(self):
        super(_SwiftStoreScenario, self).setUp()  # testtools.TestCase's
        missing = (deployment.missing_prerequisites() +
                   missing_swift_prerequisites() + self.missing())
        if missing:
            self.skipTest('the Swift deployment needs %s (tools/deploy/'
                          'install.sh installs them)' % ', '.join(missing))
        self.dep = SwiftDeployment(self.profile)
        if not self.dep.claim():
            self.skipTest('another test run on this machine is using the '
                          'deployment in %s' % self.dep.deploy_dir)
        self.addCleanup(self.dep.release)
        self.figures = {}
        self.addCleanup(self._report)
        self.addCleanup(self.dep.stop)
        try:
            self.dep.start()
        except deployment.DeploymentError as e:
            # A daemon of this machine that does not start (or not in
            # time, on a loaded machine) skips; any other failure of the
            # scripts fails the test.
            if 'did not start' not in str(e) and 'not up after' not in str(e):
                raise
            self.skipTest('the %s profile did not come up with Swift: %s'
                          % (self.profile, str(e)[-600:]))
        self.figures['up_seconds'] = round(self.dep.timings['up'], 1)
        self.figures['swift_start_seconds'] = self.dep.swift_seconds()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def missing(self):
        return []

    def _report(self):
        text = json.dumps(self.figures, indent=2, sort_keys=True)
        self.addDetail('figures', testtools.content.text_content(text))
        sys.stdout.write('\n%s profile on Swift: %s\n' % (self.profile, text))
        sys.stdout.flush()

    def timed(self, name, func, *args):
        started = time.monotonic()
        result = func(*args)
        self.figures['%s_seconds' % name] = round(
            time.monotonic() - started, 1)
        return result

    def osc(self, *args):
        return self.dep.openstack(*args)

    def create_volume(self, name):
        volume = self.osc('volume', 'create', '--size', str(SIZE // units.Gi),
                          name)
        return self.dep.wait('volume', volume['id'], ('available',))['id']

    def backup(self, name, volume_id, *extra):
        backup = self.osc('volume', 'backup', 'create', '--name', name,
                          *(extra + (volume_id,)))
        shown = self.dep.wait('volume backup', backup['id'], ('available',),
                              timeout=BACKUP_TIMEOUT)
        return shown

    def restore_new(self, backup_id, name):
        result = self.osc('volume', 'backup', 'restore', backup_id, name)
        volume_id = result['volume_id']
        self.dep.wait('volume backup', backup_id, ('available',),
                      timeout=BACKUP_TIMEOUT)
        self.dep.wait('volume', volume_id, ('available',),
                      failures=('error', 'error_restoring'),
                      timeout=BACKUP_TIMEOUT)
        return volume_id

    def stock_restore(self, backup_id, volume_id):
        """Cinder's own restore of the backup into a file; its path."""
        path = os.path.join(self.tmp, 'stock-%s.raw' % backup_id)
        proc = subprocess.run(  # nosec B603
            [sys.executable, STOCK_RESTORE,
             os.path.join(self.dep.dir, 'cinder.conf'), backup_id,
             volume_id, str(SIZE), path],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=BACKUP_TIMEOUT, check=False)
        if proc.returncode:
            self.fail('stock restore of %s failed: %s' % (
                backup_id, proc.stdout.decode(errors='replace')[-3000:]))
        return path

    def assert_in_swift(self, backup):
        """The backup's objects are in Swift, none in the posix directory."""
        stored = self.dep.swift_objects(backup['id'])
        names = sorted(stored)
        self.assertTrue(any(n.endswith('_metadata') for n in names), names)
        self.assertTrue(any(n.endswith('_sha256file') for n in names), names)
        data = [n for n in names
                if not n.endswith(('_metadata', '_sha256file'))]
        self.assertNotEqual([], data, names)
        self.assertEqual('cvb-%s' % self.profile, backup['container'])
        self.assertEqual([], self.dep.backup_files(backup['id']))
        return sum(stored[n] for n in data)

    def assert_same(self, disk, raw_path, what):
        first = disk.first_difference(raw_path)
        if first is not None:
            self.fail('%s: first difference at byte %d' % (what, first))

    # -- the scenario -------------------------------------------------------

    def test_backup_incremental_restore_on_swift(self):
        vol = self.create_volume('swift-src')
        disk = cli.Disk(size=SIZE)
        for index, (offset, length) in enumerate(REGIONS):
            disk = self.write(vol, disk, offset, length, 1 + index)
        full = self.timed('full_backup', self.backup, 'swift-full', vol)
        self.figures['full_stored_bytes'] = self.assert_in_swift(full)

        for index, (offset, length) in enumerate(CHANGES):
            disk = self.write(vol, disk, offset, length, 11 + index)
        incr = self.timed('incremental_backup', self.backup, 'swift-incr',
                          vol, '--incremental')
        self.assertTrue(incr['is_incremental'])
        self.figures['incremental_stored_bytes'] = self.assert_in_swift(incr)
        self.assertLess(self.figures['incremental_stored_bytes'],
                        self.figures['full_stored_bytes'])

        restored = self.timed('restore', self.restore_new,
                              incr['id'], 'swift-restored')
        self.assert_same(disk, self.raw_of(restored),
                         'driver-owned restore of the incremental')

        path = self.timed('stock_restore', self.stock_restore, incr['id'],
                          vol)
        self.assert_same(disk, path, "Cinder's own restore of the "
                         'incremental')


class VmwareSwiftStoreTest(_SwiftStoreScenario, testtools.TestCase):
    """The plugin profile: a VMDK volume on vcsim, backups in Swift."""

    profile = 'plugin'

    def write(self, volume_id, disk, offset, length, seed):
        data = cli.pattern(b'swift-%d' % seed, length)
        vc = self.dep.vcsim
        vcsim_fixture.seed_disk(vc, vc.disk_path(volume_id), data,
                                offset=offset)
        return disk.write(offset, data)

    def raw_of(self, volume_id):
        vc = self.dep.vcsim
        descriptor = vc.datastore_file(vc.disk_path(volume_id))
        return descriptor[:-len('.vmdk')] + '-flat.vmdk'


class Qcow2SwiftStoreTest(_SwiftStoreScenario, testtools.TestCase):
    """The kvm profile: a qcow2 volume, backups in Swift."""

    profile = 'kvm'

    def missing(self):
        return deployment.missing_kvm_prerequisites()

    def write(self, volume_id, disk, offset, length, seed):
        subprocess.run(  # nosec B603 B607
            ['qemu-io', '-f', 'qcow2', '-c',
             'write -P %d %d %d' % (seed, offset, length),
             self.dep.volume_path(volume_id)],
            check=True, stdout=subprocess.DEVNULL)
        return disk.write(offset, bytes([seed]) * length)

    def raw_of(self, volume_id):
        raw = os.path.join(self.tmp, 'volume-%s.raw' % volume_id)
        subprocess.run(  # nosec B603 B607
            ['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw',
             self.dep.volume_path(volume_id), raw], check=True)
        return raw
