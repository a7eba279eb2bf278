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

"""A VM's disk as a raw, sequential stream, exported through NFC.

``ExportVm`` gives a lease whose disk URL serves the disk as a
stream-optimized VMDK; the codec's reader decodes it on the fly, so nothing
of the disk's size is ever held in memory or on local disk. What the caller
reads is the guest-visible data, exactly ``size`` bytes.
"""

import contextlib
import http.client
import socket

from oslo_log import log as logging
from urllib3 import exceptions as u3_exceptions

from cinder_vmdk_backup import filled_bytes
from cinder_vmdk_backup import native_threads
from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import nfc

LOG = logging.getLogger(__name__)

#: Exceptions of a broken or stalled HTTP body read.
_NETWORK_ERRORS = (OSError, http.client.HTTPException,
                   u3_exceptions.HTTPError)


class _ResponseBody(object):
    """The HTTP body of an export, with errors that say what happened."""

    def __init__(self, response, what, idle_timeout):
        self._response = response
        self._what = what
        self._idle_timeout = idle_timeout
        self.bytes_read = 0

    def read(self, n=-1):
        try:
            data = self._response.read(n if n is not None and n >= 0
                                       else None)
        except (socket.timeout, u3_exceptions.ReadTimeoutError,
                TimeoutError):
            raise errors.TransferStalled(what=self._what,
                                         seconds=self._idle_timeout)
        except _NETWORK_ERRORS as exc:
            raise errors.TransferError(
                reason='%s broke after %d bytes: %s' % (
                    self._what, self.bytes_read, type(exc).__name__))
        self.bytes_read += len(data)
        return data


