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

import contextlib
import types
from unittest import mock

import fixtures
from oslo_vmware import exceptions as vexc
import testtools

from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import hotadd
from cinder_vmdk_backup.vmware import transport
from tests.unit.vmware import fakes

PROXY = fakes.moref('vm-proxy')
DS = fakes.moref('ds-1', 'Datastore')


def conf(transports=('hotadd', 'nbd'), proxy='proxy'):
    return types.SimpleNamespace(vmware_backup_transports=list(transports),
                                 vmware_backup_proxy_vm=proxy)


@mock.patch.object(hotadd, 'datastore_reachable', autospec=True,
                   return_value=None)
@mock.patch.object(hotadd, 'find_proxy', autospec=True,
                   return_value=(PROXY, None))
class TransportTestCase(testtools.TestCase):

    def setUp(self):
        super(TransportTestCase, self).setUp()
        self.logs = self.useFixture(fixtures.FakeLogger())
        self.session = fakes.FakeSession()
        self.opened = []

    def opener(self, name, error=None):
        @contextlib.contextmanager
        def open_(*args):
            self.opened.append((name,) + args)
            if error is not None:
                raise error
            yield name
        return open_

    def run_(self, config, datastore=DS, hot_error=None):
        with transport.run(self.session, config, datastore, 'Backup of v1',
                           self.opener('hotadd', hot_error),
                           self.opener('nbd')) as data:
            return data

    def test_hotadd_when_it_serves(self, find, reachable):
        self.assertEqual('hotadd', self.run_(conf()))
        self.assertEqual([('hotadd', PROXY)], self.opened)
        find.assert_called_once_with(self.session, 'proxy')
        reachable.assert_called_once_with(self.session, PROXY, DS)
        self.assertIn('Backup of v1: transport HotAdd.', self.logs.output)

    def test_no_proxy_nbd_with_the_reason(self, find, reachable):
        find.return_value = (None, 'no VM of this vCenter is the proxy x')
        self.assertEqual('nbd', self.run_(conf()))
        self.assertEqual([('nbd',)], self.opened)
        self.assertIn('Backup of v1: transport NBD; HotAdd passed over: no '
                      'VM of this vCenter is the proxy x', self.logs.output)
        reachable.assert_not_called()

    def test_datastore_not_reachable(self, find, reachable):
        reachable.return_value = 'datastore ds-1 is not mounted on host h'
        self.assertEqual('nbd', self.run_(conf()))
        self.assertIn('HotAdd passed over: datastore ds-1 is not mounted',
                      self.logs.output)

    def test_datastore_unknown(self, find, reachable):
        self.assertEqual('nbd', self.run_(conf(), datastore=None))
        self.assertIn("the disk's datastore is unknown", self.logs.output)

    def test_device_never_appears(self, find, reachable):
        error = hotadd.DeviceNotFound(reason='no device /d/wwn-0x1 appeared '
                                             'within 1 s')
        self.assertEqual('nbd', self.run_(conf(), hot_error=error))
        self.assertEqual(['hotadd', 'nbd'], [o[0] for o in self.opened])
        self.assertIn('HotAdd passed over: Disk transfer failed: no device '
                      '/d/wwn-0x1 appeared within 1 s', self.logs.output)

    def test_vcenter_refuses_the_disk(self, find, reachable):
        self.assertEqual('nbd', self.run_(
            conf(), hot_error=vexc.VimException('disk locked')))
        self.assertIn('disk locked', self.logs.output)

    def test_hotadd_only_raises(self, find, reachable):
        error = hotadd.DeviceNotFound(reason='gone')
        self.assertRaises(hotadd.DeviceNotFound, self.run_,
                          conf(['hotadd']), hot_error=error)

    def test_hotadd_only_unusable(self, find, reachable):
        find.return_value = (None, 'no proxy')
        exc = self.assertRaises(errors.TransferError, self.run_,
                                conf(['hotadd']))
        self.assertIn('no transport of vmware_backup_transports can serve '
                      'it (no proxy)', str(exc))

    def test_nbd_first(self, find, reachable):
        self.assertEqual('nbd', self.run_(conf(['nbd', 'hotadd'])))
        self.assertEqual([('nbd',)], self.opened)
        self.assertIn('Backup of v1: transport NBD.', self.logs.output)

    def test_nbd_only_looks_for_no_proxy(self, find, reachable):
        self.assertEqual('nbd', self.run_(conf(['nbd'])))
        find.assert_not_called()

    def test_proxy_lookup_failure(self, find, reachable):
        find.side_effect = vexc.VimException('not authenticated')
        self.assertEqual('nbd', self.run_(conf()))
        self.assertIn('looking for the proxy VM failed', self.logs.output)

    def test_error_after_the_data_moved_is_not_a_fallback(self, find,
                                                          reachable):
        def body():
            with transport.run(self.session, conf(), DS, 'Backup of v1',
                               self.opener('hotadd'), self.opener('nbd')):
                raise errors.TransferError(reason='read failed')

        self.assertRaises(errors.TransferError, body)
        self.assertEqual(['hotadd'], [o[0] for o in self.opened])


