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

"""Freeze and merge an image that no running domain uses (qemu-img only).

Freezing gives the image's data a second name (the frozen image) and puts
a fresh, empty qcow2 overlay in its place under the volume's own name, so
that anyone who opens the volume meanwhile reads and writes through the
overlay while the frozen image does not change. Merging commits the
overlay back and gives the volume's name back to the frozen image.

Each step leaves a state the leftover cleaner recognises
(:mod:`cinder_vmdk_backup.kvm.leftovers`):

1. the frozen name is a hard link of the volume (same file, two names);
2. the overlay is created beside it under its transient name;
3. the overlay is renamed over the volume's name (atomic): frozen.
"""

import contextlib
import os

from oslo_log import log as logging

from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import qemu_img

LOG = logging.getLogger(__name__)


def freeze(path, token):
    """Freeze the image at ``path``; return the frozen image's path.

    :raises QemuImgError: the overlay could not be made; nothing is left
    """
    directory = os.path.dirname(path)
    frozen = naming.transient_path(path, naming.FROZEN, token)
    overlay = naming.transient_path(path, naming.OVERLAY, token)
    os.link(path, frozen)
    try:
        qemu_img.create(overlay, backing=os.path.basename(frozen))
        os.chmod(overlay, os.stat(path).st_mode & 0o7777)
        os.rename(overlay, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(overlay)
        if os.path.samefile(frozen, path):
            os.unlink(frozen)
        raise
    naming.fsync_dir(directory)
    LOG.debug('Froze %(path)s as %(frozen)s.', {'path': path,
                                                'frozen': frozen})
    return frozen


def merge(path, frozen, rate=None):
    """Commit the overlay at ``path`` into ``frozen``, rename it back.

    :param rate: bytes per second the commit copies at most, or None

    :raises MergeError: the commit failed; the overlay chain stays valid
        and usable (the volume reads the same data), and the next start
        retries the merge
    """
    try:
        qemu_img.commit(path, rate=rate)
    except errors.QemuImgError as exc:
        raise errors.MergeError(
            'Merging the overlay %s back into %s failed; the volume stays '
            'usable as an overlay of it and the merge is retried when the '
            'driver starts: %s' % (path, frozen, exc), path=path)
    os.rename(frozen, path)
    naming.fsync_dir(os.path.dirname(path))
    LOG.debug('Merged %(path)s.', {'path': path})
