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
import os
import time
import types
from unittest import mock

from eventlet import patcher
import fixtures
import testtools

from cinder_vmdk_backup import filled_bytes
from cinder_vmdk_backup import native_threads
from cinder_vmdk_backup.vmdk import reader as vmdk_reader
from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import export
from cinder_vmdk_backup.vmware import nfc
from tests.unit.vmdk import streams
from tests.unit.vmware import fakes

# The real OS-thread primitives (these tests run monkey-patched).
_os_threading = patcher.original('threading')


class PassThroughReader(object):
    """Stands in for the codec's reader: the body is the raw data."""

    def __init__(self, body, capacity):
        self._body = body
        self.capacity = capacity

    def read(self, n=-1):
        return self._body.read(n)

    def readinto(self, buf, zeroed=False):
        data = self._body.read(len(buf))
        buf[:len(data)] = data
        return len(data)


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


class RawDiskStreamTestCase(testtools.TestCase):

    def stream(self, data, capacity=None, size=None):
        capacity = len(data) if capacity is None else capacity
        reader = PassThroughReader(BytesBody(data), capacity)
        lease = RecordingLease()
        return export.RawDiskStream(reader, lease, size or capacity), lease

    def test_reads_are_full_despite_short_reads_below(self):
        stream, lease = self.stream(b'0123456789')
        self.assertEqual(b'0123', stream.read(4))
        self.assertEqual(4, stream.tell())
        self.assertEqual(b'456789', stream.read(100))
        self.assertEqual(b'', stream.read(4))
        self.assertTrue(stream.at_end)
        self.assertEqual([40, 100], lease.percents)

    def test_reads_are_read_only_bytes(self):
        # python-zstd, one of Cinder's backup compressors, refuses a
        # bytearray.
        stream, _lease = self.stream(b'0123456789')
        self.assertIs(bytes, type(stream.read(4)))

    def test_large_reads_are_decoded_into_the_bytes_returned(self):
        data = bytes(range(256)) * 1024
        stream, _lease = self.stream(data)
        with mock.patch.object(export.filled_bytes, 'filled',
                               autospec=True,
                               side_effect=filled_bytes.filled) as fill:
            piece = stream.read(len(data) - 5)
        fill.assert_called_once_with(len(data) - 5, mock.ANY)
        self.assertIs(bytes, type(piece))
        self.assertEqual(data[:-5], piece)
        self.assertEqual(data[-5:], stream.read(10))

    def test_decoded_on_a_native_thread_progress_on_the_callers(self):
        # Under eventlet the hub's thread belongs to the backup driver;
        # the lease's SOAP calls are green I/O and stay on the caller's.
        if not native_threads.threading_is_green():
            self.skipTest('threading is not monkey-patched in this run')
        idents = {}
        stream, lease = self.stream(b'0123456789')
        reader = stream._reader
        readinto = reader.readinto
        progress = lease.progress

        def recording_readinto(buf, zeroed=False):
            idents['decode'] = _os_threading.get_ident()
            return readinto(buf, zeroed)

        def recording_progress(percent):
            idents['progress'] = _os_threading.get_ident()
            progress(percent)

        def recording_read(n=-1):
            idents['tail'] = _os_threading.get_ident()
            return reader._body.read(n)

        reader.readinto = recording_readinto
        reader.read = recording_read
        lease.progress = recording_progress
        self.assertEqual(b'0123', stream.read(4))
        self.assertNotEqual(_os_threading.get_ident(), idents['decode'])
        self.assertEqual(_os_threading.get_ident(), idents['progress'])
        del idents['decode']
        self.assertEqual(4, stream.readinto(bytearray(4)))
        self.assertNotEqual(_os_threading.get_ident(), idents['decode'])
        self.assertEqual(b'89', stream.read(10))
        # The check of the tail (grain tables, footer) is decoding too.
        self.assertNotEqual(_os_threading.get_ident(), idents['tail'])

    def test_real_decoding_logs_nothing_off_the_callers_thread(self):
        # Logging's lock is green once eventlet patched threading: a
        # native job taking it while the hub's thread holds it hangs both.
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
            self.assertEqual(data, stream.read(len(data)))
            self.assertEqual(b'', stream.read(1))
        self.assertTrue(stream.at_end)
        self.assertEqual([], logged_from)

    def test_error_while_decoding_gives_no_data(self):
        stream, _lease = self.stream(b'abc' * 30000, capacity=100000)
        self.assertRaises(errors.TransferError, stream.read, 100000)

    def test_pads_zeros_up_to_volume_size(self):
        stream, _lease = self.stream(b'abc', size=8)
        self.assertEqual(b'abc\0\0\0\0\0', stream.read())
        self.assertTrue(stream.at_end)

    def test_readinto(self):
        stream, _lease = self.stream(b'abcdef')
        buf = bytearray(4)
        self.assertEqual(4, stream.readinto(buf))
        self.assertEqual(b'abcd', bytes(buf))

    def test_stream_ending_early_is_an_error(self):
        stream, _lease = self.stream(b'abc', capacity=6)
        exc = self.assertRaises(errors.TransferError, stream.read, 6)
        self.assertIn('ended at 3 of 6', str(exc))

    def test_trailing_data_is_an_error(self):
        reader = PassThroughReader(BytesBody(b'abcdef'), 4)
        stream = export.RawDiskStream(reader, None, 4)
        self.assertRaises(errors.TransferError, stream.read, 4)

    def test_disk_larger_than_volume_is_refused(self):
        reader = PassThroughReader(BytesBody(b''), 10)
        self.assertRaises(errors.TransferError, export.RawDiskStream,
                          reader, None, 5)


