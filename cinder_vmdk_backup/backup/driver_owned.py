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

"""The driver-owned backup protocol, and its flow written once.

A volume driver that backs up and restores its own volumes mixes in
:class:`DriverOwnedBackupMixin`. The plugin's
:class:`~cinder_vmdk_backup.backup.manager.BackupManager` recognises such a
driver (:func:`implements_protocol`), loads it inside cinder-backup and calls
the two entry points with the signatures Cinder's drivers had before Pike,
extended by keyword arguments only::

    driver.backup_volume(context, backup, backup_service,
                         backup_device=None)
    driver.restore_backup(context, backup, volume, backup_service,
                          volume_is_new=False)

What a backup holds is the guest-visible **raw** disk data, in the backup
service's own format, so Cinder's incremental backups and cross-backend
restores work unchanged. Cinder's chunked drivers (posix, nfs, swift, s3,
gcs) get it by extents (:mod:`.handoff`: holes and what did not change
since the parent are not read); any other backup service reads it as a
sequential stream through its own ``backup()``. The mixin owns the flow
around the data (streaming into the backup service, read ahead of it, zlib
done by
ISA-L (:mod:`.fast_zlib`), zeros not hashed (:mod:`.zero_hashing`); on
restore a private sparse staging file, its
exact size, clean-up on every path); a driver fills three hooks:

* :meth:`DriverOwnedBackupMixin.open_backup_source`: the device's data as a
  raw, readable stream;
* :meth:`DriverOwnedBackupMixin.restore_raw_image`: put a complete raw image
  back into the volume, leaving the volume as it was if that fails;
* :meth:`DriverOwnedBackupMixin.backup_staging_dir`: where staging files go.

and may add :meth:`DriverOwnedBackupMixin.get_disk_profile` to record what
re-creating the disk faithfully needs, kept in the backup's metadata.

Implementing the protocol
-------------------------
A driver class mixes in :class:`DriverOwnedBackupMixin` (before its volume
driver base class) and fills the hooks; nothing else is needed (a driver
that overrides ``do_setup`` calls the mixin's, which removes what killed
processes left: :meth:`DriverOwnedBackupMixin.remove_leftovers`). The plugin's
manager then, for a volume whose ``volume.host`` names a backend section of
cinder-backup's ``cinder.conf`` with that ``volume_driver``:

* builds the driver the way cinder-volume does (that section's
  configuration, ``host='<host>@<backend>'``), calls ``do_setup()`` and
  ``check_for_setup_error()`` once, and reuses the instance for every later
  backup and restore of that backend, concurrently: the hooks must be
  thread-safe (green threads under eventlet);
* calls :meth:`DriverOwnedBackupMixin.backup_volume` where Cinder would
  attach the device, open it and call ``backup_service.backup()``, and
  :meth:`DriverOwnedBackupMixin.restore_backup` where it would call
  ``backup_service.restore()``. Status changes, user messages, notifications
  and clean-up of temporary volumes stay Cinder's: an exception raised by a
  hook fails the operation exactly like a failed attach or copy does.

A driver may instead implement ``backup_volume`` and ``restore_backup``
itself, with the signatures above, and set ``driver_owned_backup = True``.

Both entry points run in the cinder-backup thread that handles the request
(a green thread under eventlet, a native one without). The hooks are plain
synchronous code: the data moves through :mod:`.transfer`, which owns every
thread a transfer uses. The backup source is read on the transfer's
producer thread (see :class:`~.transfer.BackupReader` for what a source
offers), the restore staging file is written behind the backup service.
"""

import contextlib
import os

from cinder import exception
from cinder.i18n import _
from cinder import objects
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import units

from cinder_vmdk_backup.backup import chain_reader
from cinder_vmdk_backup.backup import fast_zlib
from cinder_vmdk_backup.backup import handoff
from cinder_vmdk_backup.backup import restore_checks
from cinder_vmdk_backup.backup import staging
from cinder_vmdk_backup.backup import staging_checks
from cinder_vmdk_backup.backup import staging_files
from cinder_vmdk_backup.backup import status_checks
from cinder_vmdk_backup.backup import throttle
from cinder_vmdk_backup.backup import transfer
from cinder_vmdk_backup.backup import zero_hashing
from cinder_vmdk_backup import opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.backup_manager_opts)

