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

"""The vcsim fixture itself: NFC export, disk helpers, fault injection."""

import http.client
import io
import os
import socket
import ssl
import stat

from oslo_utils import units
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util
import testtools

from cinder_vmdk_backup.vmware import nfc
from tests.functional import vcsim as vcsim_fixture

#: What a broken NFC transfer raises on the client side.
TRANSFER_ERRORS = (OSError, http.client.HTTPException,
                   vexc.VMwareDriverException)


class VcsimPeerTestCase(testtools.TestCase):
    """One vcsim with the model's VMs (1 MiB disks) for the class."""

    @classmethod
    def setUpClass(cls):
        super(VcsimPeerTestCase, cls).setUpClass()
        vcsim = vcsim_fixture.VcsimFixture(vms=2,
                                           extra_args=['-autostart=false'])
        vcsim.setUp()
        cls.addClassCleanup(vcsim.cleanUp)
        cls.vcsim = vcsim
        cls.session = vcsim.session()

    def setUp(self):
        super(VcsimPeerTestCase, self).setUp()
        self.addCleanup(self._clear_faults)

    def _clear_faults(self):
        if self.vcsim.running:
            self.vcsim.clear_faults()

    def _vm(self, index=0):
        result = self.session.invoke_api(
            vim_util, 'get_objects', self.session.vim, 'VirtualMachine',
            100, ['name', 'config.hardware.device'])
        vms = sorted(result.objects, key=lambda o: o.propSet[0].val)
        vm = vms[index]
        devices = [p.val for p in vm.propSet
                   if p.name == 'config.hardware.device'][0]
        disk = [d for d in devices.VirtualDevice
                if d.__class__.__name__ == 'VirtualDisk'][0]
        return vm.obj, disk.backing.fileName

    def test_seed_and_read_through_nfc_and_datastore(self):
        vm, path = self._vm(0)
        data = os.urandom(100 * units.Ki) + bytes(200 * units.Ki)
        vcsim_fixture.seed_disk(self.vcsim, path, data, offset=4096)
        raw = vcsim_fixture.read_disk(self.vcsim, path)
        self.assertEqual(units.Mi, len(raw))
        self.assertEqual(data, raw[4096:4096 + len(data)])
        self.assertEqual(raw, vcsim_fixture.read_disk_nfc(
            self.vcsim, self.session, vm))

    def test_wsdl_served_like_vcenter(self):
        # No WSDL location: oslo.vmware fetches https://<vc>/sdk/...wsdl.
        session = self.vcsim.session(wsdl_loc=None)
        about = session.vim.service_content.about
        self.assertEqual('VirtualCenter', about.apiType)

    def _handshake(self, context, server_hostname):
        with socket.create_connection((self.vcsim.host, self.vcsim.port),
                                      10) as sock:
            with context.wrap_socket(sock,
                                     server_hostname=server_hostname) as tls:
                return tls.getpeercert()

    def test_certificate_verified_against_the_fixtures_ca(self):
        # 127.0.0.1 (what Cinder is configured with) and localhost are in
        # the certificate; the system's CAs do not know it.
        for name in ('127.0.0.1', 'localhost'):
            cert = self._handshake(self.vcsim.ssl_context(), name)
            self.assertIn(('IP Address', '127.0.0.1'),
                          cert['subjectAltName'])
            self.assertIn(('DNS', 'localhost'), cert['subjectAltName'])
        self.assertRaises(ssl.SSLCertVerificationError, self._handshake,
                          ssl.create_default_context(), '127.0.0.1')
        self.assertRaises(ssl.SSLCertVerificationError, self._handshake,
                          self.vcsim.ssl_context(), 'vcenter.example.org')

    def test_nfc_connections_verify_the_certificate(self):
        # The plugin's own NFC transfers (vmware/nfc.py) verify vCenter's
        # certificate with vmware_ca_file, as the SOAP session does; with
        # neither a CA bundle nor insecure, the system's CAs, which do not
        # know the test CA.
        vm, _path = self._vm(0)
        verified = nfc.TransferSettings(host=self.vcsim.host,
                                        port=self.vcsim.port,
                                        ca_file=self.vcsim.ca_file,
                                        idle_timeout=30)
        system_cas = nfc.TransferSettings(host=self.vcsim.host,
                                          port=self.vcsim.port,
                                          idle_timeout=30)
        lease = nfc.NfcLease.export_vm(self.session, verified, vm)
        try:
            url, thumbprint = lease.disk_url()
            self.assertIsNone(thumbprint)
            headers = {'Cookie': nfc.session_cookie(self.session)}
            self.assertRaises(ssl.SSLCertVerificationError,
                              nfc.open_connection, url, 'GET', headers,
                              system_cas)
            conn = nfc.open_connection(url, 'GET', headers, verified)
            try:
                response = conn.getresponse()
                self.assertEqual(200, response.status)
                self.assertTrue(response.read(512))
            finally:
                conn.close()
        finally:
            lease.abort()

    def test_private_keys_and_password_not_readable_by_others(self):
        tls = os.path.dirname(self.vcsim.ca_file)
        for name in ('ca-key.pem', 'vcsim-key.pem'):
            self.assertEqual(0o600, stat.S_IMODE(
                os.stat(os.path.join(tls, name)).st_mode))
        self.assertEqual(0o600, stat.S_IMODE(
            os.stat(self.vcsim.log_path).st_mode))
        # vcsim announces its URL (user and password in it) at start;
        # neither its output nor its command line (which every user can
        # read) holds the password.
        self.assertNotIn(self.vcsim.password, self.vcsim.log())
        with open('/proc/%d/cmdline' % self.vcsim.pid, 'rb') as f:
            cmdline = f.read().decode()
        self.assertIn('-tlscert', cmdline)
        self.assertNotIn(self.vcsim.password, cmdline)

    def test_method_fault_once(self):
        vm, _path = self._vm(1)
        self.vcsim.set_method_fault('ExportVm', 'InvalidState', count=1)
        error = self.assertRaises(vexc.VimFaultException,
                                  self.session.invoke_api,
                                  self.session.vim, 'ExportVm', vm)
        self.assertIn('InvalidState', error.fault_list)
        lease = self.session.invoke_api(self.session.vim, 'ExportVm', vm)
        self.session.invoke_api(self.session.vim, 'HttpNfcLeaseAbort',
                                lease)
        self.assertEqual(1, self.vcsim.faults()['methods']['ExportVm'][
            'hits'])

    def test_nfc_abort_puts_lease_in_error(self):
        vm, _path = self._vm(2)
        self.vcsim.set_nfc_fault(abort_after_bytes=0)
        lease = self.session.invoke_api(self.session.vim, 'ExportVm', vm)
        sink = io.BytesIO()
        self.assertRaises(TRANSFER_ERRORS, self._export_with_lease, lease,
                          sink)
        state = self.session.invoke_api(vim_util, 'get_object_property',
                                        self.session.vim, lease, 'state')
        self.assertEqual('error', state)
        self.assertRaises(vexc.VimFaultException, self.session.invoke_api,
                          self.session.vim, 'HttpNfcLeaseComplete', lease)

    def _task(self, method, ref, **kwargs):
        task = self.session.invoke_api(self.session.vim, method, ref,
                                       **kwargs)
        return getattr(self.session.wait_for_task(task), 'result', None)

    def _raw_of_lease(self, lease):
        """The lease's first disk, decoded with qemu-img."""
        import subprocess  # nosec B404
        import tempfile
        with tempfile.TemporaryDirectory(dir=self.vcsim.tmp) as tmp:
            vmdk, raw = os.path.join(tmp, 'x.vmdk'), os.path.join(tmp, 'x')
            with open(vmdk, 'wb') as sink:
                self._export_with_lease(lease, sink)
            self.session.invoke_api(self.session.vim,
                                    'HttpNfcLeaseComplete', lease)
            subprocess.run(['qemu-img', 'convert', '-f', 'vmdk', '-O',
                            'raw', vmdk, raw], check=True,  # nosec
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            with open(raw, 'rb') as f:
                return f.read()

    def test_snapshot_freezes_the_disk(self):
        vm, path = self._vm(3)
        before = os.urandom(64 * units.Ki)
        after = os.urandom(32 * units.Ki)
        vcsim_fixture.seed_disk(self.vcsim, path, before, offset=8192)
        snap = self._task('CreateSnapshot_Task', vm, name='s1',
                          memory=False, quiesce=False)
        vcsim_fixture.seed_disk(self.vcsim, path, after, offset=8192)
        current = vcsim_fixture.read_disk(self.vcsim, path)
        self.assertEqual(after, current[8192:8192 + len(after)])

        # ExportSnapshot: the disk as of the snapshot, key as vSphere's.
        lease = self.session.invoke_api(self.session.vim, 'ExportSnapshot',
                                        snap)
        info = self.session.invoke_api(vim_util, 'get_object_property',
                                       self.session.vim, lease, 'info')
        self.assertRegex(info.deviceUrl[0].key,
                         r'^/vm-\d+/\w+Controller\d+:\d+$')
        frozen = self._raw_of_lease(lease)
        self.assertEqual(units.Mi, len(frozen))
        self.assertEqual(before, frozen[8192:8192 + len(before)])

        # A clone of the snapshot gets its data; the VM's disk stays.
        folder = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, vm, 'parent')
        spec = self.session.vim.client.factory.create(
            'ns0:VirtualMachineCloneSpec')
        spec.location = self.session.vim.client.factory.create(
            'ns0:VirtualMachineRelocateSpec')
        spec.snapshot = snap
        spec.powerOn = False
        spec.template = False
        clone = self._task('CloneVM_Task', vm, folder=folder,
                           name='snap-clone', spec=spec)
        self.addCleanup(self._task, 'Destroy_Task', clone)
        clone_raw = vcsim_fixture.read_disk_nfc(self.vcsim, self.session,
                                                clone)
        self.assertEqual(frozen, clone_raw)
        self.assertEqual(current, vcsim_fixture.read_disk(self.vcsim, path))

        # Revert copies the snapshot's data back; remove drops the copy.
        self._task('RevertToSnapshot_Task', snap)
        self.assertEqual(frozen, vcsim_fixture.read_disk(self.vcsim, path))
        vm_dir = os.path.dirname(self.vcsim.datastore_file(path))
        copies = [n for n in os.listdir(vm_dir) if snap.value in n]
        self.assertEqual(2, len(copies))  # descriptor and flat file
        self._task('RemoveSnapshot_Task', snap, removeChildren=False)
        self.assertEqual([], [n for n in os.listdir(vm_dir)
                              if snap.value in n])

    def test_remove_with_children_drops_their_copies(self):
        vm, path = self._vm(3)
        vm_dir = os.path.dirname(self.vcsim.datastore_file(path))
        first = self._task('CreateSnapshot_Task', vm, name='p',
                           memory=False, quiesce=False)
        child = self._task('CreateSnapshot_Task', vm, name='c',
                           memory=False, quiesce=False)
        self.assertEqual(2, len([n for n in os.listdir(vm_dir)
                                 if child.value in n]))
        self._task('RemoveSnapshot_Task', first, removeChildren=True)
        self.assertEqual([], [n for n in os.listdir(vm_dir)
                              if first.value in n or child.value in n])
        self.assertIsNone(self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, vm,
            'snapshot'))

    def test_quiesced_snapshot_needs_vmware_tools(self):
        vm, _path = self._vm(3)
        self._task('PowerOnVM_Task', vm)
        self.addCleanup(self._task, 'PowerOffVM_Task', vm)
        exc = self.assertRaises(vexc.VimFaultException, self._task,
                                'CreateSnapshot_Task', vm, name='q',
                                memory=False, quiesce=True)
        self.assertIn('ToolsUnavailable', '%r %s' % (exc.fault_list, exc))
        snapshot = self.session.invoke_api(vim_util, 'get_object_property',
                                           self.session.vim, vm, 'snapshot')
        self.assertIsNone(snapshot)
        # Not quiesced: taken while the VM runs.
        snap = self._task('CreateSnapshot_Task', vm, name='c',
                          memory=False, quiesce=False)
        self._task('RemoveSnapshot_Task', snap, removeChildren=False)

    def _export_with_lease(self, lease, sink):
        import urllib.request
        info = self.session.invoke_api(vim_util, 'get_object_property',
                                       self.session.vim, lease, 'info')
        url = info.deviceUrl[0].url.replace(
            '*', '%s:%d' % (self.vcsim.host, self.vcsim.port))
        context = self.vcsim.ssl_context()
        with urllib.request.urlopen(url, context=context,  # nosec B310
                                    timeout=30) as response:
            sink.write(response.read())


class VcsimKillTestCase(testtools.TestCase):
    """kill_mid_transfer ends vcsim while an export streams."""

    def test_kill_mid_transfer(self):
        vcsim = self.useFixture(vcsim_fixture.VcsimFixture(
            vms=1, extra_args=['-autostart=false']))
        session = vcsim.session(api_retry_count=0)
        result = session.invoke_api(
            vim_util, 'get_objects', session.vim, 'VirtualMachine', 1,
            ['config.hardware.device'])
        vm = result.objects[0].obj
        devices = result.objects[0].propSet[0].val.VirtualDevice
        path = [d for d in devices
                if d.__class__.__name__ == 'VirtualDisk'][0].backing.fileName
        vcsim_fixture.seed_disk(vcsim, path, os.urandom(units.Mi))
        killer = vcsim.kill_mid_transfer(after_bytes=64 * units.Ki)
        self.assertRaises(TRANSFER_ERRORS, vcsim_fixture.export_vmdk, vcsim,
                          session, vm, io.BytesIO())
        killer.join(30)
        self.assertFalse(vcsim.running)