@mock.patch.object(hotadd, 'datastore_reachable', autospec=True,
                   return_value=None)
@mock.patch.object(hotadd, 'find_proxy', autospec=True,
                   return_value=(PROXY, None))
class CachedProxyTestCase(testtools.TestCase):
    """``run(..., proxies=ProxyCache)``: a proxy looked up once."""

    def setUp(self):
        super(CachedProxyTestCase, self).setUp()
        self.logs = self.useFixture(fixtures.FakeLogger())
        self.session = fakes.FakeSession()
        self.cache = hotadd.ProxyCache(ttl=300)

    def run_(self, hot_error=None, datastore=DS):
        @contextlib.contextmanager
        def hot(proxy):
            if hot_error is not None:
                raise hot_error
            yield ('hotadd', proxy)

        with transport.run(self.session, conf(), datastore, 'Backup of v1',
                           hot, lambda: contextlib.nullcontext(('nbd',)),
                           proxies=self.cache) as data:
            return data

    def test_looked_up_once(self, find, reachable):
        for _i in range(3):
            self.assertEqual(('hotadd', PROXY), self.run_())
        find.assert_called_once_with(self.session, 'proxy')
        self.assertEqual(3, reachable.call_count)

    def test_deleted_proxy_found_again(self, find, reachable):
        self.run_()
        new = fakes.moref('vm-proxy-2')
        find.return_value = (new, None)

        def reachable_(session, proxy, datastore):
            if proxy.value == PROXY.value:
                raise vexc.ManagedObjectNotFoundException('gone')
        reachable.side_effect = reachable_
        self.assertEqual(('hotadd', new), self.run_())
        self.assertEqual(2, find.call_count)
        self.assertEqual(('hotadd', new), self.run_())
        self.assertEqual(2, find.call_count)

    def test_deleted_proxy_not_recreated_takes_nbd(self, find, reachable):
        self.run_()
        reachable.side_effect = vexc.ManagedObjectNotFoundException('gone')
        self.assertEqual(('nbd',), self.run_())
        self.assertIn('HotAdd passed over: the proxy VM is gone',
                      self.logs.output)
        self.assertEqual(2, find.call_count)

    def test_cached_proxy_passed_over_is_looked_up_again(self, find,
                                                         reachable):
        self.run_()
        reachable.return_value = 'the proxy VM runs on no host'
        self.assertEqual(('nbd',), self.run_())
        self.assertEqual(2, find.call_count)
        self.assertIn('HotAdd passed over: the proxy VM runs on no host',
                      self.logs.output)

    def test_attach_on_a_gone_proxy_forgets_it(self, find, reachable):
        self.run_()
        self.assertEqual(('nbd',), self.run_(
            hot_error=vexc.ManagedObjectNotFoundException('gone')))
        self.run_()
        self.assertEqual(2, find.call_count)

    def test_short_device_is_not_retried_over_nbd(self, find, reachable):
        error = hotadd.DeviceTooSmall(reason='the device ended before its '
                                             'size')
        exc = self.assertRaises(hotadd.DeviceTooSmall, self.run_,
                                hot_error=error)
        self.assertIs(error, exc)
