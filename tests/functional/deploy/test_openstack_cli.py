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

"""End to end: a real Cinder deployment driven by the `openstack` client.

tools/deploy/up.sh starts RabbitMQ, MariaDB, Keystone, a vcsim and Cinder's
four services; these tests then do what a user does, with the real
command-line clients: volume create, data written into the volume's disk
(through vcsim's datastore directory), full / incremental / in-use
(--force) / from-a-snapshot backups, restores onto the volume and onto new
volumes, volume create --backup, backup delete, a backup that fails
mid-transfer and a backup during which vcsim is killed. Every restored
disk is compared byte for byte with what was written.

The same scenario runs against two profiles: ``plugin`` (cinder.conf as
the README tells an operator: the plugin's VMDK driver and backup manager)
and ``stock`` (Cinder's own VMDK driver and backup manager). Each test is
one scenario, so that a profile's deployment is started once and the two
profiles can run on two test workers side by side (sharing RabbitMQ,
MariaDB and Keystone). Each writes a summary (times, stored bytes, the
outcome of every step) to its details and to summary.json in its profile's
directory.
"""

import hashlib
import json
import os
import time
import uuid

from oslo_utils import units
import testtools

from tests.functional.deploy import deployment
from tests.functional import vcsim as vcsim_fixture

SIZE_GB = 1
# (offset, length) of the regions written into a 1 GiB volume.
REGIONS = ((0, units.Mi), (300 * units.Mi, 2 * units.Mi),
           (units.Gi - units.Mi, units.Mi))
CHANGE = (300 * units.Mi + 64 * units.Ki, 64 * units.Ki)
BACKUP_TIMEOUT = 300


def pattern(seed, length):
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(b'%s-%d' % (seed, counter)).digest()
        counter += 1
    return bytes(out[:length])


class Disk(object):
    """The expected content of a volume: sparse regions over zeros."""

    def __init__(self, regions=None):
        self.regions = dict(regions or {})

    def write(self, offset, data):
        new = Disk(self.regions)
        new.regions[offset] = data
        return new

    def image(self, size=SIZE_GB * units.Gi):
        data = bytearray(size)
        for offset in sorted(self.regions):
            chunk = self.regions[offset]
            data[offset:offset + len(chunk)] = chunk
        return bytes(data)


class StepFailed(Exception):
    pass


