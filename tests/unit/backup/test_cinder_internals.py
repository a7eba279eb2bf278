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

"""The check of Cinder's internals, and the replacements' scope."""

import hashlib
import logging
import threading
import types
from unittest import mock

from cinder import objects

objects.register_all()

from cinder.backup import chunkeddriver  # noqa: E402
from cinder.backup.drivers import posix  # noqa: E402
from cinder.volume import volume_utils  # noqa: E402
import ddt  # noqa: E402
import fixtures  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_config import fixture as config_fixture  # noqa: E402
from oslotest import base  # noqa: E402

from cinder_vmdk_backup.backup import cinder_internals  # noqa: E402

_MANAGER = 'cinder.backup.manager.BackupManager'
_CHUNKED = 'cinder.backup.chunkeddriver.ChunkedBackupDriver'


class FreshCheckFixture(fixtures.Fixture):
    """Forget the process's check result, before and after a test."""

    def _setUp(self):
        for name, value in (('_checked', None), ('_reported', False)):
            self.useFixture(fixtures.MonkeyPatch(
                cinder_internals.__name__ + '.' + name, value))


def _changed_signature(self, algorithm, level=None):
    raise AssertionError('not called')


def _restore_without_reloads(self, backup, volume_id, metadata, volume_file,
                             volume_is_new, requested_backup):
    raise AssertionError('not called')


def _init_without_compressor(self, context, chunk_size_bytes,
                             sha_block_size_bytes, backup_default_container,
                             enable_progress_timer):
    raise AssertionError('not called')


def _cinder_changed(test, path, value):
    """Make Cinder look changed: ``path`` deleted or set to ``value``.

    Set as it is (not wrapped by fixtures.MonkeyPatch, which would make
    the new function look like the one it replaces).
    """
    if value is fixtures.MonkeyPatch.delete:
        test.useFixture(fixtures.MonkeyPatch(path, value))
    else:
        test.useFixture(fixtures.MockPatch(path, value))


