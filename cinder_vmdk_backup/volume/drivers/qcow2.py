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

"""KVM/qcow2 companion volume driver: snapshot, retain, merge.

Volumes and snapshots are qcow2 files in ``qcow2_volumes_dir``, a
filesystem this host already has mounted. qemu-img does everything to the
files (the driver never parses qcow2 itself) and libvirt-python everything
to running domains. A domain may see a volume at another path than the
local one (``qcow2_connection_type = nfs``: Nova's mount point of the
export); :mod:`cinder_vmdk_backup.kvm.paths` maps between the two.

Backup is driver-owned (:mod:`cinder_vmdk_backup.backup.driver_owned`) and
holds the raw guest data: freeze the image under a fresh overlay (offline
with qemu-img; online, for a volume a running domain on this host uses,
with one atomic disk-only external snapshot per domain), stream the frozen
image's data without reading its holes, merge the overlay back (qemu-img
commit; online an active block commit with pivot, the guest never stops).
Restore writes a new image beside the volume's and swaps it in by rename
(a shut-off domain defined on the volume's path then runs on the restored
data); it is refused while a running domain uses the volume. Each backup
of a volume leaves a persistent dirty bitmap in its image, created at the
backup's point in time, so that the next incremental reads only what was
written since (:mod:`cinder_vmdk_backup.kvm.changes` says when that is in
doubt and everything is read). Several
volumes can be backed up from one point in time, all or nothing
(:meth:`Qcow2VolumeDriver.backup_volumes`), and the power state of the
instance using them asked of libvirt.
"""

import contextlib
import os
import shutil

from cinder import exception
from cinder.i18n import _
from cinder.image import image_utils
from cinder import objects
from cinder.volume import driver
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import timeutils
from oslo_utils import units

from cinder_vmdk_backup.backup import driver_owned
from cinder_vmdk_backup.backup import throttle
from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.kvm import bitmaps
from cinder_vmdk_backup.kvm import changes
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import leftovers
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import paths as kvm_paths
from cinder_vmdk_backup.kvm import qemu_img
from cinder_vmdk_backup.kvm import raw_reader
from cinder_vmdk_backup import opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.backup_manager_opts)


class Qcow2DriverError(exception.VolumeBackendAPIException):
    message = _("qcow2 volume driver: %(reason)s")


@contextlib.contextmanager
def _translated():
    """Turn the helpers' errors into Cinder's, keeping their message."""
    try:
        yield
    except errors.KvmError as exc:
        raise Qcow2DriverError(reason=str(exc)) from exc


