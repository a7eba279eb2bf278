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

"""End to end: a user verifies a backup with the OpenStack client.

The plugin profile of tools/deploy (cinder-api with the plugin's
backup-verification extension, cinder-backup with the plugin's manager and
its verification endpoint, Cinder's posix backup driver, vcsim) driven by
``openstack volume backup verify --wait`` as a user would:

- a volume with data, a full backup: verified ``ok``, the progress
  printed while waiting, the list shows it;
- four bytes flipped in the middle of one of the backup's stored objects
  (zstd): the next verification is ``failed`` and names that object and
  the volume region it holds; the backup's status is still ``available``
  (a verification changes no status) and the store is as it was (the
  flipped file itself not rewritten);
- another project's user does not see the backup's verification.
"""

import hashlib
import os
import time

from oslo_utils import units
import testtools

from tests.functional.deploy import test_openstack_cli as cli

VERIFY_TIMEOUT = 120


class VerificationDeploymentTest(cli.DeploymentBase, testtools.TestCase):

    profile = 'plugin'

    def verify(self, backup_id, *extra):
        """``volume backup verify --wait``; (result, progress lines)."""
        log = os.path.join(self.dep.dir, 'log', 'openstack-shell.log')
        offset = os.path.getsize(log) if os.path.exists(log) else 0
        result = self.osc('volume', 'backup', 'verify', backup_id, '--wait',
                          '--timeout', str(VERIFY_TIMEOUT), *extra)
        with open(log, 'rb') as f:
            f.seek(offset)
            printed = f.read().decode(errors='replace')
        progress = [line for line in printed.splitlines()
                    if line.startswith('Backup %s: ' % backup_id)]
        return result, progress

    def _data_objects(self, backup_id):
        return sorted(p for p in self.dep.backup_files(backup_id)
                      if not p.endswith(('_metadata', '_sha256file')))

    @staticmethod
    def _store_state(paths):
        state = {}
        for path in paths:
            with open(path, 'rb') as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            state[path] = (os.stat(path).st_mtime_ns, digest)
        return state

    def test_verify_with_openstack_client(self):
        if 'backup-verifications' not in [
                e['Alias'] for e in self.osc('extension', 'list',
                                             '--volume')]:
            self.fail('cinder-api did not load the backup-verification '
                      'extension (see up.sh: osapi_volume_extension)')
        vol = self.step('create volume', self.create_volume, 'verify-me')
        disk = cli.Disk()
        for index, (offset, length) in enumerate(cli.REGIONS):
            disk = self.write(vol, disk, offset,
                              cli.pattern(b'verify-%d' % index, length))
        backup_id = self.step('full backup', self.backup, 'full', vol)

        # Never verified yet: listed as such.
        listed = {e['Backup ID']: e for e in self.osc(
            'volume', 'backup', 'verification', 'list')}
        self.assertEqual('unverified', listed[backup_id]['Status'])

        started = time.monotonic()
        result, progress = self.verify(backup_id)
        self.figures['verify_ok_seconds'] = round(
            time.monotonic() - started, 1)
        self.assertEqual('ok', result['Status'], result)
        self.assertEqual([], result['Problems'])
        self.assertEqual(100, result['Progress'])
        self.assertTrue(progress, 'no progress printed while waiting')
        self.assertIn('ok 100%', progress[-1])
        listed = {e['Backup ID']: e for e in self.osc(
            'volume', 'backup', 'verification', 'list', '--status', 'ok')}
        self.assertIn(backup_id, listed)

        # Four bytes flipped in the middle of the largest stored object.
        objects = self._data_objects(backup_id)
        self.assertTrue(objects, 'no stored object of %s' % backup_id)
        target = max(objects, key=os.path.getsize)
        size = os.path.getsize(target)
        with open(target, 'r+b') as f:
            f.seek(size // 2)
            data = f.read(4)
            f.seek(size // 2)
            f.write(bytes(b ^ 0xFF for b in data))
        before = self._store_state(self.dep.backup_files(backup_id))

        result, _progress = self.verify(backup_id)
        self.assertEqual('failed', result['Status'], result)
        problems = result['Problems']
        self.assertTrue(problems, result)
        name = os.path.basename(target)
        named = [p for p in problems
                 if p.get('object') and p['object'].endswith(name)]
        self.assertTrue(named, 'no problem names %s: %s' % (name, problems))
        self.assertIn(named[0]['reason'], ('md5_mismatch', 'undecodable',
                                           'digest_mismatch'))
        self.assertEqual(backup_id, named[0]['backup_id'])
        # The region is inside the volume and inside what the object
        # holds (objects of this backup hold whole chunks).
        self.assertGreaterEqual(named[0]['offset'], 0)
        self.assertLessEqual(named[0]['offset'] + named[0]['length'],
                             cli.SIZE_GB * units.Gi)
        self.assertGreater(named[0]['length'], 0)
        self.assertTrue(result['Summary'].startswith('failed: '), result)
        self.assertIn(named[0]['reason'], result['Summary'])

        self.assertEqual(before, self._store_state(
            self.dep.backup_files(backup_id)), 'the store changed')
        shown = self.osc('volume', 'backup', 'show', backup_id)
        self.assertEqual('available', shown['status'])
        again = self.osc('volume', 'backup', 'verification', 'show',
                         backup_id)
        self.assertEqual(('failed', result['Verification ID']),
                         (again['Status'], again['Verification ID']))
