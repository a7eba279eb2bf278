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

"""Find and merge what interrupted operations left beside the images.

Only files with the driver's transient names (:mod:`.naming`) are looked
at, only in the volumes directory, and only when their image's lock is
free (no operation on that image is under way, on any host). What each
leftover means depends on where the interrupted operation stopped:

* ``frozen`` with the same file under the image's name: the freeze
  stopped before the overlay took the name; the extra name is removed;
* ``frozen`` that the image (an overlay) is backed by: the overlay is
  committed into it and the frozen image takes the name back;
* ``overlay`` backed by a ``frozen`` file: an offline overlay that never
  took the name; removed;
* ``overlay`` backed by the image: an online overlay; a running domain
  that runs it gets an active block commit with pivot, otherwise it is
  committed with qemu-img (and a stopped domain that was left pointing at
  it is pointed back at the image). QEMU recorded the image's path as the
  domain saw it; one seen through a mount point (:mod:`.paths`) is first
  rewritten to the image's local name, so that the commit does not
  depend on that mount;
* ``restore``: a restored image never swapped in; the image was left
  intact, so it is removed;
* a qemu-nbd server that read a dirty bitmap for a process that died
  (:func:`.bitmaps.stop_leftover_servers`): stopped by its PID, its
  private directory removed.
"""

import os

from oslo_log import log as logging

from cinder_vmdk_backup.kvm import bitmaps
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import offline
from cinder_vmdk_backup.kvm import paths as kvm_paths
from cinder_vmdk_backup.kvm import qemu_img

LOG = logging.getLogger(__name__)

_ORDER = {naming.FROZEN: 0, naming.OVERLAY: 1, naming.RESTORE: 2}


def find(directory):
    """Return ``[(path, image path, kind)]`` of the leftovers found."""
    found = []
    for name in os.listdir(directory):
        parsed = naming.parse(name)
        if parsed:
            base, kind, _token = parsed
            found.append((os.path.join(directory, name),
                          os.path.join(directory, base), kind))
    found.sort(key=lambda item: (_ORDER[item[2]], item[0]))
    return found


def clean(directory, conn=None, commit_timeout=600.0, path_map=None):
    """Merge or remove every leftover in ``directory``.

    :param conn: libvirt connection, or None when no domain runs here
    :param path_map: where the domains see the images
        (:class:`~.paths.PathMap`; None: at their local paths)
    :returns: ``(done, failed)``: lists of human-readable lines
    """
    path_map = path_map or kvm_paths.IDENTITY
    done, failed = [], []
    try:
        for line in bitmaps.stop_leftover_servers(directory):
            done.append(line)
            LOG.info('Leftover %s', line)
    except Exception as exc:
        failed.append('qemu-nbd servers of %s: %s' % (directory, exc))
        LOG.error('Could not stop leftover qemu-nbd servers: %s', exc)
    for path, image, kind in find(directory):
        with naming.image_lock(image, blocking=False) as free:
            if not free:
                LOG.debug('%s is in use by an operation under way.', image)
                continue
            if not os.path.exists(path):
                continue  # handled with an earlier leftover
            try:
                line = _HANDLERS[kind](path, image, conn, commit_timeout,
                                       path_map)
            except Exception as exc:
                failed.append('%s: %s' % (path, exc))
                LOG.error('Could not clean up the leftover %(path)s: '
                          '%(exc)s', {'path': path, 'exc': exc})
            else:
                if line:
                    done.append(line)
                    LOG.info('Leftover %s', line)
    return done, failed


def _frozen(path, image, conn, commit_timeout, path_map):
    if not os.path.exists(image):
        os.rename(path, image)
        return '%s renamed back to %s' % (path, image)
    if os.path.samefile(path, image):
        os.unlink(path)
        return '%s (second name of %s) removed' % (path, image)
    if qemu_img.backing_file(image) != path:
        raise errors.KvmError('%s is not backed by %s; left alone'
                              % (image, path), path=path)
    if conn is not None and domains.users(conn, [image],
                                          path_map=path_map):
        raise errors.ImageInUseError(
            '%s runs in a domain although it was frozen offline; left '
            'alone' % image, path=image)
    offline.merge(image, path)
    return '%s merged into %s' % (image, path)


def _overlay(path, image, conn, commit_timeout, path_map):
    backing = qemu_img.backing_file(path)
    parsed = naming.parse(backing or '')
    if parsed and parsed[1] == naming.FROZEN:
        os.unlink(path)
        return 'unused offline overlay %s removed' % path
    if backing != image and not (backing and path_map.same(backing, image)):
        raise errors.KvmError('%s is not an overlay of %s; left alone'
                              % (path, image), path=path)
    uses = (domains.users(conn, [path], path_map=path_map).get(path, [])
            if conn else [])
    running = [u for u in uses if u.top == os.path.realpath(path)]
    if running:
        use = running[0]
        domains.active_commit(use.domain, use.target, path,
                              timeout=commit_timeout)
        os.unlink(path)
        return '%s committed by domain %s' % (path, use.domain_name)
    if uses:
        raise errors.ImageInUseError('%s is a backing file of a running '
                                     'domain; left alone' % path, path=path)
    try:
        if backing != image:
            # Seen through a mount point, which may be gone: the same
            # file by its local name (relative, valid in both views).
            qemu_img.rebase_unsafe(path, os.path.basename(image))
        qemu_img.commit(path)
    except errors.QemuImgError as exc:
        raise errors.MergeError('Merging %s into %s failed: %s'
                                % (path, image, exc), path=path)
    redefined = (domains.retarget_inactive(conn, path, image,
                                           path_map=path_map)
                 if conn else [])
    os.unlink(path)
    return '%s committed into %s%s' % (
        path, image, ' (domains %s pointed back at it)' % ', '.join(
            redefined) if redefined else '')


def _restore(path, image, conn, commit_timeout, path_map):
    os.unlink(path)
    return 'unfinished restore %s removed' % path


_HANDLERS = {naming.FROZEN: _frozen, naming.OVERLAY: _overlay,
             naming.RESTORE: _restore}
