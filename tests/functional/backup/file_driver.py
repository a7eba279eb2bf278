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

"""A small volume driver that owns its backups, for functional tests.

Each volume is a sparse raw file ``volume-<id>`` in the backend section's
``file_volume_dir``. The driver implements the driver-owned backup protocol
with the mixin's three hooks only, like a real driver would, so the tests
exercise the protocol's flow and the manager's routing with Cinder's real
backup machinery and none of vSphere's or libvirt's.

Faults are injected through marker files next to a volume's file (see
:func:`inject_fault`), because the manager builds the driver itself.
"""

import contextlib
import os
import threading

from cinder.volume import driver
from oslo_config import cfg
from oslo_utils import units

from cinder_vmdk_backup.backup import driver_owned

file_driver_opts = [
    cfg.StrOpt('file_volume_dir',
               help='Directory holding the volumes of the test driver.'),
    cfg.BoolOpt('file_volume_fail_setup', default=False,
                help='Make check_for_setup_error fail (test fault).'),
]

#: Fault names understood by :func:`inject_fault`.
FAULT_READ = 'read'        # the backup source fails half-way
FAULT_WRITE = 'write'      # restore_raw_image fails before replacing

#: File in file_volume_dir listing the devices backed up ("Volume <id>").
OPENED_LOG = 'opened.log'

#: do_setup calls, by backend host (a test looks at it).
SETUP_CALLS = {}
_SETUP_LOCK = threading.Lock()


def volume_path(directory, volume_id):
    return os.path.join(directory, 'volume-%s' % volume_id)


def inject_fault(directory, volume_id, fault):
    """Make the next operations of the volume fail with ``fault``."""
    with open(volume_path(directory, volume_id) + '.fault-' + fault, 'w'):
        pass


def _has_fault(path, fault):
    return os.path.exists(path + '.fault-' + fault)


class _FailingReader(object):
    """Gives ``limit`` bytes of ``stream``, then fails like a lost disk."""

    def __init__(self, stream, limit):
        self._stream = stream
        self._left = limit

    def read(self, size=-1):
        if self._left <= 0:
            raise IOError('injected read fault')
        size = self._left if size is None or size < 0 else min(size,
                                                               self._left)
        data = self._stream.read(size)
        self._left -= len(data)
        return data


def copy_sparse(source, target):
    """Copy the data regions of file ``source`` into file ``target``."""
    fd_in = source.fileno()
    end = os.fstat(fd_in).st_size
    offset = 0
    while offset < end:
        try:
            data_start = os.lseek(fd_in, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        hole = os.lseek(fd_in, data_start, os.SEEK_HOLE)
        source.seek(data_start)
        target.seek(data_start)
        left = hole - data_start
        while left:
            data = source.read(min(left, 4 * units.Mi))
            target.write(data)
            left -= len(data)
        offset = hole


class FileVolumeDriver(driver_owned.DriverOwnedBackupMixin, driver.BaseVD):
    """Volumes as raw files; backups owned by the driver."""

    VERSION = '1.0.0'

    def __init__(self, *args, **kwargs):
        super(FileVolumeDriver, self).__init__(*args, **kwargs)
        self.configuration.append_config_values(file_driver_opts)
        self._dir = self.configuration.file_volume_dir

    # -- volume driver -----------------------------------------------------

    def do_setup(self, context):
        with _SETUP_LOCK:
            SETUP_CALLS[self.host] = SETUP_CALLS.get(self.host, 0) + 1
        # The mixin's: what killed processes left is removed.
        super().do_setup(context)

    def check_for_setup_error(self):
        if self.configuration.file_volume_fail_setup:
            raise IOError('injected set-up fault')
        if not os.path.isdir(self._dir or ''):
            raise IOError('file_volume_dir %r is not a directory'
                          % self._dir)

    def _path(self, volume):
        return volume_path(self._dir, volume.id)

    def create_volume(self, volume):
        with open(self._path(volume), 'wb') as f:
            f.truncate(volume.size * units.Gi)

    def delete_volume(self, volume):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(volume))

    def ensure_export(self, context, volume):
        pass

    def create_export(self, context, volume, connector):
        pass

    def remove_export(self, context, volume):
        pass

    def initialize_connection(self, volume, connector):
        return {'driver_volume_type': 'local',
                'data': {'device_path': self._path(volume)}}

    def terminate_connection(self, volume, connector, **kwargs):
        pass

    # -- driver-owned backup hooks -----------------------------------------

    @contextlib.contextmanager
    def open_backup_source(self, context, backup, device):
        path = self._path(device)
        with open(os.path.join(self._dir, OPENED_LOG), 'a') as log:
            log.write('%s %s\n' % (type(device).__name__, device.id))
        with open(path, 'rb') as source:
            if _has_fault(path, FAULT_READ):
                yield _FailingReader(source, units.Mi)
            else:
                yield source

    def restore_raw_image(self, context, backup, volume, image_path):
        """Write the image into a new file, then replace the volume's."""
        path = self._path(volume)
        new_path = path + '.restoring'
        try:
            with open(image_path, 'rb') as image, \
                    open(new_path, 'wb') as target:
                copy_sparse(image, target)
                if _has_fault(path, FAULT_WRITE):
                    raise IOError('injected write fault')
                target.truncate(max(os.fstat(image.fileno()).st_size,
                                    volume.size * units.Gi))
                target.flush()
                os.fsync(target.fileno())
            os.replace(new_path, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(new_path)

    def backup_staging_dir(self):
        return os.path.join(self._dir, 'staging')

    def get_disk_profile(self, context, device):
        return {'format': 'raw', 'capacity': device.size * units.Gi}