class _Scenario(object):
    """The scenario; the test classes name the profile."""

    profile = None
    # Steps the profile must pass; any other outcome fails the test.
    required = ()

    def setUp(self):
        super(_Scenario, self).setUp()  # testtools.TestCase's
        missing = deployment.missing_prerequisites()
        if missing:
            self.skipTest('the deployment needs %s (tools/deploy/install.sh '
                          'installs them)' % ', '.join(missing))
        self.dep = deployment.Deployment(self.profile)
        if not self.dep.claim():
            self.skipTest('another test run on this machine is using the '
                          '%s deployment in %s'
                          % (self.profile, self.dep.deploy_dir))
        self.addCleanup(self.dep.release)
        self.addCleanup(self._stop)
        self.dep.start()
        self.vc = self.dep.vcsim
        self.outcomes = {}
        self.figures = {'up_seconds': round(self.dep.timings['up'], 1)}
        self.addCleanup(self._summary)

    def _stop(self):
        self.dep.stop()

    def _summary(self):
        summary = {'profile': self.profile, 'steps': self.outcomes,
                   'figures': self.figures}
        text = json.dumps(summary, indent=2, sort_keys=True)
        self.addDetail('summary', testtools.content.text_content(text))
        path = os.path.join(self.dep.dir, 'summary.json')
        if os.path.isdir(self.dep.dir):
            with open(path, 'w') as f:
                f.write(text)

    # -- helpers ----------------------------------------------------------

    def step(self, name, func, *args):
        """Run one step; record its outcome; re-raise if it is required."""
        started = time.monotonic()
        try:
            result = func(*args)
        except Exception as e:
            self.outcomes[name] = 'failed: %s' % str(e)[:300]
            if name in self.required:
                raise StepFailed('%s (%s): %s' % (name, self.profile, e))
            return None
        self.outcomes[name] = 'passed in %.1fs' % (time.monotonic() - started)
        return result

    def osc(self, *args, **kwargs):
        return self.dep.openstack(*args, **kwargs)

    def create_volume(self, name, *extra):
        volume = self.osc('volume', 'create', '--size', str(SIZE_GB),
                          *(extra + (name,)))
        return self.dep.wait('volume', volume['id'], ('available',))['id']

    def write(self, volume_id, disk, offset, data):
        path = self.vc.disk_path(volume_id)
        vcsim_fixture.seed_disk(self.vc, path, data, offset=offset)
        return disk.write(offset, data)

    def assert_disk(self, volume_id, disk):
        path = self.vc.disk_path(volume_id)
        actual = vcsim_fixture.read_disk(self.vc, path)
        expected = disk.image()
        if actual != expected:
            first = next((i for i in range(min(len(actual), len(expected)))
                          if actual[i] != expected[i]), None)
            raise StepFailed('volume %s (%s): %d bytes, %d expected, first '
                             'difference at %s' % (volume_id, path,
                                                   len(actual), len(expected),
                                                   first))

    def backup(self, name, volume_id, *extra):
        started = time.monotonic()
        backup = self.osc('volume', 'backup', 'create', '--name', name,
                          *(extra + (volume_id,)))
        self.dep.wait('volume backup', backup['id'], ('available',),
                      timeout=BACKUP_TIMEOUT)
        self.figures['%s_seconds' % name] = round(
            time.monotonic() - started, 1)
        self.figures['%s_stored_bytes' % name] = self.dep.stored_bytes(
            backup['id'])
        return backup['id']

    def restore(self, backup_id, target, *extra):
        """backup restore; wait for the backup and the target volume."""
        started = time.monotonic()
        result = self.osc('volume', 'backup', 'restore',
                          *(extra + (backup_id, target)))
        volume_id = result.get('volume_id') or target
        self.dep.wait('volume backup', backup_id, ('available',),
                      timeout=BACKUP_TIMEOUT)
        self.dep.wait('volume', volume_id, ('available',),
                      failures=('error', 'error_restoring'))
        self.figures['restore_%s_seconds' % backup_id[:8]] = round(
            time.monotonic() - started, 1)
        return volume_id

    def messages(self, *resource_ids):
        listed = self.osc('--os-volume-api-version', '3.3',
                          'volume', 'message', 'list')
        return [m for m in listed if m.get('Resource UUID') in resource_ids]

    # -- the scenario -------------------------------------------------------

    def test_backup_restore_with_openstack_client(self):
        disk = Disk()
        vol = self.step('volume create', self.create_volume,
                        'vol-%s' % self.profile)
        self.assertIsNotNone(vol, 'no volume: nothing else can run')
        for i, (offset, length) in enumerate(REGIONS):
            disk = self.write(vol, disk, offset, pattern(b'one%d' % i, length))
        full_disk = disk

        full = self.step('backup create (full)', self.backup, 'full', vol)
        if not full:
            # Nothing below can work without a backup path: say so and
            # check what is required of this profile.
            self.outcomes['the other steps'] = 'not run: no full backup'
            self._check_required()
            return

        disk = self.write(vol, disk, CHANGE[0], pattern(b'two', CHANGE[1]))
        incr_disk = disk
        incr = self.step('backup create --incremental', self.backup, 'incr',
                         vol, '--incremental') if full else None
        if full and incr:
            self.figures['incremental_to_full_stored'] = round(
                self.figures['incr_stored_bytes']
                / max(1, self.figures['full_stored_bytes']), 4)

        snap_backup = self.step('backup create --snapshot',
                                self._snapshot_backup, vol)
        disk = self.write(vol, disk, 0, pattern(b'three', 64 * units.Ki))

        if incr:
            self.step('backup restore onto the volume',
                      self._restore_onto, incr, vol, incr_disk)
            disk = incr_disk
        if full:
            self.step('backup restore onto a new volume',
                      self._restore_new, full, full_disk)
            self.step('volume create --backup', self._create_from_backup,
                      incr or full, incr_disk if incr else full_disk)
        if snap_backup:
            self.step('restore of the snapshot backup',
                      self._create_from_backup, snap_backup, incr_disk)

        for backup_id in (incr, full, snap_backup):
            if backup_id:
                self.step('backup delete %s' % backup_id[:8],
                          self._delete_backup, backup_id)

        self.step('backup failing mid-transfer', self._nfc_failure, vol, disk)
        self.step('backup create --force (attached volume)',
                  self._in_use_backup)
        self.step('vcsim killed mid-backup', self._vcsim_killed, vol)

        self._check_required()

    def _check_required(self):
        for name in self.required:
            self.assertIn(name, self.outcomes)
            self.assertTrue(self.outcomes[name].startswith('passed'),
                            '%s: %s' % (name, self.outcomes[name]))

    # -- the steps ----------------------------------------------------------

    def _snapshot_backup(self, vol):
        snap = self.osc('volume', 'snapshot', 'create', '--volume', vol,
                        'snap-%s' % self.profile)
        self.dep.wait('volume snapshot', snap['id'], ('available',))
        try:
            return self.backup('snap', vol, '--snapshot', snap['id'])
        finally:
            # A volume with snapshots cannot always be restored in place.
            self.osc('volume', 'snapshot', 'delete', snap['id'], json=False)
            self.dep.wait_gone('volume snapshot', snap['id'])

    def _restore_onto(self, backup_id, vol, expected):
        self.restore(backup_id, vol, '--force')
        self.assert_disk(vol, expected)

    def _restore_new(self, backup_id, expected):
        new = self.restore(backup_id, 'restored-%s' % self.profile)
        self.assert_disk(new, expected)

    def _create_from_backup(self, backup_id, expected):
        started = time.monotonic()
        new = self.create_volume('from-%s' % backup_id[:8],
                                 '--backup', backup_id)
        self.figures['create_from_%s_seconds' % backup_id[:8]] = round(
            time.monotonic() - started, 1)
        self.assert_disk(new, expected)

    def _in_use_backup(self):
        """backup create --force of a volume attached through the API.

        A volume of its own (the step may leave it in backing-up). The
        attachment is made as Nova makes it: Cinder's attachment API with a
        connector, then complete. Known limit: for an attached volume
        Cinder's VMDK driver clones the disk from the Nova instance's VM in
        vCenter (it looks the VM up by the attachment's instance UUID), and
        this deployment has no Nova, so get_backup_device fails there.
        """
        vol = self.create_volume('inuse-%s' % self.profile)
        out = self.dep.cinder(
            '--os-volume-api-version', '3.54', 'attachment-create',
            '--connect', 'True', '--ip', '127.0.0.1', '--host', 'e2e-host',
            '--initiator', 'iqn.2026-01.test:e2e', vol, str(uuid.uuid4()))
        attachment = next(line.split('|')[2].strip()
                          for line in out.splitlines()
                          if line.startswith('| id '))
        self.dep.cinder('--os-volume-api-version', '3.54',
                        'attachment-complete', attachment)
        self.dep.wait('volume', vol, ('in-use',))
        backup = self.osc('volume', 'backup', 'create', '--force', '--name',
                          'inuse', vol)
        self.dep.wait('volume backup', backup['id'], ('available',),
                      timeout=90)
        self.dep.cinder('--os-volume-api-version', '3.54',
                        'attachment-delete', attachment)
        self._delete_backup(backup['id'])

    def _delete_backup(self, backup_id):
        self.osc('volume', 'backup', 'delete', backup_id, json=False)
        self.dep.wait_gone('volume backup', backup_id)
        left = self.dep.backup_files(backup_id)
        if left:
            raise StepFailed('backup %s left files: %s' % (backup_id, left))

    def _failed_backup(self, vol, name):
        backup = self.osc('volume', 'backup', 'create', '--name', name, vol)
        self.dep.wait('volume backup', backup['id'], ('error',),
                      failures=(), timeout=BACKUP_TIMEOUT)
        shown = self.dep.wait('volume', vol, ('available',))
        messages = self.messages(vol, backup['id'])
        self.figures['%s_messages' % name] = [
            m.get('User Message') or m.get('user_message') for m in messages]
        if not messages:
            raise StepFailed('no user message for the failed backup %s'
                             % backup['id'])
        return backup['id'], shown

    def _nfc_failure(self, vol, disk):
        self.vc.set_nfc_fault(fail_after_bytes=units.Mi, count=1)
        failed, _shown = self._failed_backup(vol, 'broken')
        self._delete_backup(failed)
        # The volume is intact and usable: its data, and a new backup.
        self.assert_disk(vol, disk)
        again = self.backup('again', vol)
        self._delete_backup(again)

    def _vcsim_killed(self, vol):
        killer = self.vc.kill_mid_transfer(after_bytes=units.Mi)
        try:
            self._failed_backup(vol, 'killed')
        finally:
            killer.join(60)
        if self.vc.running:
            raise StepFailed('vcsim was not killed during the backup')


