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
in the set, and the merge is an active block commit with pivot. Any other
image is frozen offline with qemu-img (:mod:`.offline`). Each image's lock
is held from its freeze until its merge.
"""

import contextlib
import os

from oslo_log import log as logging

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
    """

    def __init__(self, path, read_path, token, lock, use=None,
                 commit_timeout=600.0):
        self.path = path
        self.read_path = read_path
        self.token = token
        self.use = use
        self.online = use is not None
        self._lock = lock
        self._commit_timeout = commit_timeout
        self.merged = False

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
                domains.active_commit(self.use.domain, self.use.target,
                                      overlay, timeout=self._commit_timeout)
                os.unlink(overlay)
            else:
                offline.merge(self.path, self.read_path)
            self.merged = True
        finally:
            self._lock.close()


def freeze_all(paths, conn=None, commit_timeout=600.0, lock_timeout=60):
    """Freeze each of ``paths``; return ``{path: FrozenImage or error}``.

    :param conn: a libvirt connection, or None when no domain runs on this
        host (then every image is frozen offline)
    An image whose freeze failed is reported with its exception and left
    as it was; the others are frozen.
    """
    results = {}
    locks = {}
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
    try:
        in_use = domains.users(conn, list(locks)) if conn is not None else {}
    except errors.KvmError as exc:
        for path, lock in locks.items():
            lock.close()
            results[path] = exc
        return results

    by_domain = {}
    for path in locks:
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

    for members in by_domain.values():
        domain = members[0][1].domain
        token = naming.new_token()
        overlays = {use.target: naming.transient_path(path, naming.OVERLAY,
                                                      token)
                    for path, use in members}
        try:
            domains.snapshot_disks(domain, overlays)
        except errors.KvmError as exc:
            for path, _use in members:
                locks.pop(path).close()
                results[path] = exc
            continue
        for path, use in members:
            results[path] = FrozenImage(path, path, token, locks.pop(path),
                                        use=use,
                                        commit_timeout=commit_timeout)

    for path in list(locks):
        lock = locks.pop(path)
        if path in results:
            continue
        token = naming.new_token()
        try:
            frozen = offline.freeze(path, token)
        except Exception as exc:
            lock.close()
            results[path] = exc
            continue
        results[path] = FrozenImage(path, frozen, token, lock)
    return results


@contextlib.contextmanager
def frozen(path, conn=None, commit_timeout=600.0):
    """Freeze one image for the duration of the block; merge it after.

    :raises: the freeze's error, or :class:`MergeError` after the block
    """
    result = freeze_all([path], conn, commit_timeout)[path]
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
