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

"""Cinder 29's stock VMwareVcVmdkDriver against the patched vcsim.

These prove the peer: every path of Cinder's own VMDK driver that the
plugin builds on (setup, backings, snapshots, clones, extend, image
import and export over NFC) works against vcsim with real bytes.
"""

import hashlib
import os
import re
import subprocess  # nosec B404: qemu-img, the reference codec
import time

from cinder import context
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from cinder.volume import configuration
from cinder.volume.drivers.vmware import vmdk as stock_vmdk
import fixtures
from oslo_utils import units

from tests.functional import vcsim as vcsim_fixture

GROUP = 'vmdk'
#: (offset, length) of data written into 1 GiB test volumes; the last
#: region ends at the disk's last byte.
REGIONS = ((0, 64 * units.Ki), (7 * units.Mi + 512, 2 * units.Mi),
           (units.Gi - units.Mi, units.Mi))


def pattern(seed, length):
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(b'%s-%d' % (seed, counter)).digest()
        counter += 1
    return bytes(out[:length])


def disk_data(size, seed):
    data = bytearray(size)
    for offset, length in REGIONS:
        if offset + length <= size:
            data[offset:offset + length] = pattern(seed + b'%d' % offset,
                                                   length)
    return bytes(data)


def digest(data):
    return hashlib.sha256(data).hexdigest()


class FakeImageService(object):
    """Glance as Cinder's driver and oslo.vmware use it.

    show, download (an iterator of chunks) and update (reads the handle).
    """

    def __init__(self):
        self.images = {}
        self.temp_images = None  # cinder.image.image_utils.TemporaryImages

    def add(self, image_id, data, **properties):
        self.images[image_id] = {
            'id': image_id, 'name': image_id, 'disk_format': 'vmdk',
            'container_format': 'bare', 'size': len(data),
            'properties': properties, 'data': data}

    def show(self, context, image_id):
        meta = dict(self.images[image_id])
        meta.pop('data')
        return meta

    def get_location(self, context, image_id):
        return None, []  # no vsphere:// location: data goes through HTTP

    def download(self, context, image_id):
        data = self.images[image_id]['data']
        return iter([data[i:i + units.Mi]
                     for i in range(0, len(data), units.Mi)])

    def update(self, context, image_id, image_meta, data=None, **kwargs):
        chunks = []
        while True:
            chunk = data.read(units.Mi)
            if not chunk:
                break
            chunks.append(chunk)
        self.images[image_id] = dict(image_meta, id=image_id,
                                     data=b''.join(chunks))


def qemu_img(*args):
    return subprocess.run(('qemu-img',) + args, check=True,  # nosec B603
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE).stdout


