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

import io
import logging
import time
import types
from unittest import mock

from eventlet import patcher
import testtools

from cinder_vmdk_backup.backup import transfer
from cinder_vmdk_backup.vmdk import reader as vmdk_reader
from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import export
from cinder_vmdk_backup.vmware import nfc
from tests.unit.vmdk import streams
from tests.unit.vmware import fakes

# The real OS-thread primitives (these tests may run monkey-patched).
_os_threading = patcher.original('threading')


class PassThroughReader(object):
    """Stands in for the codec's reader: the body is the raw data.

    Its extents are the body's reads; an all-zero read is a run of zeros.
    """

    def __init__(self, body, capacity):
        self._body = body
        self.capacity = capacity

    def iter_extents(self):
        offset = 0
        while True:
            data = self._body.read(4096)
            if not data:
                return
            yield offset, len(data), (None if not any(data) else data)
            offset += len(data)


class RecordingLease(object):
    def __init__(self):
        self.percents = []

    def progress(self, percent):
        self.percents.append(percent)


class BytesBody(object):
    def __init__(self, data):
        self._data = data
        self._pos = 0

    def read(self, n=-1):
        if n is None or n < 0:
            n = len(self._data) - self._pos
        data = self._data[self._pos:self._pos + min(n, 3)]  # short reads
        self._pos += len(data)
        return data


def _read_through_pipeline(stream, size, piece=None):
    """Read ``stream`` as a backup does: through the transfer pipeline."""
    with transfer.BackupReader(stream, size, 1024 * 1024) as reader:
        return b''.join(iter(lambda: reader.read(piece or size), b''))


class RawDiskStreamTestCase(testtools.TestCase):

    def stream(self, data, capacity=None, size=None):
        capacity = len(data) if capacity is None else capacity
        reader = PassThroughReader(BytesBody(data), capacity)
        lease = RecordingLease()
        return export.RawDiskStream(reader, lease, size or capacity), lease

    def test_fills_the_view_and_reports_progress(self):
        stream, lease = self.stream(b'0123456789')
        self.assertEqual(b'0123456789',
                         _read_through_pipeline(stream, 10, piece=4))
        self.assertTrue(stream.at_end)
        self.assertEqual([40, 80, 100], lease.percents)

    def test_runs_of_zeros_are_left_unwritten(self):
        reader = PassThroughReader(io.BytesIO(bytes(8192) + b'ab'), 8194)
        stream = export.RawDiskStream(reader, None, 8194)
        view = memoryview(bytearray(b'\xff' * 8194))
        stream.fill(view)
        # The zeros were not written: the view is expected to read as
        # zeros already (fresh calloc'd memory).
        self.assertEqual(b'\xff' * 8192 + b'ab', bytes(view))

    def test_real_decoding_logs_nothing_off_the_callers_thread(self):
        # Logging's lock is green once eventlet patched threading: a
        # native thread taking it while the hub's thread holds it hangs
        # both. The source runs on the pipeline's producer thread.
        caller = _os_threading.get_ident()
        logged_from = []
        is_enabled_for = logging.Logger.isEnabledFor

        def recording(logger, level):
            if _os_threading.get_ident() != caller:
                logged_from.append(logger.name)
            return is_enabled_for(logger, level)

        data = (b'text ' * 30000)[:2 * streams.GRAIN] + bytes(
            streams.GRAIN) + bytes(range(256)) * 256
        vmdk = vmdk_reader.StreamOptimizedReader(
            io.BytesIO(streams.encode(data)))
        stream = export.RawDiskStream(vmdk, RecordingLease(), len(data))
        with mock.patch.object(logging.Logger, 'isEnabledFor',
                               autospec=True, side_effect=recording):
            self.assertEqual(data, _read_through_pipeline(stream, len(data)))
        self.assertTrue(stream.at_end)
        self.assertEqual([], logged_from)

    def test_error_while_decoding_gives_no_data(self):
        stream, _lease = self.stream(b'abc' * 30000, capacity=100000)
        self.assertRaises(errors.TransferError, _read_through_pipeline,
                          stream, 100000)

    def test_pads_zeros_up_to_volume_size(self):
        stream, _lease = self.stream(b'abc', size=8)
        self.assertEqual(b'abc\0\0\0\0\0', _read_through_pipeline(stream, 8))
        self.assertTrue(stream.at_end)

    def test_stream_ending_early_is_an_error(self):
        stream, _lease = self.stream(b'abc', capacity=6)
        exc = self.assertRaises(errors.TransferError, _read_through_pipeline,
                                stream, 6)
        self.assertIn('ended at 3 of 6', str(exc))

    def test_trailing_data_is_an_error(self):
        reader = PassThroughReader(BytesBody(b'abcdef'), 4)
        stream = export.RawDiskStream(reader, None, 4)
        exc = self.assertRaises(errors.TransferError, _read_through_pipeline,
                                stream, 4)
        self.assertIn('longer than 4 bytes', str(exc))
        self.assertFalse(stream.at_end)

    def test_not_at_end_until_the_caller_had_everything(self):
        # The producer checks the tail ahead of the caller: a caller that
        # stopped early must not complete the lease.
        stream, _lease = self.stream(b'0123456789')
        stream.fill(memoryview(bytearray(10)))
        stream.finish()
        self.assertFalse(stream.at_end)
        stream.report(4)
        self.assertFalse(stream.at_end)
        stream.report(10)
        self.assertTrue(stream.at_end)

    def test_disk_larger_than_volume_is_refused(self):
        reader = PassThroughReader(BytesBody(b''), 10)
        self.assertRaises(errors.TransferError, export.RawDiskStream,
                          reader, None, 5)


