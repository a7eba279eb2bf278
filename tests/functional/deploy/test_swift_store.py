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
  the plugin's driver-owned paths store for the same data is the same;
- verification on the real Swift (issue 20, item 5), with the real
  ``openstack volume backup verify --wait``: a chain verified ``ok`` (once
  ``--deep``), then each bad input made through Swift's own API and
  repaired after its check: four bytes flipped in the middle of an object,
  an object truncated, an object deleted, the sha256 file deleted, the
  parent backup's record gone. Each is reported with its object and
  volume region; the verification changes nothing in the container
  (names, etags) and nothing of the backups but the verification record
  in their metadata (the status stays ``available``); a
  restore of the flipped backup fails naming the region, its volume in
  error.

Both profiles run in one deployment directory (``CVB_TEST_DEPLOY_DIR``
with ``swift``), started together and sharing its MariaDB, RabbitMQ,
Keystone and Swift. Start-up times (the whole profile, Swift's part of
it) and the step times are in each test's details.
"""

import hashlib
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
VERIFY_TIMEOUT = 180
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


def _flipped(data):
    """``data`` with four bytes in its middle inverted."""
    middle = len(data) // 2
    flipped = bytearray(data)
    flipped[middle:middle + 4] = bytes(b ^ 0xFF
                                       for b in flipped[middle:middle + 4])
    return bytes(flipped)


def _unrecorded(shown):
    """A backup as ``show`` printed it, but what a verification records.

    (Its metadata, and so its updated_at.)
    """
    return {k: v for k, v in shown.items()
            if k not in ('updated_at', 'metadata')}


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

    # -- verification and bad input on the real Swift ---------------------

    def test_verification_and_bad_input_on_swift(self):
        """Issue 20 item 5: every bad input on the real Swift store."""
        self._use('plugin')
        self.container = 'cvb-plugin'
        self.conn = self.dep.swift()
        vol = self.create_volume('swift-verify-src')
        disk = cli.Disk(size=SIZE)
        for index, (offset, length) in enumerate(REGIONS):
            disk = self.write(vol, disk, offset, length, 21 + index)
        full = self.backup('swift-verify-full', vol)
        for index, (offset, length) in enumerate(CHANGES):
            disk = self.write(vol, disk, offset, length, 31 + index)
        incr = self.backup('swift-verify-incr', vol, '--incremental')
        ids = (full['id'], incr['id'])
        full_objects = self.data_objects(full)
        incr_objects = self.data_objects(incr)

        # Good: the chain verifies, deep once (a restore into a scratch
        # file, compared).
        result = self.timed('verify_deep', self.verify, incr['id'],
                            '--deep')
        self.assertEqual(('ok', []), (result['Status'], result['Problems']),
                         result)
        self.assertTrue(result['Deep'], result)
        result = self.timed('verify', self.verify, full['id'])
        self.assertEqual('ok', result['Status'], result)

        stored = self.dep.swift_objects(full['id'])
        # Four bytes flipped in the middle of a zstd stream of zeros: it
        # no longer inflates; the whole object's region is named.
        name = min(full_objects, key=lambda n: stored[n])
        obj = full_objects[name]
        original = self.get(name)
        self.put(name, _flipped(original))
        problems = self.verify_failed('flipped_zeros', incr['id'], ids)
        named = self.named(problems, name, full['id'],
                           ('undecodable', 'md5_mismatch',
                            'digest_mismatch'))
        for problem in named:
            self.assert_within(problem, obj)
        self.put(name, original)

        # Four bytes flipped in the middle of the full backup's object
        # that stores the most (the written data: incompressible, zstd
        # stores it as is).
        name = max(full_objects, key=lambda n: stored[n])
        obj = full_objects[name]
        original = self.get(name)
        self.put(name, _flipped(original))
        problems = self.verify_failed('flipped', incr['id'], ids)
        named = self.named(problems, name, full['id'],
                           ('digest_mismatch', 'md5_mismatch',
                            'undecodable'))
        for problem in named:
            self.assert_within(problem, obj)
        digest = [p for p in named if p['reason'] == 'digest_mismatch']
        self.assertTrue(digest, named)
        # One hash block holds the four bytes.
        self.assertEqual(1, len(digest), digest)
        self.restore_fails(incr['id'], name, digest[0])
        self.put(name, original)

        # An object of the incremental truncated to half its stored bytes.
        stored = self.dep.swift_objects(incr['id'])
        name = max(incr_objects, key=lambda n: stored[n])
        obj = incr_objects[name]
        original = self.get(name)
        self.put(name, original[:len(original) // 2])
        problems = self.verify_failed('truncated', incr['id'], ids)
        for problem in self.named(problems, name, incr['id'],
                                  ('truncated', 'undecodable')):
            self.assert_within(problem, obj)
        self.put(name, original)

        # An object of the full backup deleted: missing, exactly its range.
        name = min(full_objects, key=lambda n: full_objects[n]['offset'])
        obj = full_objects[name]
        original = self.get(name)
        self.conn.delete_object(self.container, name)
        problems = self.verify_failed('deleted', incr['id'], ids)
        named = self.named(problems, name, full['id'], ('missing',))
        self.assertEqual([(obj['offset'], obj['length'])],
                         [(p['offset'], p['length']) for p in named])
        self.put(name, original)

        # The incremental's sha256 file deleted.
        sha_name = self.sha256_name(incr)
        original = self.get(sha_name)
        self.conn.delete_object(self.container, sha_name)
        problems = self.verify_failed('sha256_missing', incr['id'], ids)
        named = self.named(problems, sha_name, incr['id'],
                           ('sha256_file_missing',))
        self.assertEqual([(0, SIZE)],
                         [(p['offset'], p['length']) for p in named])
        self.put(sha_name, original)

        # Repaired: ok again (the checks above found the damage, not
        # something else).
        result = self.verify(incr['id'])
        self.assertEqual('ok', result['Status'], result)

        # The parent's record gone (its objects still stored).
        self.mark_deleted(full['id'], True)
        try:
            problems = self.verify_failed('parent_missing', incr['id'],
                                          (incr['id'],))
        finally:
            self.mark_deleted(full['id'], False)
        missing = [p for p in problems if p['reason'] == 'parent_missing']
        self.assertEqual([full['id']], [p['backup_id'] for p in missing],
                         problems)
        self.assertEqual((0, SIZE), (missing[0]['offset'],
                                     missing[0]['length']))

    def verify(self, backup_id, *extra):
        return self.osc('volume', 'backup', 'verify', backup_id, '--wait',
                        '--timeout', str(VERIFY_TIMEOUT), *extra)

    def verify_failed(self, case, backup_id, ids):
        """A failed verification; the store and the backups unchanged."""
        before = self.store_state(ids)
        shown = {b: self.osc('volume', 'backup', 'show', b) for b in ids}
        result = self.timed('verify_%s' % case, self.verify, backup_id)
        self.assertEqual('failed', result['Status'], result)
        self.assertTrue(result['Problems'], result)
        self.assertTrue(result['Summary'].startswith('failed: '), result)
        self.assertEqual(before, self.store_state(ids),
                         '%s: the verification changed the store' % case)
        for backup_id_, was in shown.items():
            # Only the verification record changes (the backup's metadata,
            # hence its updated_at); the status and the rest stay.
            now = self.osc('volume', 'backup', 'show', backup_id_)
            self.assertEqual('available', now['status'])
            self.assertEqual(
                _unrecorded(was), _unrecorded(now),
                '%s: the verification changed backup %s' % (
                    case, backup_id_))
        self.figures['problems_%s' % case] = sorted(
            {p['reason'] for p in result['Problems']})
        return result['Problems']

    def named(self, problems, name, backup_id, reasons):
        """The problems naming object ``name``, each of ``reasons``."""
        named = [p for p in problems if p.get('object') == name]
        self.assertTrue(named, 'no problem names %s: %s' % (name, problems))
        for problem in named:
            self.assertEqual(backup_id, problem['backup_id'], problem)
            self.assertIn(problem['reason'], reasons, problem)
            self.assertGreater(problem['length'], 0, problem)
        return named

    def assert_within(self, problem, obj):
        """The problem's volume region lies in what the object holds."""
        self.assertGreaterEqual(problem['offset'], obj['offset'], problem)
        self.assertLessEqual(problem['offset'] + problem['length'],
                             obj['offset'] + obj['length'], problem)

    def restore_fails(self, backup_id, name, problem):
        """A restore of the damaged backup stops, naming the region."""
        result = self.osc('volume', 'backup', 'restore', backup_id,
                          'swift-verify-damaged')
        volume_id = result['volume_id']
        self.dep.wait('volume backup', backup_id, ('available',),
                      timeout=BACKUP_TIMEOUT)
        shown = self.dep.wait('volume', volume_id,
                              ('error', 'error_restoring'),
                              failures=('available',),
                              timeout=BACKUP_TIMEOUT)
        self.assertIn(shown['status'], ('error', 'error_restoring'))
        log = self.dep.log('cinder-backup')
        match = re.search(
            r'backup %s is damaged: the restored volume region at offset '
            r'(\d+), length (\d+),[^\n]*stored in [^\n]*%s' % (
                backup_id, re.escape(name)), log)
        self.assertIsNotNone(match, 'the restore did not name the region '
                             'and object: %s' % log[-3000:])
        self.assertEqual((problem['offset'], problem['length']),
                         (int(match.group(1)), int(match.group(2))))

    # -- Swift, through its own API ---------------------------------------

    def metadata(self, backup):
        prefix = self.sha256_name(backup)[:-len('_sha256file')]
        _headers, body = self.conn.get_object(self.container,
                                              prefix + '_metadata')
        return prefix, json.loads(body)

    def sha256_name(self, backup):
        names = [n for n in self.dep.swift_objects(backup['id'])
                 if n.endswith('_sha256file')]
        self.assertEqual(1, len(names), names)
        return names[0]

    def data_objects(self, backup):
        """{name: {offset, length, ...}} of the backup's data objects."""
        _prefix, metadata = self.metadata(backup)
        objects = {}
        for entry in metadata['objects']:
            objects.update(entry)
        self.assertTrue(objects, metadata)
        return objects

    def get(self, name):
        _headers, body = self.conn.get_object(self.container, name)
        return body

    def put(self, name, data):
        etag = self.conn.put_object(self.container, name, data)
        self.assertEqual(hashlib.md5(data, usedforsecurity=False).hexdigest(),
                         etag)

    def store_state(self, ids):
        """{name: (bytes, etag)} of the backups' objects in the container."""
        _headers, listing = self.conn.get_container(self.container,
                                                    full_listing=True)
        return {o['name']: (o['bytes'], o['hash']) for o in listing
                if any('_backup_%s' % b in o['name'] for b in ids)}

    def mark_deleted(self, backup_id, deleted):
        """The backup's record deleted (or back), in Cinder's database."""
        infra = os.path.join(self.dep.deploy_dir, 'infra')
        if deleted:
            sql = ("UPDATE backups SET deleted = 1, deleted_at = NOW() "
                   "WHERE id = '%s'" % backup_id)
        else:
            sql = ("UPDATE backups SET deleted = 0, deleted_at = NULL "
                   "WHERE id = '%s'" % backup_id)
        subprocess.run(  # nosec B603 B607
            ['mariadb', '--no-defaults',
             '--socket=%s' % os.path.join(infra, 'mysql.sock'), '-uroot',
             'cvb_%s' % self.profile, '-e', sql],
            check=True, stdin=subprocess.DEVNULL, timeout=60)
