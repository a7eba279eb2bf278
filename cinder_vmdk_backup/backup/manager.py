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
Cinder's ``continue_backup`` and ``_run_restore`` stay Cinder's code; only
their data-moving steps (attach, ``backup_service.backup()`` or
``restore()``, detach) are handed to the volume driver, for a driver-owned
volume and inside that one operation. How, and every other private part of
Cinder the plugin relies on, is in
:mod:`cinder_vmdk_backup.backup.cinder_internals`. This manager only decides
which operations are driver-owned and gives Cinder's code a backup service
(:class:`DriverOwnedBackupService`) whose ``backup()`` calls the driver's
``backup_volume()`` with the device Cinder chose (volume, temporary clone or
snapshot) and the real backup service, and whose ``restore()`` calls the
driver's ``restore_backup()``. A driver failure raises where a failed copy
would, with the same user message (``BACKUP_CREATE_DRIVER_ERROR``,
``BACKUP_RESTORE_ERROR``) and status changes. ``init_host``'s clean-up of
interrupted operations is not touched.

At start the manager also sets up the driver of every driver-owned backend
configured, so that its ``do_setup`` removes what killed processes left
(:meth:`BackupManager.init_host`), and reports a restore that a killed
process interrupted, which Cinder's clean-up sets to ``error_restoring``, as
one that left the volume's data intact
(:meth:`BackupManager.interrupted_restore_cleaned_up`).

The manager also runs instance-group backup sets: it registers
:class:`~cinder_vmdk_backup.group.manager.InstanceGroupEndpoint` as an extra
RPC endpoint (namespace ``instance_groups``), runs its janitor at start,
and deletes retired backups of older sets with their last dependent
(:meth:`BackupManager.delete_backup`). It also runs backup plans: a
:class:`~cinder_vmdk_backup.plans.runner.PlanRunner` started at the end of
``init_host``; and backup verifications
(:class:`~cinder_vmdk_backup.verification.endpoint.VerificationEndpoint`,
namespace ``backup_verification``).

