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

"""The plugin's backups are Cinder's own format, for every chunked driver.

For each of Cinder's chunked backup drivers (posix, nfs, swift, s3,
google) the same data is backed up twice: by Cinder's own ``backup()``
and by the plugin's driver-owned path (``DriverOwnedBackupMixin.
backup_volume``: the extent hand-off reading at offsets, the hand-off fed
by the read-ahead ``BackupReader``, or the driver's own ``backup()`` fed by
it with the hand-off off; all with the ISA-L zlib compressor and the
zero-digest cache of ``tuned_for_raw_data``). What the two wrote must be
the same: the object names (relative to each backup's prefix), the
metadata JSON (but for the fields naming the backup), every object's
inflated bytes and the sha256 file. Then Cinder's stock ``restore()``
restores the plugin's backup, and the plugin's restore (write-behind,
fast inflation, staging file) restores both.

The drivers run against Cinder's database (its test base class) and:

* posix: a temporary directory, for real;
* nfs: Cinder's NFS driver (a posix driver on a mounted share) with its
  share mount replaced by a temporary directory (no NFS server here);
* swift: Cinder's own fake Swift client (``fake_swift_client2``: objects
  as files); its put answers the MD5 of an empty body, and it neither
  makes the directories of Cinder's ``volume_<id>/<time>/...`` names nor
  lists below the top one, so its put is wrapped to make them and answer
  the real MD5, and its listing walks the tree (a real Swift is in
  tests/functional/deploy/test_swift_store.py);
* s3: moto's in-process S3 (``mock_aws``), with boto3 as Cinder uses it;
* google: Cinder's own fake Google client (``fake_google_client2``) with
  the same wrapping of its insert and listing, and its fixed MD5 answer
  matched by the gcs module's MD5 (patched in that module only).
"""

import contextlib
import hashlib
import io
import os
import tempfile
from unittest import mock

import ddt
import fixtures
from oslo_utils import units

from cinder.backup.drivers import gcs
from cinder.backup.drivers import nfs
from cinder.backup.drivers import posix
from cinder.backup.drivers import s3
from cinder.backup.drivers import swift
from cinder import context
from cinder.objects import fields
from cinder.tests.unit.backup import fake_google_client
from cinder.tests.unit.backup import fake_google_client2
from cinder.tests.unit.backup import fake_swift_client2
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup.backup import driver_owned

KIB = units.Ki
MIB = units.Mi
STORES = ('posix', 'nfs', 'swift', 's3', 'google')
PATHS = ('handoff', 'handoff_stream', 'stream')
#: Fields of the metadata and sha256 file that name the backup itself.
OWN_FIELDS = ('backup_id', 'backup_name', 'backup_description',
              'created_at')


def _pattern(seed, length):
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(b'%s-%d' % (seed, counter)).digest()
        counter += 1
    return bytes(out[:length])


def _text(length):
    """Log-like text: compressible, never a block of zeros."""
    line = b'2026-12-06 14:00:%02d INFO cinder.backup object %06d stored\n'
    out = bytearray()
    n = 0
    while len(out) < length:
        out += line % (n % 60, n)
        n += 1
    return bytes(out[:length])


class _Source(object):
    """A volume's data as the driver-owned source protocol gives it."""

    def __init__(self, data, random_access):
        self.data = data
        self.stream = io.BytesIO(data)
        if random_access:
            self.read_at = self._read_at
        else:
            self.read = self.stream.read

    def _read_at(self, offset, view):
        view[:] = self.data[offset:offset + len(view)]

    def zero_ranges(self):
        return iter(())


class _Driver(driver_owned.DriverOwnedBackupMixin):
    """The protocol's hooks: the source above; restores land in a file."""

    def __init__(self, source=None, staging_dir=None):
        self.source = source
        self.staging_dir = staging_dir
        self.restored = None

    @contextlib.contextmanager
    def open_backup_source(self, context, backup, device):
        yield self.source

    def backup_staging_dir(self):
        return self.staging_dir

    def restore_raw_image(self, context, backup, volume, image_path):
        with open(image_path, 'rb') as f:
            self.restored = f.read()