class Qcow2VolumeDriver(driver_owned.DriverOwnedBackupMixin,
                        driver.VolumeDriver):
    """Volumes as qcow2 files, backups by snapshot, retain and merge."""

    VERSION = '1.0.0'
    CI_WIKI_NAME = 'cinder-vmdk-backup'
    #: Seconds an all-or-nothing set waits for a busy member's lock: a
    #: member busy with another backup or restore is usually busy for
    #: longer, and the whole set fails anyway.
    GROUP_LOCK_TIMEOUT = 10
    #: Seconds the bitmaps' upkeep after a backup waits for the image's
    #: lock (the backup's own merge released it just before); skipped
    #: after that, done at a later backup.
    BITMAP_LOCK_TIMEOUT = 10

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.configuration:
            self.configuration.append_config_values(opts.qcow2_opts)
        self._frozen_ahead = {}
        self.leftovers_report = ([], [])

    @staticmethod
    def get_driver_options():
        return opts.qcow2_opts

    # -- set-up ---------------------------------------------------------------

    @property
    def _dir(self):
        return self.configuration.qcow2_volumes_dir

    def do_setup(self, context):
        if not os.path.isdir(self._dir):
            raise Qcow2DriverError(reason=_(
                'qcow2_volumes_dir %s is not a directory') % self._dir)
        # Then remove_leftovers() (DriverOwnedBackupMixin.do_setup).
        if (self.configuration.qcow2_connection_type == 'nfs' and
                not self.configuration.qcow2_nfs_export):
            raise Qcow2DriverError(reason=_(
                'qcow2_connection_type nfs needs qcow2_nfs_export (the '
                'export that is qcow2_volumes_dir, as compute hosts mount '
                'it)'))
        super().do_setup(context)

    def remove_leftovers(self):
        """Staging files, and overlays, frozen and restored images.

        Each only when no operation holds its lock (:mod:`.kvm.leftovers`
        for the images: the lock of the image, held from freeze to merge by
        whichever process on whichever host does it).
        """
        super().remove_leftovers()
        if self.configuration.qcow2_merge_leftovers_at_start:
            self.clean_leftovers()

    def check_for_setup_error(self):
        if not os.access(self._dir, os.W_OK | os.X_OK):
            raise Qcow2DriverError(reason=_(
                'qcow2_volumes_dir %s is not writable') % self._dir)
        if not shutil.which(qemu_img.QEMU_IMG):
            raise Qcow2DriverError(reason=_('qemu-img is not installed'))
        with self._libvirt():
            pass  # the configured libvirt answers

    def clean_leftovers(self):
        """Merge or remove what interrupted operations left behind.

        :returns: ``(done, failed)`` lists of lines, also kept in
            :attr:`leftovers_report`
        """
        with self._libvirt() as conn:
            report = leftovers.clean(
                self._dir, conn,
                commit_timeout=self.configuration.qcow2_block_commit_timeout,
                path_map=self._path_map)
        self.leftovers_report = report
        return report

    @contextlib.contextmanager
    def _libvirt(self):
        uri = self.configuration.qcow2_libvirt_uri
        if not uri:
            yield None
            return
        with _translated():
            conn = domains.connect(uri)
        try:
            yield conn
        finally:
            conn.close()

    # -- paths ----------------------------------------------------------------

    @property
    def _path_map(self):
        """Where the domains see the volumes (:mod:`.kvm.paths`).

        With ``qcow2_connection_type = nfs`` at Nova's mount point of the
        export, else at their local paths.
        """
        return kvm_paths.PathMap.from_configuration(self.configuration)

    def local_path(self, volume):
        return os.path.join(self._dir, volume.name)

    def _snapshot_path(self, snapshot):
        return os.path.join(self._dir, snapshot.name)

    # -- volumes and snapshots ------------------------------------------------

    def create_volume(self, volume):
        with _translated():
            qemu_img.create(self.local_path(volume), volume.size * units.Gi)

    def delete_volume(self, volume):
        path = self.local_path(volume)
        with _translated(), naming.image_lock(path):
            with self._libvirt() as conn:
                self._refuse_if_running(conn, volume, path, _('delete'),
                                        self._path_map)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(naming.lock_path(path))

    def extend_volume(self, volume, new_size):
        path = self.local_path(volume)
        size = int(new_size) * units.Gi
        with _translated(), self._libvirt() as conn:
            uses = (domains.users(conn, [path], path_map=self._path_map)
                    .get(path) if conn else None)
            if uses:
                use = uses[0]
                try:
                    use.domain.blockResize(
                        use.target, size,
                        domains.libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                except domains.libvirt.libvirtError as exc:
                    raise Qcow2DriverError(reason=_(
                        'Growing %(path)s in domain %(dom)s failed: %(exc)s')
                        % {'path': path, 'dom': use.domain_name, 'exc': exc})
            else:
                qemu_img.resize(path, size)

    def create_snapshot(self, snapshot):
        source = self.local_path(snapshot.volume)
        with _translated(), self._frozen(source) as frozen:
            qemu_img.convert(frozen.read_path, self._snapshot_path(snapshot),
                             'qcow2')

    def delete_snapshot(self, snapshot):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._snapshot_path(snapshot))

    def create_volume_from_snapshot(self, volume, snapshot):
        self._copy_image(self._snapshot_path(snapshot), volume)

    def get_backup_device(self, context, backup):
        """The volume itself, in use or not; a snapshot as Cinder does.

        Cinder backs up an in-use volume by cloning it first (here a full
        copy of the image) and reading the clone. A driver-owned backup
        needs no clone: it freezes the volume's own image at one point in
        time (online through libvirt while a domain runs it), and only the
        volume's own image carries the dirty bitmaps that let an
        incremental read just the changes. Cinder's path is kept when
        driver-owned backups are switched off
        (``driver_owned_backup_enabled``), since Cinder's own backup would
        then read an image the guest is writing.
        """
        if backup.snapshot_id or not CONF.driver_owned_backup_enabled:
            return super().get_backup_device(context, backup)
        return objects.Volume.get_by_id(context, backup.volume_id), False

    def create_cloned_volume(self, volume, src_vref):
        with _translated(), self._frozen(self.local_path(src_vref)) as frozen:
            self._copy_image(frozen.read_path, volume)

    def _copy_image(self, source, volume):
        dest = self.local_path(volume)
        with _translated():
            try:
                qemu_img.convert(source, dest, 'qcow2')
                if qemu_img.virtual_size(dest) < volume.size * units.Gi:
                    qemu_img.resize(dest, volume.size * units.Gi)
            except errors.KvmError:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dest)
                raise

    @contextlib.contextmanager
    def _frozen(self, path, bitmap=None):
        """Freeze ``path``; with ``bitmap``, create it at the freeze.

        When the freeze fails (a merge back whose domain went away, the
        server deleted during the backup), what it left is merged at once
        (:meth:`_merge_left_overlays`).
        """
        kwargs = {} if bitmap is None else {'bitmap': bitmap}
        try:
            with self._libvirt() as conn:
                with freezer.frozen(path, conn, self._commit_timeout,
                                    path_map=self._path_map,
                                    **kwargs) as frozen:
                    yield frozen
        except Exception:
            self._merge_left_overlays([path])
            raise

    @property
    def _commit_timeout(self):
        return self.configuration.qcow2_block_commit_timeout

    # -- export and attach ----------------------------------------------------

    def ensure_export(self, context, volume):
        pass

    def create_export(self, context, volume, connector):
        pass

    def remove_export(self, context, volume):
        pass

    def initialize_connection(self, volume, connector):
        """Connection info of the volume's qcow2 file, ``format`` qcow2.

        ``local`` and ``gpfs``: the file's path as ``device_path`` on a
        filesystem the host shares (os-brick's LocalConnector, GPFS). Nova
        34's libvirt driver attaches both as raw, whatever ``format`` says.

        ``nfs``: the export and the file's name, as Cinder's NFS driver
        gives them. Nova's NFS volume driver mounts the export (once per
        compute host) and hands libvirt the file with the connection's
        ``format``: the one way Nova attaches a qcow2 file as qcow2.
        """
        data = {'name': volume.name,
                'format': 'qcow2',
                'access_mode': 'rw'}
        kind = self.configuration.qcow2_connection_type
        if kind == 'nfs':
            data['export'] = self.configuration.qcow2_nfs_export
            data['options'] = self.configuration.qcow2_nfs_mount_options
        else:
            data['device_path'] = self.local_path(volume)
        return {'driver_volume_type': kind, 'data': data}

    def terminate_connection(self, volume, connector, **kwargs):
        pass

    # -- images ---------------------------------------------------------------

    def copy_image_to_volume(self, context, volume, image_service, image_id,
                             disable_sparse=False):
        path = self.local_path(volume)
        image_utils.fetch_to_volume_format(
            context, image_service, image_id, path, 'qcow2',
            self.configuration.volume_dd_blocksize, size=volume.size,
            run_as_root=False)
        with _translated():
            if qemu_img.virtual_size(path) < volume.size * units.Gi:
                qemu_img.resize(path, volume.size * units.Gi)

    def copy_volume_to_image(self, context, volume, image_service,
                             image_meta):
        with _translated(), self._frozen(self.local_path(volume)) as frozen:
            image_utils.upload_volume(context, image_service, image_meta,
                                      frozen.read_path,
                                      volume_format='qcow2',
                                      run_as_root=False)

    # -- stats ----------------------------------------------------------------

    def _update_volume_stats(self):
        fs = os.statvfs(self._dir)
        backend = (self.configuration.safe_get('volume_backend_name')
                   or 'qcow2')
        self._stats = {
            'volume_backend_name': backend,
            'vendor_name': 'Open Source',
            'driver_version': self.VERSION,
            'storage_protocol': 'file',
            'total_capacity_gb': fs.f_blocks * fs.f_frsize / units.Gi,
            'free_capacity_gb': fs.f_bavail * fs.f_frsize / units.Gi,
            'reserved_percentage':
                self.configuration.safe_get('reserved_percentage') or 0,
            'thin_provisioning_support': True,
            'multiattach': False,
        }

    def get_volume_stats(self, refresh=False):
        if refresh or not self._stats:
            self._update_volume_stats()
        return self._stats

    # -- driver-owned backup --------------------------------------------------

    def backup_staging_dir(self):
        return (self.configuration.qcow2_backup_staging_dir
                or os.path.join(self._dir, '.cvb-staging'))

    def get_disk_profile(self, context, device):
        """The image's cluster size, which a restore's new image gets."""
        path, _length = self._device_image(device)
        with _translated():
            data = qemu_img.info(path)
        return {'cluster_size': int(data.get('cluster-size') or 0)}

    @classmethod
    def _restore_cluster_size(cls, backup):
        """The backed-up image's cluster size, or None (qemu's default).

        None for a backup of another backend's volume (no such key) and
        for a value qcow2 cannot have (a power of two, 512 B to 2 MiB).
        """
        try:
            size = int(cls.disk_profile_of(backup).get('cluster_size', 0))
        except (TypeError, ValueError):
            return None
        if 512 <= size <= 2 * units.Mi and size & (size - 1) == 0:
            return size
        return None

    def _device_image(self, device):
        """Return ``(image path, bytes to stream)`` of a volume/snapshot."""
        if hasattr(device, 'volume_size'):  # a Snapshot object
            return self._snapshot_path(device), device.volume_size * units.Gi
        return self.local_path(device), device.size * units.Gi

    @contextlib.contextmanager
    def open_backup_source(self, context, backup, device):
        """The device's guest data, raw; a volume is frozen meanwhile.

        A snapshot file never changes and is read as it is. A volume is
        frozen (unless :meth:`backup_volumes` froze it already with
        others) and merged back when the stream is closed; its image gets
        the backup's dirty bitmap at the freeze (``qcow2_dirty_bitmaps``),
        and the source's ``changed_ranges(parent)`` reads the parent's
        (:class:`~cinder_vmdk_backup.kvm.changes.Tracker`). After the
        merge, a failed backup's bitmap is removed, a successful one's
        bitmaps are pruned (:meth:`_prune_bitmaps`).
        """
        path, length = self._device_image(device)
        window = self.configuration.qcow2_backup_decode_window_mb * units.Mi
        staging = self.backup_staging_dir()
        os.makedirs(staging, mode=0o700, exist_ok=True)
        of_volume = not hasattr(device, 'volume_size')  # not a Snapshot
        tracking = bool(self.configuration.qcow2_dirty_bitmaps)
        # Not for a temporary copy of the backup's volume either.
        tracked = (of_volume and backup is not None
                   and device.id == backup.volume_id)
        bitmap = (bitmaps.name_for(backup.id) if tracked and tracking
                  else None)
        with _translated(), contextlib.ExitStack() as stack:
            if of_volume:
                # Entered first, left last: after the merge.
                if tracked:
                    stack.enter_context(self._bitmap_upkeep(
                        context, backup, path, bitmap))
                frozen = self._frozen_ahead.pop(path, None)
                if frozen is None:
                    frozen = stack.enter_context(self._frozen(path, bitmap))
                else:
                    stack.enter_context(_merging(frozen))
                # A backup plan's cap holds for the merge too.
                frozen.bandwidth = throttle.rate_of(backup)
                read_path = frozen.read_path
            else:
                read_path = path
            tracker = changes.Tracker(read_path, backup, length, None,
                                      enabled=tracking,
                                      of_snapshot=not tracked)
            reader = raw_reader.RawImageReader(read_path, staging, length,
                                               window, changes=tracker)
            tracker.image_size = reader.virtual_size
            stack.callback(reader.close)
            yield reader
            LOG.info('Backup %(backup)s read %(read)d bytes of the '
                     '%(length)d of %(path)s.',
                     {'backup': getattr(backup, 'id', None),
                      'read': reader.bytes_read_from_disk,
                      'length': length, 'path': path})

    @contextlib.contextmanager
    def _bitmap_upkeep(self, context, backup, path, bitmap):
        """After the block (the merge included), prune the bitmaps.

        Never fails the backup: a bitmap left behind is pruned at a later
        backup (its backup is then failed, or too old).
        """
        try:
            yield
        except BaseException:
            if bitmap is not None:
                self._prune_bitmaps(context, backup.volume_id, path,
                                    failed=backup.id)
            raise
        if bitmap is not None:
            self._prune_bitmaps(context, backup.volume_id, path,
                                new=backup.id)
        else:
            self._prune_bitmaps(context, backup.volume_id, path, keep=())

    def _prune_bitmaps(self, context, volume_id, path, new=None,
                       failed=None, keep=None):
        """Keep the bitmaps of the newest live backups, remove the others.

        ``qcow2_dirty_bitmaps_kept`` of them, ``new`` (the backup that
        succeeded) included, ``failed`` (the one that failed) not
        (:func:`~cinder_vmdk_backup.kvm.changes.bitmaps_to_keep`); or
        exactly ``keep``.
        """
        try:
            if keep is None:
                keep = changes.bitmaps_to_keep(
                    context, volume_id,
                    self.configuration.qcow2_dirty_bitmaps_kept,
                    new_backup_id=new, failed_backup_id=failed)
            with self._libvirt() as conn:
                gone = bitmaps.prune(path, keep, conn=conn,
                                     path_map=self._path_map)
        except Exception as exc:
            LOG.warning('Could not remove old dirty bitmaps of %(path)s '
                        '(done at a later backup): %(exc)s',
                        {'path': path, 'exc': exc})
            return
        if gone:
            LOG.info('Removed the dirty bitmap(s) %(gone)s of %(path)s.',
                     {'gone': ', '.join(gone), 'path': path})

    def backup_volumes(self, context, requests, all_or_nothing=False,
                       facts=None):
        """Back up several volumes from one point in time.

        All of them are frozen first, as close together as possible (one
        atomic snapshot per running domain, quiesced through the guest
        agent when one answers), then each is retained and merged. A
        volume whose freeze failed is neither retained nor merged; the
        others go on, unless ``all_or_nothing``.

        :param requests: ``[(backup, backup_service, backup_device)]``,
            ``backup_device`` may be None (the backup's volume)
        :param all_or_nothing: when any volume cannot be frozen, none is
            (those frozen are merged back), nothing is retained and
            :class:`~cinder_vmdk_backup.exception.GroupFreezeError` names
            the volumes and why
        :param facts: a dict filled with ``consistency`` (``quiesced``,
            ``crash-consistent`` or ``not-running``), ``pause_ms`` (how
            long the snapshot held the guest's disks, when a running
            domain was snapshotted) and ``frozen_at`` (UTC datetime)
        :returns: ``{backup.id: the backup service's result, or the
            exception that failed that backup}``
        """
        facts = {} if facts is None else facts
        devices = self._resolve_requests(context, requests)
        owners = {self.local_path(device): device.id
                  for _b, _s, _d, device in devices
                  if not hasattr(device, 'volume_size')}
        paths = list(owners)
        marks = {}
        if self.configuration.qcow2_dirty_bitmaps:
            marks = {self.local_path(device): bitmaps.name_for(backup.id)
                     for backup, _s, _d, device in devices
                     if not hasattr(device, 'volume_size')
                     and device.id == backup.volume_id}
        kwargs = {'bitmaps': marks} if marks else {}
        with self._libvirt() as conn:
            try:
                frozen = freezer.freeze_all(
                    paths, conn, self._commit_timeout,
                    lock_timeout=(self.GROUP_LOCK_TIMEOUT if all_or_nothing
                                  else 60),
                    all_or_nothing=all_or_nothing, facts=facts,
                    path_map=self._path_map, **kwargs)
            except errors.GroupFreezeFailed as exc:
                # (Undoing the freeze removed the bitmaps it made; a
                # domain gone during the snapshot may have left overlays.)
                self._merge_left_overlays(paths)
                raise cvb_exception.GroupFreezeError(
                    reason=_group_freeze_reason(exc, owners)) from exc
        facts.setdefault('frozen_at', timeutils.utcnow(with_timezone=True))
        failed = {path: result for path, result in frozen.items()
                  if isinstance(result, Exception)}
        self._frozen_ahead.update({path: result for path, result
                                   in frozen.items() if path not in failed})
        results = {}
        try:
            for backup, service, dev, device in devices:
                path = self._device_image(device)[0]
                if path in failed:
                    exc = failed[path]
                    results[backup.id] = (
                        Qcow2DriverError(reason=str(exc))
                        if isinstance(exc, errors.KvmError) else exc)
                    continue
                try:
                    results[backup.id] = self.backup_volume(
                        context, backup, service, backup_device=dev)
                except Exception as exc:
                    LOG.error('Backup %(backup)s of %(path)s failed: '
                              '%(exc)s', {'backup': backup.id,
                                          'path': path, 'exc': exc})
                    results[backup.id] = exc
        finally:
            unused = {}
            for path in paths:
                left = self._frozen_ahead.pop(path, None)
                if left is not None:
                    with contextlib.suppress(errors.KvmError):
                        left.merge()
                    if path in marks:
                        unused[path] = marks[path]
            self._drop_bitmaps(context, devices, unused)
            self._merge_left_overlays(paths)
        return results

    def _merge_left_overlays(self, paths):
        """Merge at once what a failed merge of these images left.

        A merge back fails when the domain goes away while it runs (its
        server deleted during a backup): the overlay, which holds the
        guest's writes since the freeze, stays beside the image, and the
        volume's file lacks them. The leftover cleaner, otherwise run when
        the driver starts, commits it now (offline when no domain runs
        it); the images' locks are free again here.
        """
        names = {os.path.basename(path) for path in paths}
        left = sorted(name for name in os.listdir(self._dir)
                      if (naming.parse(name) or (None, ))[0] in names)
        if not left:
            return
        LOG.warning('Merging back %s failed; merging the leftovers now.',
                    ', '.join(left))
        try:
            _done, failed = self.clean_leftovers()
        except Exception:
            LOG.exception('Could not merge the leftovers %s; the driver '
                          'merges them when it starts.', ', '.join(left))
            return
        if failed:
            LOG.error('Could not merge the leftovers (%s); the driver '
                      'merges them when it starts.', '; '.join(failed))

    def _drop_bitmaps(self, context, devices, marks):
        """Remove the bitmaps of backups that did not happen.

        (A freeze that failed removed its own.)

        :param marks: ``{path: bitmap name}``
        """
        for backup, _s, _d, device in devices:
            path = self._device_image(device)[0]
            if path in marks:
                self._prune_bitmaps(context, backup.volume_id, path,
                                    failed=backup.id)

    def instance_power_state(self, context, instance_id, volumes):
        """Whether the instance using ``volumes`` runs, as libvirt says.

        Nova's libvirt driver gives a domain its instance's UUID: that
        domain answers when this host's libvirt has it. Else the domains
        (running or defined) whose disks are the volumes' images answer:
        ``running`` when one of them runs.

        :returns: ``(state, who)``, state ``running``, ``shutoff`` or
            ``unknown``; who names the domain(s) that answered
        """
        with _translated(), self._libvirt() as conn:
            if conn is None:
                return 'unknown', _('no libvirt connection '
                                    '(qcow2_libvirt_uri is empty)')
            domain = _domain_by_uuid(conn, instance_id)
            if domain is not None:
                return (domains.power_state(domain),
                        'libvirt domain %s' % domain.name())
            paths = [self.local_path(v) for v in volumes]
            uses = domains.users(conn, paths, active_only=False,
                                 path_map=self._path_map)
            found = {}
            for use in (u for us in uses.values() for u in us):
                found[use.domain.UUIDString()] = use.domain
            if not found:
                return 'unknown', _('no libvirt domain named %(id)s or '
                                    'using volume(s) %(vols)s') % {
                    'id': instance_id,
                    'vols': ', '.join(v.id for v in volumes)}
            states = {}
            for domain in found.values():
                states.setdefault(domains.power_state(domain), []).append(
                    domain.name())
            state = 'running' if 'running' in states else 'shutoff'
            names = sorted(states[state])
            return state, 'libvirt domain%s %s' % (
                's' if len(names) > 1 else '', ', '.join(names))

    def restore_raw_image(self, context, backup, volume, image_path):
        """Write a new image beside the volume's, swap it in by rename.

        The new image has the backed-up image's cluster size (recorded in
        the backup's disk profile), else qemu-img's default.

        :raises InvalidVolume: a running domain uses the volume
        """
        path = self.local_path(volume)
        size = max(volume.size * units.Gi, os.path.getsize(image_path))
        with _translated(), naming.image_lock(path):
            with self._libvirt() as conn:
                self._refuse_if_running(conn, volume, path, _('restore'),
                                        self._path_map)
            new = naming.transient_path(path, naming.RESTORE,
                                        naming.new_token())
            try:
                qemu_img.convert(image_path, new, 'raw',
                                 cluster_size=self._restore_cluster_size(
                                     backup))
                if qemu_img.virtual_size(new) < size:
                    qemu_img.resize(new, size)
                if os.path.exists(path):
                    _same_owner_and_mode(path, new)
                _fsync(new)
                os.rename(new, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(new)
                raise
            naming.fsync_dir(self._dir)
        LOG.info('Restored backup %(backup)s into %(path)s.',
                 {'backup': backup.id, 'path': path})

    @staticmethod
    def _refuse_if_running(conn, volume, path, action, path_map=None):
        if conn is None:
            return
        uses = domains.users(conn, [path], path_map=path_map).get(path)
        if uses:
            names = ', '.join(sorted({u.domain_name for u in uses}))
            raise exception.InvalidVolume(reason=_(
                'Cannot %(action)s volume %(id)s while it is attached to '
                'the running domain(s) %(names)s; shut them down first.')
                % {'action': action, 'id': volume.id, 'names': names})


def _group_freeze_reason(exc, owners):
    """The volumes that could not be frozen, and why, by volume id."""
    def name(path):
        return _('volume %(id)s (%(path)s)') % {'id': owners.get(path, '?'),
                                                'path': path}
    # (Formatted, never added: the services translate lazily, and a lazy
    # message cannot be added to a string.)
    reason = _('%s. No volume of the set was frozen.') % '; '.join(
        '%s: %s' % (name(path), failure)
        for path, failure in sorted(exc.failures.items()))
    if exc.undo_failures:
        reason = _('%(reason)s Merging back %(names)s failed; the driver '
                   'merges them when it starts.') % {
            'reason': reason, 'names': ', '.join(
                name(path) for path in sorted(exc.undo_failures))}
    return reason


def _domain_by_uuid(conn, uuid):
    try:
        return conn.lookupByUUIDString(uuid)
    except domains.libvirt.libvirtError as exc:
        if exc.get_error_code() in (domains.libvirt.VIR_ERR_NO_DOMAIN,
                                    domains.libvirt.VIR_ERR_INVALID_ARG):
            return None
        raise errors.DomainError('Cannot look up libvirt domain %s: %s'
                                 % (uuid, exc))


@contextlib.contextmanager
def _merging(frozen):
    """Merge ``frozen`` after the block, keeping the block's own error."""
    try:
        yield frozen
    except BaseException:
        try:
            frozen.merge()
        except Exception:
            LOG.exception('Merging %s back after a failure failed too.',
                          frozen.path)
        raise
    frozen.merge()


def _same_owner_and_mode(old, new):
    """Give ``new`` the mode and, where allowed, the owner of ``old``.

    A domain defined on the volume's path (shut off, say) opens the
    restored image as it opened the old one: libvirt without
    ``dynamic_ownership`` does not change the file's owner itself.
    """
    st = os.stat(old)
    os.chmod(new, st.st_mode & 0o7777)
    if os.stat(new).st_uid != st.st_uid or os.stat(new).st_gid != st.st_gid:
        try:
            os.chown(new, st.st_uid, st.st_gid)
        except PermissionError:
            LOG.debug('Cannot give %(new)s the owner of %(old)s.',
                      {'new': new, 'old': old})


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
