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

import types

import testtools

from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import nfc
from cinder_vmdk_backup.vmware import upload
from tests.unit.vmware import fakes


class FakeWriter(object):
    def __init__(self, chunks, length=None):
        self._chunks = chunks
        self.length = (sum(len(c) for c in chunks) if length is None
                       else length)

    def iter_chunks(self):
        return iter(self._chunks)


class ImportDiskTestCase(testtools.TestCase):

    def run_import(self, server, writer, idle_timeout=5):
        server.start()
        self.addCleanup(server.stop)
        lease = fakes.moref('lease-1', 'HttpNfcLease')
        info = types.SimpleNamespace(
            deviceUrl=[types.SimpleNamespace(url=server.url, disk=True,
                                             sslThumbprint=None)],
            entity=fakes.moref('vm-7'))
        self.session = fakes.FakeSession(
            {('lease-1', 'state'): ['ready'], ('lease-1', 'info'): info},
            {'ImportVApp': lambda rp, **kw: lease})
        settings = nfc.TransferSettings(host='127.0.0.1', port=server.port,
                                        idle_timeout=idle_timeout)
        spec = types.SimpleNamespace(
            configSpec=types.SimpleNamespace(name='volume-1'))
        return upload.import_disk(self.session, settings,
                                  fakes.moref('rp-1', 'ResourcePool'),
                                  fakes.moref('f-1', 'Folder'), spec, writer)

    def test_posts_exact_length_stream_vmdk(self):
        server = fakes.NfcServer()
        vm = self.run_import(server, FakeWriter([b'KDMV', b'x' * 7000]))
        self.assertEqual('vm-7', vm.value)
        method, _path, headers = server.requests[0]
        self.assertEqual('POST', method)
        self.assertEqual('7004', headers['Content-Length'])
        self.assertEqual('application/x-vnd.vmware-streamVmdk',
                         headers['Content-Type'])
        self.assertEqual(b'KDMV' + b'x' * 7000, server.posted)
        methods = self.session.methods()
        self.assertIn('HttpNfcLeaseComplete', methods)
        self.assertNotIn('HttpNfcLeaseAbort', methods)
        self.assertNotIn('Destroy_Task', methods)

    def test_refused_upload_aborts_and_removes_the_vm(self):
        server = fakes.NfcServer(status=500)
        exc = self.assertRaises(errors.TransferError, self.run_import,
                                server, FakeWriter([b'abc']))
        self.assertIn('HTTP 500', str(exc))
        methods = self.session.methods()
        self.assertIn('HttpNfcLeaseAbort', methods)
        self.assertIn('Destroy_Task', methods)
        self.assertNotIn('HttpNfcLeaseComplete', methods)

    def test_writer_shorter_than_announced_is_refused(self):
        server = fakes.NfcServer()
        exc = self.assertRaises(errors.TransferError, self.run_import,
                                server, FakeWriter([b'abc'], length=10))
        self.assertIn('3 bytes, announced 10', str(exc))
        self.assertIn('HttpNfcLeaseAbort', self.session.methods())

    def test_stalled_upload_fails_after_idle_timeout(self):
        server = fakes.NfcServer(stall_after=10, stall_seconds=3)
        self.assertRaises(errors.TransferStalled, self.run_import, server,
                          FakeWriter([b'y' * 100]), idle_timeout=0.5)
        self.assertIn('HttpNfcLeaseAbort', self.session.methods())

    def test_writer_error_aborts(self):
        server = fakes.NfcServer()

        def chunks():
            yield b'abc'
            raise ValueError('bad image')

        writer = FakeWriter([], length=100)
        writer.iter_chunks = chunks
        self.assertRaises(ValueError, self.run_import, server, writer)
        self.assertIn('HttpNfcLeaseAbort', self.session.methods())
        self.assertIn('Destroy_Task', self.session.methods())


class CodecRoundTripTestCase(testtools.TestCase):
    """The real codec through a real socket: upload, then export back."""

    def test_round_trip(self):
        import io
        import os

        from cinder_vmdk_backup.backup import transfer
        from cinder_vmdk_backup.vmdk import reader
        from cinder_vmdk_backup.vmdk import writer
        from cinder_vmdk_backup.vmware import export

        size = 3 * 1024 * 1024
        data = bytearray(size)
        data[0:4096] = os.urandom(4096)
        data[size - 70000:size - 65536] = b'z' * 4464
        vmdk = writer.StreamOptimizedWriter(io.BytesIO(bytes(data)), size)
        server = fakes.NfcServer().start()
        self.addCleanup(server.stop)
        lease = fakes.moref('lease-1', 'HttpNfcLease')
        info = types.SimpleNamespace(
            deviceUrl=[types.SimpleNamespace(url=server.url, disk=True,
                                             sslThumbprint=None)],
            entity=fakes.moref('vm-7'))
        session = fakes.FakeSession(
            {('lease-1', 'state'): ['ready'], ('lease-1', 'info'): info},
            {'ImportVApp': lambda rp, **kw: lease,
             'ExportVm': lambda vm: lease})
        settings = nfc.TransferSettings(host='127.0.0.1', port=server.port)
        spec = types.SimpleNamespace(
            configSpec=types.SimpleNamespace(name='volume-1'))
        upload.import_disk(session, settings, None, None, spec, vmdk)
        self.assertEqual(vmdk.length, len(server.posted))
        server.get_body = server.posted
        with export.export_disk(session, settings, fakes.moref('vm-7'),
                                size + 65536,
                                reader.StreamOptimizedReader) as stream:
            with transfer.BackupReader(stream, size + 65536,
                                       1024 * 1024) as piped:
                back = piped.read(100000) + piped.read()
        self.assertEqual(bytes(data) + bytes(65536), back)
        self.assertEqual(2, session.methods().count('HttpNfcLeaseComplete'))