#: Prefix of the keys a driver's disk profile is stored under in
#: ``backup.metadata`` (a dict of strings in Cinder's Backup object).
PROFILE_KEY_PREFIX = 'disk_profile:'

#: Prefix of every staging file, so that leftovers are recognisably ours.
STAGING_PREFIX = staging_files.PREFIX


def implements_protocol(driver_class):
    """Tell whether a volume driver class owns its backups.

    :param driver_class: a class (or instance) of a volume driver
    """
    return bool(getattr(driver_class, 'driver_owned_backup', False))


class DriverOwnedBackupMixin(object):
    """Backup and restore written once; drivers fill the hooks."""

    #: Marker read by :func:`implements_protocol`.
    driver_owned_backup = True

    # -- hooks -------------------------------------------------------------

    def open_backup_source(self, context, backup, device):
        """Open the data of ``device`` as a raw stream.

        :param device: the volume or snapshot object Cinder chose to back
            up (the volume itself, Cinder's temporary clone of an in-use
            volume, or the temporary volume of a backup from a snapshot)
        :returns: a context manager giving a transfer source (see
            :class:`~.transfer.BackupReader`: ``fill(view)`` or a file's
            ``readinto``, optionally ``finish``, ``report``,
            ``interrupt``) of exactly the device's size (``volume.size``
            or ``snapshot.volume_size`` GiB); a source ending early fails
            the backup. Into Cinder's chunked backup drivers
            (:mod:`.handoff`) a source may also offer
            ``read_at(offset, view)`` (fill ``view`` from ``offset``;
            called with ascending offsets), ``zero_ranges()`` (ascending
            ``(offset, length)`` known to read as zeros: never read) and
            ``changed_ranges(parent_backup)`` (``(ranges, None)``: what may
            differ from the parent's point in time, ascending; or
            ``(None, reason)`` when in doubt: everything is read)
        """
        raise NotImplementedError()

    def backup_read_niceness(self):
        """How many steps below the service's CPU priority a source is read.

        Where reading (decoding) the source competes for a core with the
        backup driver's compression, the backup driver then gets the larger
        share.
        """
        return 0

    def restore_raw_image(self, context, backup, volume, image_path):
        """Make the raw image at ``image_path`` the volume's data.

        The image is exactly the backed-up disk's size; the volume may be
        larger. The volume's previous data must stay intact until the new
        data is complete.
        """
        raise NotImplementedError()

    def backup_staging_dir(self):
        """Return the directory restore staging files are created in."""
        raise NotImplementedError()

    def get_disk_profile(self, context, device):
        """Return what re-creating the disk needs, as a dict of strings."""
        return {}

    # -- the protocol ------------------------------------------------------

    def backup_volume(self, context, backup, backup_service,
                      backup_device=None):
        """Back up the data of the device Cinder chose.

        :param backup_device: Cinder's ``BackupDeviceInfo``; when absent,
            the backup's volume is read.
        """
        device = self._resolve_backup_device(context, backup, backup_device)
        profile = self.get_disk_profile(context, device)
        LOG.info('Driver-owned backup %(backup)s of %(kind)s %(id)s.',
                 {'backup': backup.id, 'kind': type(device).__name__,
                  'id': device.id})
        length = self._device_size_gb(device) * units.Gi
        try:
            result = self._move_backup_data(context, backup, backup_service,
                                            device, length)
        except EOFError as exc:
            # A source shorter than the device: a backup that silently
            # lost the disk's tail would look complete.
            raise exception.BackupDriverException(reason=_(
                'the data of %(kind)s %(id)s ended before its size of '
                '%(size)d bytes: %(err)s') % {
                    'kind': type(device).__name__.lower(),
                    'id': device.id, 'size': length, 'err': exc}
            ) from exc
        if profile:
            metadata = dict(backup.metadata or {})
            metadata.update({PROFILE_KEY_PREFIX + key: str(value)
                             for key, value in profile.items()})
            backup.metadata = metadata
            backup.save()
        return result

    def _move_backup_data(self, context, backup, backup_service, device,
                          length):
        """Read the device's data into the backup service.

        Into a chunked backup driver by extents (:mod:`.handoff`): holes
        and, for an incremental, what did not change are not read. Into
        any other backup service (or with the hand-off off, or a Cinder
        whose internals it needs changed) as one stream through the
        service's own ``backup()``.
        """
        handoff_wanted = handoff.usable(backup_service)
        what = '%s %s' % (type(device).__name__.lower(), device.id)
        with self.open_backup_source(context, backup, device) as source, \
                tuned_for_raw_data(backup_service):
            # A backup plan's bandwidth cap (none: the source itself).
            source = throttle.throttled_source(source, backup)
            if handoff_wanted and hasattr(source, 'read_at'):
                return handoff.backup(backup_service, backup, source,
                                      length, what)
            limit = CONF.driver_owned_backup_read_ahead_mb * units.Mi
            with transfer.BackupReader(
                    source, length, limit, self.backup_read_niceness(),
                    name='cvb-backup-%s' % backup.id[:8]) as reader:
                try:
                    if handoff_wanted:
                        return handoff.backup(backup_service, backup,
                                              source, length, what,
                                              stream=reader)
                    return backup_service.backup(backup, reader)
                finally:
                    if reader.niceness_error is not None:
                        LOG.warning('The data of backup %(backup)s was '
                                    'read at the service\'s own CPU '
                                    'priority: %(err)s',
                                    {'backup': backup.id,
                                     'err': reader.niceness_error})

    def restore_backup(self, context, backup, volume, backup_service,
                       volume_is_new=False):
        """Restore ``backup`` into ``volume``.

        The backup service writes into a private sparse staging file
        (incremental backups write at offsets); the file is then set to the
        backed-up disk's exact size, because nothing writes an all-zero
        tail, and handed to the driver. The backup service writes every
        byte (it is told the volume is not new);
        :class:`~.staging.SparseStagingWriter` leaves out the zeros that
        need no writing, so the file stays sparse.
        :class:`~.transfer.WriteBehind` writes one object while the
        service reads and inflates the next, and
        :func:`~.status_checks.throttled_refresh` lets the service check
        for a cancelled restore at most once a second. ``volume_is_new``
        changes nothing: the staging file is always written whole.

        With ``driver_owned_restore_check_digests`` what the backup
        service writes is checked against the backup's SHA-256 list as it
        is written (:class:`~.staging_checks.StagingCheck`: no second pass
        over the file), or, for a chain whose metadata the plugin cannot
        follow, the whole staging file after the restore
        (:func:`~.restore_checks.check_file`); either way before the
        driver gets it: a damaged backup fails the restore with the volume
        untouched.
        """
        size = self._backup_size_bytes(backup, volume)
        checker = self._restore_checker(backup, backup_service, size)
        with self._staging_file() as (staging_file, path):
            fd = staging_file.fileno()
            if isinstance(checker, staging_checks.StagingCheck):
                with checker:
                    self._restore_staged(backup, volume, backup_service,
                                         fd, size, checker.observe)
                    checker.finish(fd)
            else:
                self._restore_staged(backup, volume, backup_service, fd,
                                     size)
                if checker is not None:
                    restore_checks.check_file(fd, checker)
            self.restore_raw_image(context, backup, volume, path)

    @staticmethod
    def _restore_staged(backup, volume, backup_service, fd, size,
                        observer=None):
        """The backup service's restore into the staging file ``fd``."""
        writer = staging.SparseStagingWriter(fd, observer=observer)
        with transfer.WriteBehind(writer) as behind, \
                fast_zlib.accelerated(backup_service), \
                status_checks.throttled_refresh(backup):
            backup_service.restore(
                backup, volume.id,
                throttle.throttled_writer(behind, backup), False)
        os.ftruncate(fd, size)

    @staticmethod
    def _restore_checker(backup, backup_service, size):
        """The check of a staged restore, or None (not checked).

        A :class:`~.staging_checks.StagingCheck` where the chain's
        metadata can be followed; else a
        :class:`~.restore_checks.BlockChecker` for a pass over the file.
        """
        if not restore_checks.enabled():
            return None
        why = restore_checks.unusable_because(backup_service)
        if why is not None:
            LOG.info('The data restored from backup %(backup)s is not '
                     'checked: %(why)s.', {'backup': backup.id, 'why': why})
            return None
        try:
            chain = chain_reader.ChainReader(backup_service, backup, size)
        except Exception as exc:
            # The file is checked after the restore; only the names of
            # objects in an error message are lost.
            LOG.info('The data restored from backup %(backup)s is checked '
                     'after its restore: its chain cannot be followed '
                     '(%(exc)s).', {'backup': backup.id, 'exc': exc})
            return restore_checks.BlockChecker(backup_service, backup, size,
                                               describe=None)
        return staging_checks.StagingCheck(backup_service, backup, size,
                                           chain)

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def disk_profile_of(backup):
        """Return the disk profile recorded with ``backup`` (may be empty)."""
        return {key[len(PROFILE_KEY_PREFIX):]: value
                for key, value in (backup.metadata or {}).items()
                if key.startswith(PROFILE_KEY_PREFIX)}

    @staticmethod
    def _resolve_backup_device(context, backup, backup_device):
        if backup_device is not None:
            return (backup_device.snapshot if backup_device.is_snapshot
                    else backup_device.volume)
        # Backup objects carry the volume's id only.
        return objects.Volume.get_by_id(context, backup.volume_id)

    @classmethod
    def _resolve_requests(cls, context, requests):
        """The requests of ``backup_volumes``, each with its device.

        :param requests: ``[(backup, backup_service, backup_device)]``,
            ``backup_device`` None for the backup's volume
        :returns: ``[(backup, backup_service, backup_device, device)]``,
            ``backup_device`` filled in, ``device`` the volume or snapshot
            whose data the backup holds
        """
        resolved = []
        for backup, service, backup_device in requests:
            if backup_device is None:
                backup_device = objects.BackupDeviceInfo()
                backup_device.volume = objects.Volume.get_by_id(
                    context, backup.volume_id)
            resolved.append((backup, service, backup_device,
                             cls._resolve_backup_device(context, backup,
                                                        backup_device)))
        return resolved

    @staticmethod
    def _device_size_gb(device):
        """Size in GiB of a volume, or of the volume a snapshot is of."""
        if device.obj_name() == 'Snapshot':
            return int(device.volume_size)
        return int(device.size)

    @staticmethod
    def _backup_size_bytes(backup, volume):
        size_gb = backup.size or volume.size
        return int(size_gb) * units.Gi

    # -- leftovers ---------------------------------------------------------

    def do_setup(self, context):
        """The driver's set-up, then :meth:`remove_leftovers`.

        ``do_setup`` runs when cinder-volume starts and when the plugin's
        backup manager starts (``init_host``), so what a killed process
        left is removed at the next start of either service, not at the
        next backup or restore.
        """
        super(DriverOwnedBackupMixin, self).do_setup(context)
        try:
            self.remove_leftovers()
        except Exception:
            LOG.exception('Could not clean up the leftovers of interrupted '
                          'backups and restores; the driver is used all '
                          'the same.')

    def remove_leftovers(self):
        """Remove what killed processes left; drivers add their kinds.

        Only what provably belongs to a process that is gone is removed
        (:mod:`cinder_vmdk_backup.ownership`). The mixin removes staging
        files.
        """
        self.remove_staging_leftovers()

    def remove_staging_leftovers(self):
        """Remove staging files of restores whose process is gone.

        :returns: the paths removed
        """
        return staging_files.remove_leftovers(self.backup_staging_dir())

    def _staging_file(self):
        """A private (0600) staging file, locked and removed on every path.

        The lock is held until the file is removed, through
        :meth:`restore_raw_image`: :meth:`remove_staging_leftovers` of
        another process never takes a file in use.
        """
        return staging_files.staging_file(self.backup_staging_dir())


@contextlib.contextmanager
def tuned_for_raw_data(backup_service):
    """``backup_service`` as driver-owned backups run it.

    Its zlib done by ISA-L (:mod:`.fast_zlib`) and its digests of all-zero
    data taken from a cache (:mod:`.zero_hashing`): what it writes is the
    same, the raw disk costs less to get there.
    """
    with fast_zlib.accelerated(backup_service), \
            zero_hashing.zero_aware_hashing(backup_service):
        yield backup_service
