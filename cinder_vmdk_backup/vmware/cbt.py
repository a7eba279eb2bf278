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

"""What changed in a VMDK volume since a parent backup: vSphere's CBT.

vSphere's changed-block tracking (CBT) is switched on per VM
(``config.changeTrackingEnabled``) and starts tracking a disk at the VM's
next stun cycle (a snapshot taken, or a power-on); from then on each disk
carries a ``changeId`` (``backing.changeId``), and each snapshot's
configuration holds its disks' changeIds as of the snapshot. Each backup of
a detached volume reads a snapshot of the volume's backing VM and records
that snapshot's changeId of the disk with the backup
(:data:`CHANGE_ID_KEY`). The next incremental asks vCenter what changed
since the parent's changeId, up to its own snapshot
(``QueryChangedDiskAreas``, in pieces over the whole disk), and reads only
those areas; ``"*"`` gives the disk's allocated areas, so a backup knows
the rest reads as zeros.

Whatever casts a doubt on the answer makes the backup read everything
instead (still an incremental against the parent's digests: nothing is
stored twice); a wrong backup is never the price of a faster one. The
doubts, each given as the reason (the hand-off logs it, once):

* change tracking is off (``vmware_backup_change_tracking``), or could not
  be switched on for the backing;
* the backup reads Cinder's temporary copy of an in-use volume or an
  instance VM's snapshot, not the volume's backing, or the volume is
  attached to an instance (whose VM writes the disk: its backing is not
  snapshotted);
* the parent is another volume's backup, or its size differs (the volume
  was extended since);
* the parent has no changeId: made before change tracking, by Cinder's own
  path, of a temporary copy, or by another backend;
* the snapshot's disk has no changeId (tracking not active), or its
  capacity is not the volume's size;
* vCenter refuses the parent's changeId: tracking was reset since (the
  disk extended, relocated, replaced by a restore, tracking switched off
  and on), which vSphere answers with a ``FileFault``; or any other error
  of the query, or an answer that makes no sense.

What an incremental gains depends on the transport: a source with random
access (HotAdd) reads only the changed areas; over NFC (the ``nbd``
transport) the export still streams the whole disk, and only the changed
blocks are hashed, compressed and stored.
"""

from oslo_log import log as logging
from oslo_utils import units
from oslo_vmware import vim_util

from cinder_vmdk_backup.backup import handoff
from cinder_vmdk_backup.vmware import vmsnapshot

LOG = logging.getLogger(__name__)

#: Key of ``backup.metadata`` that holds the changeId of the disk at the
#: backup's point in time (kept with the backup, like its disk profile).
CHANGE_ID_KEY = 'vmware_cbt:change_id'

#: ``changeId`` that asks vCenter for the disk's allocated areas.
ALL_ALLOCATED = '*'

#: The most a ``QueryChangedDiskAreas`` loop asks before giving up (an
#: answer covering nothing new would otherwise loop for ever).
_MAX_QUERIES = 1 << 20


def _prop(session, ref, name):
    return session.invoke_api(vim_util, 'get_object_property', session.vim,
                              ref, name)


def is_enabled(session, vm_ref):
    """Whether the VM has change tracking switched on."""
    return bool(_prop(session, vm_ref, 'config.changeTrackingEnabled'))


def stun_cycle(session, vm_ref):
    """Create and remove a snapshot of the VM: tracking starts there.

    The snapshot is named like every snapshot of this plugin
    (:func:`~.vmsnapshot.snapshot_name`), so one that cannot be removed is
    removed by the janitor at this service's next start.
    """
    task = session.invoke_api(session.vim, 'CreateSnapshot_Task', vm_ref,
                              name=vmsnapshot.snapshot_name(),
                              description='change tracking starts',
                              memory=False, quiesce=False)
    snapshot = session.wait_for_task(task).result
    vmsnapshot.remove_snapshot(session, snapshot)


def _untracked_disks(session, vm_ref):
    """The VM's disks that have no changeId (tracking not started)."""
    devices = _prop(session, vm_ref, 'config.hardware.device')
    devices = getattr(devices, 'VirtualDevice', devices) or []
    return [d for d in devices if d.__class__.__name__ == 'VirtualDisk'
            and not change_id_of(d)]