class ZeroStreamTestCase(testtools.TestCase):

    def test_zeros_of_size(self):
        stream = export.ZeroStream(10)
        self.assertEqual(bytes(4), stream.read(4))
        self.assertEqual(4, stream.tell())
        self.assertEqual(bytes(6), stream.read(100))
        self.assertEqual(b'', stream.read(1))
        self.assertTrue(stream.at_end)


class ExportDiskTestCase(testtools.TestCase):

    def session_for(self, server):
        lease = fakes.moref('lease-1', 'HttpNfcLease')
        info = types.SimpleNamespace(
            deviceUrl=[types.SimpleNamespace(url=server.url, disk=True,
                                             sslThumbprint=None)])
        return fakes.FakeSession(
            {('lease-1', 'state'): ['ready'], ('lease-1', 'info'): info},
            {'ExportVm': lambda vm: lease})

    def setUp(self):
        super().setUp()
        # The decoding threads the exports started, to check they ended.
        self.threads = []
        real = native_threads.LowPriorityThread

        def recorded(*args, **kwargs):
            thread = real(*args, **kwargs)
            self.threads.append(thread)
            return thread

        self.useFixture(fixtures.MockPatchObject(
            native_threads, 'LowPriorityThread', side_effect=recorded,
            autospec=True))

    def assertThreadsEnded(self):
        self.assertFalse(any(t.is_alive() for t in self.threads))

    def run_export(self, server, size, consume=None, idle_timeout=5,
                   niceness=0, reader=PassThroughReader):
        server.start()
        self.addCleanup(server.stop)
        session = self.session_for(server)
        settings = nfc.TransferSettings(host='127.0.0.1', port=server.port,
                                        idle_timeout=idle_timeout)

        def factory(body):
            return reader(body, len(server.get_body))

        try:
            with export.export_disk(session, settings, fakes.moref('vm-1'),
                                    size, factory,
                                    niceness=niceness) as stream:
                data = (consume or (lambda s: s.read()))(stream)
        finally:
            self.assertThreadsEnded()
        return session, data

    def test_decoded_below_the_services_priority(self):
        seen = set()

        class RecordingReader(PassThroughReader):
            def readinto(self, b, zeroed=False):
                seen.add((_os_threading.get_ident(), os.getpriority(
                    os.PRIO_PROCESS, _os_threading.get_native_id())))
                return super().readinto(b, zeroed)

        server = fakes.NfcServer(get_body=b'x' * 5000)
        base = os.getpriority(os.PRIO_PROCESS, 0)
        _session, data = self.run_export(
            server, 5000, consume=lambda s: s.read(1000) + s.read(),
            niceness=4, reader=RecordingReader)
        self.assertEqual(b'x' * 5000, data)
        # One thread of its own for every read of the export, lowered.
        self.assertEqual(1, len(seen))
        ident, niceness = seen.pop()
        self.assertNotEqual(_os_threading.get_ident(), ident)
        self.assertEqual(min(base + 4, 19), niceness)
        native_threads.LowPriorityThread.assert_called_once_with(
            4, name=mock.ANY)

    @mock.patch.object(os, 'setpriority', autospec=True,
                       side_effect=PermissionError(1, 'Operation not '
                                                   'permitted'))
    def test_priority_not_lowered_is_logged_and_harmless(self, _setprio):
        logged = self.useFixture(fixtures.FakeLogger(
            name='cinder_vmdk_backup.vmware.export'))
        server = fakes.NfcServer(get_body=b'x' * 500)
        _session, data = self.run_export(server, 500, niceness=10)
        self.assertEqual(b'x' * 500, data)
        self.assertIn("service's own CPU priority", logged.output)
        self.assertIn('Operation not permitted', logged.output)

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
        session, _data = self.run_export(server, 5000,
                                         consume=lambda s: s.read(10))
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

    def test_killed_reader_does_not_hold_up_the_hub(self):
        # With read-ahead off, the backup's own green thread waits for the
        # native decoding job; killed (service stop), it leaves the job
        # reading. Leaving the export must not wait for that read.
        if not native_threads.threading_is_green():
            self.skipTest('threading is not monkey-patched in this run')
        import eventlet
        server = fakes.NfcServer(get_body=b'x' * 5000, stall_after=100,
                                 stall_seconds=20, keep_alive=True)
        server.start()
        self.addCleanup(server.stop)
        session = self.session_for(server)
        settings = nfc.TransferSettings(host='127.0.0.1', port=server.port,
                                        idle_timeout=15)
        with export.export_disk(session, settings, fakes.moref('vm-1'),
                                5000, lambda body: PassThroughReader(
                                    body, 5000)) as stream:
            waiter = eventlet.spawn(stream.read, 5000)
            eventlet.sleep(0.5)  # the job now waits for the stalled body
            waiter.kill()
            left_at = time.monotonic()
        # Without the cut-off, the close waits out the idle timeout.
        self.assertLess(time.monotonic() - left_at, 10)
        self.assertIn('HttpNfcLeaseAbort', session.methods())
        self.assertThreadsEnded()

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
            self.assertEqual(b'x' * 100, stream.read())
        self.assertIn('HttpNfcLeaseComplete', session.methods())