class ZeroStreamTestCase(testtools.TestCase):

    def test_zeros_of_size(self):
        stream = export.ZeroStream(10)
        self.assertEqual(bytes(10), _read_through_pipeline(stream, 10, 4))


class ExportDiskTestCase(testtools.TestCase):

    def session_for(self, server):
        lease = fakes.moref('lease-1', 'HttpNfcLease')
        info = types.SimpleNamespace(
            deviceUrl=[types.SimpleNamespace(url=server.url, disk=True,
                                             sslThumbprint=None)])
        return fakes.FakeSession(
            {('lease-1', 'state'): ['ready'], ('lease-1', 'info'): info},
            {'ExportVm': lambda vm: lease})

    def run_export(self, server, size, consume=None, idle_timeout=5,
                   reader=PassThroughReader):
        server.start()
        self.addCleanup(server.stop)
        session = self.session_for(server)
        settings = nfc.TransferSettings(host='127.0.0.1', port=server.port,
                                        idle_timeout=idle_timeout)

        def factory(body):
            return reader(body, len(server.get_body))

        with export.export_disk(session, settings, fakes.moref('vm-1'),
                                size, factory) as stream:
            data = (consume or (lambda s: _read_through_pipeline(s, size))
                    )(stream)
        return session, data

    def test_whole_disk_read_completes_the_lease(self):
        server = fakes.NfcServer(get_body=b'x' * 5000)
        session, data = self.run_export(server, 6000)
        self.assertEqual(b'x' * 5000 + bytes(1000), data)
        self.assertIn('HttpNfcLeaseComplete', session.methods())
        self.assertNotIn('HttpNfcLeaseAbort', session.methods())
        headers = server.requests[0][2]
        self.assertEqual('vmware_soap_session="secret-cookie"',
                         headers['Cookie'])

    def test_partial_read_aborts_the_lease(self):
        server = fakes.NfcServer(get_body=b'x' * 5000)

        def ten_bytes(stream):
            with transfer.BackupReader(stream, 5000, 10) as reader:
                return reader.read(10)

        session, _data = self.run_export(server, 5000, consume=ten_bytes)
        self.assertIn('HttpNfcLeaseAbort', session.methods())
        self.assertNotIn('HttpNfcLeaseComplete', session.methods())

    def test_http_error_status(self):
        server = fakes.NfcServer(get_body=b'no', status=404)
        exc = self.assertRaises(errors.TransferError, self.run_export,
                                server, 5000)
        self.assertIn('HTTP 404', str(exc))

    def test_stalled_export_fails_after_idle_timeout(self):
        server = fakes.NfcServer(get_body=b'x' * 5000, stall_after=100,
                                 stall_seconds=3)
        exc = self.assertRaises(errors.TransferStalled, self.run_export,
                                server, 5000, idle_timeout=0.5)
        self.assertIn('0.5 s', str(exc))

    def test_cut_connection_is_an_error(self):
        server = fakes.NfcServer(get_body=b'x' * 5000, cut_after=1000)
        self.assertRaises(errors.TransferError, self.run_export, server,
                          5000)

    def test_a_stopped_backup_does_not_wait_for_a_stalled_export(self):
        # The backup stops early (an error of the backup driver, a service
        # stop) while the producer waits for a stalled body: closing the
        # pipeline cuts the connection off instead of waiting out the
        # idle timeout, and the producer thread is gone afterwards.
        server = fakes.NfcServer(get_body=b'x' * 5000, stall_after=100,
                                 stall_seconds=20, keep_alive=True)

        def stop_early(stream):
            reader = transfer.BackupReader(stream, 5000, 5000)
            failures = []

            def consume():
                try:
                    reader.read(5000)
                except Exception as exc:
                    failures.append(exc)

            # The backup driver reads on a thread of its own; the stop
            # comes from the service's (green, under eventlet) thread.
            consumer = _os_threading.Thread(target=consume)
            consumer.start()
            time.sleep(0.5)  # the producer now waits for the stalled body
            reader.close()
            consumer.join(5)
            self.assertFalse(consumer.is_alive())
            self.assertIsInstance(failures[0],
                                  (errors.TransferError, ValueError))
            self.assertFalse(reader._thread.is_alive())
            return time.monotonic()

        session, left_at = self.run_export(server, 5000, consume=stop_early,
                                           idle_timeout=15)
        self.assertLess(time.monotonic() - left_at, 10)
        self.assertIn('HttpNfcLeaseAbort', session.methods())

    def test_complete_failure_after_full_read_is_not_fatal(self):
        server = fakes.NfcServer(get_body=b'x' * 100)
        server.start()
        self.addCleanup(server.stop)
        session = self.session_for(server)
        session.handlers['HttpNfcLeaseComplete'] = RuntimeError('vc gone')
        settings = nfc.TransferSettings(host='127.0.0.1', port=server.port)
        with export.export_disk(session, settings, fakes.moref('vm-1'), 100,
                                lambda body: PassThroughReader(body, 100)
                                ) as stream:
            self.assertEqual(b'x' * 100, _read_through_pipeline(stream, 100))
        self.assertIn('HttpNfcLeaseComplete', session.methods())