def enable(session, vm_ref, restart=False):
    """Switch change tracking on for the VM and start it on its disks.

    Tracking that is on but was reset on a disk (extended, relocated,
    replaced: vSphere then shows no changeId until the next stun cycle) is
    started again too.

    :param restart: run the stun cycle even when tracking is on already
        (a disk replaced by a restore is tracked from the next one)
    :returns: True when something was done, False when tracking was on
        and running on every disk
    """
    if is_enabled(session, vm_ref):
        if not restart and not _untracked_disks(session, vm_ref):
            return False
    else:
        factory = session.vim.client.factory
        spec = factory.create('ns0:VirtualMachineConfigSpec')
        spec.changeTrackingEnabled = True
        task = session.invoke_api(session.vim, 'ReconfigVM_Task', vm_ref,
                                  spec=spec)
        session.wait_for_task(task)
    stun_cycle(session, vm_ref)
    return True


def change_id_of(disk):
    """The changeId of a ``VirtualDisk`` (of a snapshot's config), or None."""
    return getattr(getattr(disk, 'backing', None), 'changeId', None) or None


def changed_areas(session, vm_ref, snapshot_ref, device_key, capacity,
                  change_id):
    """``QueryChangedDiskAreas`` over the whole disk, merged.

    vCenter answers for a part of the disk at a time (``startOffset``,
    ``length``); the loop asks again from the end of each answer until
    the disk's capacity.

    :param change_id: the parent's changeId, or :data:`ALL_ALLOCATED`
    :returns: ascending, non-adjacent ``(offset, length)`` within
        ``capacity``
    :raises ValueError: an answer that makes no sense (out of order,
        beyond the disk, no progress)
    """
    merged = []
    offset = 0
    for _query in range(_MAX_QUERIES):
        if offset >= capacity:
            break
        info = session.invoke_api(session.vim, 'QueryChangedDiskAreas',
                                  vm_ref, snapshot=snapshot_ref,
                                  deviceKey=device_key, startOffset=offset,
                                  changeId=change_id)
        start = int(getattr(info, 'startOffset', offset))
        end = start + int(getattr(info, 'length', 0))
        if start > offset or end <= offset:
            raise ValueError('QueryChangedDiskAreas from %d answered for '
                             '%d..%d' % (offset, start, end))
        for area in getattr(info, 'changedArea', None) or []:
            first = int(area.start)
            length = int(area.length)
            if length <= 0:
                continue
            if first < start or first + length > capacity or (
                    merged and first < sum(merged[-1])):
                raise ValueError('QueryChangedDiskAreas gave area %d+%d '
                                 'out of order or beyond the disk\'s %d bytes'
                                 % (first, length, capacity))
            if merged and first == sum(merged[-1]):
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((first, length))
        offset = end
    else:
        raise ValueError('QueryChangedDiskAreas did not reach the end of '
                         'the disk')
    return merged


def _gaps(ranges, size):
    """The complement of ascending ``ranges`` within ``size``."""
    position = 0
    for offset, length in ranges:
        if offset > position:
            yield position, offset - position
        position = max(position, offset + length)
    if position < size:
        yield position, size - position


