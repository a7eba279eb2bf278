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

"""The instance-group endpoint of cinder-backup: sets run here.

The plugin's :class:`~cinder_vmdk_backup.backup.manager.BackupManager`
registers :class:`InstanceGroupEndpoint` as an extra RPC endpoint
(namespace ``instance_groups``, version 1.0). It runs a set with the
manager's own pieces: the backend drivers it loaded, the backup service
it builds, Cinder's ``_finish_backup`` (backup available, size, the
parent's count of dependents, notifications), ``restore_backup`` (the
driver-owned restore of one volume) and ``delete_backup`` (store, quota,
row). What is the set's own:

* **one point in time**: every member is handed to its driver in one
  ``backup_volumes(..., all_or_nothing=True, facts=...)`` call;
* **all or nothing**: when any member fails, every member backup of the
  set is removed from the store, its quota given back and its row deleted
  (``fail_reason`` said first); the set is ``error`` and its description
  starts with the reason (``GroupSnapshot`` has no ``fail_reason``);
* **chains kept**: a member backup that a newer backup depends on is
  *retired* instead of deleted, and deleted with its last dependent;
* **the lock**: the group is put back to ``available`` at the end of every
  operation, failed or not.

Every member backup of a set records this host (``backup.host``), which
is how :meth:`InstanceGroupEndpoint.init_host` finds what a killed
process of this host left.
"""

import time

from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.objects import fields
from cinder import quota
from cinder.volume import api as volume_api
from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_utils import timeutils

from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import throttle
from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.group import members as group_members
from cinder_vmdk_backup.group import nova
from cinder_vmdk_backup.group import records
from cinder_vmdk_backup import opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.instance_group_opts, group='instance_groups')

_IN_PROGRESS = (fields.GroupSnapshotStatus.CREATING,
                fields.GroupSnapshotStatus.DELETING)


class SetFailed(exception.CinderException):
    message = _("Backup set %(set)s failed: %(reason)s")