@ddt.ddt
class CheckTestCase(base.BaseTestCase):

    def setUp(self):
        super(CheckTestCase, self).setUp()
        self.useFixture(FreshCheckFixture())
        self.log = self.useFixture(fixtures.FakeLogger(
            name=cinder_internals.__name__, level=logging.ERROR))

    def _cinder_changed(self, path, value):
        _cinder_changed(self, path, value)

    def test_installed_cinder_matches(self):
        """Fails when the installed Cinder is not the one checked against.

        A Cinder release that renames, re-signs or stops using anything the
        plugin hooks into makes this fail (and the plugin fall back to
        Cinder's path, see below); then update :mod:`cinder_internals`.
        """
        self.assertEqual([], cinder_internals.check())
        self.assertTrue(cinder_internals.check_and_report())
        self.assertEqual('', self.log.output)
        for group in cinder_internals.GROUPS:
            self.assertTrue(cinder_internals.usable(group), group)

    def test_every_target_has_a_known_group(self):
        self.assertEqual(
            set(cinder_internals.GROUPS),
            {target.group for target in cinder_internals.TARGETS})

    @ddt.data(
        (_MANAGER + '._run_restore', fixtures.MonkeyPatch.delete,
         _MANAGER + '._run_restore is missing'),
        (_MANAGER + '._attach_device',
         lambda self, ctxt, device, properties, is_snapshot=False,
         retries=3: None,
         _MANAGER + '._attach_device has parameters (self, ctxt, device, '
         'properties, is_snapshot, retries), expected (self, ctxt, '
         'backup_device, properties, is_snapshot)'),
        (_CHUNKED + '._get_compressor', _changed_signature,
         _CHUNKED + '._get_compressor has parameters (self, algorithm, '
         'level)'),
        (_CHUNKED + '._restore_v1', _restore_without_reloads,
         'cinder.objects.backup.Backup.refresh is no longer read by '
         + _CHUNKED + '._restore_v1'),
        (_CHUNKED + '.__init__', _init_without_compressor,
         _CHUNKED + '.compressor is no longer assigned by '
         + _CHUNKED + '.__init__'),
        ('cinder.backup.chunkeddriver.hashlib', fixtures.MonkeyPatch.delete,
         'cinder.backup.chunkeddriver.hashlib is missing'),
        ('cinder.volume.drivers.vmware.vmdk.VMwareVcVmdkDriver.'
         '_select_ds_for_volume', lambda self, volume: None,
         'VMwareVcVmdkDriver._select_ds_for_volume has parameters (self, '
         'volume), expected (self, volume, host, create_params)'),
    )
    @ddt.unpack
    def test_a_changed_cinder_is_found(self, path, value, expected):
        self._cinder_changed(path, value)
        problems = cinder_internals.check()
        self.assertTrue(any(expected in problem for problem in problems),
                        problems)

    def test_missing_module(self):
        target = cinder_internals.Target('cinder.backup.drivers.gone.Driver',
                                         'backup', ('self',))
        problems = cinder_internals.check([target])
        self.assertEqual(1, len(problems))
        self.assertIn('cinder.backup.drivers.gone.Driver.backup',
                      problems[0])

    def test_one_error_names_the_targets(self):
        self._cinder_changed(_CHUNKED + '._get_compressor',
                             _changed_signature)
        self._cinder_changed(_MANAGER + '._detach_device',
                             fixtures.MonkeyPatch.delete)
        for _ in range(3):
            self.assertFalse(cinder_internals.check_and_report())
        errors = [line for line in self.log.output.splitlines()
                  if 'Driver-owned backup is disabled' in line]
        self.assertEqual(1, len(errors), self.log.output)
        self.assertIn(_CHUNKED + '._get_compressor has parameters', errors[0])
        self.assertIn(_MANAGER + '._detach_device is missing', errors[0])
        self.assertIn('>=29.0.0,<30', errors[0])
        self.assertFalse(cinder_internals.usable('zlib'))
        self.assertFalse(cinder_internals.usable('manager'))
        self.assertTrue(cinder_internals.usable('hashing'))

    def test_usable_checks_once_when_nobody_did(self):
        """cinder-volume's direct restore runs without the manager."""
        self._cinder_changed(_CHUNKED + '._get_compressor',
                             _changed_signature)
        self.assertFalse(cinder_internals.usable('zlib'))
        self.assertTrue(cinder_internals.usable('refresh'))
        self.assertEqual(1, self.log.output.count(
            'Driver-owned operations leave the mismatched parts of Cinder '
            'alone'), self.log.output)
        self.assertIn('ChunkedBackupDriver._get_compressor has parameters',
                      self.log.output)


class ModuleAttributeTestCase(base.BaseTestCase):
    """A module attribute is replaced while in use, by the first user."""

    def setUp(self):
        super(ModuleAttributeTestCase, self).setUp()
        self.module = types.SimpleNamespace(attribute='original')
        self.make = mock.Mock(side_effect=lambda original: 'replaced')
        self.patch = cinder_internals._ModuleAttribute(
            self.module, 'attribute', self.make)

    def test_replaced_while_in_use_only(self):
        with self.patch.replaced():
            self.assertEqual('replaced', self.module.attribute)
        self.assertEqual('original', self.module.attribute)
        self.make.assert_called_once_with('original')

    def test_overlapping_users(self):
        first = self.patch.replaced()
        second = self.patch.replaced()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        self.assertEqual('replaced', self.module.attribute)
        second.__exit__(None, None, None)
        self.assertEqual('original', self.module.attribute)
        self.assertEqual(1, self.make.call_count)

    def test_put_back_after_an_error(self):
        def fail():
            with self.patch.replaced():
                raise ValueError('operation failed')

        self.assertRaises(ValueError, fail)
        self.assertEqual('original', self.module.attribute)

    def test_someone_elses_replacement_stays(self):
        with self.patch.replaced():
            self.module.attribute = 'theirs'
        self.assertEqual('theirs', self.module.attribute)


class Operation(cinder_internals.DriverOwnedOperation):

    def backup_service(self, service):
        return service