At start the manager checks those internals against the installed Cinder
(:func:`~.cinder_internals.check`). If one is missing or changed, it logs
one error naming them and every backup and restore takes Cinder's own path.
"""

import atexit

from cinder import context as cinder_context
from cinder.message import message_field
from cinder import objects
from oslo_config import cfg
from oslo_log import log as logging

from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import driver_loader
from cinder_vmdk_backup.group import manager as group_manager
from cinder_vmdk_backup import malloc_tuning
from cinder_vmdk_backup import opts
from cinder_vmdk_backup.plans import runner as plan_runner
from cinder_vmdk_backup.verification import endpoint as verification

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.backup_manager_opts)

#: The placeholder Cinder's code gets as the device (defined with the rest
#: of what touches Cinder's internals).
DriverOwnedDevice = cinder_internals.DriverOwnedDevice


class _Job(cinder_internals.DriverOwnedOperation):
    """One driver-owned backup or restore in progress."""

    def __init__(self, driver, context, backup_device=None, volume=None):
        super(_Job, self).__init__()
        self.driver = driver
        self.context = context
        self.backup_device = backup_device
        self.volume = volume

    def backup_service(self, service):
        return DriverOwnedBackupService(service, self)


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


class BackupManager(cinder_internals.RewiredBackupManager):
    """Cinder's BackupManager; volume drivers that own backups move data."""

    def __init__(self, *args, **kwargs):
        super(BackupManager, self).__init__(*args, **kwargs)
        self._backend_drivers = driver_loader.BackendDrivers(
            CONF.driver_owned_backup_setup_retry_interval)
        if CONF.driver_owned_backup_tune_malloc:
            malloc_tuning.apply()
        if not CONF.driver_owned_backup_enabled:
            LOG.info('Driver-owned backup is disabled '
                     '(driver_owned_backup_enabled = False): every backup '
                     'and restore takes Cinder\'s path.')
        # Checked (and its one error logged) whether enabled or not: a
        # mismatch is worth knowing before the option is turned on.
        self._cinder_matches = cinder_internals.check_and_report()
        if self._cinder_matches:
            self.hook_into_cinder()
        #: Instance-group sets run here (RPC namespace instance_groups).
        self.group_endpoint = group_manager.InstanceGroupEndpoint(self)
        # (Cinder's Manager.__init__ makes the list.)
        if getattr(self, 'additional_endpoints', None) is None:
            self.additional_endpoints = []
        self.additional_endpoints.append(self.group_endpoint)
        #: Backup verifications run here (namespace backup_verification).
        self.verification_endpoint = verification.VerificationEndpoint(self)
        self.additional_endpoints.append(self.verification_endpoint)

    # -- start ---------------------------------------------------------------

    def init_host(self, **kwargs):
        """Cinder's start, then every driver-owned backend set up.

        Setting a driver up removes what killed processes of this host left
        (temporary VMs, staging files, NFC leases, qcow2 overlays), when
        the service starts rather than at the next request of the backend.
        """
        super(BackupManager, self).init_host(**kwargs)
        if CONF.driver_owned_backup_enabled and self._cinder_matches:
            self._set_up_backends()
        try:
            self.group_endpoint.init_host(cinder_context.get_admin_context())
        except Exception:
            LOG.exception('Could not clean up the instance-group operations '
                          'this host left running.')
        self._start_plan_runner()

    def _start_plan_runner(self):
        """Run backup plans from this node (see :mod:`..plans.runner`).

        It starts only if the plans database answers. The runner's thread
        is a daemon: it ends with the process, and at
        the interpreter's exit it leaves the runners' coordination group. A run
        it was following is taken over by another node (or by this one
        once it starts again) when its heartbeat is stale.
        """
        try:
            # (Retention's synthetic fulls are written with this node's
            # backup driver.)
            runner = plan_runner.PlanRunner(
                self.host,
                backup_service=lambda ctxt: self.service(context=ctxt))
            why_not = runner.ready()
            if why_not:
                LOG.warning('Backup plans do not run from this node: their '
                            'database does not answer (%s). Set it up with '
                            '"cinder-vmdk-backup-manage db sync" and '
                            'restart cinder-backup.', why_not)
                return
            runner.start()
            self.plan_runner = runner
        except Exception:
            LOG.exception('The backup plan runner did not start; backup '
                          'plans run from the other cinder-backup nodes.')
            return
        atexit.register(self.stop_plan_runner)

    def stop_plan_runner(self):
        runner = getattr(self, 'plan_runner', None)
        if runner is not None:
            runner.stop(timeout=5)

    def _set_up_backends(self):
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

    def interrupted_restore_cleaned_up(self, context, backup, volume_id):
        """Say that a driver-owned restore left the volume's data intact.

        A restore interrupted by the end of cinder-backup leaves its volume
        in ``error_restoring`` (Cinder's clean-up). A driver-owned restore
        changes the volume's data only once the restored image is complete
        (``restore_raw_image``), so the volume still holds its former data:
        the log says so, naming the way back, and the user gets Cinder's
        restore-failed message on the volume (Cinder's message API has only
        fixed texts; none says "data intact").
        """
        try:
            volume = objects.Volume.get_by_id(context, volume_id)
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

    def delete_backup(self, context, backup, retired_parents=True):
        """Cinder's delete; then retired ancestors nothing needs any more.

        A backup of an instance-group set that a newer backup depends on is
        retired rather than deleted (see :mod:`cinder_vmdk_backup.group`);
        it goes with its last dependent, whoever deletes that one.
        """
        parent_id = backup.parent_id
        super(BackupManager, self).delete_backup(context, backup)
        if retired_parents and parent_id:
            try:
                self.group_endpoint.delete_retired_parents(context,
                                                           parent_id)
            except Exception:
                LOG.exception('Could not delete the retired parents of '
                              'backup %s.', backup.id)

    # -- routing -----------------------------------------------------------

    def _driver_for(self, volume):
        """The set-up protocol driver that moves ``volume``'s data, or None.

        Any failure to decide falls back to Cinder's path.
        """
        if not (CONF.driver_owned_backup_enabled and self._cinder_matches):
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

    def driver_owned_backup(self, context, backup, backup_device):
        driver = self._driver_for(self._volume_of(backup_device))
        if driver is None:
            return None
        return _Job(driver, context, backup_device=backup_device)

    def driver_owned_restore(self, context, backup, volume, volume_is_new):
        driver = self._driver_for(volume)
        if driver is None:
            return None
        return _Job(driver, context, volume=volume)
