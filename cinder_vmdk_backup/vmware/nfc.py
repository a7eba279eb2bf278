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

"""NFC leases and the HTTPS connections that move a disk's bytes.

oslo.vmware's :mod:`oslo_vmware.rw_handles` (``VmdkReadHandle``,
``VmdkWriteHandle``) does the same job for Glance images; it is not used
as it is because, for a backup of any size:

* ``session.wait_for_lease_ready`` polls forever: a lease stuck in
  ``initializing`` hangs the operation. :meth:`NfcLease.wait_ready` has a
  deadline;
* its HTTP connections have no socket timeout: a transfer whose peer went
  away hangs forever (the urllib3 >= 2 hang). Here every connection has the
  *idle* timeout as its socket timeout, so a transfer fails after that many
  seconds without a byte, and never while data still flows;
* the read handle measures progress in bytes of the *compressed* stream
  against the disk's capacity, so it stays below 100 % and the lease is
  aborted instead of completed; here the caller reports progress (raw
  bytes for an export, bytes sent for an import);
* the read handle never verifies the server certificate unless a
  thumbprint is given, and the write handle releases the lease as complete
  without looking at the HTTP response of the upload; here a thumbprint
  pins the certificate, else ``vmware_ca_file``/``vmware_insecure`` apply
  as for the SOAP session, and an upload is complete only on a 2xx answer.

What is reused: the vSphere calls through the session. (The host an ESX
host leaves out of a lease's URL is filled in here, :func:`lease_url`, not
by oslo.vmware's private ``VmdkHandle._fix_esx_url``.)
"""

import dataclasses
import ssl
import time
import urllib.parse

from oslo_log import log as logging
from oslo_utils import netutils
from oslo_vmware import exceptions as vexc
from oslo_vmware import rw_handles
from oslo_vmware import vim_util
from urllib3 import connection as u3_connection

from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import errors

LOG = logging.getLogger(__name__)

#: Seconds between two HttpNfcLeaseProgress calls; vCenter expires a lease
#: after about five minutes without one.
PROGRESS_INTERVAL = 60

#: Kind of the ownership records of open leases (see :mod:`.leftovers`).
LEASE_RECORD_KIND = 'nfc-lease'


def lease_url(url, host, port):
    """The URL of a lease's disk, with the host filled in where it is ``*``.

    An ESX host managed without vCenter puts ``*`` where the host belongs in
    the URLs of its leases: the client is to use the address it reached the
    host at. vCenter's leases name their host and are returned unchanged.

    :param url: a ``deviceUrl.url`` of the lease
    :param host: the vSphere address of the session (name, IPv4 or IPv6)
    :param port: its HTTPS port
    """
    parts = urllib.parse.urlsplit(url)
    if parts.netloc != '*':
        return url
    netloc = '%s:%d' % (netutils.escape_ipv6(host), port)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@dataclasses.dataclass
class TransferSettings(object):
    """How to reach vCenter's NFC endpoints, and how long to wait.

    :param host: vCenter address (replaces ``*`` in lease URLs)
    :param port: vCenter HTTPS port
    :param ca_file: CA bundle to verify certificates with, or None
    :param insecure: skip verification when no CA bundle and no thumbprint
    :param idle_timeout: seconds without a byte moved before a transfer is
        abandoned; there is no limit on the whole transfer
    :param lease_ready_timeout: seconds to wait for a lease to be ready
    :param poll_interval: seconds between two polls of a lease's state
    :param state_dir: directory where each open lease is recorded for the
        janitor of the next start (:mod:`.leftovers`), or None
    """

    host: str
    port: int = 443
    ca_file: str = None
    insecure: bool = False
    idle_timeout: float = 600
    lease_ready_timeout: float = 300
    poll_interval: float = 0.5
    state_dir: str = None


def session_cookie(session):
    """Return the ``Cookie`` header value of a vSphere API session."""
    for cookie in session.vim.client.cookiejar:
        return '%s=%s' % (cookie.name, cookie.value)
    return ''