class RawDiskStream(object):
    """Raw guest data of the exported disk, as the backup service reads it.

    ``read(n)`` returns exactly ``n`` bytes until the end (Cinder's chunked
    backup drivers hash fixed 32 KiB blocks of each read, so a short read
    would shift every later block and spoil incremental backups), ``tell()``
    gives the position. Reading keeps the lease alive and reports progress.

    The HTTP body is read and decoded on a native thread: ``thread`` (a
    :class:`~cinder_vmdk_backup.native_threads.LowPriorityThread`) or,
    without one, any (:func:`~cinder_vmdk_backup.native_threads.call`).
    Under eventlet that leaves the hub's thread, where the backup driver
    hashes every block, to the backup driver: reading the export there cost
    about a fifth of a full backup's time (``bench/vmdk_backup.py``). The
    reader must therefore not start green threads of its own (the codec
    inflates inline, no executor); the lease's progress calls (SOAP) stay
    on the caller's thread.

    A disk whose capacity is below ``size`` (a volume rounded up to whole
    GiB) reads as zeros up to ``size``.

    :param reader: the codec's ``StreamOptimizedReader``
    :param lease: the :class:`~.nfc.NfcLease` (or None: no progress)
    :param size: bytes to deliver
    :param thread: the native thread to decode on, or None
    """

    def __init__(self, reader, lease, size, thread=None):
        self._reader = reader
        self._on_native_thread = (thread.call if thread is not None
                                  else native_threads.call)
        self._lease = lease
        self.size = size
        self._pos = 0
        self._capacity = reader.capacity
        self.at_end = False
        if self._capacity > size:
            raise errors.TransferError(
                reason='the disk holds %d bytes, more than the %d bytes of '
                       'the volume' % (self._capacity, size))

    def readable(self):
        return True

    def seekable(self):
        return False

    def tell(self):
        return self._pos

    def read(self, n=-1):
        """Return exactly ``n`` bytes (fewer only at the end).

        The codec decodes straight into the ``bytes`` object returned
        (:mod:`~cinder_vmdk_backup.filled_bytes`): backup drivers want
        ``bytes``, and a backup driver's chunk is tens of MiB.
        """
        if n is None or n < 0:
            n = self.size - self._pos
        n = min(n, self.size - self._pos)
        if n <= 0:
            self._check_end()
            return b''
        data = self._on_native_thread(filled_bytes.filled, n, self._fill)
        self._advance(n)
        return data

    def readinto(self, b):
        """Fill ``b`` (exactly, up to the end); return the bytes filled."""
        with memoryview(b) as view:
            n = min(len(view), self.size - self._pos)
            if n <= 0:
                self._check_end()
                return 0
            with view[:n] as target:
                self._on_native_thread(self._decode_into, target, False)
        self._advance(n)
        return n

    def _fill(self, view):
        """Fill all of ``view``, which reads as zeros already."""
        self._decode_into(view, True)

    def _decode_into(self, target, zeroed):
        """Fill all of ``target`` with the data from the current position.

        Runs on a native thread: it only reads the export and decodes, and
        reports nothing to vCenter (see :meth:`_advance`).

        :param zeroed: ``target`` is new and reads as zeros (its part past
            the disk's capacity is then left unwritten); a reused buffer
            would keep stale data there
        """
        n = len(target)
        disk_part = max(0, min(n, self._capacity - self._pos))
        got = 0
        while got < disk_part:
            count = self._reader.readinto(target[got:disk_part])
            if not count:
                raise errors.TransferError(
                    reason='disk stream ended at %d of %d bytes' % (
                        self._pos + got, self._capacity))
            got += count
        if got < n and not zeroed:
            # Past the disk's capacity: zeros up to the volume's size.
            target[got:n] = bytes(n - got)

    def _advance(self, n):
        """Count ``n`` bytes delivered; keep the lease alive."""
        self._pos += n
        if self._lease is not None:
            self._lease.progress(self._pos * 100 // max(self.size, 1))
        if self._pos >= self.size:
            self._check_end()

    def _check_end(self):
        """At the end: the codec validates the VMDK's tail (footer, EOS)."""
        if self.at_end:
            return
        if self._capacity >= self.size:
            # The tail holds the grain tables: up to tens of MiB to check.
            rest = self._on_native_thread(self._reader.read, 1)
            if rest:
                raise errors.TransferError(
                    reason='disk stream longer than %d bytes' % self.size)
        self.at_end = True


class ZeroStream(object):
    """``size`` zero bytes: the data of a volume that has no backing yet."""

    def __init__(self, size):
        self.size = size
        self._pos = 0
        self.at_end = size == 0

    def readable(self):
        return True

    def seekable(self):
        return False

    def tell(self):
        return self._pos

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.size - self._pos
        n = max(0, min(n, self.size - self._pos))
        self._pos += n
        if self._pos >= self.size:
            self.at_end = True
        return bytes(n)


def _complete_quietly(lease):
    """Complete an export whose data was all read and checked.

    The data is whole (the codec checked the VMDK's tail); a vCenter that
    cannot be told so lets the lease expire, nothing else depends on it.
    """
    try:
        lease.complete()
    except Exception as exc:
        LOG.warning('Could not complete the NFC lease of the %(what)s; '
                    'the data was read in full: %(exc)s',
                    {'what': lease.what, 'exc': exc})


def _close_connection(conn):
    """Close the export's connection, cutting it off first.

    A decoding job whose waiting green thread was killed (a service stop, a
    timeout with read-ahead off) may still read the connection on its
    native thread; ``close()`` would wait for the response's buffer lock,
    natively, and so hold up the whole hub until that read ends, up to the
    idle timeout. Shut down, the socket ends that read at once.
    """
    sock = getattr(conn, 'sock', None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected any more: nothing to cut off
    conn.close()


@contextlib.contextmanager
def export_disk(session, settings, vm_ref, size, reader_factory,
                niceness=0):
    """Export the disk of ``vm_ref`` as a :class:`RawDiskStream`.

    The lease is completed when the caller read the whole disk and the
    VMDK's tail checked out, and aborted otherwise (an error, or a caller
    that stopped early); the HTTP connection and the decoding thread are
    always closed.

    :param session: ``oslo_vmware.api.VMwareAPISession``
    :param settings: :class:`~.nfc.TransferSettings`
    :param vm_ref: the VM (a volume's backing) holding one disk
    :param size: bytes the stream delivers (the volume's size)
    :param reader_factory: builds the codec's reader from a file-like
        object (``StreamOptimizedReader``)
    :param niceness: how far below the process's CPU priority the export
        is read and decoded (a
        :class:`~cinder_vmdk_backup.native_threads.LowPriorityThread`)
    :raises: :class:`~.errors.TransferError` and subclasses,
        the codec's ``VmdkError``, oslo.vmware's exceptions
    """
    lease = nfc.NfcLease.export_vm(session, settings, vm_ref)
    conn = None
    thread = None
    try:
        url, thumbprint = lease.disk_url()
        headers = {'Cookie': nfc.session_cookie(session)}
        try:
            conn = nfc.open_connection(url, 'GET', headers, settings,
                                       thumbprint)
            response = conn.getresponse()
        except (socket.timeout, TimeoutError, u3_exceptions.TimeoutError):
            raise errors.TransferStalled(what=lease.what,
                                         seconds=settings.idle_timeout)
        except _NETWORK_ERRORS as exc:
            raise errors.TransferError(
                reason='%s: cannot connect: %s' % (lease.what,
                                                   type(exc).__name__))
        if response.status != 200:
            raise errors.TransferError(
                reason='%s: HTTP %s %s' % (lease.what, response.status,
                                           response.reason))
        body = _ResponseBody(response, lease.what, settings.idle_timeout)
        thread = native_threads.LowPriorityThread(niceness, lease.what)
        if thread.niceness_error is not None:
            LOG.warning('%(what)s is decoded at the service\'s own CPU '
                        'priority: %(err)s', {'what': lease.what,
                                              'err': thread.niceness_error})
        stream = RawDiskStream(reader_factory(body), lease, size, thread)
        LOG.debug('Exporting %(what)s: disk of %(cap)d bytes read as '
                  '%(size)d bytes.', {'what': lease.what,
                                      'cap': stream._capacity,
                                      'size': size})
        yield stream
        if stream.at_end:
            _complete_quietly(lease)
            LOG.info('%(what)s done: %(wire)d bytes on the wire for '
                     '%(size)d bytes of disk.',
                     {'what': lease.what, 'wire': body.bytes_read,
                      'size': size})
    finally:
        try:
            try:
                if conn is not None:
                    # First: a decoding job still reading the body then
                    # returns.
                    _close_connection(conn)
            finally:
                if thread is not None:
                    thread.close()
        finally:
            lease.abort()
