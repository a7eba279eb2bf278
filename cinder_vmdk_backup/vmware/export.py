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
    """Raw guest data of the exported disk, as a transfer source.

    Plain synchronous code for the backup pipeline
    (:class:`~cinder_vmdk_backup.backup.transfer.BackupReader`): ``fill``
    decodes the next bytes into a buffer that reads as zeros (runs of
    zeros are left unwritten), ``finish`` checks the VMDK's tail once the
    whole disk was read, ``report`` keeps the lease alive and reports
    progress, ``interrupt`` cuts the connection off so that a ``fill``
    blocked on the network returns.

    A disk whose capacity is below ``size`` (a volume rounded up to whole
    GiB) reads as zeros up to ``size``.

    :param reader: the codec's ``StreamOptimizedReader``
    :param lease: the :class:`~.nfc.NfcLease` (or None: no progress)
    :param size: bytes to deliver
    :param sock: the export's socket (or None)
    """

    def __init__(self, reader, lease, size, sock=None):
        self._reader = reader
        self._extents = reader.iter_extents()
        self._lease = lease
        self._sock = sock
        self.size = size
        self.capacity = reader.capacity
        self._pos = 0
        # The rest of the extent being consumed: (bytes left, data or None).
        self._left = 0
        self._data = None
        self._checked = False
        self._delivered = 0
        if self.capacity > size:
            raise errors.TransferError(
                reason='the disk holds %d bytes, more than the %d bytes of '
                       'the volume' % (self.capacity, size))

    def fill(self, view):
        """Fill ``view`` (zeros already) with the next ``len(view)`` bytes."""
        n = len(view)
        disk_part = max(0, min(n, self.capacity - self._pos))
        done = 0
        while done < disk_part:
            if not self._left:
                self._next_extent(self._pos + done)
            count = min(disk_part - done, self._left)
            if self._data is not None:
                start = len(self._data) - self._left
                view[done:done + count] = self._data[start:start + count]
            self._left -= count
            done += count
        # Past the disk's capacity: zeros up to the volume's size, as the
        # buffer reads already.
        self._pos += n

    def _next_extent(self, position):
        for _offset, length, data in self._extents:
            if length:
                self._left = length
                self._data = memoryview(data) if data is not None else None
                return
        raise errors.TransferError(
            reason='disk stream ended at %d of %d bytes' % (position,
                                                            self.capacity))

    def finish(self):
        """At the end: the codec validates the VMDK's tail (footer, EOS)."""
        if self._left or any(length for _o, length, _d in self._extents):
            raise errors.TransferError(
                reason='disk stream longer than %d bytes' % self.size)
        self._checked = True

    @property
    def at_end(self):
        """Whether the whole disk was checked *and* handed to the caller.

        The producer checks the tail ahead of the caller: a caller that
        stopped early (a cancelled backup) did not get everything.
        """
        return self._checked and self._delivered >= self.size

    def report(self, position):
        """Keep the lease alive; tell vCenter how far the export got."""
        self._delivered = position
        if self._lease is not None:
            self._lease.progress(position * 100 // max(self.size, 1))

    def interrupt(self):
        """Make a ``fill`` blocked on the network return (with an error)."""
        _shut_down(self._sock)


class ZeroStream(object):
    """``size`` zero bytes: the data of a volume that has no backing yet.

    A transfer source (see :class:`RawDiskStream`): the buffers it is
    given read as zeros already.
    """

    def __init__(self, size):
        self.size = size

    def fill(self, view):
        """Nothing to write: ``view`` reads as zeros."""


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


def _shut_down(sock):
    """Cut the export's socket off: a read blocked on it returns.

    ``close()`` alone would wait for the response's buffer lock, which a
    read on the producer thread holds until the idle timeout. The socket
    is the one the connection opened: ``http.client`` forgets it once a
    response that closes the connection began.
    """
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected any more: nothing to cut off


@contextlib.contextmanager
def export_disk(session, settings, vm_ref, size, reader_factory):
    """Export the disk of ``vm_ref`` as a :class:`RawDiskStream`.

    The lease is completed when the whole disk was read and the VMDK's tail
    checked out (:meth:`RawDiskStream.finish`), and aborted otherwise (an
    error, or a caller that stopped early); the HTTP connection is always
    closed.

    :param session: ``oslo_vmware.api.VMwareAPISession``
    :param settings: :class:`~.nfc.TransferSettings`
    :param vm_ref: the VM (a volume's backing) holding one disk
    :param size: bytes the stream delivers (the volume's size)
    :param reader_factory: builds the codec's reader from a file-like
        object (``StreamOptimizedReader``)
    :raises: :class:`~.errors.TransferError` and subclasses,
        the codec's ``VmdkError``, oslo.vmware's exceptions
    """
    lease = nfc.NfcLease.export_vm(session, settings, vm_ref)
    try:
        url, thumbprint = lease.disk_url()
        with read_disk_url(session, settings, lease, url, thumbprint, size,
                           reader_factory) as stream:
            yield stream
            if stream.at_end:
                _complete_quietly(lease)
    finally:
        lease.abort()


@contextlib.contextmanager
def read_disk_url(session, settings, lease, url, thumbprint, size,
                  reader_factory, progress=None):
    """One disk URL of an export lease, as a :class:`RawDiskStream`.

    The lease is neither completed nor aborted here (a lease may serve
    several disks); the HTTP connection is always closed.

    :param lease: the :class:`~.nfc.NfcLease` the URL belongs to
    :param progress: what :meth:`RawDiskStream.report` tells of the
        progress (an object with ``progress(percent)``; default: the lease)
    """
    conn = sock = None
    try:
        headers = {'Cookie': nfc.session_cookie(session)}
        try:
            conn = nfc.open_connection(url, 'GET', headers, settings,
                                       thumbprint)
            sock = conn.sock
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
        stream = RawDiskStream(reader_factory(body),
                               lease if progress is None else progress,
                               size, sock)
        LOG.debug('Exporting %(what)s: disk of %(cap)d bytes read as '
                  '%(size)d bytes.', {'what': lease.what,
                                      'cap': stream.capacity,
                                      'size': size})
        yield stream
        if stream.at_end:
            LOG.info('%(what)s done: %(wire)d bytes on the wire for '
                     '%(size)d bytes of disk.',
                     {'what': lease.what, 'wire': body.bytes_read,
                      'size': size})
    finally:
        if conn is not None:
            _shut_down(sock)
            conn.close()
