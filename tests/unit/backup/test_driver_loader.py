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

import threading
import time
from unittest import mock

from cinder import objects

objects.register_all()

from cinder import exception  # noqa: E402
from cinder.volume import configuration  # noqa: E402
import ddt  # noqa: E402
from oslo_config import fixture as config_fixture  # noqa: E402
from oslotest import base  # noqa: E402

from cinder_vmdk_backup.backup import driver_loader  # noqa: E402
from cinder_vmdk_backup.backup import driver_owned  # noqa: E402

DRIVER_PATH = 'some.module.Driver'


class ProtocolDriver(driver_owned.DriverOwnedBackupMixin):
    """Stands for a volume driver that owns its backups."""

    def __init__(self, configuration, host=None, cluster_name=None,
                 **kwargs):
        self.configuration = configuration
        self.host = host
        self.cluster_name = cluster_name
        self.kwargs = kwargs

    def do_setup(self, context):
        pass

    def check_for_setup_error(self):
        pass

    def set_initialized(self):
        pass


class StockDriver(object):
    """Stands for a volume driver without the protocol."""


class FakeClock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _volume(host='node1@fast#pool1', cluster_name=None):
    return objects.Volume(id='f0e0d0c0-0000-4000-8000-000000000001',
                          host=host, cluster_name=cluster_name)