class Tracker(object):
    """``changed_ranges(parent)`` of one backup's snapshot of a backing.

    :param backup: the backup being made
    :param length: bytes the backup holds (the volume's size)
    :param session: ``oslo_vmware.api.VMwareAPISession`` (None with
        ``off_because``)
    :param vm_ref: the backing VM
    :param snapshot_ref: the backup's snapshot of it
    :param disk: the volume's ``VirtualDisk`` in the snapshot's config
    :param off_because: why changes are not known at all (tracking off,
        a temporary copy...): every parent gets that reason
    """

    def __init__(self, backup, length, session=None, vm_ref=None,
                 snapshot_ref=None, disk=None, off_because=None):
        self.backup = backup
        self.length = length
        self._session = session
        self._vm_ref = vm_ref
        self._snapshot = snapshot_ref
        self._disk = disk
        self.off_because = off_because
        self.change_id = None if off_because else change_id_of(disk)
        #: The parent whose changes this tracker gave (None: none given).
        self.answered = None

    @classmethod
    def off(cls, backup, length, reason):
        """A tracker that knows nothing, for ``reason``."""
        return cls(backup, length, off_because=reason)

    @property
    def capacity(self):
        disk = self._disk
        capacity = getattr(disk, 'capacityInBytes', None)
        if capacity is None and disk is not None:
            capacity = int(getattr(disk, 'capacityInKB', 0)) * units.Ki
        return int(capacity or 0)

    def __call__(self, parent):
        """Return ``(ranges, None)`` or ``(None, reason)``."""
        reason = self._doubt(parent)
        if reason:
            return None, reason
        parent_id = (parent.metadata or {}).get(CHANGE_ID_KEY)
        if not parent_id:
            return None, (
                'the parent backup %s has no changeId (made before change '
                'tracking, by Cinder\'s own path, of a temporary copy or an '
                'instance\'s snapshot, or by another backend)' % parent.id)
        try:
            ranges = self._query(parent_id)
        except ValueError as exc:
            return None, str(exc)
        except Exception as exc:
            return None, (
                'vCenter gives no changes since the parent backup %s\'s '
                'changeId %s (tracking was reset since: the disk extended, '
                'relocated or replaced by a restore, or tracking switched '
                'off): %s' % (parent.id, parent_id, exc))
        self.answered = parent
        return ranges, None

    def zero_ranges(self):
        """Areas that read as zeros: outside the disk's allocated areas.

        Nothing when tracking is not active or vCenter cannot say (then
        every area may hold data). Nothing either, without asking vCenter
        (``"*"``: 0.1-0.2 s per backup), once this tracker gave the
        changes since a parent: the hand-off then reads only the changed
        areas, and every changed area was written since the parent, so it
        is allocated: the allocated areas cannot take anything off what is
        read, and what is stored (digests, objects) is the same.
        (An area a guest unmapped is changed and unallocated at once: its
        zeros are then read and found by their content; the digests are
        the same.)
        """
        if self.off_because or not self.change_id:
            return []
        if self.answered is not None:
            LOG.debug('Backup %(backup)s reads the changes since %(parent)s '
                      'only: the disk\'s allocated areas are not asked.',
                      {'backup': self.backup.id,
                       'parent': self.answered.id})
            return []
        try:
            allocated = self._query(ALL_ALLOCATED)
        except Exception as exc:
            LOG.info('The allocated areas of the disk of backup %(backup)s '
                     'are not known (%(exc)s): every area is read.',
                     {'backup': self.backup.id, 'exc': exc})
            return []
        return list(_gaps(allocated, self.length))

    def _query(self, change_id):
        return changed_areas(self._session, self._vm_ref, self._snapshot,
                             self._disk.key, self.capacity, change_id)

    def _doubt(self, parent):
        if self.off_because:
            return self.off_because
        mismatch = handoff.parent_mismatch(parent, self.backup, self.length)
        if mismatch:
            return mismatch
        if not self.change_id:
            return ('the disk has no changeId in the backup\'s snapshot '
                    '(change tracking not active on it)')
        if self.capacity != self.length:
            return ('the disk holds %d bytes, not the volume\'s %d'
                    % (self.capacity, self.length))
        return None


class TrackedSource(object):
    """A transfer source plus ``changed_ranges`` (and ``zero_ranges``).

    Everything else is the wrapped source's.
    """

    def __init__(self, source, tracker):
        self._source = source
        self.tracker = tracker

    def changed_ranges(self, parent_backup):
        return self.tracker(parent_backup)

    def zero_ranges(self):
        known = getattr(self._source, 'zero_ranges', None)
        if known is not None:
            return known()
        return self.tracker.zero_ranges()

    def __getattr__(self, name):
        return getattr(self._source, name)


def record(backup, change_id):
    """Keep the backup's changeId with it (``backup.metadata``)."""
    metadata = dict(backup.metadata or {})
    metadata[CHANGE_ID_KEY] = change_id
    backup.metadata = metadata
    backup.save()