class ConnectorProbeTestCase(base.BaseTestCase):
    """os-brick's probe of the host is skipped where nothing attaches."""

    def setUp(self):
        super(ConnectorProbeTestCase, self).setUp()
        self.useFixture(FreshCheckFixture())
        self.probe = mock.create_autospec(
            volume_utils.brick_get_connector_properties,
            return_value={'initiator': 'iqn'})
        self.useFixture(fixtures.MockPatchObject(
            volume_utils, 'brick_get_connector_properties', self.probe))

    def test_only_while_an_operation_runs(self):
        operation = Operation()
        with cinder_internals.connector_probe_skipped(operation):
            self.assertIs(operation, cinder_internals.current_operation())
            self.assertIsNot(self.probe,
                             volume_utils.brick_get_connector_properties)
            self.assertEqual(
                {}, volume_utils.brick_get_connector_properties(True, False))
            self.probe.assert_not_called()
            operation.driver_called = True
            self.assertEqual(
                {'initiator': 'iqn'},
                volume_utils.brick_get_connector_properties(True, False))
        self.assertIs(self.probe, volume_utils.brick_get_connector_properties)
        self.assertIsNone(cinder_internals.current_operation())

    def test_other_threads_probe_meanwhile(self):
        """A stock operation beside a driver-owned one probes as usual."""
        seen = []

        def stock():
            seen.append(volume_utils.brick_get_connector_properties(
                True, enforce_multipath=False))

        with cinder_internals.connector_probe_skipped(Operation()):
            worker = threading.Thread(target=stock)
            worker.start()
            worker.join(10)
        self.assertEqual([{'initiator': 'iqn'}], seen)
        self.probe.assert_called_once_with(True, enforce_multipath=False)


def _fake_hashlib():
    """A hashlib stand-in that counts what it answers."""
    return types.SimpleNamespace(
        md5=mock.Mock(side_effect=hashlib.md5),
        sha256=mock.Mock(side_effect=hashlib.sha256))


class ChunkedDriverTestCase(base.BaseTestCase):
    """Cinder's real posix driver."""

    def setUp(self):
        super(ChunkedDriverTestCase, self).setUp()
        self.useFixture(FreshCheckFixture())
        self.conf = self.useFixture(config_fixture.Config(cfg.CONF))
        self.conf.config(
            backup_posix_path=self.useFixture(fixtures.TempDir()).path,
            backup_compression_algorithm='zlib')
        self.conf.config(connection='sqlite://', group='database')
        self.service = posix.PosixBackupDriver(mock.sentinel.context)
        self.other = posix.PosixBackupDriver(mock.sentinel.context)

    def _cinder_changed(self, path, value):
        _cinder_changed(self, path, value)


