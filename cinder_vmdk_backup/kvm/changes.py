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

"""What changed in a qcow2 image since a parent backup, or why unknown.

Each backup of a volume leaves a persistent dirty bitmap in the volume's
image, named after the backup (:func:`.bitmaps.name_for`) and created at
its point in time (:mod:`.freezer`). The next incremental backup reads
only the areas the parent's bitmap marks. Whatever casts a doubt on that
answer makes the backup read everything instead (it stays an incremental
against the parent's digests, so nothing is stored twice); a wrong backup
is never the price of a faster one. The doubts, each with its reason:

* dirty bitmaps are switched off (``qcow2_dirty_bitmaps``);
* the backup is of a snapshot or of a temporary copy of the volume
  (Cinder's clone of an in-use volume), not of the volume's image;
* the parent is another volume's backup, or its size differs (the volume
  was extended since), or the image's size is not the volume's;
* the image has no bitmap of the parent: the parent was made before this
  feature, by Cinder's own path or another backend, its bitmap was
  pruned, or the image was replaced by a restore since (a restored image
  carries no bitmaps);
* the bitmap is unusable (marked inconsistent: the image was written
  while nobody tracked it; in use; of the wrong size), or reading it
  failed, or it gave ranges that make no sense.

Also here: which bitmaps an image keeps (:func:`bitmaps_to_keep`).
"""

from cinder import objects
from cinder.objects import fields
from oslo_log import log as logging

from cinder_vmdk_backup.backup import handoff
from cinder_vmdk_backup.kvm import bitmaps

LOG = logging.getLogger(__name__)

#: Statuses of backups whose bitmaps no later backup needs.
_GONE = (fields.BackupStatus.ERROR, fields.BackupStatus.DELETING,
         fields.BackupStatus.DELETED)


class Tracker(object):
    """``changed_ranges(parent)`` of one backup's frozen image.

    :param read_path: the frozen image (nobody writes it meanwhile)
    :param backup: the backup being made
    :param length: bytes the backup holds (the volume's size)
    :param image_size: the image's virtual size
    :param enabled: ``qcow2_dirty_bitmaps``
    :param of_snapshot: the backup reads a snapshot or a temporary copy,
        not the volume's image
    """

    def __init__(self, read_path, backup, length, image_size, enabled=True,
                 of_snapshot=False):
        self.read_path = read_path
        self.backup = backup
        self.length = length
        self.image_size = image_size
        self.enabled = enabled
        self.of_snapshot = of_snapshot

    def __call__(self, parent):
        """Return ``(ranges, None)`` or ``(None, reason)``."""
        reason = self._doubt(parent)
        if reason:
            return None, reason
        name = bitmaps.name_for(parent.id)
        try:
            present = name in bitmaps.list_ours(self.read_path)
        except Exception as exc:
            return None, ('listing the dirty bitmaps of %s failed: %s'
                          % (self.read_path, exc))
        if not present:
            return None, (
                'the image has no dirty bitmap of the parent backup %s (made '
                'before dirty bitmaps, another way or by another backend, '
                'its bitmap pruned, or the image replaced by a restore '
                'since)' % parent.id)
        try:
            ranges = bitmaps.dirty_ranges(self.read_path, name,
                                          self.image_size)
        except bitmaps.BitmapUnusable as exc:
            return None, str(exc)  # names the bitmap and says what is wrong
        except Exception as exc:
            return None, ('reading the dirty bitmap %s failed: %s'
                          % (name, exc))
        ranges = [(int(offset), int(length)) for offset, length in ranges]
        if not _well_formed(ranges, self.image_size):
            return None, ('the dirty bitmap %s gave ranges out of order or '
                          'beyond the image\'s %d bytes'
                          % (name, self.image_size))
        return ranges, None

    def _doubt(self, parent):
        if not self.enabled:
            return 'dirty bitmaps are off (qcow2_dirty_bitmaps)'
        if self.of_snapshot:
            return ('it reads a snapshot or a temporary copy of the '
                    'volume, whose changes are not tracked')
        mismatch = handoff.parent_mismatch(parent, self.backup, self.length)
        if mismatch:
            return mismatch
        if self.image_size != self.length:
            return ('the image holds %d bytes, not the volume\'s %d'
                    % (self.image_size, self.length))
        return None


def _well_formed(ranges, size):
    end = 0
    for offset, length in ranges:
        if offset < end or length <= 0 or offset + length > size:
            return False
        end = offset + length
    return True


def bitmaps_to_keep(context, volume_id, kept, new_backup_id=None,
                    failed_backup_id=None):
    """The bitmaps a volume's image keeps after a backup.

    Those of the volume's newest ``kept`` backups (by the time of their
    data, the order Cinder picks a parent by) that exist and are neither
    failed nor being deleted, the new one first. Asked of Cinder's
    database rather than of the image: a running QEMU holds the bitmaps
    it tracks in memory, so the image file does not list them all.

    :param kept: ``qcow2_dirty_bitmaps_kept``
    :param new_backup_id: the backup that just succeeded (still
        ``creating``)
    :param failed_backup_id: the backup that just failed (left out)
    :returns: the names to keep
    """
    admin = context.elevated()
    backups = objects.BackupList.get_all_by_volume(admin, volume_id, None)
    live = []
    for backup in backups:
        if (backup.id in (new_backup_id, failed_backup_id)
                or backup.status in _GONE):
            continue
        when = backup.data_timestamp or backup.created_at
        live.append((when.timestamp() if when else 0.0, backup.id))
    live.sort(reverse=True)
    ids = [backup_id for _when, backup_id in live]
    if new_backup_id is not None:
        ids.insert(0, new_backup_id)
    return [bitmaps.name_for(backup_id) for backup_id in ids[:kept]]
