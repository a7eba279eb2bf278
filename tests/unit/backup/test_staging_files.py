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

"""Staging files: locked for their whole life, removed once owners die."""

import dataclasses
import os
import signal
import stat
import subprocess  # nosec B404: owners that get killed
import sys
import textwrap

import fixtures
import testtools

from cinder_vmdk_backup.backup import staging_files
from cinder_vmdk_backup import ownership

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

_OWNER = textwrap.dedent('''
    import sys
    from cinder_vmdk_backup.backup import staging_files
    with staging_files.staging_file(sys.argv[1]) as (staging, path):
        staging.close()  # the lock must outlive the file object
        print(path, flush=True)
        sys.stdin.readline()
''')


class StagingFilesTestCase(testtools.TestCase):

    def setUp(self):
        super(StagingFilesTestCase, self).setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path

    def owner(self):
        process = subprocess.Popen([sys.executable, '-c', _OWNER, self.dir],
                                   stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, cwd=TOP)
        self.addCleanup(process.wait)
        self.addCleanup(process.stdin.close)
        return process, process.stdout.readline().decode().strip()

    def test_private_named_after_its_owner_and_removed(self):
        with staging_files.staging_file(os.path.join(self.dir, 'new')) as (
                staging, path):
            self.assertEqual(0o600, stat.S_IMODE(os.stat(path).st_mode))
            self.assertTrue(os.path.basename(path).startswith(
                staging_files.PREFIX + ownership.name_part() + '-'))
            # Visible under its name once locked; the hidden one is gone.
            self.assertEqual([os.path.basename(path)],
                             os.listdir(os.path.dirname(path)))
            staging.write(b'x')
        self.assertFalse(os.path.exists(path))

    def test_file_of_a_live_process_is_kept(self):
        process, path = self.owner()
        self.assertEqual([], staging_files.remove_leftovers(self.dir))
        self.assertTrue(os.path.exists(path))
        process.stdin.write(b'\n')
        process.stdin.flush()
        process.wait()
        self.assertFalse(os.path.exists(path))

    def test_file_of_a_killed_process_is_removed(self):
        process, path = self.owner()
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        self.assertTrue(os.path.exists(path))
        logs = self.useFixture(fixtures.FakeLogger())
        self.assertEqual([path], staging_files.remove_leftovers(self.dir))
        self.assertEqual([], os.listdir(self.dir))
        self.assertIn(os.path.basename(path), logs.output)

    def test_file_not_locked_yet(self):
        # The instant between mkstemp and flock: a hidden name that says
        # who owns it; removed only once that process is provably gone.
        me = ownership.current()
        owners = {
            'live': me,
            'dead': dataclasses.replace(me, pid=999999999),
            'other-host': dataclasses.replace(me, host='other',
                                              pid=999999999)}
        paths = {}
        for key, owner in owners.items():
            paths[key] = os.path.join(self.dir, '.%s%s-abc' % (
                staging_files.PREFIX, ownership.name_part(owner)))
            open(paths[key], 'w').close()
        self.assertEqual([paths['dead']],
                         staging_files.remove_leftovers(self.dir))
        self.assertTrue(os.path.exists(paths['live']))
        self.assertTrue(os.path.exists(paths['other-host']))

    def test_free_file_of_an_older_release_is_removed(self):
        old = os.path.join(self.dir, staging_files.PREFIX + 'q1w2e3')
        foreign = os.path.join(self.dir, 'operator-notes')
        for path in (old, foreign):
            open(path, 'w').close()
        self.assertEqual([old], staging_files.remove_leftovers(self.dir))
        self.assertEqual(['operator-notes'], os.listdir(self.dir))

    def test_missing_directory(self):
        self.assertEqual([], staging_files.remove_leftovers(
            os.path.join(self.dir, 'never-made')))