def data():
    """3 MiB + 36 KiB + 100 bytes of text and random bytes."""
    return (_text(MIB + 200 * KIB) + _pattern(b'r', MIB) +
            _text(MIB - 164 * KIB + 100))


def stored(service, backup):
    """What a backup stored, relative to its own prefix and name.

    The object names (less the backup's prefix), the metadata JSON and
    the sha256 file (less the fields naming the backup), every object's
    inflated bytes. Also used against a real Swift
    (tests/functional/deploy/swift_format_check.py).
    """
    prefix = backup.service_metadata

    def relative(name):
        if not name.startswith(prefix):
            raise AssertionError('%s is not under the prefix %s'
                                 % (name, prefix))
        return name[len(prefix):]

    metadata = service._read_metadata(backup)
    objects = {}
    for entry in metadata['objects']:
        (name, info), = entry.items()
        with service._get_object_reader(
                backup.container, name,
                extra_metadata=info.get('extra_metadata')) as reader:
            body = reader.read()
        compressor = service._get_compressor(info['compression'])
        objects[relative(name)] = (
            compressor.decompress(body) if compressor else body)
    metadata['objects'] = [
        {relative(name): info for name, info in entry.items()}
        for entry in metadata['objects']]
    sha = service._read_sha256file(backup)
    for record in (metadata, sha):
        for key in OWN_FIELDS:
            record.pop(key, None)
    return {'metadata': metadata, 'sha256file': sha, 'objects': objects,
            'metadata_name': relative(service._metadata_filename(backup)),
            'sha256file_name': relative(service._sha256_filename(backup)),
            'object_count': backup.object_count}


def plugin_backup(ctxt, service, backup, data, path):
    """Back ``data`` up through the plugin's driver-owned path.

    :param path: 'handoff' (read at offsets), 'handoff_stream' (the
        hand-off fed by the read-ahead reader) or 'stream' (the driver's
        own backup() fed by it: set driver_owned_backup_extent_handoff
        false first)
    """
    source = _Source(data, random_access=(path == 'handoff'))
    with mock.patch.object(driver_owned.units, 'Gi', len(data)):
        _Driver(source).backup_volume(ctxt, backup, service)
    backup.refresh()
    return backup


class _Md5Answer(object):
    """hashlib for the gcs module: the MD5 fake_google_client2 answers."""

    class md5(object):
        def __init__(self, *args, **kwargs):
            pass

        def digest(self):
            return b'gcscindermd5'


