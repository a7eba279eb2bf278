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

"""The janitors of vCenter: temporary VMs and NFC leases of gone processes.

A temporary VM is named ``cvb-tmp-<owner>-<volume id>``, ``<owner>`` being
:func:`~cinder_vmdk_backup.ownership.name_part` of the process that imports
it (its host and pid namespace, pid, and a tag of its boot and start
time). Several cinder-backup and cinder-volume processes (``backup_workers``
of one node, other services, other hosts) share one vCenter:
:func:`remove_temp_vms` destroys only the temporary VMs whose owner is
provably gone (:func:`~cinder_vmdk_backup.ownership.named_owner_gone`): made
on this host and in this pid namespace by a process that no longer runs.
Another host's are left to that host. Names of an older release
(``cvb-tmp-<node>-<epoch>-<volume id>``) name no process: they are listed
in a warning and left for the operator.

An NFC lease (export or import) opened by a process is recorded in a
private file of the staging directory while it is open (an
:class:`~cinder_vmdk_backup.ownership.Record` of kind
:data:`~.nfc.LEASE_RECORD_KIND`, written by :class:`~.nfc.NfcLease`);
:func:`abort_leases` aborts the leases whose owner is gone. vCenter expires
a lease only after minutes without progress, and vcsim never does; until
then the lease's VM stays busy (an export) or half-imported (an import).
"""

import re

from oslo_log import log as logging
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import nfc
from cinder_vmdk_backup.vmware import vmsnapshot

LOG = logging.getLogger(__name__)

TEMP_VM_PREFIX = 'cvb-tmp-'

_UUID = r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
_NAME_RE = re.compile(r'^%s%s-(?P<volume>%s)$' % (
    re.escape(TEMP_VM_PREFIX), ownership.NAME_PART_RE, _UUID))
_OLD_NAME_RE = re.compile(r'^%s[0-9a-f]{8}-[0-9]{9,12}-' %
                          re.escape(TEMP_VM_PREFIX))


def temp_vm_name(volume_id, owner=None):
    """Return the name of a temporary VM for work on ``volume_id``.

    :param owner: the owning :class:`~cinder_vmdk_backup.ownership.Owner`
        (default: this process)
    """
    return '%s%s-%s' % (TEMP_VM_PREFIX, ownership.name_part(owner),
                        volume_id)


def parse_temp_vm_name(name):
    """Return ``(place, pid, tag, volume id)`` of a temp VM name, or None."""
    match = _NAME_RE.match(name or '')
    if not match:
        return None
    return (match.group('place'), int(match.group('pid')),
            match.group('tag'), match.group('volume'))


def is_leftover(name, here=None):
    """Tell whether ``name`` is a temp VM of a provably gone process."""
    parsed = parse_temp_vm_name(name)
    return bool(parsed and ownership.named_owner_gone(*parsed[:3],
                                                      here=here))


def _vm_names(session, max_objects):
    result = session.invoke_api(vim_util, 'get_objects', session.vim,
                                'VirtualMachine', max_objects,
                                properties_to_collect=['name'])
    while result:
        for obj in result.objects:
            name = None
            for prop in getattr(obj, 'propSet', None) or []:
                if prop.name == 'name':
                    name = prop.val
            yield name, obj.obj
        result = session.invoke_api(vim_util, 'continue_retrieval',
                                    session.vim, result)


def find_leftovers(session, max_objects=100, here=None):
    """List ``(name, vm_ref)`` of temp VMs of provably gone processes."""
    found, old = [], []
    for name, ref in _vm_names(session, max_objects):
        if is_leftover(name, here):
            found.append((name, ref))
        elif _OLD_NAME_RE.match(name or ''):
            old.append(name)
    if old:
        LOG.warning('Temporary VMs of an older release of the plugin '
                    'exist: %s. Their owner cannot be known; remove them '
                    'once no restore of that release runs any more.',
                    ', '.join(sorted(old)))
    return found


