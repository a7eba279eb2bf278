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

import json
import os
import ssl
import stat
import types
from unittest import mock

import ddt
import fixtures
import testtools

from cinder_vmdk_backup import ownership

from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import nfc
from tests.unit.vmware import fakes


def lease_info(url='https://*/nfc/52ab/disk-0.vmdk', thumbprint=None,
               disk=True):
    device_url = types.SimpleNamespace(url=url, disk=disk,
                                       sslThumbprint=thumbprint)
    return types.SimpleNamespace(deviceUrl=[device_url],
                                 entity=fakes.moref('vm-9'))


def settings(**kwargs):
    values = dict(host='vc.example.org', port=8443, lease_ready_timeout=5,
                  poll_interval=0.01, idle_timeout=2)
    values.update(kwargs)
    return nfc.TransferSettings(**values)


def session_with_lease(states, info=None, **handlers):
    lease = fakes.moref('lease-1', 'HttpNfcLease')
    props = {('lease-1', 'state'): list(states),
             ('lease-1', 'info'): info or lease_info(),
             ('lease-1', 'error'): types.SimpleNamespace(
                 localizedMessage='disk locked')}
    handlers.setdefault('ExportVm', lambda vm: lease)
    handlers.setdefault('ImportVApp', lambda rp, **kw: lease)
    return fakes.FakeSession(props, handlers)