@ddt.ddt
class StoreFormatTestCase(test.TestCase):

    def setUp(self):
        super(StoreFormatTestCase, self).setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        # Cinder's fakes keep objects under tempfile.gettempdir().
        self.useFixture(fixtures.MonkeyPatch('tempfile.tempdir', self.tmp))
        self.override_config('backup_compression_algorithm', 'zlib')
        self.override_config('driver_owned_backup_hash_block_kb', 32)
        self.override_config('driver_owned_backup_object_mb', 1)
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        self.volume = test_utils.create_volume(self.ctxt, size=1)

    # -- the stores ----------------------------------------------------------

    def _posix(self):
        path = os.path.join(self.tmp, 'posix')
        os.mkdir(path)
        self.override_config('backup_posix_path', path)
        self.override_config('backup_file_size', MIB)
        self.override_config('backup_sha_block_size_bytes', 32 * KIB)
        self.override_config('backup_enable_progress_timer', False)
        return posix.PosixBackupDriver(self.ctxt)

    def _nfs(self):
        path = os.path.join(self.tmp, 'nfs-share')
        os.mkdir(path)
        self.override_config('backup_share', '127.0.0.1:/backups')
        self.override_config('backup_file_size', MIB)
        self.override_config('backup_sha_block_size_bytes', 32 * KIB)
        self.override_config('backup_enable_progress_timer', False)
        self.useFixture(fixtures.MockPatchObject(
            nfs.NFSBackupDriver, '_init_backup_repo_path', autospec=True,
            return_value=path))
        return nfs.NFSBackupDriver(self.ctxt)

    @staticmethod
    def _names(container, prefix):
        """Object names under a fake's container directory, '/' kept."""
        top = os.path.join(tempfile.gettempdir(), container)
        names = []
        for root, _dirs, files in os.walk(top):
            for f in files:
                name = os.path.relpath(os.path.join(root, f), top)
                if name.startswith(prefix):
                    names.append({'name': name})
        return names

    @staticmethod
    def _making_dirs(put):
        """A fake's put, making the directories of a '/' name first."""

        def wrapped(self, *args, **kwargs):
            bucket = kwargs.get('bucket', args[0] if args else None)
            name = kwargs.get('name', args[1] if len(args) > 1 else None)
            os.makedirs(os.path.dirname(os.path.join(
                tempfile.gettempdir(), bucket, name)), exist_ok=True)
            return put(self, *args, **kwargs)

        return wrapped

    def _swift(self):
        self.override_config('backup_swift_url', 'http://127.0.0.1:9/v1/')
        self.override_config('backup_swift_object_size', MIB)
        self.override_config('backup_swift_block_size', 32 * KIB)
        self.override_config('backup_swift_enable_progress_timer', False)
        self.override_config('backup_swift_container', 'formats')
        os.makedirs(os.path.join(self.tmp, 'formats'))
        fake_put = fake_swift_client2.FakeSwiftConnection2.put_object

        def put_object(conn, container, name, reader, **kwargs):
            os.makedirs(os.path.dirname(os.path.join(
                tempfile.gettempdir(), container, name)), exist_ok=True)
            data = reader.read()
            fake_put(conn, container, name, io.BytesIO(data), **kwargs)
            return hashlib.md5(data, usedforsecurity=False).hexdigest()

        self.useFixture(fixtures.MockPatchObject(
            fake_swift_client2.FakeSwiftConnection2, 'put_object',
            put_object))
        self.useFixture(fixtures.MockPatchObject(
            fake_swift_client2.FakeSwiftConnection2, 'get_container',
            lambda conn, container, headers=None, **kw: (
                None, self._names(container, kw['prefix']))))
        self.useFixture(fixtures.MockPatchObject(
            swift.swift, 'Connection',
            fake_swift_client2.FakeSwiftClient2.Connection))
        return swift.SwiftBackupDriver(self.ctxt)

    def _s3(self):
        import moto
        self.override_config('backup_s3_endpoint_url', None)
        self.override_config('backup_s3_store_access_key', 'formats-key')
        self.override_config('backup_s3_store_secret_key', 'formats-secret')
        self.override_config('backup_s3_store_bucket', 'formats')
        self.override_config('backup_s3_object_size', MIB)
        self.override_config('backup_s3_block_size', 32 * KIB)
        self.override_config('backup_s3_enable_progress_timer', False)
        self.useFixture(fixtures.EnvironmentVariable('AWS_DEFAULT_REGION',
                                                     'us-east-1'))
        aws = moto.mock_aws()
        aws.start()
        self.addCleanup(aws.stop)
        return s3.S3BackupDriver(self.ctxt)

    def _google(self):
        self.override_config('backup_gcs_bucket', 'formats')
        self.override_config('backup_gcs_credential_file', 'unused')
        self.override_config('backup_gcs_project_id', 'formats')
        self.override_config('backup_gcs_object_size', MIB)
        self.override_config('backup_gcs_block_size', 32 * KIB)
        self.override_config('backup_gcs_enable_progress_timer', False)
        os.makedirs(os.path.join(self.tmp, 'formats'))
        self.useFixture(fixtures.MockPatchObject(
            gcs.discovery, 'build',
            fake_google_client2.FakeGoogleDiscovery.Build))
        self.useFixture(fixtures.MockPatchObject(
            gcs, 'GoogleMediaIoBaseDownload',
            fake_google_client2.FakeGoogleMediaIoBaseDownload))
        self.useFixture(fixtures.MockPatchObject(
            fake_google_client2.FakeGoogleObjectListExecute, 'execute',
            lambda listing, *a, **kw: {'items': self._names(
                listing.bucket_name, listing.prefix)}))
        self.useFixture(fixtures.MockPatchObject(gcs, 'hashlib',
                                                 _Md5Answer))
        self.useFixture(fixtures.MockPatchObject(
            fake_google_client2.FakeGoogleObject, 'insert',
            self._making_dirs(fake_google_client2.FakeGoogleObject.insert)))
        if gcs.service_account:
            self.useFixture(fixtures.MockPatchObject(
                gcs.service_account.Credentials, 'from_service_account_file',
                fake_google_client.FakeGoogleCredentials))
        return gcs.GoogleBackupDriver(self.ctxt)

    def _service(self, store):
        return getattr(self, '_' + store)()

    # -- backups and what they stored --------------------------------------

    def _new_backup(self, parent=None):
        return test_utils.create_backup(
            self.ctxt, self.volume.id, parent_id=parent and parent.id,
            size=1, status=fields.BackupStatus.CREATING)

    def _stock(self, service, data, parent=None):
        backup = self._new_backup(parent)
        service.backup(backup, io.BytesIO(data))
        backup.refresh()
        return backup

    def _plugin(self, service, data, path, parent=None):
        if path == 'stream':
            self.override_config('driver_owned_backup_extent_handoff', False)
        return plugin_backup(self.ctxt, service, self._new_backup(parent),
                             data, path)

    def _stored(self, service, backup):
        return stored(service, backup)

    def _stock_restore(self, service, backup, length):
        """Cinder's restore onto an existing volume holding junk."""
        path = os.path.join(self.tmp, 'restored-%s' % backup.id)
        with open(path, 'wb') as f:
            f.write(_pattern(b'junk', length))
        backup.status = fields.BackupStatus.RESTORING
        backup.save()
        with open(path, 'r+b') as f:
            service.restore(backup, self.volume.id, f, False)
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        with open(path, 'rb') as f:
            return f.read()

    def _plugin_restore(self, service, backup, length):
        driver = _Driver(staging_dir=self.tmp)
        backup.status = fields.BackupStatus.RESTORING
        backup.save()
        with mock.patch.object(driver, '_backup_size_bytes', autospec=True,
                               return_value=length):
            driver.restore_backup(self.ctxt, backup, self.volume, service)
        backup.status = fields.BackupStatus.AVAILABLE
        backup.save()
        return driver.restored

    def _data(self):
        return data()

    # -- the tests -----------------------------------------------------------

    @ddt.idata((store, path) for store in STORES for path in PATHS)
    @ddt.unpack
    def test_full_backup_is_stock_format(self, store, path):
        service = self._service(store)
        data = self._data()
        stock = self._stock(service, data)
        ours = self._plugin(service, data, path)
        expected = self._stored(service, stock)
        self.assertEqual(4, len(expected['objects']))
        actual = self._stored(service, ours)
        self.assertEqual(expected['metadata'], actual['metadata'])
        self.assertEqual(expected['sha256file'], actual['sha256file'])
        self.assertEqual(sorted(expected['objects']),
                         sorted(actual['objects']))
        self.assertEqual(expected, actual)
        self.assertEqual(data, b''.join(
            actual['objects'][name] for name in sorted(actual['objects'])))
        # Cinder restores the plugin's backup; the plugin both.
        self.assertEqual(data, self._stock_restore(service, ours, len(data)))
        self.assertEqual(data, self._plugin_restore(service, ours, len(data)))
        self.assertEqual(data, self._plugin_restore(service, stock,
                                                    len(data)))

    @ddt.data(*STORES)
    def test_incremental_on_stock_and_plugin_fulls(self, store):
        service = self._service(store)
        data = self._data()
        new = (data[:40 * KIB] + _pattern(b'c', 1000) +
               data[40 * KIB + 1000:2 * MIB + 520 * KIB] +
               bytes(64 * KIB) + data[2 * MIB + 584 * KIB:])
        stock_full = self._stock(service, data)
        stock_incr = self._stock(service, new, parent=stock_full)
        ours_full = self._plugin(service, data, 'handoff')
        ours_incr = self._plugin(service, new, 'handoff', parent=ours_full)
        expected = self._stored(service, stock_incr)
        actual = self._stored(service, ours_incr)
        self.assertEqual(expected['sha256file'], actual['sha256file'])
        self.assertEqual(new, self._stock_restore(service, ours_incr,
                                                  len(new)))
        self.assertEqual(new, self._plugin_restore(service, stock_incr,
                                                   len(new)))
        self.assertEqual(new, self._plugin_restore(service, ours_incr,
                                                   len(new)))
