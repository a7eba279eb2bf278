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

"""Create a VM with one disk from a stream-optimized VMDK (ImportVApp).

The VMDK is sent with HTTP POST (``application/x-vnd.vmware-streamVmdk``:
vSphere then keeps thin disks thin, also on VVol datastores) and an exact
``Content-Length`` known before the lease is opened, so the lease never
idles while the length is computed, and an upload cut short can never pass
for a complete one.
"""

import http.client
import socket

from oslo_log import log as logging
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util
from urllib3 import exceptions as u3_exceptions

from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import nfc

LOG = logging.getLogger(__name__)

STREAM_VMDK_CONTENT_TYPE = 'application/x-vnd.vmware-streamVmdk'

_NETWORK_ERRORS = (OSError, http.client.HTTPException,
                   u3_exceptions.HTTPError)
_TIMEOUTS = (socket.timeout, TimeoutError, u3_exceptions.TimeoutError)


def _destroy_quietly(session, vm_ref, what):
    """Destroy a VM an aborted import may have left; never raises."""
    try:
        task = session.invoke_api(session.vim, 'Destroy_Task', vm_ref)
        session.wait_for_task(task)
        LOG.info('Removed the VM of the failed %s.', what)
    except vexc.ManagedObjectNotFoundException:
        pass
    except Exception as exc:
        LOG.warning('Could not remove the VM of the failed %(what)s '
                    '(%(vm)s): %(exc)s', {'what': what,
                                          'vm': vim_util.get_moref_value(
                                              vm_ref),
                                          'exc': exc})


def import_disk(session, settings, resource_pool, folder, import_spec,
                writer, host=None):
    """Import ``writer``'s VMDK as the disk of a new VM.

    :param session: ``oslo_vmware.api.VMwareAPISession``
    :param settings: :class:`~.nfc.TransferSettings`
    :param resource_pool: resource pool of the new VM
    :param folder: inventory folder of the new VM
    :param import_spec: ``VirtualMachineImportSpec`` (one disk)
    :param writer: the codec's ``StreamOptimizedWriter`` (``length``,
        ``iter_chunks()``)
    :param host: optional ESX host to import on
    :returns: managed object reference of the new VM
    :raises: :class:`~.errors.TransferError` and subclasses,
        oslo.vmware's exceptions; on any error the lease is aborted and the
        VM it created is removed
    """
    length = writer.length
    lease = nfc.NfcLease.import_vapp(session, settings, resource_pool,
                                     import_spec, folder, host=host)
    conn = None
    try:
        url, thumbprint = lease.disk_url()
        headers = {'Cookie': nfc.session_cookie(session),
                   'Content-Type': STREAM_VMDK_CONTENT_TYPE,
                   'Content-Length': str(length)}
        sent = 0
        try:
            conn = nfc.open_connection(url, 'POST', headers, settings,
                                       thumbprint)
            for chunk in writer.iter_chunks():
                conn.send(chunk)
                sent += len(chunk)
                lease.progress(sent * 100 // max(length, 1))
            if sent != length:
                raise errors.TransferError(
                    reason='%s: the VMDK had %d bytes, announced %d' % (
                        lease.what, sent, length))
            response = conn.getresponse()
            answer = response.read(4096)
        except _TIMEOUTS:
            raise errors.TransferStalled(what=lease.what,
                                         seconds=settings.idle_timeout)
        except _NETWORK_ERRORS as exc:
            raise errors.TransferError(
                reason='%s broke after %d of %d bytes: %s' % (
                    lease.what, sent, length, type(exc).__name__))
        if not 200 <= response.status < 300:
            raise errors.TransferError(
                reason='%s: HTTP %s %s %s' % (
                    lease.what, response.status, response.reason,
                    answer[:200].decode('utf-8', 'replace')))
        vm_ref = lease.entity
        lease.complete()
        LOG.info('%(what)s done: %(bytes)d bytes uploaded.',
                 {'what': lease.what, 'bytes': sent})
        return vm_ref
    except BaseException:
        entity = None
        try:
            entity = lease.entity
        except Exception:
            LOG.debug('No lease info after a failed %s.', lease.what)
        lease.abort()
        if entity is not None:
            _destroy_quietly(session, entity, lease.what)
        raise
    finally:
        if conn is not None:
            conn.close()