@ddt.ddt
class NfcLeaseTestCase(testtools.TestCase):

    def test_export_waits_until_ready(self):
        session = session_with_lease(['initializing', 'initializing',
                                      'ready'])
        lease = nfc.NfcLease.export_vm(session, settings(),
                                       fakes.moref('vm-1'))
        self.assertEqual('lease-1', lease.ref.value)
        states = [c for c in session.calls if c[2:] == ('state',)]
        self.assertEqual(3, len(states))
        self.assertNotIn('HttpNfcLeaseAbort', session.methods())

    def test_error_state_aborts_and_names_the_fault(self):
        session = session_with_lease(['error'])
        exc = self.assertRaises(errors.LeaseNotReady,
                                nfc.NfcLease.export_vm, session, settings(),
                                fakes.moref('vm-1'))
        self.assertIn('disk locked', str(exc))
        self.assertIn('export of vm-1', str(exc))
        self.assertIn('HttpNfcLeaseAbort', session.methods())

    def test_lease_never_ready_times_out(self):
        session = session_with_lease(['initializing'])
        exc = self.assertRaises(
            errors.LeaseNotReady, nfc.NfcLease.export_vm, session,
            settings(lease_ready_timeout=0.05), fakes.moref('vm-1'))
        self.assertIn('still initializing', str(exc))
        self.assertIn('HttpNfcLeaseAbort', session.methods())

    def test_import_passes_host_and_folder(self):
        session = session_with_lease(['ready'])
        spec = types.SimpleNamespace(
            configSpec=types.SimpleNamespace(name='cvb-tmp-x'))
        lease = nfc.NfcLease.import_vapp(
            session, settings(), fakes.moref('rp-1', 'ResourcePool'), spec,
            fakes.moref('folder-1', 'Folder'),
            host=fakes.moref('host-1', 'HostSystem'))
        call = [c for c in session.calls if c[0] == 'ImportVApp'][0]
        self.assertEqual('rp-1', call[1])
        self.assertEqual('host-1', call[2]['host'].value)
        self.assertIs(spec, call[2]['spec'])
        self.assertEqual('import of cvb-tmp-x', lease.what)

    def test_disk_url_fixes_esx_star_host(self):
        session = session_with_lease(['ready'])
        lease = nfc.NfcLease.export_vm(session, settings(),
                                       fakes.moref('vm-1'))
        url, thumbprint = lease.disk_url()
        self.assertEqual('https://vc.example.org:8443/nfc/52ab/disk-0.vmdk',
                         url)
        self.assertIsNone(thumbprint)

    @ddt.data(
        ('https://*/nfc/52ab/disk-0.vmdk', 'esx1.example.org', 443,
         'https://esx1.example.org:443/nfc/52ab/disk-0.vmdk'),
        ('https://*/nfc/52ab/disk-0.vmdk?x=1', '192.0.2.7', 8443,
         'https://192.0.2.7:8443/nfc/52ab/disk-0.vmdk?x=1'),
        ('https://*/nfc/52ab/disk-0.vmdk', '2001:db8::7', 443,
         'https://[2001:db8::7]:443/nfc/52ab/disk-0.vmdk'),
        # vCenter names the host: kept, even where the session's differs.
        ('https://esx2.example.org/nfc/52ab/disk-0.vmdk', 'vc', 443,
         'https://esx2.example.org/nfc/52ab/disk-0.vmdk'),
        ('https://esx2.example.org:902/nfc/1/d.vmdk', 'vc', 443,
         'https://esx2.example.org:902/nfc/1/d.vmdk'))
    @ddt.unpack
    def test_lease_url(self, url, host, port, expected):
        self.assertEqual(expected, nfc.lease_url(url, host, port))

    def test_disk_url_missing(self):
        session = session_with_lease(['ready'], info=lease_info(disk=False))
        lease = nfc.NfcLease.export_vm(session, settings(),
                                       fakes.moref('vm-1'))
        self.assertRaises(errors.TransferError, lease.disk_url)

    def test_progress_is_rate_limited(self):
        session = session_with_lease(['ready'])
        lease = nfc.NfcLease.export_vm(session, settings(),
                                       fakes.moref('vm-1'))
        with mock.patch.object(nfc.time, 'monotonic', autospec=True,
                               side_effect=[100.0, 110.0, 100.0 + 61]):
            lease.progress(10)
            lease.progress(20)
            lease.progress(150)
        percents = [c[2]['percent'] for c in session.calls
                    if c[0] == 'HttpNfcLeaseProgress']
        self.assertEqual([10, 100], percents)

    def test_complete_then_abort_is_a_no_op(self):
        session = session_with_lease(['ready'])
        lease = nfc.NfcLease.export_vm(session, settings(),
                                       fakes.moref('vm-1'))
        lease.complete()
        lease.abort()
        self.assertEqual(['ExportVm', 'HttpNfcLeaseProgress',
                          'HttpNfcLeaseComplete'], session.methods())

    def test_abort_never_raises(self):
        session = session_with_lease(
            ['ready'], HttpNfcLeaseAbort=RuntimeError('gone'))
        lease = nfc.NfcLease.export_vm(session, settings(),
                                       fakes.moref('vm-1'))
        lease.abort()
        self.assertTrue(lease.done)

    # -- records for the janitor of the next start -------------------------

    def _records(self, directory):
        return sorted(os.listdir(directory)) if os.path.isdir(
            directory) else []

    @ddt.data('complete', 'abort')
    def test_open_lease_is_recorded_until_released(self, end):
        state = self.useFixture(fixtures.TempDir()).path
        session = session_with_lease(['ready'])
        lease = nfc.NfcLease.export_vm(session, settings(state_dir=state),
                                       fakes.moref('vm-1'))
        names = self._records(state)
        self.assertEqual(1, len(names))
        path = os.path.join(state, names[0])
        self.assertEqual(0o600, stat.S_IMODE(os.stat(path).st_mode))
        with open(path) as f:
            record = json.load(f)
        self.assertEqual({'type': 'HttpNfcLease', 'value': 'lease-1',
                          'what': 'export of vm-1'}, record['data'])
        self.assertEqual(ownership.current().to_dict(), record['owner'])
        # Its owner runs: no janitor takes it.
        self.assertEqual([], list(ownership.stale_records(
            state, nfc.LEASE_RECORD_KIND)))
        getattr(lease, end)()
        self.assertEqual([], self._records(state))

    def test_lease_never_ready_leaves_no_record(self):
        state = self.useFixture(fixtures.TempDir()).path
        session = session_with_lease(['error'])
        self.assertRaises(errors.LeaseNotReady, nfc.NfcLease.import_vapp,
                          session, settings(state_dir=state),
                          fakes.moref('rp-1', 'ResourcePool'),
                          types.SimpleNamespace(configSpec=None),
                          fakes.moref('folder-1', 'Folder'))
        self.assertIn('HttpNfcLeaseAbort', session.methods())
        self.assertEqual([], self._records(state))

    def test_failed_complete_drops_the_record(self):
        state = self.useFixture(fixtures.TempDir()).path
        session = session_with_lease(
            ['ready'], HttpNfcLeaseComplete=RuntimeError('vc gone'))
        lease = nfc.NfcLease.export_vm(session, settings(state_dir=state),
                                       fakes.moref('vm-1'))
        self.assertRaises(RuntimeError, lease.complete)
        self.assertEqual([], self._records(state))

    def test_unwritable_state_dir_does_not_stop_the_transfer(self):
        state = os.path.join(self.useFixture(fixtures.TempDir()).path, 'f')
        open(state, 'w').close()  # a file where the directory should be
        session = session_with_lease(['ready'])
        lease = nfc.NfcLease.export_vm(session, settings(state_dir=state),
                                       fakes.moref('vm-1'))
        self.assertIsNone(lease._record)
        lease.complete()
        self.assertIn('HttpNfcLeaseComplete', session.methods())

    def test_no_state_dir_no_record(self):
        session = session_with_lease(['ready'])
        lease = nfc.NfcLease.export_vm(session, settings(),
                                       fakes.moref('vm-1'))
        self.assertIsNone(lease._record)
        lease.complete()

    @ddt.data(
        (dict(), 'AA:BB', {'cert_reqs': ssl.CERT_NONE,
                           'assert_fingerprint': 'AA:BB'}),
        (dict(ca_file='/etc/ca.pem'), None,
         {'cert_reqs': ssl.CERT_REQUIRED, 'ca_certs': '/etc/ca.pem'}),
        (dict(insecure=True), None, {'cert_reqs': ssl.CERT_NONE}),
        (dict(), None, {'cert_reqs': ssl.CERT_REQUIRED}),
    )
    @ddt.unpack
    def test_tls_arguments(self, kwargs, thumbprint, expected):
        self.assertEqual(expected,
                         nfc._tls_arguments(settings(**kwargs), thumbprint))

    def test_session_cookie(self):
        self.assertEqual('vmware_soap_session="secret-cookie"',
                         nfc.session_cookie(fakes.FakeSession()))

    def test_open_connection_sends_headers_with_idle_timeout(self):
        server = fakes.NfcServer(get_body=b'abc').start()
        self.addCleanup(server.stop)
        conn = nfc.open_connection(server.url + '?x=1', 'GET',
                                   {'Cookie': 'c=1'}, settings())
        self.addCleanup(conn.close)
        response = conn.getresponse()
        self.assertEqual(b'abc', response.read())
        self.assertEqual(2, conn.timeout)
        method, path, headers = server.requests[0]
        self.assertEqual('/nfc/52ab/disk-0.vmdk?x=1', path)
        self.assertEqual('c=1', headers['Cookie'])

    def test_open_connection_refuses_other_schemes(self):
        self.assertRaises(errors.TransferError, nfc.open_connection,
                          'ftp://h/x', 'GET', {}, settings())