class HashlibReplacedTestCase(ChunkedDriverTestCase):

    DATA = bytes(64 * 1024) + b'data' * 8192

    def test_this_instance_only(self):
        standin = _fake_hashlib()
        expected = self.other._calculate_sha(self.DATA)
        with cinder_internals.hashlib_replaced(self.service,
                                               standin) as used:
            self.assertTrue(used)
            self.assertEqual(expected,
                             self.service._calculate_sha(self.DATA))
            self.assertEqual(3, standin.sha256.call_count)
            # Another instance, and anybody else, get hashlib's own.
            self.assertEqual(expected, self.other._calculate_sha(self.DATA))
            self.assertEqual(3, standin.sha256.call_count)
            self.assertIs(hashlib.md5, chunkeddriver.hashlib.md5)
            self.assertIs(hashlib.sha256, chunkeddriver.hashlib.sha256)
        self.assertIs(hashlib, chunkeddriver.hashlib)
        self.assertNotIn('_calculate_sha', vars(self.service))
        self.assertNotIn('_backup_chunk', vars(self.service))

    def test_on_native_threads_as_cinder_runs_it(self):
        """_calculate_sha runs in eventlet's native pool: marked there."""
        standin = _fake_hashlib()
        results = {}

        def run(name, service):
            results[name] = service._calculate_sha(self.DATA)

        with cinder_internals.hashlib_replaced(self.service, standin):
            workers = [threading.Thread(target=run, args=(name, service))
                       for name, service in (('owned', self.service),
                                             ('stock', self.other))]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(10)
        self.assertEqual(results['owned'], results['stock'])
        self.assertEqual(3, standin.sha256.call_count)

    def test_object_md5_of_this_instance(self):
        standin = _fake_hashlib()
        seen = []
        cinder_internals.check()  # before Cinder's method is a mock
        backup_chunk = mock.patch.object(
            chunkeddriver.ChunkedBackupDriver, '_backup_chunk', autospec=True,
            side_effect=lambda *args: seen.append(chunkeddriver.hashlib.md5))
        backup_chunk.start()
        self.addCleanup(backup_chunk.stop)
        with cinder_internals.hashlib_replaced(self.service, standin):
            self.service._backup_chunk(None, 'c', b'', 0, {}, None)
            self.other._backup_chunk(None, 'c', b'', 0, {}, None)
        self.assertEqual([standin.md5, hashlib.md5], seen)

    def test_put_back_after_an_error(self):
        def fail():
            with cinder_internals.hashlib_replaced(self.service,
                                                   _fake_hashlib()):
                raise ValueError('backup failed')

        self.assertRaises(ValueError, fail)
        self.assertIs(hashlib, chunkeddriver.hashlib)
        self.assertNotIn('_calculate_sha', vars(self.service))

    def test_left_alone_when_cinder_changed(self):
        self._cinder_changed(_CHUNKED + '._backup_chunk',
                             lambda self, backup, data: None)
        with cinder_internals.hashlib_replaced(self.service,
                                               _fake_hashlib()) as used:
            self.assertFalse(used)
            self.assertIs(hashlib, chunkeddriver.hashlib)
            self.assertNotIn('_calculate_sha', vars(self.service))

    def test_other_backup_services_left_alone(self):
        service = types.SimpleNamespace()
        with cinder_internals.hashlib_replaced(service,
                                               _fake_hashlib()) as used:
            self.assertFalse(used)
            self.assertIs(hashlib, chunkeddriver.hashlib)
        self.assertEqual({}, vars(service))


class CompressorReplacedTestCase(ChunkedDriverTestCase):

    def setUp(self):
        super(CompressorReplacedTestCase, self).setUp()
        self.codec = mock.Mock(spec=['compress', 'decompress'])

    def test_this_instance_only(self):
        compressor = self.service.compressor
        with cinder_internals.compressor_replaced(
                self.service, self.codec, ('zlib', 'gzip')) as used:
            self.assertTrue(used)
            self.assertIs(self.codec, self.service.compressor)
            self.assertIs(self.codec, self.service._get_compressor('GZIP'))
            self.assertIsNone(self.service._get_compressor('none'))
            self.assertIsNot(self.codec, self.other.compressor)
            self.assertIsNot(self.codec, self.other._get_compressor('zlib'))
        self.assertIs(compressor, self.service.compressor)
        self.assertNotIn('_get_compressor', vars(self.service))

    def test_restores_only(self):
        compressor = self.service.compressor
        with cinder_internals.compressor_replaced(
                self.service, self.codec, ('zlib',), compress=False):
            self.assertIs(compressor, self.service.compressor)
            self.assertIs(self.codec, self.service._get_compressor('zlib'))

    def test_left_alone_when_cinder_changed(self):
        self._cinder_changed(_CHUNKED + '._get_compressor',
                             _changed_signature)
        compressor = self.service.compressor
        with cinder_internals.compressor_replaced(
                self.service, self.codec, ('zlib',)) as used:
            self.assertFalse(used)
            self.assertIs(compressor, self.service.compressor)
            self.assertNotIn('_get_compressor', vars(self.service))


class RefreshReplacedTestCase(base.BaseTestCase):

    def setUp(self):
        super(RefreshReplacedTestCase, self).setUp()
        self.useFixture(FreshCheckFixture())

    def test_left_alone_when_cinder_changed(self):
        _cinder_changed(self, _CHUNKED + '._restore_v1',
                        _restore_without_reloads)
        backup = objects.Backup()
        with cinder_internals.refresh_replaced(backup, mock.Mock()) as used:
            self.assertFalse(used)
            self.assertNotIn('refresh', vars(backup))
