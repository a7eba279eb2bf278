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

"""Restore staging files: made locked, and their janitor.

A staging file is created 0600 under a hidden name
(``.cvb-restore-<owner>-<random>``, ``<owner>`` being
:func:`~cinder_vmdk_backup.ownership.name_part` of the process that makes
it), locked (``flock``), and only then renamed to its visible name
``cvb-restore-<owner>-<random>``; its owner holds the lock until the file
is removed, through the driver's ``restore_raw_image``.
:func:`remove_leftovers` removes a visible staging file only when its lock
is free (its owner is gone; files of an older release too), and a hidden
one, which a process killed between ``mkstemp`` and ``rename`` may leave,
only when its lock is free and the process its name names is provably
gone (:mod:`cinder_vmdk_backup.ownership`): a janitor never takes a file
in the instant between its creation and its lock.
"""

import contextlib
import fcntl
import os
import re
import tempfile

from oslo_log import log as logging

from cinder_vmdk_backup import ownership

LOG = logging.getLogger(__name__)

#: Prefix of every staging file, so that leftovers are recognisably ours.
PREFIX = 'cvb-restore-'

#: Prefix of a staging file not locked yet.
_NEW_PREFIX = '.' + PREFIX

_NEW_RE = re.compile(r'^%s%s-' % (re.escape(_NEW_PREFIX),
                                  ownership.NAME_PART_RE))


@contextlib.contextmanager
def staging_file(directory):
    """A new private staging file, locked and removed on every path.

    :yields: ``(file object opened r+b, path)``; the lock lives as long as
        the context, whatever the caller does with the file object
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(
        prefix='%s%s-' % (_NEW_PREFIX, ownership.name_part()), dir=directory)
    lock_fd = None
    try:
        # A second open file of the same file holds the lock, so that
        # closing the caller's file object does not drop it.
        lock_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        visible = os.path.join(directory, os.path.basename(path)[1:])
        os.rename(path, visible)
        path = visible
        with os.fdopen(fd, 'r+b') as staging:
            fd = None
            yield staging, path
    finally:
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if lock_fd is not None:
            os.close(lock_fd)


def remove_leftovers(directory):
    """Remove the staging files in ``directory`` whose owner is gone.

    :returns: the paths removed
    """
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        if not name.startswith((PREFIX, _NEW_PREFIX)):
            continue
        path = os.path.join(directory, name)
        try:
            if _remove_if_gone(path, name):
                removed.append(path)
        except OSError as exc:
            LOG.warning('Could not remove the staging file %(path)s: '
                        '%(exc)s', {'path': path, 'exc': exc})
    if removed:
        LOG.warning('Removed %(count)d staging file(s) of restores '
                    'interrupted by the end of their process from %(dir)s: '
                    '%(names)s.', {'count': len(removed), 'dir': directory,
                                   'names': ', '.join(
                                       os.path.basename(p)
                                       for p in removed)})
    return removed


def _remove_if_gone(path, name):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if not ownership.try_lock(fd):
            return False  # its owner holds it
        if name.startswith(_NEW_PREFIX):
            match = _NEW_RE.match(name)
            if not (match and ownership.named_owner_gone(
                    match.group('place'), int(match.group('pid')),
                    match.group('tag'))):
                return False  # perhaps about to be locked by its owner
        if os.fstat(fd).st_nlink == 0:
            return False  # removed by its owner meanwhile
        os.unlink(path)
        return True
    finally:
        os.close(fd)