class InstanceGroupEndpoint(object):
    """RPC endpoint of the instance-group operations in cinder-backup.

    :param backup_manager: the plugin's BackupManager (its drivers, backup
        service and Cinder's flow steps are used)
    """

    target = messaging.Target(namespace='instance_groups', version='1.0')

    def __init__(self, backup_manager):
        self.manager = backup_manager

    # -- backup -------------------------------------------------------------

    def backup_set(self, context, group_snapshot_id):
        group_snapshot = objects.GroupSnapshot.get_by_id(context,
                                                         group_snapshot_id)
        backups = records.set_backups(context, group_snapshot_id)
        # What the request decided is on the member backups themselves
        # (a full one has no parent; a backup plan's metadata, its
        # bandwidth cap included, was there from their creation): the
        # driver reads it from them.
        LOG.info('Backup set %(set)s of instance group %(group)s started: '
                 'backups %(backups)s (full: %(full)s; capped: %(capped)s).',
                 {'set': group_snapshot.id, 'group': group_snapshot.group_id,
                  'backups': [b.id for b in backups],
                  'full': [b.id for b in backups if not b.parent_id]
                  or 'none',
                  'capped': ['%s at %s MiB/s' % (b.id, (b.metadata or {})[
                      throttle.METADATA_KEY]) for b in backups
                      if (b.metadata or {}).get(throttle.METADATA_KEY)]
                  or 'none'})
        try:
            self._backup_set(context, group_snapshot, backups)
        except Exception as exc:
            LOG.error('Backup set %(set)s failed: %(exc)s',
                      {'set': group_snapshot.id, 'exc': exc})
            self._fail_set(context, group_snapshot, backups, str(exc))
        finally:
            records.unlock_group(context, group_snapshot.group_id)

    def _driver_of(self, volume):
        driver = self.manager._driver_for(volume)
        if driver is None:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'the backend of volume %s does not back up its own volumes '
                '(driver-owned backup), so no set can take one point in '
                'time for it') % volume.id)
        return driver

    def _backup_set(self, context, group_snapshot, backups):
        if not backups:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'the set has no backup'))
        if not cinder_internals.usable('groups'):
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'this Cinder\'s backup manager is not the one the plugin '
                'was made for (see the log of cinder-backup\'s start)'))
        if not self.manager.is_working():
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'the backup service of this host is down'))
        by_driver = {}
        volumes = {}
        for backup in backups:
            volume = objects.Volume.get_by_id(context, backup.volume_id)
            volumes[backup.id] = volume
            driver = self._driver_of(volume)
            by_driver.setdefault(id(driver), (driver, []))[1].append(backup)
        if len(by_driver) > 1:
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'the members are on several backends; one point in time '
                'needs one'))
        (driver, members), = by_driver.values()
        requests = []
        for backup in backups:
            # What Cinder's create_backup does before the data moves.
            self.manager._notify_about_backup_usage(context, backup,
                                                    'create.start')
            if not backup.availability_zone:
                backup.availability_zone = self.manager.az
            backup.service = self.manager.driver_name
            backup.save()
            device = objects.BackupDeviceInfo()
            device.volume = volumes[backup.id]
            # Outside a claimed operation the manager's service() is the
            # configured backup service itself, as the driver gets it in
            # a single driver-owned backup.
            requests.append((backup, self.manager.service(context), device))
        facts = {}
        results = driver.backup_volumes(context, requests,
                                        all_or_nothing=True, facts=facts)
        failed = {backup_id: result for backup_id, result in results.items()
                  if isinstance(result, Exception)}
        missing = [b.id for b in backups if b.id not in results]
        if failed or missing:
            reasons = ['%s: %s' % (backup_id, exc)
                       for backup_id, exc in failed.items()]
            reasons += ['%s: not backed up' % backup_id
                        for backup_id in missing]
            raise SetFailed(set=group_snapshot.id,
                            reason='; '.join(reasons))
        point_in_time = facts.get('frozen_at') or timeutils.utcnow()
        consistency = facts.get('consistency') or 'crash-consistent'
        for backup in backups:
            backup.data_timestamp = point_in_time
            records.set_metadata(backup, **{
                records.CONSISTENCY_KEY: consistency})
            volume = volumes[backup.id]
            # Cinder's end of a backup (available, size, the parent's
            # dependents, notification); the volume goes back to its
            # previous status here, as _finish_backup would do for a
            # backup without a snapshot.
            self.manager._finish_backup(context, backup, volume,
                                        results[backup.id] or {})
            self._volume_back(context, volume, 'backing-up')
        self._destroy_snapshots(context, group_snapshot)
        group_snapshot.status = fields.GroupSnapshotStatus.AVAILABLE
        group_snapshot.save()
        LOG.info('Backup set %(set)s available (%(consistency)s, %(pause)s '
                 'ms paused).', {'set': group_snapshot.id,
                                 'consistency': consistency,
                                 'pause': facts.get('pause_ms', 0)})

    @staticmethod
    def _volume_back(context, volume, from_status):
        volume.refresh()
        if volume.status == from_status:
            volume.status = volume.previous_status or 'available'
            volume.previous_status = from_status
            volume.save()

    @staticmethod
    def _destroy_snapshots(context, group_snapshot):
        for snapshot in objects.SnapshotList.get_all_for_group_snapshot(
                context, group_snapshot.id):
            snapshot.destroy()

    def _fail_set(self, context, group_snapshot, backups, reason):
        """Remove every member backup of a failed set; the set in error."""
        for backup in backups:
            try:
                self._remove_failed_backup(context, backup, reason)
            except Exception:
                LOG.exception('Could not remove backup %(backup)s of the '
                              'failed set %(set)s.',
                              {'backup': backup.id,
                               'set': group_snapshot.id})
            try:
                volume = objects.Volume.get_by_id(context, backup.volume_id)
                if volume.status == 'backing-up':
                    volume.status = volume.previous_status or 'available'
                    volume.previous_status = 'error_backing-up'
                    volume.save()
            except exception.VolumeNotFound:
                pass
        try:
            self._destroy_snapshots(context, group_snapshot)
        except Exception:
            LOG.exception('Could not remove the snapshot records of set %s.',
                          group_snapshot.id)
        text = _('Failed: %s') % reason
        if group_snapshot.description:
            text += ' | ' + group_snapshot.description
        group_snapshot.description = text[:records.TEXT_LIMIT]
        group_snapshot.status = fields.GroupSnapshotStatus.ERROR
        group_snapshot.save()

    def _remove_failed_backup(self, context, backup, reason):
        """A member backup of a failed set: data, quota and row removed.

        Not Cinder's ``delete_backup``: this backup never counted as its
        parent's dependent (only a finished backup does), which that
        method would discount.
        """
        with backup.as_read_deleted():
            backup.refresh()
        if backup.deleted:
            return
        backup.fail_reason = reason[:records.TEXT_LIMIT]
        backup.status = fields.BackupStatus.ERROR
        backup.save()
        if backup.service:
            self.manager.service(context).delete_backup(backup)
        self._release_quota(context, backup)
        backup.destroy()
        self.manager._notify_about_backup_usage(context, backup,
                                                'delete.end')

    @staticmethod
    def _release_quota(context, backup):
        quotas = quota.QUOTAS
        try:
            reservations = quotas.reserve(
                context, project_id=backup.project_id, backups=-1,
                backup_gigabytes=-(backup.size or 0))
        except Exception:
            LOG.exception('Could not give back the quota of backup %s.',
                          backup.id)
            return
        quotas.commit(context, reservations, project_id=backup.project_id)

    # -- delete -----------------------------------------------------------

    def delete_set(self, context, group_id, group_snapshot_id):
        group_snapshot = objects.GroupSnapshot.get_by_id(context,
                                                         group_snapshot_id)
        try:
            kept = self._delete_set(context, group_snapshot)
            LOG.info('Backup set %(set)s deleted; retired backups kept '
                     'for newer sets: %(kept)s.',
                     {'set': group_snapshot.id, 'kept': kept or 'none'})
        except Exception as exc:
            LOG.exception('Deleting backup set %s failed.',
                          group_snapshot.id)
            group_snapshot.description = (
                _('Delete failed: %s') % exc)[:records.TEXT_LIMIT]
            group_snapshot.status = fields.GroupSnapshotStatus.ERROR
            group_snapshot.save()
        finally:
            records.unlock_group(context, group_id)

    def _delete_set(self, context, group_snapshot):
        kept = []
        for backup in records.set_backups(context, group_snapshot.id):
            if self.delete_or_retire(context, backup):
                kept.append(backup.id)
        self._destroy_snapshots(context, group_snapshot)
        group_snapshot.destroy()
        return kept

    def delete_or_retire(self, context, backup):
        """Delete one member backup, or retire it while others need it.

        :returns: True when it was retired
        """
        children = objects.BackupList.get_all(
            records.admin(context), filters={'parent_id': backup.id})
        if len(children):
            records.set_metadata(backup, **{records.RETIRED_KEY: 'True'})
            backup.display_description = (
                _('Retired: kept for backup %s') % children[0].id)
            backup.save()
            return True
        self.delete_backup_and_retired_parents(context, backup)
        return False

    def delete_backup_and_retired_parents(self, context, backup):
        """Cinder's delete of a backup, then of parents it kept retired.

        The plugin's manager's ``delete_backup`` deletes the retired
        parents (:meth:`delete_retired_parents`), for Cinder's own backup
        delete too.
        """
        backup.status = fields.BackupStatus.DELETING
        backup.host = self.manager.host
        backup.save()
        self.manager.delete_backup(context, backup)

    def delete_retired_parents(self, context, parent_id):
        """Delete retired ancestors that no backup depends on any more."""
        while parent_id:
            try:
                parent = objects.Backup.get_by_id(records.admin(context),
                                                  parent_id)
            except exception.BackupNotFound:
                return
            children = objects.BackupList.get_all(
                records.admin(context), filters={'parent_id': parent_id})
            if not records.is_retired(parent) or len(children):
                return
            LOG.info('Retired backup %s has no dependent left: deleted.',
                     parent.id)
            parent_id = parent.parent_id
            parent.status = fields.BackupStatus.DELETING
            parent.host = self.manager.host
            parent.save()
            # Cinder's delete only: this loop goes up the chain itself.
            self.manager.delete_backup(context, parent,
                                       retired_parents=False)

    # -- restore in place -------------------------------------------------

    def restore_set(self, context, group_id, group_snapshot_id,
                    operation_id):
        backups = records.set_backups(context, group_snapshot_id)
        done = []
        try:
            for backup in backups:
                self._restore_one(context, backup)
                done.append(backup.volume_id)
        except Exception as exc:
            reason = (_('restoring volume %(vol)s failed (its data is '
                        'intact): %(exc)s; volumes already restored: '
                        '%(done)s') %
                      {'vol': backup.volume_id, 'exc': exc,
                       'done': ', '.join(done) or _('none')})
            LOG.error('Restore of set %(set)s: %(reason)s',
                      {'set': group_snapshot_id, 'reason': reason})
            for left in backups:
                left.refresh()
                if left.status == fields.BackupStatus.RESTORING:
                    left.status = fields.BackupStatus.AVAILABLE
                    left.save()
                if left.volume_id not in done:
                    self._restore_status_back(context, left.volume_id)
            records.mark_operation(backups, operation_id, records.ERROR,
                                   self.manager.host, reason=reason)
        else:
            records.mark_operation(backups, operation_id, records.OK,
                                   self.manager.host, reason='')
            LOG.info('Backup set %(set)s restored into volumes %(vols)s.',
                     {'set': group_snapshot_id, 'vols': done})
        finally:
            records.unlock_group(context, group_id)

    def _restore_one(self, context, backup):
        volume = objects.Volume.get_by_id(context, backup.volume_id)
        previous = volume.previous_status or 'available'
        # Cinder's restore (status checks, the driver-owned restore
        # through the manager's _Job, backup back to available); it ends
        # with the volume 'available', which an attached volume is not.
        self.manager.restore_backup(context, backup, volume.id, False)
        volume.refresh()
        if volume.status == fields.VolumeStatus.AVAILABLE:
            volume.status = previous
            volume.previous_status = fields.VolumeStatus.RESTORING_BACKUP
            volume.save()

    @staticmethod
    def _restore_status_back(context, volume_id):
        """A volume whose restore failed or did not run: status as before.

        The drivers change a volume's data only once the restored image is
        complete, so a failed restore leaves the data as it was.
        """
        volume = objects.Volume.get_by_id(context, volume_id)
        if volume.status in (fields.VolumeStatus.RESTORING_BACKUP,
                             fields.VolumeStatus.ERROR_RESTORING):
            volume.status = volume.previous_status or 'available'
            volume.previous_status = fields.VolumeStatus.RESTORING_BACKUP
            volume.save()

    # -- restore to new volumes -------------------------------------------

    def restore_set_new(self, context, group_id, group_snapshot_id,
                        operation_id, volumes, server=None):
        backups = records.set_backups(context, group_snapshot_id)
        api = volume_api.API()
        made = {}
        try:
            for backup in backups:
                wanted = volumes.get(backup.volume_id) or {}
                original = self._original_volume(context, backup)
                volume_type = wanted.get('volume_type') or (
                    original.volume_type_id if original else None)
                if volume_type:
                    volume_type = objects.VolumeType.get_by_name_or_id(
                        context, volume_type)
                name = wanted.get('name') or '%s-restored' % (
                    original.display_name if original and
                    original.display_name else backup.volume_id)
                new = api.create(
                    context, backup.size, name,
                    _('Restored from backup %(backup)s of set %(set)s') %
                    {'backup': backup.id, 'set': group_snapshot_id},
                    backup=backup, volume_type=volume_type,
                    availability_zone=wanted.get('availability_zone'))
                made[backup.id] = new
                records.set_metadata(backup, **{
                    records.NEW_VOLUME_KEY: new.id})
            self._wait_available(context, list(made.values()))
            self._boot_volume_bootable(backups, made)
            if server:
                server_id = nova.boot(context, server, backups, made)
                if server_id:
                    boot = next((b for b in backups if (b.metadata or {}).get(
                        records.BOOT_KEY) == 'True'), backups[0])
                    records.set_metadata(boot, **{
                        records.SERVER_KEY: server_id})
        except Exception as exc:
            LOG.exception('Restore of set %s to new volumes failed.',
                          group_snapshot_id)
            records.mark_operation(
                backups, operation_id, records.ERROR, self.manager.host,
                reason=_('%(exc)s; new volumes made: %(made)s') %
                {'exc': exc, 'made': ', '.join(v.id for v in made.values())
                 or _('none')})
        else:
            records.mark_operation(backups, operation_id, records.OK,
                                   self.manager.host, reason='')
        finally:
            records.unlock_group(context, group_id)

    @staticmethod
    def _boot_volume_bootable(backups, made):
        """Mark the new volume of the set's boot volume bootable.

        Cinder marks a volume restored from a backup bootable only from
        the Glance metadata the backup holds; a boot volume made bootable
        otherwise (``volume create --bootable``, ``volume set``) has none,
        its restored copy is not bootable, and Nova refuses to boot a
        server from it.
        """
        for backup in backups:
            new = made[backup.id]
            if ((backup.metadata or {}).get(records.BOOT_KEY) == 'True' and
                    not new.bootable):
                new.bootable = True
                new.save()

    @staticmethod
    def _original_volume(context, backup):
        try:
            return objects.Volume.get_by_id(context, backup.volume_id)
        except exception.VolumeNotFound:
            return None

    @staticmethod
    def _wait_available(context, volumes):
        deadline = time.monotonic() + CONF.instance_groups.restore_new_timeout
        pending = list(volumes)
        while pending:
            for volume in list(pending):
                volume.refresh()
                if volume.status == 'available':
                    pending.remove(volume)
                elif volume.status.startswith('error'):
                    raise cvb_exception.InstanceGroupInvalid(reason=_(
                        'new volume %(vol)s is %(status)s') %
                        {'vol': volume.id, 'status': volume.status})
            if pending and time.monotonic() > deadline:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'new volumes %s are not available in time') %
                    ', '.join(v.id for v in pending))
            if pending:
                time.sleep(CONF.instance_groups.poll_interval)

    # -- power state --------------------------------------------------------

    def instance_power_state(self, context, instance_id, volume_ids):
        """Whether the instance runs: Nova when reachable, else the driver.

        :returns: ``[state, who]``, state ``running``, ``shutoff`` or
            ``unknown``
        """
        answer = nova.power_state(context, instance_id)
        if answer is not None:
            LOG.info('Nova says instance %(instance)s is %(state)s.',
                     {'instance': instance_id, 'state': answer[0]})
            return list(answer)
        volumes = [objects.Volume.get_by_id(context, vid)
                   for vid in volume_ids]
        driver = self._driver_of(volumes[0]) if volumes else None
        if driver is None or not hasattr(driver, 'instance_power_state'):
            return ['unknown', 'nobody (no Nova, no driver hook)']
        state, who = driver.instance_power_state(context, instance_id,
                                                 volumes)
        LOG.info('Instance %(instance)s is %(state)s, as %(who)s says.',
                 {'instance': instance_id, 'state': state, 'who': who})
        return [state, who]

    # -- start --------------------------------------------------------------

    def init_host(self, context):
        """Finish what a killed cinder-backup of this host left running.

        Runs after Cinder's own clean-up (which put this host's backups
        left ``creating`` in ``error`` and resumed its deletes).
        """
        gtype = group_members.group_type(context, create=False)
        if gtype is None:
            return
        groups = objects.GroupList.get_all(
            context, filters={'group_type_id': gtype['id']})
        for group in groups:
            try:
                self._clean_group(context, group)
            except Exception:
                LOG.exception('Could not clean up instance group %s at '
                              'start.', group.id)

    def _clean_group(self, context, group):
        host = self.manager.host
        mine = False
        for group_snapshot in objects.GroupSnapshotList.get_all_by_group(
                context, group.id):
            if group_snapshot.status not in _IN_PROGRESS:
                continue
            backups = records.set_backups(context, group_snapshot.id)
            if not backups or any(b.host != host for b in backups):
                continue
            mine = True
            reason = _('interrupted by the end of cinder-backup on %s') % (
                host)
            if group_snapshot.status == fields.GroupSnapshotStatus.CREATING:
                LOG.warning('Backup set %(set)s was %(reason)s; its '
                            'backups are removed.',
                            {'set': group_snapshot.id, 'reason': reason})
                self._fail_set(context, group_snapshot, backups, reason)
            else:
                LOG.warning('Deleting backup set %s was interrupted; '
                            'deleting it again.', group_snapshot.id)
                self._delete_set(context, group_snapshot)
        for backup in records.group_backups(context, group.id):
            op, state, op_host = records.operation_of(backup)
            if state == records.RUNNING and op_host == host:
                mine = True
                records.mark_operation(
                    [backup], op, records.ERROR, host,
                    reason=_('interrupted by the end of cinder-backup on %s')
                    % host)
                if backup.status == fields.BackupStatus.RESTORING:
                    backup.status = fields.BackupStatus.AVAILABLE
                    backup.save()
        if mine and group.status == fields.GroupStatus.UPDATING:
            LOG.warning('Instance group %s unlocked (its operation was '
                        'interrupted).', group.id)
            records.unlock_group(context, group.id)
