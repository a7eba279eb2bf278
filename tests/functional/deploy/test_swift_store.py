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
  loaded) into a file: byte for byte the same data;
- the store-format check of tests/unit/backup/test_store_formats.py on
  the real Swift (swift_format_check.py): what Cinder's own backup() and
  the plugin's driver-owned paths store for the same data is the same.

Both profiles run in one deployment directory (``CVB_TEST_DEPLOY_DIR``
with ``swift``), started together and sharing its MariaDB, RabbitMQ,
Keystone and Swift. Start-up times (the whole profile, Swift's part of
it) and the step times are in each test's details.
"""

import json
import os
import re
import subprocess  # nosec B404: qemu-io, qemu-img, the stock restore
import sys
import threading
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
FORMAT_CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'swift_format_check.py')
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
        self.deploy_dir = deployment.DEPLOY_DIR % 'swift'
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


def _environment_problem(error):
    """Whether up.sh failed for the machine's sake.

    A daemon that did not start, or not in time on a loaded machine: such
    a profile skips; any other failure of the scripts fails its test.
    """
    return 'did not start' in error or 'not up after' in error


class SwiftStoreTest(testtools.TestCase):
    """Both profiles in one deployment directory, sharing its Swift.

    Started together (each profile's up.sh in a thread; the shared part,
    Swift included, once, under up.sh's lock) and stopped after the
    class's tests: about one start-up instead of two on this machine.
    """

    deployments = {}
    problems = {}
    failures = {}

    @classmethod
    def setUpClass(cls):
        super(SwiftStoreTest, cls).setUpClass()
        cls.deployments, cls.problems, cls.failures = {}, {}, {}
        missing = (deployment.missing_prerequisites() +
                   missing_swift_prerequisites())
        wanted = ['plugin', 'kvm']
        if missing:
            for profile in wanted:
                cls.problems[profile] = (
                    'the Swift deployment needs %s (tools/deploy/install.sh '
                    'installs them)' % ', '.join(missing))
            return
        kvm_missing = deployment.missing_kvm_prerequisites()
        if kvm_missing:
            wanted.remove('kvm')
            cls.problems['kvm'] = ('the kvm profile needs %s (tools/libvirt/'
                                   'install.sh)' % ', '.join(kvm_missing))
        deps = {p: SwiftDeployment(p) for p in wanted}
        cls.lock_holder = deps['plugin']
        if not cls.lock_holder.claim():
            for profile in wanted:
                cls.problems[profile] = (
                    'another test run on this machine is using the '
                    'deployment in %s' % cls.lock_holder.deploy_dir)
            return

        def start(dep):
            try:
                dep.start()
            except deployment.DeploymentError as e:
                if _environment_problem(str(e)):
                    cls.problems[dep.profile] = (
                        'the %s profile did not come up with Swift: %s'
                        % (dep.profile, str(e)[-600:]))
                else:
                    cls.failures[dep.profile] = str(e)

        threads = [threading.Thread(target=start, args=(dep,))
                   for dep in deps.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cls.deployments = deps

    @classmethod
    def tearDownClass(cls):
        try:
            for profile in ('kvm', 'plugin'):
                dep = cls.deployments.get(profile)
                if dep is not None:
                    dep.stop()
        finally:
            holder = getattr(cls, 'lock_holder', None)
            if holder is not None:
                holder.release()
            super(SwiftStoreTest, cls).tearDownClass()

    def _use(self, profile):
        if profile in self.problems:
            self.skipTest(self.problems[profile])
        if profile in self.failures:
            self.fail('up.sh %s failed: %s' % (profile,
                                               self.failures[profile]))
        self.profile = profile
        self.dep = self.deployments[profile]
        self.figures = {'up_seconds': round(self.dep.timings['up'], 1)}
        seconds = self.dep.swift_seconds()
        if seconds is not None:
            self.figures['swift_start_seconds'] = seconds
        self.addCleanup(self._report)
        self.tmp = self.useFixture(fixtures.TempDir()).path

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

    def test_vmware_backup_incremental_restore_on_swift(self):
        """The plugin profile: a VMDK volume on vcsim."""
        self._use('plugin')
        self._scenario()

    def test_qcow2_backup_incremental_restore_on_swift(self):
        """The kvm profile: a qcow2 volume."""
        self._use('kvm')
        self._scenario()

    def test_store_format_on_real_swift(self):
        """test_store_formats' check for swift, on the deployment's Swift."""
        profile = next((p for p in ('plugin', 'kvm')
                        if p in self.deployments and p not in self.problems
                        and p not in self.failures), None)
        if profile is None:
            self.skipTest('no profile with Swift came up: %s' % (
                self.problems or self.failures))
        dep = self.deployments[profile]
        workdir = self.useFixture(fixtures.TempDir()).path
        proc = subprocess.run(  # nosec B603
            [sys.executable, FORMAT_CHECK,
             os.path.join(dep.deploy_dir, 'infra', 'env'), workdir],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, timeout=BACKUP_TIMEOUT, check=False)
        out = proc.stdout.decode(errors='replace')
        if proc.returncode:
            self.fail('the store format differs on Swift: %s\n%s' % (
                out, proc.stderr.decode(errors='replace')[-3000:]))
        self.assertEqual({'handoff': 'same', 'handoff_stream': 'same',
                          'stream': 'same'},
                         json.loads(out.strip().splitlines()[-1]))

    def _scenario(self):
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

    # -- the profiles' disks -------------------------------------------------

    def write(self, volume_id, disk, offset, length, seed):
        if self.profile == 'kvm':
            subprocess.run(  # nosec B603 B607
                ['qemu-io', '-f', 'qcow2', '-c',
                 'write -P %d %d %d' % (seed, offset, length),
                 self.dep.volume_path(volume_id)],
                check=True, stdout=subprocess.DEVNULL)
            return disk.write(offset, bytes([seed]) * length)
        data = cli.pattern(b'swift-%d' % seed, length)
        vc = self.dep.vcsim
        vcsim_fixture.seed_disk(vc, vc.disk_path(volume_id), data,
                                offset=offset)
        return disk.write(offset, data)

    def raw_of(self, volume_id):
        """A raw file of the volume's disk."""
        if self.profile == 'kvm':
            raw = os.path.join(self.tmp, 'volume-%s.raw' % volume_id)
            subprocess.run(  # nosec B603 B607
                ['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw',
                 self.dep.volume_path(volume_id), raw], check=True)
            return raw
        vc = self.dep.vcsim
        descriptor = vc.datastore_file(vc.disk_path(volume_id))
        return descriptor[:-len('.vmdk')] + '-flat.vmdk'