def remove_temp_vms(session, max_objects=100, here=None):
    """Destroy temp VMs (and their disks) of provably gone processes.

    Failures are logged and skipped: a leftover must not stop a service
    from starting.

    :returns: names of the VMs removed
    """
    removed = []
    for name, ref in find_leftovers(session, max_objects, here):
        try:
            task = session.invoke_api(session.vim, 'Destroy_Task', ref)
            session.wait_for_task(task)
        except vexc.ManagedObjectNotFoundException:
            continue
        except vexc.VimException as exc:
            LOG.warning('Could not remove leftover temporary VM %(name)s: '
                        '%(exc)s', {'name': name, 'exc': exc})
            continue
        LOG.warning('Removed temporary VM %s of a restore interrupted by '
                    'the end of its process.', name)
        removed.append(name)
    return removed


def abort_leases(session, directory, here=None):
    """Abort the NFC leases recorded in ``directory`` by gone processes.

    A lease vCenter no longer knows (completed, expired, its VM gone) needs
    nothing more; its record is removed all the same.

    :returns: the ``what`` of each lease aborted
    """
    aborted = []
    stale = ownership.stale_records(directory, nfc.LEASE_RECORD_KIND, here)
    for record in stale:
        data = record.data
        ref = vim_util.get_moref(data.get('value'),
                                 data.get('type') or 'HttpNfcLease')
        what = data.get('what') or data.get('value')
        try:
            session.invoke_api(session.vim, 'HttpNfcLeaseAbort', ref)
        except vexc.ManagedObjectNotFoundException:
            LOG.info('The NFC lease of the %s, left open by a process that '
                     'ended during the transfer, is gone already.', what)
        except vexc.VimException as exc:
            if not _lease_finished(exc):
                LOG.warning('Could not abort the NFC lease of the %(what)s '
                            'left by a gone process: %(exc)s',
                            {'what': what, 'exc': exc})
                record.close()
                continue
        else:
            LOG.warning('Aborted the NFC lease of the %s, left open by a '
                        'process that ended during the transfer.', what)
            aborted.append(what)
        record.remove()
    return aborted


def _lease_finished(exc):
    """Whether ``exc`` says the lease is done already (nothing to abort)."""
    names = getattr(exc, 'fault_list', None) or []
    return any(name in ('ManagedObjectNotFound', 'InvalidState')
               for name in names)


def _snapshot_trees(session, max_objects):
    """Yield ``(vm name, snapshot tree node)`` of every VM's snapshots."""
    result = session.invoke_api(vim_util, 'get_objects', session.vim,
                                'VirtualMachine', max_objects,
                                properties_to_collect=['name', 'snapshot'])
    while result:
        for obj in result.objects:
            props = {p.name: p.val for p in getattr(obj, 'propSet', None)
                     or []}
            info = props.get('snapshot')
            pending = list(getattr(info, 'rootSnapshotList', None) or [])
            while pending:
                node = pending.pop()
                pending.extend(getattr(node, 'childSnapshotList', None)
                               or [])
                yield props.get('name'), node
        result = session.invoke_api(vim_util, 'continue_retrieval',
                                    session.vim, result)


def remove_snapshots(session, max_objects=100, here=None):
    """Remove VM snapshots of group backups of provably gone processes.

    A group backup snapshots an instance's VM
    (:mod:`~cinder_vmdk_backup.vmware.vmsnapshot`) and removes the
    snapshot at its end; one whose process was killed meanwhile stays, and
    the instance's disks keep growing a delta chain on vSphere. Only
    snapshots named by a process of this host and pid namespace that no
    longer runs are removed (children kept, data consolidated); failures
    are logged and skipped.

    :returns: ``[(vm name, snapshot name)]`` removed
    """
    removed = []
    for vm_name, node in list(_snapshot_trees(session, max_objects)):
        parsed = vmsnapshot.parse_snapshot_name(getattr(node, 'name', None))
        if not parsed or not ownership.named_owner_gone(*parsed, here=here):
            continue
        try:
            vmsnapshot.remove_snapshot(session, node.snapshot)
        except vexc.ManagedObjectNotFoundException:
            continue
        except vexc.VimException as exc:
            LOG.warning('Could not remove leftover snapshot %(snap)s of VM '
                        '%(vm)s: %(exc)s', {'snap': node.name, 'vm': vm_name,
                                            'exc': exc})
            continue
        LOG.warning('Removed snapshot %(snap)s of VM %(vm)s, left by a group '
                    'backup interrupted by the end of its process.',
                    {'snap': node.name, 'vm': vm_name})
        removed.append((vm_name, node.name))
    return removed
