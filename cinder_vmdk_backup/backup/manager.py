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

"""Cinder's backup manager, with backups owned by volume drivers again.

Enable it on the cinder-backup nodes::

    [DEFAULT]
    backup_manager = cinder_vmdk_backup.backup.manager.BackupManager

For a backup or restore of a volume whose backend driver implements the
driver-owned backup protocol (:mod:`cinder_vmdk_backup.backup.driver_owned`)
the driver moves the data; every other volume takes Cinder's path unchanged
(see :mod:`cinder_vmdk_backup.backup.driver_loader` for when a backend is
left to Cinder, and ``driver_owned_backup_enabled`` to switch it off).

Where Cinder is re-wired
------------------------
Cinder's ``continue_backup`` and ``_run_restore`` do their data moving in
three steps: ``_attach_device`` (an RPC to the volume service and an
os-brick connector), ``backup_service.backup(backup, device_file)`` or
``backup_service.restore(backup, volume_id, device_file, volume_is_new)``,
and ``_detach_device``. Everything around them (status checks and changes,
user messages, notifications, encryption key housekeeping, clean-up of the
temporary volume or snapshot, ``_finish_backup``) is the same for any
device. So this manager overrides exactly those three steps, and only while
it runs one of those two methods for a driver-owned volume:

* ``_attach_device`` returns a placeholder device without calling the volume
  service or os-brick, and ``_detach_device`` does nothing for it;
* the backup service handed to Cinder's code (``self.service(context)``) is
  wrapped: its ``backup()`` calls the driver's ``backup_volume()`` with the
  device Cinder chose (volume, temporary clone or snapshot) and the real
  backup service, its ``restore()`` the driver's ``restore_backup()``; every
  other attribute is the real service's.

One more step of Cinder's code is useless for a driver-owned operation and
would need privileges: ``volume_utils.brick_get_connector_properties``, the
os-brick probe of this host's initiators (privsep, ``iscsiadm``, ``nvme``)
whose result only ``_attach_device`` and ``_detach_device`` use. The manager
wraps that module function once: inside a driver-owned operation, until the
driver is called, it returns ``{}``; everywhere else it is Cinder's.

``continue_backup`` and ``_run_restore`` are then Cinder's own code: a driver
failure raises where a failed copy would, with the same user message
(``BACKUP_CREATE_DRIVER_ERROR``, ``BACKUP_RESTORE_ERROR``) and status
changes. ``init_host``'s clean-up of interrupted operations is Cinder's;
the manager adds two things to it: the driver of every driver-owned backend
configured is set up at once, so that its ``do_setup`` removes what killed
processes left (:meth:`BackupManager.init_host`), and a restore that a
killed process interrupted, which Cinder sets to ``error_restoring``, is
logged and told to the user as one that left the volume's data intact
(:meth:`BackupManager._cleanup_one_backup`).
The driver-owned state of a request lives in a context variable, so that
concurrent requests (green or native threads) do not see each other's.
"""

import contextlib
import contextvars
import functools

from cinder.backup import manager
from cinder import context as cinder_context
from cinder.message import message_field
from cinder import objects
from cinder.objects import fields
from cinder.volume import volume_utils
from oslo_config import cfg
from oslo_log import log as logging

from cinder_vmdk_backup.backup import driver_loader
from cinder_vmdk_backup import malloc_tuning
from cinder_vmdk_backup import opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.backup_manager_opts)

#: The driver-owned operation the current thread is running, if any.
_current_job = contextvars.ContextVar('cinder_vmdk_backup_job',
                                      default=None)


class _Job(object):
    """One driver-owned backup or restore in progress."""

    def __init__(self, driver, context, backup_device=None, volume=None):
        self.driver = driver
        self.context = context
        self.backup_device = backup_device
        self.volume = volume
        #: Set once the driver has been handed the operation.
        self.driver_called = False


def _skip_connector_probe(probe):
    """Wrap os-brick's connector probe: skipped where nothing attaches."""

    @functools.wraps(probe)
    def guarded(*args, **kwargs):
        job = _current_job.get()
        if job is not None and not job.driver_called:
            return {}
        return probe(*args, **kwargs)

    guarded.cvb_guarded = True
    return guarded