class NfcLease(object):
    """An HttpNfcLease with a deadline, progress and a definite end.

    :param session: ``oslo_vmware.api.VMwareAPISession``
    :param lease: the lease's managed object reference
    :param settings: :class:`TransferSettings`
    :param what: words naming the transfer in messages
    """

    def __init__(self, session, lease, settings, what):
        self._session = session
        self.ref = lease
        self._settings = settings
        self.what = what
        self._info = None
        self._last_progress = None
        self.done = False
        self._record = None

    @classmethod
    def export_vm(cls, session, settings, vm_ref):
        """Open and ready an export lease of a VM (``ExportVm``)."""
        what = 'export of %s' % vim_util.get_moref_value(vm_ref)
        lease = session.invoke_api(session.vim, 'ExportVm', vm_ref)
        return cls(session, lease, settings, what)._ready()

    @classmethod
    def export_snapshot(cls, session, settings, snapshot_ref, vm_name=None):
        """Open and ready an export lease of a VM snapshot's disks.

        ``VirtualMachineSnapshot.ExportSnapshot``: each disk's data as of
        the snapshot, also while the VM runs and writes.
        """
        what = 'export of snapshot %s%s' % (
            vim_util.get_moref_value(snapshot_ref),
            ' of VM %s' % vm_name if vm_name else '')
        lease = session.invoke_api(session.vim, 'ExportSnapshot',
                                   snapshot_ref)
        return cls(session, lease, settings, what)._ready()

    @classmethod
    def import_vapp(cls, session, settings, resource_pool, import_spec,
                    folder, host=None):
        """Open and ready an import lease (``ImportVApp``)."""
        name = getattr(import_spec.configSpec, 'name', '?')
        what = 'import of %s' % name
        kwargs = {'spec': import_spec, 'folder': folder}
        if host is not None:
            kwargs['host'] = host
        lease = session.invoke_api(session.vim, 'ImportVApp', resource_pool,
                                   **kwargs)
        return cls(session, lease, settings, what)._ready()

    def _ready(self):
        try:
            self._record_open()
            self.wait_ready()
        except Exception:
            self.abort()
            raise
        return self

    def _record_open(self):
        """Record the open lease for the janitor of the next start.

        Held (locked) until the lease is completed or aborted: a process
        killed meanwhile leaves it, and the next start aborts the lease.
        """
        if not self._settings.state_dir:
            return
        try:
            self._record = ownership.Record(
                self._settings.state_dir, LEASE_RECORD_KIND,
                {'type': getattr(self.ref, '_type', 'HttpNfcLease'),
                 'value': vim_util.get_moref_value(self.ref),
                 'what': self.what})
        except OSError as exc:
            # A backup needs no local disk otherwise; it goes on, and
            # vCenter expires the lease if this process is killed.
            LOG.warning('Could not record the NFC lease of the %(what)s in '
                        '%(dir)s: %(exc)s', {'what': self.what,
                                             'dir': self._settings.state_dir,
                                             'exc': exc})

    def _drop_record(self):
        if self._record is not None:
            self._record.release()
            self._record = None

    def _state(self):
        return self._session.invoke_api(
            vim_util, 'get_object_property', self._session.vim, self.ref,
            'state', skip_op_id=True)

    def _error_text(self):
        try:
            fault = self._session.invoke_api(
                vim_util, 'get_object_property', self._session.vim,
                self.ref, 'error')
        except vexc.VimException:
            return 'no detail'
        return getattr(fault, 'localizedMessage', None) or (
            type(getattr(fault, 'fault', fault)).__name__)

    def wait_ready(self):
        """Wait until the lease is ready.

        :raises: :class:`~.errors.LeaseNotReady` when the lease fails or
            stays initializing longer than ``lease_ready_timeout``
        """
        deadline = time.monotonic() + self._settings.lease_ready_timeout
        while True:
            state = self._state()
            if state == 'ready':
                return
            if state == 'error':
                raise errors.LeaseNotReady(what=self.what,
                                           reason=self._error_text())
            if state not in ('initializing', None):
                raise errors.LeaseNotReady(
                    what=self.what, reason='unexpected state %s' % state)
            if time.monotonic() >= deadline:
                raise errors.LeaseNotReady(
                    what=self.what,
                    reason='still %s after %s s' % (
                        state, self._settings.lease_ready_timeout))
            time.sleep(self._settings.poll_interval)

    @property
    def info(self):
        """The lease's ``HttpNfcLeaseInfo`` (read once)."""
        if self._info is None:
            self._info = self._session.invoke_api(
                vim_util, 'get_object_property', self._session.vim,
                self.ref, 'info')
        return self._info

    @property
    def entity(self):
        """The VM the lease is about (the imported VM for an import)."""
        return getattr(self.info, 'entity', None)

    def disk_url(self):
        """Return ``(url, ssl_thumbprint)`` of the lease's (only) disk.

        :raises: :class:`~.errors.TransferError` when the lease has no disk
        """
        for device_url in getattr(self.info, 'deviceUrl', None) or []:
            if getattr(device_url, 'disk', False):
                url = lease_url(device_url.url, self._settings.host,
                                self._settings.port)
                return url, getattr(device_url, 'sslThumbprint', None)
        raise errors.TransferError(
            reason='the %s lease offers no disk URL' % self.what)

    def disk_urls(self):
        """Return ``[(device key, url, ssl_thumbprint)]`` of its disks."""
        return [(getattr(d, 'key', None),
                 lease_url(d.url, self._settings.host, self._settings.port),
                 getattr(d, 'sslThumbprint', None))
                for d in getattr(self.info, 'deviceUrl', None) or []
                if getattr(d, 'disk', False)]

    def progress(self, percent, force=False):
        """Tell vCenter how far the transfer is; keeps the lease alive.

        Calls ``HttpNfcLeaseProgress`` at most every
        :data:`PROGRESS_INTERVAL` seconds unless ``force``.
        """
        now = time.monotonic()
        if (not force and self._last_progress is not None and
                now - self._last_progress < PROGRESS_INTERVAL):
            return
        self._last_progress = now
        percent = max(0, min(100, int(percent)))
        self._session.invoke_api(self._session.vim, 'HttpNfcLeaseProgress',
                                 self.ref, percent=percent)

    def complete(self):
        """Release the lease as successful."""
        try:
            self.progress(100, force=True)
            self._session.invoke_api(self._session.vim,
                                     'HttpNfcLeaseComplete', self.ref)
        finally:
            # Not completed: the caller aborts it, or vCenter expires it.
            self._drop_record()
        self.done = True
        LOG.debug('NFC lease for %s completed.', self.what)

    def abort(self):
        """Release the lease as failed; never raises."""
        if self.done:
            self._drop_record()
            return
        self.done = True
        try:
            self._session.invoke_api(self._session.vim, 'HttpNfcLeaseAbort',
                                     self.ref)
            LOG.info('NFC lease for %s aborted.', self.what)
        except Exception as exc:
            # A lease vCenter already dropped (timed out, VM gone) cannot
            # be aborted; nothing is left behind in that case.
            LOG.warning('Could not abort the NFC lease for %(what)s: '
                        '%(exc)s', {'what': self.what,
                                    'exc': type(exc).__name__})
        finally:
            self._drop_record()


