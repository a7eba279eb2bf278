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

"""Where domains see the volumes: the local <-> domain path mapping.

The driver names a volume's image by its *local* path,
``qcow2_volumes_dir/<file>``. A libvirt domain may see the same file at
another path: with ``qcow2_connection_type = nfs`` Nova's NFS volume
driver mounts the export ``qcow2_nfs_export`` at
``<nfs_mount_point_base>/<md5 hex of the export>`` and hands libvirt
``<that directory>/<file>`` (``nova.virt.libvirt.volume.fs``). A mount
point does not resolve (``realpath``) to the local directory, so every
path that crosses between the driver and libvirt goes through a
:class:`PathMap`:

* a path libvirt or QEMU reports (a disk's source, a backing file, a
  block node's file) is turned into the local path with
  :meth:`PathMap.to_local` before it is compared with the driver's;
* a path the driver gives libvirt for a disk (an overlay) is put in the
  view that disk already has with :meth:`PathMap.seen_as`.

A domain's disk is the driver's image when its path is the local path or
the mount-point view of it; never by the file's name alone (another
export's mount point may hold a file of the same name). With ``local`` and
``gpfs`` connections the domains see the local paths and the map is the
identity.
"""

import hashlib
import os


def nova_mount_point(base, export):
    """The directory Nova mounts ``export`` at: ``<base>/<md5 hex>``.

    As Nova 34's ``LibvirtBaseFileSystemVolumeDriver._get_mount_path``
    (``nova.utils.get_hash_str`` of the export string, UTF-8); the NFS
    driver does not normalise the export.
    """
    digest = hashlib.md5(export.encode('utf-8'),
                         usedforsecurity=False).hexdigest()
    return os.path.join(base, digest)


def _under(path, directory):
    """``path`` relative to ``directory``, or None when not below it."""
    if path == directory:
        return None
    prefix = directory.rstrip(os.sep) + os.sep
    if path.startswith(prefix):
        return path[len(prefix):]
    return None


class PathMap(object):
    """The local and the domains' view of the volumes directory.

    :param local_dir: ``qcow2_volumes_dir``
    :param mount_dir: where the domains see it (Nova's mount point of the
        export), or None: they see the local paths (identity)
    """

    def __init__(self, local_dir=None, mount_dir=None):
        self.local_dir = os.path.realpath(local_dir) if local_dir else None
        self.mount_dir = (os.path.normpath(mount_dir)
                          if mount_dir and local_dir else None)
        # The mount point as written and as it resolves on this host (a
        # symbolic link in Nova's state path, say).
        self._mount_dirs = ()
        if self.mount_dir:
            self._mount_dirs = tuple(dict.fromkeys(
                (self.mount_dir, os.path.realpath(self.mount_dir))))

    @classmethod
    def from_configuration(cls, conf):
        """The map of a qcow2 backend's configuration.

        ``nfs``: the domains see ``qcow2_volumes_dir`` at Nova's mount
        point of ``qcow2_nfs_export`` under
        ``qcow2_nfs_mount_point_base``; else the identity.
        """
        if (conf.qcow2_connection_type == 'nfs'
                and conf.qcow2_nfs_export):
            return cls(conf.qcow2_volumes_dir, nova_mount_point(
                conf.qcow2_nfs_mount_point_base, conf.qcow2_nfs_export))
        return IDENTITY

    @property
    def identity(self):
        return self.mount_dir is None

    def __repr__(self):
        return 'PathMap(%r, %r)' % (self.local_dir, self.mount_dir)

    def _in_mount(self, path):
        """``path``'s part below the mount point, or None."""
        for directory in self._mount_dirs:
            for candidate in (os.path.normpath(path),
                              os.path.realpath(path)):
                rest = _under(candidate, directory)
                if rest is not None:
                    return rest
        return None

    def to_local(self, path):
        """The real local path of a path as a domain sees it.

        A path below the mount point becomes the same path below the local
        directory; any other path is only resolved (``realpath``), so that
        a domain on the local paths matches as before.
        """
        rest = self._in_mount(path) if self.mount_dir else None
        if rest is not None:
            return os.path.realpath(os.path.join(self.local_dir, rest))
        return os.path.realpath(path)

    def to_mount(self, local_path):
        """``local_path`` as the domains see it, or None (not ours).

        The identity map returns ``local_path``.
        """
        if self.identity:
            return local_path
        rest = _under(os.path.realpath(local_path), self.local_dir)
        if rest is None:
            return None
        return os.path.join(self.mount_dir, rest)

    def seen_as(self, local_path, like):
        """``local_path`` in the view of ``like``, a path a domain uses.

        The mount-point view when ``like`` is below the mount point (and
        ``local_path`` below the local directory), else ``local_path``
        unchanged: an overlay must be named the way its disk is.
        """
        if self.mount_dir and self._in_mount(like) is not None:
            seen = self.to_mount(local_path)
            if seen is not None:
                return seen
        return local_path

    def same(self, seen_path, local_path):
        """Whether a domain's ``seen_path`` is the file ``local_path``."""
        return self.to_local(seen_path) == os.path.realpath(local_path)


#: Domains see the local paths (``local`` and ``gpfs`` connections).
IDENTITY = PathMap()