def _install_connector_probe_guard():
    probe = volume_utils.brick_get_connector_properties
    if not getattr(probe, 'cvb_guarded', False):
        volume_utils.brick_get_connector_properties = (
            _skip_connector_probe(probe))


class DriverOwnedDevice(object):
    """Placeholder for the device Cinder would have attached.

    Cinder's code hands it to the (wrapped) backup service, which ignores
    it; nothing may read or write it.
    """

    def __init__(self, device):
        self.device = device

    def _refuse(self, *args, **kwargs):
        raise IOError('the device of a driver-owned backup is moved by its '
                      'volume driver and cannot be read or written directly')

    read = write = seek = tell = fileno = _refuse


class DriverOwnedBackupService(object):
    """A backup service whose data moving is done by the volume driver.

    :param service: the configured backup service (posix, swift, ...)
    :param job: the driver-owned operation it serves
    """

    def __init__(self, service, job):
        self._service = service
        self._job = job

    def backup(self, backup, volume_file, backup_metadata=False):
        job = self._job
        job.driver_called = True
        LOG.debug('Backup %(backup)s is moved by volume driver %(driver)s.',
                  {'backup': backup.id, 'driver': type(job.driver).__name__})
        return job.driver.backup_volume(job.context, backup, self._service,
                                        backup_device=job.backup_device)

    def restore(self, backup, volume_id, volume_file, volume_is_new):
        job = self._job
        job.driver_called = True
        LOG.debug('Restore of backup %(backup)s into volume %(volume)s is '
                  'moved by volume driver %(driver)s.',
                  {'backup': backup.id, 'volume': volume_id,
                   'driver': type(job.driver).__name__})
        return job.driver.restore_backup(job.context, backup, job.volume,
                                         self._service,
                                         volume_is_new=volume_is_new)

    def __getattr__(self, name):
        return getattr(self._service, name)


