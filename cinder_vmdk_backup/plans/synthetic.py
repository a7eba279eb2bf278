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

"""Synthetic full backups: prune a long chain without reading the volume.

A chain F0 <- I1 <- ... <- In can only lose its oldest sets together with
everything built on them. :func:`synthesize` builds, from the backups
already stored, a *new full backup* S holding exactly what Ik restores to,
and moves Ik's children onto it; F0 .. Ik then have no dependants and
:func:`prune` deletes them through Cinder's backup API. Nothing is read
from the volume.

What Cinder's records allow (Cinder 29, chunked drivers):

* **Restore follows the database only.** ``ChunkedBackupDriver.restore()``
  walks ``parent_id`` in the backups table, full first, and writes each
  backup's objects at their offsets. The ``parent_id`` in a backup's
  ``_metadata`` object is written and never read; the sha256 file of an
  incremental is the complete digest list of its disk. So an incremental
  restores the same bytes onto any parent that restores to its old
  parent's disk: re-parenting is an update of ``parent_id`` (plus the
  ``num_dependent_backups`` counters, which only the listing shows; the
  API's "Incremental backups exist" check queries ``parent_id``).
* **S is an ordinary full backup**: written by the extent hand-off
  (:mod:`..backup.handoff`) through the driver's own primitives, fed by
  :class:`..backup.chain_reader.ChainReader` (every object md5-checked),
  with Ik's ``chunk_size`` and its ``volume_meta``, its
  ``data_timestamp`` (so Cinder never picks S as the parent of a new
  incremental while a newer backup exists) and its container and host.
  Before anything is re-parented S's digest list must equal Ik's, block
  for block; any difference deletes S and stops.
* **Quota**: S is reserved and committed like any backup; deleting the old
  ones gives theirs back.

What breaks or is refused:

* the ``_metadata`` object of a re-parented incremental still names its
  old parent (nothing in Cinder reads it; a tool that does is misled);
* encrypted backups (each backup holds a clone of the volume's key; S
  would need one too) and any chain member or child that is not
  ``available`` (a restore in flight reads the old objects) are refused;
* ``_prepare_backup`` of the chunked driver needs the volume's row: a
  chain whose volume was deleted is refused;
* the three database updates of a re-parenting are not one transaction: a
  crash between them leaves a ``num_dependent_backups`` off by one, never
  a child without its parent (S is counted first, the child moved, Ik
  discounted last).
"""

import itertools

from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.objects import fields
from cinder import quota
from oslo_log import log as logging
from oslo_utils import excutils
from oslo_utils import units

from cinder_vmdk_backup.backup import chain_reader
from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import handoff
from cinder_vmdk_backup.backup import sha_lists
from cinder_vmdk_backup.backup import zero_objects

LOG = logging.getLogger(__name__)
QUOTAS = quota.QUOTAS

#: Backup metadata key naming the backup a synthetic full replaces.
SYNTHETIC_OF_KEY = 'cvb_synthetic_of'


def _refuse(reason):
    raise exception.InvalidBackup(reason=reason)


def _admin(context):
    return context if context.is_admin else context.elevated()


def children(context, backup_id):
    """Backups whose parent is ``backup_id`` (Cinder objects)."""
    return list(objects.BackupList.get_all(
        _admin(context), filters={'parent_id': backup_id}))


def _descendants(context, backup_id):
    found, todo = [], [backup_id]
    while todo:
        for child in children(context, todo.pop()):
            found.append(child)
            todo.append(child.id)
    return found


class _ChainSource(object):
    """The restored disk as a sequential hand-off source (``read(n)``).

    Sequential on purpose: the hand-off runs a source's ``read_at`` in
    native threads, where the object readers of drivers with green sockets
    (swift under eventlet) must not run. ``None`` pieces of
    :meth:`ChainReader.pieces` (no object, or objects of zeros) are zeros;
    a read that lies within one is answered by ``bytes(n)``, memory the
    kernel maps only when touched (what the hand-off skips as zeros is read
    this way).
    """

    def __init__(self, pieces, zero_ranges):
        self._pieces = pieces
        self._zero_ranges = zero_ranges
        self._data = None
        self._left = 0
        self._used = 0

    def zero_ranges(self):
        return self._zero_ranges

    def _next(self):
        piece = next(self._pieces, None)
        if piece is None:
            return False
        self._data = piece.data
        self._left = piece.length
        self._used = 0
        return True

    def read(self, size):
        if not self._left and not self._next():
            return b''
        if self._data is None and self._left >= size:
            self._used += size
            self._left -= size
            return bytes(size)
        out = bytearray(size)
        filled = 0
        while filled < size:
            if not self._left and not self._next():
                break
            take = min(size - filled, self._left)
            if self._data is not None:
                with memoryview(self._data) as view:
                    out[filled:filled + take] = view[
                        self._used:self._used + take]
            self._used += take
            self._left -= take
            filled += take
        return bytes(out[:filled]) if filled < size else bytes(out)


