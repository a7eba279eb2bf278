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

"""Freeze several images as close together as possible, merge each back.

An image a running libvirt domain uses is frozen online: one atomic
disk-only external snapshot per domain covers all of that domain's images
in the set (quiesced through the guest agent when one answers), and the
merge is an active block commit with pivot. Any other image is frozen
offline with qemu-img (:mod:`.offline`). Each image's lock is held from
its freeze until its merge. A set may be all-or-nothing: then one image
that cannot be frozen undoes the freeze of all the others.
"""

import contextlib
import datetime
import os
import time

from oslo_log import log as logging

from cinder_vmdk_backup.kvm import bitmaps
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import offline

LOG = logging.getLogger(__name__)


class FrozenImage(object):
    """An image frozen for reading, until :meth:`merge`.

    :ivar path: the image (the volume's file)
    :ivar read_path: the frozen image to read: nobody writes it until the
        merge
    :ivar online: frozen through libvirt (a running domain uses it)
    :ivar bitmap: the name of the persistent dirty bitmap made in the
        image at (just before) the freeze, or None (none asked for, or it
        could not be made: the log says why)
    """

    def __init__(self, path, read_path, token, lock, use=None,
                 commit_timeout=600.0, bitmap=None):
        self.path = path
        self.read_path = read_path
        self.token = token
        self.use = use
        self.bitmap = bitmap
        self.online = use is not None
        self._lock = lock
        self._commit_timeout = commit_timeout
        self.merged = False
        #: bytes per second the merge copies at most (a backup plan's
        #: cap), or None
        self.bandwidth = None

    @property
    def overlay_path(self):
        if self.online:
            return naming.transient_path(self.path, naming.OVERLAY,
                                         self.token)
        return self.path

    def merge(self):
        """Merge the overlay back; release the image's lock on every path.

        :raises MergeError: the chain stays usable; retried at next start
        """
        if self.merged:
            return
        try:
            if self.online:
                overlay = self.overlay_path
                capped = ({} if self.bandwidth is None
                          else {'bandwidth': self.bandwidth})
                domains.active_commit(self.use.domain, self.use.target,
                                      overlay, timeout=self._commit_timeout,
                                      **capped)
                os.unlink(overlay)
            else:
                capped = ({} if self.bandwidth is None
                          else {'rate': self.bandwidth})
                offline.merge(self.path, self.read_path, **capped)
            self.merged = True
        finally:
            self._lock.close()


#: Consistency of a set's point in time, weakest first.
CRASH_CONSISTENT = 'crash-consistent'
QUIESCED = 'quiesced'
NOT_RUNNING = 'not-running'
_STRENGTH = {CRASH_CONSISTENT: 0, QUIESCED: 1, NOT_RUNNING: 2}


