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

"""A shared base for the qcow2 driver's functional tests.

Cinder's test base class gives an sqlite database; the backup service is
Cinder's real posix driver writing into a temporary directory; volumes are
real qcow2 files made and read with the real qemu-img.
"""

import hashlib
import os
import subprocess

import fixtures
from oslo_utils import units

from cinder.backup.drivers import posix
from cinder import context
from cinder import objects
from cinder.objects import fields
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import configuration
from cinder.volume import driver as volume_driver

from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import qemu_img
from cinder_vmdk_backup import opts
from cinder_vmdk_backup.volume.drivers import qcow2

BACKEND = 'qcow2'
#: Bytes at the start of each backup the tests keep (the guest's ring).
HEAD = 2 * 1024 * 1024


def raw_digest(path, length=None):
    """sha256 of an image's guest data (read through qemu-img)."""
    raw = _to_raw(path)
    try:
        return file_digest(raw, length)
    finally:
        os.unlink(raw)


def _to_raw(path):
    raw = path + '.test-raw'
    subprocess.run(['qemu-img', 'convert', '-U', '-O', 'raw', path, raw],
                   check=True)
    return raw


def read_raw(path):
    """Return an image's guest data as bytes (small test images only)."""
    raw = _to_raw(path)
    try:
        with open(raw, 'rb') as f:
            return f.read()
    finally:
        os.unlink(raw)


def same_guest_data(reference, path):
    """Tell whether ``path`` holds ``reference``'s data (qemu-img compare).

    A bigger ``path`` must be all zero beyond ``reference``'s size.
    """
    return subprocess.run(['qemu-img', 'compare', '-U', '-q', reference,
                           path]).returncode == 0


def read_head(path, length=HEAD):
    """Return the first ``length`` guest bytes of an image (qemu-img)."""
    out = path + '.test-raw'
    with open(out, 'wb') as f:
        f.truncate(length)
    try:
        qemu_img.convert_window(path, 'qcow2', 0, length, out)
        with open(out, 'rb') as f:
            return f.read()
    finally:
        os.unlink(out)


def file_digest(path, length=None):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        left = length if length is not None else os.fstat(f.fileno()).st_size
        while left:
            data = f.read(min(left, 8 * units.Mi))
            if not data:
                break
            digest.update(data)
            left -= len(data)
    return digest.hexdigest()


def qemu_io(path, *commands):
    args = ['qemu-io', '-f', 'qcow2']
    for command in commands:
        args += ['-c', command]
    subprocess.run(args + [path], check=True, stdout=subprocess.DEVNULL)


class DigestingService(object):
    """Wraps a backup service; remembers the digest of what it was given."""

    def __init__(self, service):
        self.service = service
        self.digests = {}
        self.heads = {}

    def backup(self, backup, source, **kwargs):
        spy = _Tee(source)
        result = self.service.backup(backup, spy, **kwargs)
        self.digests[backup.id] = (spy.digest.hexdigest(), spy.length)
        self.heads[backup.id] = bytes(spy.head)
        return result

    def __getattr__(self, name):
        return getattr(self.service, name)


class _Tee(object):
    def __init__(self, source):
        self.source = source
        self.digest = hashlib.sha256()
        self.length = 0
        self.head = bytearray()

    def tell(self):
        return self.source.tell()

    def read(self, size=-1):
        data = self.source.read(size)
        self.digest.update(data)
        self.length += len(data)
        if len(self.head) < HEAD:
            self.head += data[:HEAD - len(self.head)]
        return data


class Qcow2FunctionalTestCase(test.TestCase):
    """Driver, posix backup service and helpers."""

    libvirt_uri = ''

    def setUp(self):
        super().setUp()
        root = self.useFixture(fixtures.TempDir()).path
        self.volume_dir = os.path.join(root, 'volumes')
        self.posix_dir = os.path.join(root, 'posix')
        os.makedirs(self.volume_dir)
        os.makedirs(self.posix_dir)
        self.override_config('backup_posix_path', self.posix_dir)
        self.override_config('backup_compression_algorithm', 'zstd')
        self.override_config('backup_file_size', 64 * units.Mi)
        self.override_config('backup_enable_progress_timer', False)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.driver = self.make_driver()
        self.service = DigestingService(posix.PosixBackupDriver(self.ctxt))

    def make_driver(self, **overrides):
        configuration.CONF.register_opts(opts.qcow2_opts, group=BACKEND)
        conf = configuration.Configuration(volume_driver.volume_opts,
                                           config_group=BACKEND)
        driver = qcow2.Qcow2VolumeDriver(configuration=conf,
                                         host='node1@qcow2')
        settings = {'qcow2_volumes_dir': self.volume_dir,
                    'qcow2_libvirt_uri': self.libvirt_uri,
                    'qcow2_block_commit_timeout': 60}
        settings.update(overrides)
        for name, value in settings.items():
            self.override_config(name, value, group=BACKEND)
        driver.do_setup(self.ctxt)
        driver.check_for_setup_error()
        return driver

    def make_volume(self, size=1, writes=()):
        volume = test_utils.create_volume(self.ctxt, size=size,
                                          host='node1@qcow2#qcow2')
        self.driver.create_volume(volume)
        if writes:
            qemu_io(self.driver.local_path(volume), *writes)
        return volume

    def make_backup(self, volume, parent=None):
        return test_utils.create_backup(
            self.ctxt, volume.id, status=fields.BackupStatus.CREATING,
            parent_id=parent and parent.id, size=volume.size)

    def backup(self, volume, parent=None):
        backup = self.make_backup(volume, parent)
        self.driver.backup_volume(self.ctxt, backup, self.service,
                                  backup_device=self.device(volume))
        backup.refresh()
        return backup

    @staticmethod
    def device(volume):
        device = objects.BackupDeviceInfo()
        device.volume = volume
        return device

    def restore(self, backup, volume, volume_is_new=False):
        backup.status = fields.BackupStatus.RESTORING
        backup.save()
        self.driver.restore_backup(self.ctxt, backup, volume, self.service,
                                   volume_is_new=volume_is_new)

    def transient_files(self):
        return sorted(name for name in os.listdir(self.volume_dir)
                      if naming.parse(name) or name.endswith('.test-raw'))

    def assertNoLeftovers(self):
        self.assertEqual([], self.transient_files())
        staging = self.driver.backup_staging_dir()
        if os.path.isdir(staging):
            self.assertEqual([], os.listdir(staging))

    def assertStandalone(self, volume):
        """The volume is one qcow2 file again, consistent, no backing."""
        path = self.driver.local_path(volume)
        info = subprocess.run(['qemu-img', 'info', '-U', '--output=json',
                               path], check=True, stdout=subprocess.PIPE,
                              text=True).stdout
        self.assertNotIn('backing-filename', info)
        subprocess.run(['qemu-img', 'check', '-U', '-q', path], check=True)
