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

"""The deployment's NFS stand-in (tools/deploy/nova.sh), on its own.

The kvm profile with Nova stands in for the NFS mount that Nova's
LibvirtNFSVolumeDriver makes of the qcow2 backend's export: a ``mount``
wrapper first on the PATH of Nova's privsep daemon turns
``mount -t nfs [-o ...] 127.0.0.1:<dir of the profile> <base>/<hash>``
into a bind mount, on a mount point base that is a shared tmpfs of the
profile. Here the same shell functions (nova_nfs_standin_up/_down) run on
a directory of the test, with the real mount(8): the mounts Nova asks for
are made (a mount point to os.path.ismount, Nova's test), anything else is
refused and logged, other mount calls are mount(8)'s, and the down
function leaves no mount behind.
"""

import os
import subprocess  # nosec B404: bash, the wrapper, umount
import sys

import fixtures
import testtools

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..',
                                   '..'))
DEPLOY = os.path.join(TOP, 'tools', 'deploy')


def _mounts_under(path):
    path = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == path or p.startswith(path + '/')]


class NfsStandinTest(testtools.TestCase):

    def setUp(self):
        super(NfsStandinTest, self).setUp()
        if os.geteuid() != 0:
            self.skipTest('mounting needs root')
        self.dir = os.path.realpath(
            self.useFixture(fixtures.TempDir()).path)
        os.makedirs(os.path.join(self.dir, 'log'))
        os.makedirs(os.path.join(self.dir, 'qcow2'))
        with open(os.path.join(self.dir, 'qcow2', 'volume-1'), 'wb') as f:
            f.write(b'qcow2 stand-in data')
        self.outside = self.useFixture(fixtures.TempDir()).path
        self.base = os.path.join(self.dir, 'nova', 'mnt')
        self.addCleanup(self._no_mounts_left)
        self.addCleanup(self._bash, 'nova_nfs_standin_down "$dir"')
        self._bash('nova_nfs_standin_up')
        self.wrapper = os.path.join(self.dir, 'nova', 'nfs-standin',
                                    'mount')

    def _bash(self, script):
        # nova.sh's functions with lib.sh's, as up.sh and down.sh use them.
        proc = subprocess.run(  # nosec B603 B607
            ['bash', '-c', 'set -eu; source "$1/lib.sh"; source '
             '"$1/nova.sh"; dir=$2; ' + script, 'bash', DEPLOY, self.dir],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        self.assertEqual(0, proc.returncode, proc.stdout.decode())
        return proc.stdout.decode()

    def _no_mounts_left(self):
        left = _mounts_under(self.dir)
        for point in reversed(left):
            subprocess.run(['umount', point], check=False)  # nosec
        self.assertEqual([], left)

    def _mount(self, *args):
        return subprocess.run(  # nosec B603
            [self.wrapper] + list(args), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, check=False)

    def _log(self):
        with open(os.path.join(self.dir, 'log', 'nfs-standin.log')) as f:
            return f.read()

    def _mount_point(self, name='0123abcd'):
        # Nova makes the directory (fileutils.ensure_tree) before mounting.
        point = os.path.join(self.base, name)
        os.makedirs(point)
        return point

    def test_base_is_a_shared_tmpfs(self):
        out = subprocess.run(  # nosec B603 B607
            ['findmnt', '-n', '-o', 'FSTYPE,PROPAGATION', self.base],
            stdout=subprocess.PIPE, check=True).stdout.decode().split()
        self.assertEqual(['tmpfs', 'shared'], out)

    def test_nfs_mount_becomes_bind_mount_nova_can_unmount(self):
        point = self._mount_point()
        self.assertFalse(os.path.ismount(point))
        export = '127.0.0.1:%s' % os.path.join(self.dir, 'qcow2')
        proc = self._mount('-t', 'nfs', '-o', 'vers=4.2', export, point)
        self.assertEqual(0, proc.returncode, proc.stderr)
        # What Nova tests before mounting and before unmounting.
        self.assertTrue(os.path.ismount(point))
        with open(os.path.join(point, 'volume-1'), 'rb') as f:
            self.assertEqual(b'qcow2 stand-in data', f.read())
        self.assertIn('did: mount --bind %s %s (NFS options ignored: '
                      'vers=4.2)' % (os.path.join(self.dir, 'qcow2'), point),
                      self._log())
        # Nova's umount is umount(8)'s.
        subprocess.run(['umount', point], check=True)  # nosec B603 B607
        self.assertFalse(os.path.ismount(point))

    def test_ro_option_makes_a_read_only_mount(self):
        point = self._mount_point()
        proc = self._mount('-t', 'nfs', '-o', 'ro,vers=3', '127.0.0.1:%s'
                           % os.path.join(self.dir, 'qcow2'), point)
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertRaises(OSError, open, os.path.join(point, 'volume-1'),
                          'ab')

    def test_refusals(self):
        point = self._mount_point()
        qcow2 = os.path.join(self.dir, 'qcow2')
        other = self._mount_point('other')
        cases = [
            (('-t', 'nfs', '192.0.2.1:%s' % qcow2, point),
             'host 192.0.2.1 is not 127.0.0.1'),
            (('-t', 'nfs', '127.0.0.1:%s' % self.outside, point),
             'is outside the profile'),
            (('-t', 'nfs', '127.0.0.1:%s/../..' % qcow2, point),
             'is outside the profile'),
            (('-t', 'nfs', '127.0.0.1:%s' % qcow2, self.outside),
             'is not directly under'),
            (('-t', 'nfs', '127.0.0.1:%s' % qcow2,
              os.path.join(other, 'deeper')), 'no mount point'),
            (('-t', 'nfs', '-n', '127.0.0.1:%s' % qcow2, point),
             'option -n'),
            (('-t', 'nfs', '127.0.0.1:%s' % qcow2), 'expected EXPORT'),
        ]
        for args, message in cases:
            proc = self._mount(*args)
            self.assertEqual(32, proc.returncode, (args, proc.stderr))
            self.assertIn(message, proc.stderr.decode())
            self.assertIn('refused: ', self._log())
        self.assertEqual([self.base], _mounts_under(self.dir))

    def test_other_mounts_are_mount8s(self):
        # Not NFS: mount(8) as it is (here: a tmpfs on a test directory).
        target = os.path.join(self.outside, 'tmp')
        os.makedirs(target)
        proc = self._mount('-t', 'tmpfs', 'none', target)
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.addCleanup(subprocess.run, ['umount', target],  # nosec
                        check=False)
        self.assertTrue(os.path.ismount(target))
        proc = self._mount('--bogus-option')
        self.assertNotEqual(0, proc.returncode)
        self.assertNotIn('NFS stand-in', proc.stderr.decode())

    def test_down_unmounts_what_is_left(self):
        for name in ('a', 'b'):
            point = self._mount_point(name)
            proc = self._mount('-t', 'nfs', '127.0.0.1:%s'
                               % os.path.join(self.dir, 'qcow2'), point)
            self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertEqual(3, len(_mounts_under(self.dir)))
        out = self._bash('nova_nfs_standin_down "$dir"')
        self.assertEqual([], _mounts_under(self.dir))
        self.assertIn('unmounted %s/a' % self.base, out)
        self.assertFalse(os.path.exists(self.wrapper))


if __name__ == '__main__':
    sys.exit('run with stestr')