def freeze_all(paths, conn=None, commit_timeout=600.0, lock_timeout=60,
               all_or_nothing=False, facts=None, quiesce=True,
               bitmaps=None, path_map=None):
    """Freeze each of ``paths``; return ``{path: FrozenImage or error}``.

    :param conn: a libvirt connection, or None when no domain runs on this
        host (then every image is frozen offline)
    :param all_or_nothing: when one image cannot be frozen, none is: the
        images frozen already are merged back, every lock is released and
        :class:`GroupFreezeFailed` is raised. Every lock is taken and every
        image's use checked before the first freeze, so that the usual
        failures (busy, in use oddly) never disturb a running guest.
    :param facts: a dict filled with ``consistency`` (``quiesced``,
        ``crash-consistent``: the weakest of the domains' snapshots;
        ``not-running`` when no running domain uses the images),
        ``pause_ms`` (the longest snapshot call, see
        :func:`.domains.snapshot_disks`; absent without one) and
        ``frozen_at`` (UTC datetime of the first freeze)
    :param quiesce: quiesce through the guest agent where one answers
    :param bitmaps: ``{path: bitmap name}``: add that persistent dirty
        bitmap to the image no later than its point in time (offline
        before the freeze, online through the monitor just before the
        snapshot); the merge carries every later write into it (see
        :mod:`.bitmaps`). A bitmap that cannot be made is logged and left
        out (:attr:`FrozenImage.bitmap` is None); the freeze goes on. A
        failed freeze removes the bitmap it made.
    :param path_map: where the domains see the images
        (:class:`~.paths.PathMap`; None: at their local paths). An online
        overlay is named to libvirt in the view its disk has; the frozen
        image is read at its local path.
    Without ``all_or_nothing``, an image whose freeze failed is reported
    with its exception and left as it was; the others are frozen.
    """
    facts = {} if facts is None else facts
    wanted = dict(bitmaps or {})
    results = {}
    locks = {}
    try:
        _lock_all(paths, locks, results, lock_timeout)
        if all_or_nothing and results:
            raise errors.GroupFreezeFailed(dict(results))
        try:
            in_use = (domains.users(conn, list(locks), path_map=path_map)
                      if conn is not None else {})
        except errors.KvmError as exc:
            for path in list(locks):
                locks.pop(path).close()
                results[path] = exc
            if all_or_nothing:
                raise errors.GroupFreezeFailed(dict(results))
            return results
        by_domain = _group_by_domain(locks, in_use, results)
        if all_or_nothing and results:
            raise errors.GroupFreezeFailed(dict(results))

        consistency = []
        pauses = []
        for members in by_domain.values():
            snapshot = _freeze_online(members, locks, results,
                                      commit_timeout, quiesce, wanted)
            if snapshot is None:
                if all_or_nothing:
                    _undo_and_raise(results)
                continue
            if 'frozen_at' not in facts:
                facts['frozen_at'] = _utc(snapshot.taken_at)
            consistency.append(QUIESCED if snapshot.quiesced
                               else CRASH_CONSISTENT)
            pauses.append(snapshot.seconds * 1000.0)

        for path in list(locks):
            lock = locks.pop(path)
            token = naming.new_token()
            bitmap = _add_bitmap(path, wanted.get(path))
            taken_at = time.time()
            try:
                frozen_path = offline.freeze(path, token)
            except Exception as exc:
                _remove_bitmap(path, bitmap)
                lock.close()
                results[path] = exc
                if all_or_nothing:
                    _undo_and_raise(results)
                continue
            facts.setdefault('frozen_at', _utc(taken_at))
            results[path] = FrozenImage(path, frozen_path, token, lock,
                                        bitmap=bitmap)
    finally:
        for lock in locks.values():
            lock.close()
    facts['consistency'] = min(consistency or [NOT_RUNNING],
                               key=_STRENGTH.get)
    if pauses:
        facts['pause_ms'] = max(pauses)
    return results


def _lock_all(paths, locks, results, lock_timeout):
    for path in paths:
        lock = contextlib.ExitStack()
        try:
            taken = lock.enter_context(naming.image_lock(
                path, timeout=lock_timeout))
        except Exception as exc:
            results[path] = exc
            continue
        if not taken:
            lock.close()
            results[path] = errors.KvmError(
                'Image %s is busy with another snapshot, backup or restore'
                % path, path=path)
            continue
        locks[path] = lock


def _group_by_domain(locks, in_use, results):
    """``{domain UUID: [(path, DiskUse)]}``; odd uses go to ``results``."""
    by_domain = {}
    for path in list(locks):
        uses = in_use.get(path)
        if not uses:
            continue
        if len(uses) > 1 or uses[0].top != os.path.realpath(path):
            locks.pop(path).close()
            results[path] = errors.ImageInUseError(
                'Image %s is used by domain(s) %s in a way the driver does '
                'not freeze (shared, or not the active layer of the disk)'
                % (path, ', '.join(u.domain_name for u in uses)), path=path)
            continue
        by_domain.setdefault(uses[0].domain.UUIDString(), []).append(
            (path, uses[0]))
    return by_domain