def _zero_ranges(service, backup, size):
    """(offset, length) of the blocks of ``backup``'s list that are zeros."""
    name = service._sha256_filename(backup)
    with service.get_object_reader(backup.container, name) as reader:
        shas = sha_lists.ShaFileReader(reader, name).open()
        block = shas.chunk_size()
        zero = zero_objects.sha256_of_zeros(block)
        tail = size % block
        zero_tail = zero_objects.sha256_of_zeros(tail) if tail else zero
        offset = 0
        start = None
        for digest in shas.digests():
            length = min(block, size - offset)
            is_zero = digest == (zero if length == block else zero_tail)
            if is_zero and start is None:
                start = offset
            elif not is_zero and start is not None:
                yield start, offset - start
                start = None
            offset += length
        if start is not None:
            yield start, offset - start


def _chunk_size(service, backup):
    name = service._sha256_filename(backup)
    with service.get_object_reader(backup.container, name) as reader:
        return sha_lists.ShaFileReader(reader, name).open().chunk_size()


def _compare_lists(service, new, old, size):
    """Raise InvalidBackup unless both sha256 files list the same digests."""
    names = [service._sha256_filename(b) for b in (new, old)]
    with service.get_object_reader(new.container, names[0]) as new_reader, \
            service.get_object_reader(old.container, names[1]) as old_reader:
        new_shas = sha_lists.ShaFileReader(new_reader, names[0]).open()
        old_shas = sha_lists.ShaFileReader(old_reader, names[1]).open()
        block = old_shas.chunk_size()
        if new_shas.chunk_size() != block:
            _refuse(_('the synthetic full %(new)s hashes blocks of %(a)d '
                      'bytes, backup %(old)s of %(b)d') % {
                          'new': new.id, 'old': old.id,
                          'a': new_shas.chunk_size(), 'b': block})
        for index, (a, b) in enumerate(itertools.zip_longest(
                new_shas.digests(), old_shas.digests())):
            if a != b:
                _refuse(_('the synthetic full %(new)s differs from backup '
                          '%(old)s at bytes %(start)d-%(end)d') % {
                              'new': new.id, 'old': old.id,
                              'start': index * block,
                              'end': min(size, (index + 1) * block) - 1})


def _check(context, service, backup):
    why = chain_reader.unusable_because(service)
    if why is None and not cinder_internals.usable('handoff'):
        why = _('this Cinder\'s chunked driver writes backups differently '
                '(see the start-up log)')
    if why:
        _refuse(_('no synthetic full of backup %(id)s: %(why)s') % {
            'id': backup.id, 'why': why})
    if backup.status != fields.BackupStatus.AVAILABLE:
        _refuse(_('backup %(id)s is %(status)s, not available') % {
            'id': backup.id, 'status': backup.status})
    if not backup.parent_id:
        _refuse(_('backup %s is a full backup already') % backup.id)
    if backup.encryption_key_id:
        _refuse(_('backup %s is encrypted: a synthetic full would need a '
                  'key of its own') % backup.id)
    try:
        objects.Volume.get_by_id(_admin(context), backup.volume_id)
    except exception.VolumeNotFound:
        _refuse(_('volume %(vol)s of backup %(id)s is gone: Cinder\'s '
                  'chunked driver writes no backup without it') % {
                      'vol': backup.volume_id, 'id': backup.id})
    for other in _descendants(context, backup.id):
        if other.status != fields.BackupStatus.AVAILABLE:
            _refuse(_('backup %(other)s built on %(id)s is %(status)s') % {
                'other': other.id, 'id': backup.id,
                'status': other.status})