@ddt.ddt
class BackendDriversTestCase(base.BaseTestCase):

    def setUp(self):
        super(BackendDriversTestCase, self).setUp()
        self.clock = FakeClock()
        self.drivers = driver_loader.BackendDrivers(60, clock=self.clock)
        self.sections = self._patch(driver_loader.CONF, 'list_all_sections',
                                    return_value=['DEFAULT', 'fast'])
        self.configuration = self._patch(configuration, 'Configuration')
        self.configuration.return_value.volume_driver = DRIVER_PATH
        self.import_class = self._patch(driver_loader.importutils,
                                        'import_class',
                                        return_value=ProtocolDriver)
        self.service = self._patch(
            objects.Service, 'get_by_args',
            side_effect=exception.ServiceNotFound(service_id='x'))
        self.do_setup = self._patch(ProtocolDriver, 'do_setup')
        self.check = self._patch(ProtocolDriver, 'check_for_setup_error')
        self.set_initialized = self._patch(ProtocolDriver, 'set_initialized')
        self.log = self._patch(driver_loader, 'LOG')

    def _patch(self, obj, name, **kwargs):
        patcher = mock.patch.object(obj, name, autospec=True, **kwargs)
        self.addCleanup(patcher.stop)
        return patcher.start()

    @ddt.data(None, '', 'node1', 'node1#pool1')
    def test_host_without_backend_name(self, host):
        self.assertIsNone(self.drivers.driver_for(_volume(host=host)))
        self.import_class.assert_not_called()

    def test_driver_built_like_cinder_volume_does(self):
        driver = self.drivers.driver_for(_volume(cluster_name='c1@fast'))
        self.assertIsInstance(driver, ProtocolDriver)
        self.configuration.assert_called_once_with(
            driver_loader.volume_manager.volume_backend_opts,
            config_group='fast')
        self.import_class.assert_called_once_with(DRIVER_PATH)
        self.assertIs(self.configuration.return_value, driver.configuration)
        self.assertEqual('node1@fast', driver.host)
        self.assertEqual('c1@fast', driver.cluster_name)
        self.assertEqual({'is_vol_db_empty': False,
                          'active_backend_id': None}, driver.kwargs)
        self.do_setup.assert_called_once_with(driver, mock.ANY)
        self.check.assert_called_once_with(driver)
        self.set_initialized.assert_called_once_with(driver)

    def test_failed_over_backend_gets_active_backend_id(self):
        self.service.side_effect = None
        self.service.return_value = mock.Mock(active_backend_id='replica')
        driver = self.drivers.driver_for(_volume())
        self.assertEqual('replica', driver.kwargs['active_backend_id'])
        self.service.assert_called_once_with(mock.ANY, 'node1@fast',
                                             'cinder-volume')

    def test_set_up_once_and_reused_across_pools(self):
        first = self.drivers.driver_for(_volume())
        second = self.drivers.driver_for(_volume(host='node1@fast#pool2'))
        self.assertIs(first, second)
        self.assertEqual(1, self.do_setup.call_count)
        self.assertEqual(1, self.import_class.call_count)

    def test_one_driver_per_backend(self):
        self.sections.return_value = ['fast', 'slow']
        fast = self.drivers.driver_for(_volume())
        slow = self.drivers.driver_for(_volume(host='node1@slow#p'))
        self.assertIsNot(fast, slow)
        self.assertEqual('node1@slow', slow.host)
        self.assertEqual(2, self.do_setup.call_count)

    @ddt.data('no_section', 'stock_driver', 'import_error')
    def test_unsuitable_backend_decided_once_and_logged_once(self, case):
        if case == 'no_section':
            self.sections.return_value = ['DEFAULT']
        elif case == 'stock_driver':
            self.import_class.return_value = StockDriver
        else:
            self.import_class.side_effect = ImportError('no module')
        for _ in range(3):
            self.clock.now += 3600
            self.assertIsNone(self.drivers.driver_for(_volume()))
        self.assertLessEqual(self.import_class.call_count, 1)
        self.do_setup.assert_not_called()
        self.assertEqual(1, self.log.info.call_count)
        reason = self.log.info.call_args[0][1]['reason']
        self.assertIn({'no_section': '[fast]',
                       'stock_driver': 'does not implement',
                       'import_error': 'cannot be imported'}[case], reason)

    @ddt.data('do_setup', 'check_for_setup_error')
    def test_setup_failure_falls_back_then_retries(self, step):
        failing = self.do_setup if step == 'do_setup' else self.check
        failing.side_effect = [IOError('unreachable'), None]
        self.assertIsNone(self.drivers.driver_for(_volume()))
        self.assertEqual(1, self.log.exception.call_count)
        # Within the retry interval: no new attempt.
        self.clock.now += 59
        self.assertIsNone(self.drivers.driver_for(_volume()))
        self.assertEqual(1, failing.call_count)
        # After it: tried again, and this time it works.
        self.clock.now += 1
        self.assertIsInstance(self.drivers.driver_for(_volume()),
                              ProtocolDriver)
        self.assertEqual(2, failing.call_count)
        self.set_initialized.assert_called_once()

    def test_repeated_setup_failure_logged_once(self):
        self.check.side_effect = IOError('unreachable')
        for _ in range(3):
            self.assertIsNone(self.drivers.driver_for(_volume()))
            self.clock.now += 60
        self.assertEqual(3, self.check.call_count)
        self.assertEqual(1, self.log.exception.call_count)

    def test_concurrent_requests_set_up_once(self):
        started = threading.Event()

        def slow_setup(driver, context):
            started.set()
            time.sleep(0.2)

        self.do_setup.side_effect = slow_setup
        results = []

        def request():
            results.append(self.drivers.driver_for(_volume()))

        threads = [threading.Thread(target=request) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        self.assertTrue(started.is_set())
        self.assertEqual(5, len(results))
        self.assertEqual(1, len(set(map(id, results))))
        self.assertIsInstance(results[0], ProtocolDriver)
        self.assertEqual(1, self.do_setup.call_count)


class LoadConfiguredTestCase(base.BaseTestCase):
    """Every driver-owned backend set up when the service starts."""

    def setUp(self):
        super(LoadConfiguredTestCase, self).setUp()
        self.conf = self.useFixture(config_fixture.Config(driver_loader.CONF))
        self.drivers = driver_loader.BackendDrivers(60)
        self.sections = mock.patch.object(
            driver_loader.CONF, 'list_all_sections', autospec=True,
            return_value=['DEFAULT', 'fast', 'stock', 'database']).start()
        self.addCleanup(mock.patch.stopall)
        paths = {'fast': DRIVER_PATH, 'stock': 'stock.Driver',
                 'database': driver_loader._default_volume_driver()}
        classes = {DRIVER_PATH: ProtocolDriver, 'stock.Driver': StockDriver}

        def new_configuration(opts, config_group):
            config = mock.Mock(volume_driver=paths[config_group])
            config.safe_get.return_value = None
            return config

        self.configuration = mock.patch.object(
            configuration, 'Configuration', autospec=True,
            side_effect=new_configuration).start()
        self.import_class = mock.patch.object(
            driver_loader.importutils, 'import_class', autospec=True,
            side_effect=lambda path: classes[path]).start()
        mock.patch.object(
            objects.Service, 'get_by_args', autospec=True,
            side_effect=exception.ServiceNotFound(service_id='x')).start()
        self.do_setup = mock.patch.object(ProtocolDriver, 'do_setup',
                                          autospec=True).start()

    def test_sections_with_a_protocol_driver(self):
        loaded = self.drivers.load_configured('node1', cluster_name='c1')
        self.assertEqual(['node1@fast'], loaded)
        self.assertEqual(1, self.do_setup.call_count)
        driver = self.do_setup.call_args[0][0]
        self.assertEqual(('node1@fast', 'c1'),
                         (driver.host, driver.cluster_name))
        # The default LVM driver of a section of another service is not
        # even imported.
        self.assertNotIn(mock.call(driver_loader._default_volume_driver()),
                         self.import_class.call_args_list)
        # Later requests of the backend reuse the driver set up at start.
        self.assertIs(driver, self.drivers.driver_for(_volume()))
        self.assertEqual(1, self.do_setup.call_count)

    def test_enabled_backends_when_set(self):
        from cinder.common import config  # noqa: F401 (enabled_backends)
        self.conf.config(enabled_backends=['stock'])
        self.assertEqual([], self.drivers.load_configured('node1'))
        self.do_setup.assert_not_called()

    def test_backend_host_override(self):
        def with_backend_host(opts, config_group):
            config = mock.Mock(volume_driver=DRIVER_PATH)
            config.safe_get.side_effect = (
                lambda name: 'shared' if name == 'backend_host' else None)
            return config

        self.sections.return_value = ['fast']
        self.configuration.side_effect = with_backend_host
        self.assertEqual(['shared@fast'],
                         self.drivers.load_configured('node1'))

    def test_failed_setup_is_retried_at_the_first_request(self):
        self.do_setup.side_effect = [RuntimeError('vc down'), None]
        self.assertEqual([], self.drivers.load_configured('node1'))
        self.drivers._clock = lambda: time.monotonic() + 3600
        self.assertIsNotNone(self.drivers.driver_for(_volume()))