def _tls_arguments(settings, thumbprint):
    """Certificate checks for an NFC URL.

    A thumbprint handed out by vCenter in the lease (over the verified SOAP
    session) pins the host's certificate; otherwise the SOAP session's rules
    apply: the CA bundle when configured, none when insecure, else the
    system's CAs.
    """
    if thumbprint:
        return {'cert_reqs': ssl.CERT_NONE,
                'assert_fingerprint': thumbprint}
    if settings.ca_file:
        return {'cert_reqs': ssl.CERT_REQUIRED,
                'ca_certs': settings.ca_file}
    if settings.insecure:
        return {'cert_reqs': ssl.CERT_NONE}
    return {'cert_reqs': ssl.CERT_REQUIRED}


def open_connection(url, method, headers, settings, thumbprint=None):
    """Open an HTTP(S) connection and send a request's headers.

    The socket timeout is the idle timeout: every later ``send`` or read
    fails when that many seconds pass without progress, and never because a
    transfer is long.

    :param url: an NFC URL from :meth:`NfcLease.disk_url`
    :param method: 'GET' or 'POST'
    :param headers: request headers (the session cookie among them; they
        are never logged)
    :returns: the connection; the caller sends the body and reads the
        response
    """
    parsed = urllib.parse.urlsplit(url)
    path = parsed.path + ('?' + parsed.query if parsed.query else '')
    timeout = settings.idle_timeout
    if parsed.scheme == 'https':
        conn = u3_connection.HTTPSConnection(
            parsed.hostname, parsed.port or 443, timeout=timeout,
            **_tls_arguments(settings, thumbprint))
    elif parsed.scheme == 'http':
        conn = u3_connection.HTTPConnection(
            parsed.hostname, parsed.port or 80, timeout=timeout)
    else:
        raise errors.TransferError(
            reason='unsupported URL scheme %r' % parsed.scheme)
    all_headers = {'User-Agent': rw_handles.USER_AGENT}
    all_headers.update(headers)
    conn.request(method, path, headers=all_headers, preload_content=False)
    return conn