class PluginDeploymentTest(_Scenario, testtools.TestCase):
    profile = 'plugin'
    required = (
        'volume create', 'backup create (full)',
        'backup create --incremental', 'backup create --snapshot',
        'backup restore onto the volume', 'backup restore onto a new volume',
        'volume create --backup', 'restore of the snapshot backup',
        'backup failing mid-transfer', 'vcsim killed mid-backup')

    def test_backup_restore_with_openstack_client(self):
        super(PluginDeploymentTest,
              self).test_backup_restore_with_openstack_client()
        # Only the changed blocks are stored by an incremental backup.
        self.assertLess(self.figures['incremental_to_full_stored'], 0.1)
        deletes = {name: outcome for name, outcome in self.outcomes.items()
                   if name.startswith('backup delete')}
        self.assertEqual(3, len(deletes))
        for name, outcome in deletes.items():
            self.assertTrue(outcome.startswith('passed'),
                            '%s: %s' % (name, outcome))


class StockDeploymentTest(_Scenario, testtools.TestCase):
    """Cinder's own path (os-brick VmdkConnector), for comparison.

    Only the deployment and volume creation are required: os-brick's
    VmdkConnector opens its vSphere session without a WSDL location, so
    oslo.vmware fetches https://<vcenter>/sdk/vimService.wsdl, which vCenter
    serves and vcsim does not; against vcsim every stock backup therefore
    ends in error ("syntax error" parsing the WSDL). The summary records
    each step's outcome either way.
    """

    profile = 'stock'
    required = ('volume create',)

    def test_backup_restore_with_openstack_client(self):
        super(StockDeploymentTest,
              self).test_backup_restore_with_openstack_client()
        # Whatever the stock path manages, a backup that fails must end in
        # a status (never hang): every step that ran has an outcome.
        self.assertIn('backup create (full)', self.outcomes)