def synthesize(context, service, backup_id, name=None):
    """A full backup equal to what ``backup_id`` restores to.

    Runs in cinder-backup, on the host that holds the chain.

    :param context: an admin context (or one of the backup's project
        allowed to create backups)
    :param service: the backup driver instance (a Cinder chunked driver)
    :param backup_id: the newest backup to replace (an incremental)
    :param name: display name of the new backup
    :returns: dict ``id`` (the new full), ``replaces`` (``backup_id``),
        ``chain`` (ids of the old chain, full first), ``reparented``
        (ids of the children moved onto the new full)
    :raises InvalidBackup: refused (the reason says why) or the new backup
        did not match; nothing is left behind
    """
    why = chain_reader.unusable_because(service)
    if why is None and not handoff.usable(service):
        why = 'the extent hand-off cannot write into %s' % (
            type(service).__name__)
    if why:
        raise exception.InvalidBackup(reason=_(
            'no synthetic full of backup %(id)s: %(why)s') % {
                'id': backup_id, 'why': why})
    old = objects.Backup.get_by_id(context, backup_id)
    _check(context, service, old)
    size = int(old.size) * units.Gi
    reader = chain_reader.ChainReader(service, old, size)
    chain = [member.id for member in reader.chain]
    volume_meta = next((meta for meta in reversed(reader.volume_metas)
                        if meta), None)
    block = _chunk_size(service, old)
    reservations = QUOTAS.reserve(context, project_id=old.project_id,
                                  backups=1, backup_gigabytes=old.size)
    new = objects.Backup(
        context=context, user_id=old.user_id, project_id=old.project_id,
        volume_id=old.volume_id, status=fields.BackupStatus.CREATING,
        display_name=name or old.display_name,
        display_description=_('synthetic full of backup %s') % old.id,
        container=old.container, parent_id=None, size=old.size,
        snapshot_id=old.snapshot_id, data_timestamp=old.data_timestamp,
        host=old.host, service=old.service,
        availability_zone=old.availability_zone,
        metadata={SYNTHETIC_OF_KEY: old.id})
    try:
        new.create()
        QUOTAS.commit(context, reservations, project_id=old.project_id)
    except Exception:
        with excutils.save_and_reraise_exception():
            QUOTAS.rollback(context, reservations,
                            project_id=old.project_id)
            if new.obj_attr_is_set('id'):
                new.destroy()
    LOG.info('Synthetic full %(new)s of backup %(old)s (chain %(chain)s) '
             'started.', {'new': new.id, 'old': old.id,
                          'chain': ', '.join(chain)})
    try:
        try:
            # Objects of zeros (by Ik's digests and their md5) are not read.
            reader.nonzero_grains(block)
        except chain_reader.ChainUnsupported as exc:
            LOG.info('Synthetic full %(new)s reads every object of the '
                     'chain: %(why)s', {'new': new.id, 'why': exc})
        source = _ChainSource(reader.pieces(),
                              _zero_ranges(service, old, size))
        handoff.backup(service, new, source, size,
                       'the chain of backup %s' % old.id,
                       backup_metadata=False, block_size=block,
                       volume_meta=volume_meta)
        new.refresh()
        if new.status != fields.BackupStatus.CREATING:
            _refuse(_('the synthetic full %(new)s became %(status)s while '
                      'it was written') % {'new': new.id,
                                           'status': new.status})
        _compare_lists(service, new, old, size)
        new.status = fields.BackupStatus.AVAILABLE
        new.save()
    except Exception:
        with excutils.save_and_reraise_exception():
            _discard(context, service, new)
    moved = reparent(context, old, new)
    LOG.info('Synthetic full %(new)s of backup %(old)s is available; '
             '%(moved)s moved onto it.',
             {'new': new.id, 'old': old.id,
              'moved': ', '.join(moved) or 'no backup'})
    return {'id': new.id, 'replaces': old.id, 'chain': chain,
            'reparented': moved}


def reparent(context, old, new):
    """Move every child of ``old`` onto ``new`` (same restored disk)."""
    from cinder.db import api as cinder_db
    moved = []
    for child in children(context, old.id):
        cinder_db.backup_add_dependent(_admin(context), new.id)
        child.parent_id = new.id
        child.save()
        cinder_db.backup_remove_dependent(_admin(context), old.id)
        moved.append(child.id)
    return moved


def _discard(context, service, new):
    try:
        service.delete_backup(new)
    except Exception:
        LOG.exception('Could not delete the objects of the synthetic full '
                      '%s.', new.id)
    try:
        reservations = QUOTAS.reserve(context, project_id=new.project_id,
                                      backups=-1,
                                      backup_gigabytes=-new.size)
        QUOTAS.commit(context, reservations, project_id=new.project_id)
    except Exception:
        LOG.exception('Could not give back the quota of the synthetic full '
                      '%s.', new.id)
    new.destroy()


def prune(context, service, backup_id, delete, name=None):
    """Synthesize a full of ``backup_id``, then delete its old chain.

    :param delete: ``delete(backup_ids)`` deletes those backups, child
        first, waiting for each (:func:`.retention.delete_backups` bound to
        Cinder's backup API); it stops at the first failure
    :returns: the dict of :func:`synthesize` with ``deleted``: the old
        backups deleted (``backup_id`` and its ancestors, newest first, up
        to the first that another backup still needs)
    """
    result = synthesize(context, service, backup_id, name=name)
    doomed = []
    for member_id in reversed(result['chain']):
        others = [c.id for c in children(context, member_id)
                  if c.id not in doomed]
        if others:
            break
        doomed.append(member_id)
    result['deleted'] = delete(doomed)
    return result
