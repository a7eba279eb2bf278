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

"""Names of the files the qcow2 driver makes beside a volume, and locks.

Every transient file carries a recognisable tag and a random token, so
that leftovers of an interrupted operation are found, and only ours:

* ``<image>.cvb-frozen-<token>``: the frozen image of an offline backup
  (the volume's own data, under an overlay that took its name);
* ``<image>.cvb-overlay-<token>``: an overlay (online: made by libvirt and
  run by the domain; offline: being prepared);
* ``<image>.cvb-restore-<token>``: a restored image not yet swapped in.

A per-image lock file in ``.cvb-locks/`` is held from freeze to merge (and
during a restore), by whichever process on whichever host does it, so
that the leftover cleaner never touches an operation still under way.
"""

import contextlib
import os
import re
import threading
import uuid

import fasteners

FROZEN = 'frozen'
OVERLAY = 'overlay'
RESTORE = 'restore'

_PATTERN = re.compile(r'^(?P<base>.+)\.cvb-(?P<kind>frozen|overlay|restore)'
                      r'-(?P<token>[0-9a-f]{16})$')
LOCK_DIR = '.cvb-locks'


def new_token():
    """Return a fresh random token (16 hex digits)."""
    return uuid.uuid4().hex[:16]


def transient_path(image_path, kind, token):
    """Return the path of the ``kind`` file of ``image_path``."""
    return '%s.cvb-%s-%s' % (image_path, kind, token)


def parse(name):
    """Return ``(base name, kind, token)`` of a transient file, or None."""
    match = _PATTERN.match(os.path.basename(name))
    if not match:
        return None
    return match.group('base'), match.group('kind'), match.group('token')


def lock_path(image_path):
    directory, name = os.path.split(image_path)
    return os.path.join(directory, LOCK_DIR, name + '.lock')


_THREAD_LOCKS = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path):
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(path, threading.Lock())


@contextlib.contextmanager
def image_lock(image_path, blocking=True, timeout=None):
    """Hold the image's lock; yield whether it was taken.

    A file lock (``fcntl``, honoured across hosts by cluster filesystems)
    excludes other processes; file locks do not exclude the threads of one
    process from each other, so a per-image thread lock is taken first.

    :param blocking: when False, yield False at once if someone holds it
    :param timeout: seconds to wait when blocking (None: for ever)
    """
    path = lock_path(image_path)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    local = _thread_lock(path)
    wait = -1 if timeout is None else timeout
    if not local.acquire(blocking, wait if blocking else -1):
        yield False
        return
    try:
        lock = fasteners.InterProcessLock(path)
        taken = lock.acquire(blocking=blocking, timeout=timeout)
        try:
            yield taken
        finally:
            if taken:
                lock.release()
    finally:
        local.release()


def fsync_dir(directory):
    """Make renames and links in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
