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

"""The Linux test guest's build (tools/guest), without booting it.

The initramfs is unpacked on the host and its programs run in a chroot of
it: ``qemu-ga`` starting there proves that every library it needs is in
the archive; busybox checks the syntax of ``/init``.
"""

import gzip
import os
import stat
import subprocess  # nosec B404: chroot

import fixtures
import testtools

from tests.functional.kvm import linux_guest


def unpack_newc(archive, into):
    """Unpack a newc cpio archive (files, directories, symlinks).

    :returns: ``{name: mode}`` of every member, device nodes included
    """
    members = {}
    at = 0
    while True:
        header = archive[at:at + 110]
        if header[:6] != b'070701':
            raise AssertionError('not a newc header at %d' % at)
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name = archive[at + 110:at + 110 + name_size - 1].decode()
        at += 110 + name_size
        at += -at % 4
        data = archive[at:at + size]
        at += size
        at += -at % 4
        if name == 'TRAILER!!!':
            return members
        members[name] = mode
        path = os.path.join(into, name)
        if stat.S_ISDIR(mode):
            os.makedirs(path, exist_ok=True)
        elif stat.S_ISLNK(mode):
            os.symlink(data.decode(), path)
        elif stat.S_ISREG(mode):
            with open(path, 'wb') as f:
                f.write(data)
            os.chmod(path, stat.S_IMODE(mode))


class LinuxGuestBuildTestCase(testtools.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.manifest = linux_guest.build()

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        with gzip.open(self.manifest['initrd']) as f:
            self.members = unpack_newc(f.read(), self.root)

    def chroot(self, *args):
        return subprocess.run(['chroot', self.root] + list(args),  # nosec
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)

    def test_the_agent_runs_from_the_initramfs_alone(self):
        done = self.chroot('/usr/sbin/qemu-ga', '--version')
        self.assertEqual(0, done.returncode, done.stdout)
        version = self.manifest['packages']['qemu-guest-agent']
        upstream = version.split(':')[-1].split('+')[0]
        self.assertIn('QEMU Guest Agent %s' % upstream, done.stdout)

    def test_init_and_the_hook_parse(self):
        for script in ('/init', '/etc/qemu/fsfreeze-hook',
                       '/etc/qemu/fsfreeze-hook.d/cvb-console'):
            mode = self.members[script.lstrip('/')]
            self.assertTrue(mode & stat.S_IXUSR, script)
            done = self.chroot('/bin/busybox', 'sh', '-n', script)
            self.assertEqual(0, done.returncode, done.stdout)

    def test_modules_load_after_their_dependencies(self):
        with open(os.path.join(self.root, 'lib', 'modules',
                               'load-order')) as f:
            order = f.read().split()
        self.assertEqual(order, self.manifest['modules'])
        for name in ('virtio_blk', 'virtio_console', 'virtio_pci'):
            self.assertIn(name, order)
        self.assertLess(order.index('virtio_ring'), order.index('virtio'))
        self.assertLess(order.index('virtio'), order.index('virtio_pci'))
        self.assertTrue(stat.S_ISCHR(self.members['dev/console']))

    def test_a_second_build_is_the_cached_one(self):
        before = os.stat(self.manifest['initrd']).st_mtime_ns
        # Asking apt for the packages' versions: the same, so no build.
        self.assertEqual(self.manifest, linux_guest.build(reuse=False))
        self.assertEqual(before, os.stat(self.manifest['initrd']).st_mtime_ns)