def _freeze_online(members, locks, results, commit_timeout, quiesce,
                   wanted):
    """One atomic snapshot of a domain's members; None when it failed."""
    domain = members[0][1].domain
    token = naming.new_token()
    overlays = {use.target: use.seen(naming.transient_path(
        path, naming.OVERLAY, token)) for path, use in members}
    made = {path: _add_bitmap(path, wanted.get(path), use)
            for path, use in members}
    try:
        snapshot = domains.snapshot_disks(domain, overlays, quiesce=quiesce)
    except errors.KvmError as exc:
        for path, use in members:
            _remove_bitmap(path, made[path], use)
            locks.pop(path).close()
            results[path] = exc
        return None
    LOG.info('Froze disk(s) %(disks)s of domain %(domain)s in one atomic '
             'snapshot (%(kind)s) in %(ms).1f ms.',
             {'disks': ', '.join(sorted(overlays)),
              'domain': members[0][1].domain_name,
              'kind': QUIESCED if snapshot.quiesced else CRASH_CONSISTENT,
              'ms': snapshot.seconds * 1000.0})
    for path, use in members:
        results[path] = FrozenImage(path, path, token, locks.pop(path),
                                    use=use, commit_timeout=commit_timeout,
                                    bitmap=made[path])
    return snapshot


def _add_bitmap(path, name, use=None):
    """Add bitmap ``name`` to the image; return the name, or None."""
    if name is None:
        return None
    try:
        if use is not None:
            domains.add_bitmap(use.domain, use.seen(path), name,
                               bitmaps.GRANULARITY)
        else:
            bitmaps.add(path, name)
    except errors.KvmError as exc:
        LOG.warning('Could not add the dirty bitmap %(name)s to %(path)s; '
                    'the next incremental backup of it reads everything: '
                    '%(exc)s', {'name': name, 'path': path, 'exc': exc})
        return None
    return name


def _remove_bitmap(path, name, use=None):
    """Remove a bitmap made for a freeze that failed; log a failure."""
    if name is None:
        return
    try:
        bitmaps.remove(path, name, use)
    except errors.KvmError as exc:
        LOG.warning('Could not remove the dirty bitmap %(name)s of '
                    '%(path)s after a failed freeze: %(exc)s',
                    {'name': name, 'path': path, 'exc': exc})


def _undo_and_raise(results):
    """Merge back every image frozen so far; raise GroupFreezeFailed."""
    failures = {}
    undo_failures = {}
    for path, result in results.items():
        if isinstance(result, Exception):
            failures[path] = result
            continue
        try:
            result.merge()
        except Exception as exc:
            undo_failures[path] = exc
            continue
        _remove_bitmap(path, result.bitmap, result.use)
        LOG.info('Undid the freeze of %s (another image of the set could '
                 'not be frozen).', path)
    raise errors.GroupFreezeFailed(failures, undo_failures)


def _utc(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


@contextlib.contextmanager
def frozen(path, conn=None, commit_timeout=600.0, bitmap=None,
           path_map=None):
    """Freeze one image for the duration of the block; merge it after.

    :param bitmap: a persistent dirty bitmap to add, as ``bitmaps`` of
        :func:`freeze_all`
    :param path_map: as :func:`freeze_all`
    :raises: the freeze's error, or :class:`MergeError` after the block
    """
    kwargs = {} if path_map is None else {'path_map': path_map}
    result = freeze_all([path], conn, commit_timeout,
                        bitmaps={path: bitmap} if bitmap else None,
                        **kwargs)[path]
    if isinstance(result, Exception):
        raise result
    try:
        yield result
    except BaseException:
        try:
            result.merge()
        except Exception:
            LOG.exception('Merging %s back after a failure failed too.', path)
        raise
    result.merge()