class BackupManager(manager.BackupManager):
    """Cinder's BackupManager; volume drivers that own backups move data."""

    def __init__(self, *args, **kwargs):
        super(BackupManager, self).__init__(*args, **kwargs)
        self._backup_service_class = self.service
        self.service = self._backup_service
        self._backend_drivers = driver_loader.BackendDrivers(
            CONF.driver_owned_backup_setup_retry_interval)
        _install_connector_probe_guard()
        if CONF.driver_owned_backup_tune_malloc:
            malloc_tuning.apply()
        if not CONF.driver_owned_backup_enabled:
            LOG.info('Driver-owned backup is disabled '
                     '(driver_owned_backup_enabled = False): every backup '
                     'and restore takes Cinder\'s path.')

    # -- start ---------------------------------------------------------------

    def init_host(self, **kwargs):
        """Cinder's start, then every driver-owned backend set up.

        Setting a driver up removes what killed processes of this host left
        (temporary VMs, staging files, NFC leases, qcow2 overlays), when
        the service starts rather than at the next request of the backend.
        """
        super(BackupManager, self).init_host(**kwargs)
        if not CONF.driver_owned_backup_enabled:
            return
        try:
            loaded = self._backend_drivers.load_configured(
                CONF.host, cluster_name=getattr(CONF, 'cluster', None))
        except Exception:
            LOG.exception('Could not set up the driver-owned backends at '
                          'start; each is set up at its first request.')
            return
        if loaded:
            LOG.info('Driver-owned backends set up at start: %s.',
                     ', '.join(loaded))

    def _cleanup_one_backup(self, ctxt, backup):
        """Cinder's clean-up; says so when a restore left the data intact.

        A restore interrupted by the end of cinder-backup leaves its volume
        in ``error_restoring`` (Cinder's clean-up). A driver-owned restore
        changes the volume's data only once the restored image is complete
        (``restore_raw_image``), so the volume still holds its former data:
        the log says so, naming the way back, and the user gets Cinder's
        restore-failed message on the volume (Cinder's message API has only
        fixed texts; none says "data intact").
        """
        volume_id = (backup.restore_volume_id
                     if backup.status == fields.BackupStatus.RESTORING
                     else None)
        super(BackupManager, self)._cleanup_one_backup(ctxt, backup)
        if volume_id:
            self._report_interrupted_restore(ctxt, backup, volume_id)

    def _report_interrupted_restore(self, ctxt, backup, volume_id):
        try:
            volume = objects.Volume.get_by_id(ctxt, volume_id)
        except Exception:
            return
        if volume.status != 'error_restoring' or (
                self._driver_for(volume) is None):
            return
        LOG.warning('The restore of backup %(backup)s into volume '
                    '%(volume)s was interrupted by the end of '
                    'cinder-backup. The volume\'s data is intact (its '
                    'driver changes it only once the restored data is '
                    'complete); its status is error_restoring. Reset it '
                    'with "cinder reset-state --state available %(volume)s" '
                    'and restore again.',
                    {'backup': backup.id, 'volume': volume_id})
        try:
            user_context = cinder_context.RequestContext(
                user_id=volume.user_id, project_id=volume.project_id,
                is_admin=False)
            self.message_api.create(
                user_context, message_field.Action.BACKUP_RESTORE,
                resource_uuid=volume_id,
                detail=message_field.Detail.BACKUP_RESTORE_ERROR)
        except Exception:
            LOG.exception('Could not tell the user of volume %s that its '
                          'restore was interrupted.', volume_id)

    # -- routing -----------------------------------------------------------

    def _driver_for(self, volume):
        """The set-up protocol driver that moves ``volume``'s data, or None.

        Any failure to decide falls back to Cinder's path.
        """
        if not CONF.driver_owned_backup_enabled:
            return None
        try:
            return self._backend_drivers.driver_for(volume)
        except Exception:
            LOG.exception('Cannot tell whether the backend of volume %s owns '
                          'its backups; Cinder\'s backup path is used.',
                          volume.id)
            return None

    @staticmethod
    def _volume_of(backup_device):
        """The volume whose backend holds the device Cinder chose."""
        device = backup_device.device_obj
        return device.volume if backup_device.is_snapshot else device

    @contextlib.contextmanager
    def _driver_owned(self, job):
        token = _current_job.set(job)
        try:
            yield
        finally:
            _current_job.reset(token)

    # -- Cinder's entry points ---------------------------------------------

    def continue_backup(self, context, backup, backup_device):
        """Cinder's ``continue_backup``; the driver may move the data.

        Not decorated with ``utils.limit_operations`` again: Cinder's method
        takes the semaphore.
        """
        driver = self._driver_for(self._volume_of(backup_device))
        if driver is None:
            return super(BackupManager, self).continue_backup(
                context, backup, backup_device)
        job = _Job(driver, context, backup_device=backup_device)
        with self._driver_owned(job):
            return super(BackupManager, self).continue_backup(
                context, backup, backup_device)

    def _run_restore(self, context, backup, volume, volume_is_new):
        driver = self._driver_for(volume)
        if driver is None:
            return super(BackupManager, self)._run_restore(
                context, backup, volume, volume_is_new)
        job = _Job(driver, context, volume=volume)
        with self._driver_owned(job):
            return super(BackupManager, self)._run_restore(
                context, backup, volume, volume_is_new)

    # -- the re-wired data-moving steps ---------------------------------------

    def _backup_service(self, *args, **kwargs):
        """``self.service(context)``: the backup service Cinder's code uses."""
        service = self._backup_service_class(*args, **kwargs)
        job = _current_job.get()
        if job is None:
            return service
        return DriverOwnedBackupService(service, job)

    def _attach_device(self, ctxt, backup_device, properties,
                       is_snapshot=False):
        if _current_job.get() is None:
            return super(BackupManager, self)._attach_device(
                ctxt, backup_device, properties, is_snapshot)
        return {'conn': None, 'connector': None, 'driver_owned': True,
                'device': {'path': DriverOwnedDevice(backup_device)}}

    def _detach_device(self, ctxt, attach_info, device, properties,
                       is_snapshot=False, force=False, ignore_errors=False):
        if attach_info.get('driver_owned') is True:
            return
        return super(BackupManager, self)._detach_device(
            ctxt, attach_info, device, properties, is_snapshot=is_snapshot,
            force=force, ignore_errors=ignore_errors)