class StockVmdkDriverTestCase(test.TestCase):
    """One vcsim for the class; a fresh driver for each test."""

    _shared_driver = None

    @classmethod
    def setUpClass(cls):
        super(StockVmdkDriverTestCase, cls).setUpClass()
        vcsim = vcsim_fixture.VcsimFixture()
        vcsim.setUp()
        cls.addClassCleanup(vcsim.cleanUp)
        cls._vcsim = vcsim

    def setUp(self):
        super(StockVmdkDriverTestCase, self).setUp()
        self.vcsim = self._vcsim
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.volume_type = test_utils.create_volume_type(
            self.ctxt, self, name='vmdk-%s' % self.id()[-40:])

    def _configure(self, **overrides):
        # Registers the options (again: each test starts with fresh ones).
        configuration.Configuration(stock_vmdk.vmdk_opts, config_group=GROUP)
        options = self.vcsim.cinder_backend_options()
        options['vmware_tmp_dir'] = self.tmp
        options.update(overrides)
        for key, value in options.items():
            self.override_config(key, value, group=GROUP)

    def _new_driver(self):
        conf = configuration.Configuration(stock_vmdk.vmdk_opts,
                                           config_group=GROUP)
        driver = stock_vmdk.VMwareVcVmdkDriver(configuration=conf,
                                               host='node1@vmdk')
        driver.do_setup(self.ctxt)
        driver.check_for_setup_error()
        return driver

    def _driver(self, **overrides):
        """The class's driver (set up once: a session costs seconds).

        Options are read when used, so each test's overrides apply.
        """
        self._configure(**overrides)
        cls = type(self)
        if getattr(cls, '_shared_driver', None) is None:
            cls._shared_driver = self._new_driver()
        return cls._shared_driver

    def _volume(self, size=1):
        return test_utils.create_volume(
            self.ctxt, host='node1@vmdk#pool1', size=size,
            volume_type_id=self.volume_type.id,
            display_name='vol', testcase_instance=self)

    def _backing(self, driver, volume):
        return driver.volumeops.get_backing(volume.name, volume.id)

    def _vmdk_path(self, driver, volume):
        return driver.volumeops.get_vmdk_path(self._backing(driver, volume))

    def _seeded_volume(self, driver, seed, size=1):
        volume = self._volume(size)
        driver.create_volume(volume)
        if self._backing(driver, volume) is None:
            driver._create_backing(volume)
        data = disk_data(size * units.Gi, seed)
        vcsim_fixture.seed_disk(self.vcsim, self._vmdk_path(driver, volume),
                                data)
        return volume, data

    def _read(self, driver, volume):
        return vcsim_fixture.read_disk(self.vcsim,
                                       self._vmdk_path(driver, volume))

    def _flat_file(self, driver, volume):
        path = self.vcsim.datastore_file(self._vmdk_path(driver, volume))
        return path[:-len('.vmdk')] + '-flat.vmdk'

    def _disk_size(self, driver, volume):
        return driver.volumeops.get_disk_size(self._backing(driver, volume))

    # -- setup ---------------------------------------------------------------

    def test_do_setup_registers_extension(self):
        self._configure()
        driver = self._new_driver()
        session = driver.session
        extension = session.invoke_api(
            session.vim, 'FindExtension',
            session.vim.service_content.extensionManager,
            extensionKey=stock_vmdk.EXTENSION_KEY)
        self.assertEqual(stock_vmdk.EXTENSION_KEY, extension.key)
        # A second setup finds the extension registered.
        self._new_driver()
        stats = driver.get_volume_stats(refresh=True)
        self.assertEqual('VMware', stats['vendor_name'])

    # -- volumes -------------------------------------------------------------

    def test_create_delete_lazy(self):
        driver = self._driver(vmware_lazy_create=True)
        volume = self._volume()
        driver.create_volume(volume)
        self.assertIsNone(self._backing(driver, volume))
        info = driver.initialize_connection(volume, {'ip': '127.0.0.1'})
        backing = self._backing(driver, volume)
        self.assertEqual('vmdk', info['driver_volume_type'])
        self.assertEqual(backing.value, info['data']['volume'])
        self.assertEqual(units.Gi, self._disk_size(driver, volume))
        flat = self._flat_file(driver, volume)
        self.assertEqual(units.Gi, os.path.getsize(flat))
        driver.delete_volume(volume)
        self.assertIsNone(self._backing(driver, volume))
        self.assertFalse(os.path.exists(flat))

    def test_create_delete_eager(self):
        driver = self._driver(vmware_lazy_create=False)
        volume = self._volume(size=2)
        driver.create_volume(volume)
        self.assertIsNotNone(self._backing(driver, volume))
        self.assertEqual(2 * units.Gi, self._disk_size(driver, volume))
        flat = os.stat(self._flat_file(driver, volume))
        self.assertEqual(2 * units.Gi, flat.st_size)
        self.assertEqual(0, flat.st_blocks)  # never written: all zeros
        driver.delete_volume(volume)
        self.assertIsNone(self._backing(driver, volume))

    # -- snapshots, clones, extend ------------------------------------------

    def _snapshot_round_trip(self, snapshot_format):
        driver = self._driver(vmware_snapshot_format=snapshot_format)
        volume, data = self._seeded_volume(driver, b'snap-' +
                                           snapshot_format.encode())
        snapshot = test_utils.create_snapshot(self.ctxt, volume.id)
        update = driver.create_snapshot(snapshot)
        if update:
            snapshot.update(update)
            snapshot.save()
        if snapshot_format == 'COW':
            self.assertIsNotNone(driver.volumeops.get_snapshot(
                self._backing(driver, volume), snapshot.name))
        else:
            # A full clone of the backing, marked as template.
            self.assertIn('Snapshots', snapshot.provider_location)
        clone = self._volume()
        driver.create_volume_from_snapshot(clone, snapshot)
        self.assertEqual(digest(data), digest(self._read(driver, clone)))
        self.assertEqual(digest(data), digest(self._read(driver, volume)))
        driver.delete_snapshot(snapshot)
        driver.delete_volume(clone)
        driver.delete_volume(volume)

    def test_snapshot_cow(self):
        self._snapshot_round_trip('COW')

    def test_snapshot_template(self):
        self._snapshot_round_trip('template')

    def test_clone_copies_bytes_and_leaves_source(self):
        driver = self._driver()
        volume, data = self._seeded_volume(driver, b'clone')
        source_path = self._vmdk_path(driver, volume)
        clone = self._volume()
        driver.create_cloned_volume(clone, volume)
        clone_path = self._vmdk_path(driver, clone)
        self.assertNotEqual(source_path, clone_path)
        self.assertEqual(source_path, self._vmdk_path(driver, volume))
        self.assertEqual(digest(data), digest(self._read(driver, clone)))
        # Writing the clone leaves the source alone.
        vcsim_fixture.seed_disk(self.vcsim, clone_path, b'\xff' * 4096)
        self.assertEqual(digest(data), digest(self._read(driver, volume)))

    def test_extend(self):
        driver = self._driver()
        volume, data = self._seeded_volume(driver, b'extend')
        driver.extend_volume(volume, 2)
        self.assertEqual(2 * units.Gi, self._disk_size(driver, volume))
        got = self._read(driver, volume)
        self.assertEqual(2 * units.Gi, len(got))
        self.assertEqual(digest(data), digest(got[:units.Gi]))
        self.assertEqual(bytes(units.Gi), got[units.Gi:])

    # -- images (NFC import and export) -------------------------------------

    def test_copy_image_to_volume_stream_optimized(self):
        driver = self._driver()
        raw = disk_data(16 * units.Mi, b'image')[:16 * units.Mi]
        raw = raw[:12 * units.Mi] + pattern(b'tail', 4 * units.Mi)
        raw_path = os.path.join(self.tmp, 'image.raw')
        vmdk_path = os.path.join(self.tmp, 'image.vmdk')
        with open(raw_path, 'wb') as f:
            f.write(raw)
        qemu_img('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                 'subformat=streamOptimized', raw_path, vmdk_path)
        with open(vmdk_path, 'rb') as f:
            vmdk = f.read()
        images = FakeImageService()
        images.add('image-1', vmdk, vmware_disktype='streamOptimized',
                   vmware_adaptertype='lsiLogic')
        volume = self._volume()
        uploads = self._nfc_uploads_done()
        driver.copy_image_to_volume(self.ctxt, volume, images, 'image-1')
        self._wait_for_nfc_uploads(uploads + 1)
        self.assertEqual(units.Gi, self._disk_size(driver, volume))
        got = self._read(driver, volume)
        self.assertEqual(units.Gi, len(got))
        self.assertEqual(digest(raw), digest(got[:len(raw)]))
        self.assertEqual(bytes(units.Gi - len(raw)), got[len(raw):])

    def _nfc_uploads_done(self):
        """NFC uploads vcsim has finished storing (its log says so)."""
        return len(re.findall(r'nfc (?:PUT|POST) [^\n]*: ', self.vcsim.log()))

    def _wait_for_nfc_uploads(self, count, timeout=60):
        """Wait until vcsim has stored ``count`` NFC uploads.

        oslo.vmware's VmdkWriteHandle.close() completes the lease before it
        reads the upload's HTTP answer, so Cinder's driver can go on while
        vcsim still decodes the upload into the disk file.
        """
        deadline = time.monotonic() + timeout
        while self._nfc_uploads_done() < count:
            if time.monotonic() > deadline:
                self.fail('vcsim stored no NFC upload in %ss' % timeout)
            time.sleep(0.05)

    def _image_to_volume(self, subformat, disktype):
        driver = self._driver()
        raw = disk_data(16 * units.Mi, b'image-' + subformat.encode())
        raw_path = os.path.join(self.tmp, 'image.raw')
        image_path = os.path.join(self.tmp, 'image.img')
        with open(raw_path, 'wb') as f:
            f.write(raw)
        if subformat == 'flat':
            image_path = raw_path
        else:
            qemu_img('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                     'subformat=' + subformat, raw_path, image_path)
        with open(image_path, 'rb') as f:
            image = f.read()
        images = FakeImageService()
        images.add('image-' + disktype, image, vmware_disktype=disktype,
                   vmware_adaptertype='lsiLogic')
        volume = self._volume()
        driver.copy_image_to_volume(self.ctxt, volume, images,
                                    'image-' + disktype)
        self.assertEqual(units.Gi, self._disk_size(driver, volume))
        got = self._read(driver, volume)
        self.assertEqual(units.Gi, len(got))
        self.assertEqual(digest(raw), digest(got[:len(raw)]))
        self.assertEqual(bytes(units.Gi - len(raw)), got[len(raw):])

    def test_copy_image_to_volume_sparse(self):
        # Uploaded as one monolithicSparse file, then copied: vcsim
        # converts it to its native flat format, as vSphere does.
        self._image_to_volume('monolithicSparse', 'sparse')

    def test_copy_image_to_volume_preallocated(self):
        self._image_to_volume('flat', 'preallocated')

    def test_copy_volume_to_image(self):
        driver = self._driver()
        volume, data = self._seeded_volume(driver, b'upload')
        images = FakeImageService()
        driver.copy_volume_to_image(
            self.ctxt, volume, images,
            {'id': 'image-2', 'name': 'image-2', 'disk_format': 'vmdk'})
        image = images.images['image-2']
        self.assertEqual('streamOptimized',
                         image['properties']['vmware_disktype'])
        self.assertEqual(b'KDMV', image['data'][:4])
        self.assertEqual(digest(data), digest(self._decode(image['data'])))

    def _decode(self, vmdk):
        vmdk_path = os.path.join(self.tmp, 'decode.vmdk')
        raw_path = os.path.join(self.tmp, 'decode.raw')
        with open(vmdk_path, 'wb') as f:
            f.write(vmdk)
        qemu_img('check', '-f', 'vmdk', vmdk_path)
        qemu_img('convert', '-f', 'vmdk', '-O', 'raw', vmdk_path, raw_path)
        with open(raw_path, 'rb') as f:
            return f.read()

    def test_export_raw_backed_and_never_written_disks(self):
        driver = self._driver()
        volume, data = self._seeded_volume(driver, b'export')
        empty = self._volume(size=2)
        driver.create_volume(empty)
        driver._create_backing(empty)
        session = driver.session
        got = vcsim_fixture.read_disk_nfc(self.vcsim, session,
                                          self._backing(driver, volume))
        self.assertEqual(digest(data), digest(got))
        got = vcsim_fixture.read_disk_nfc(self.vcsim, session,
                                          self._backing(driver, empty))
        self.assertEqual(2 * units.Gi, len(got))
        self.assertEqual(len(got), got.count(0))
