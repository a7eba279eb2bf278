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

"""Every configuration option of cinder-vmdk-backup.

All options live here so that ``oslo-config-generator`` (through the
``oslo.config.opts`` entry point and :func:`list_opts`) writes one complete
sample, and so that an operator reading this module sees everything the
plugin can be told.

Volume driver options are read from the backend section named in
``enabled_backends`` (falling back to ``[backend_defaults]``), the way
Cinder's own drivers read theirs; the backup manager's options are read from
``[DEFAULT]`` on the cinder-backup nodes.
"""

import itertools

from oslo_config import cfg

#: Options of the VMware VMDK backup driver (a backend section).
vmdk_backup_opts = [
    cfg.StrOpt('vmware_backup_staging_dir',
               help='Directory for the private, sparse staging file a '
                    'restore writes the backup into before it is encoded '
                    'and uploaded to vCenter. Defaults to vmware_tmp_dir. '
                    'Only the data of the restored volume is staged there; '
                    'a backup never stages data on local disk. It also '
                    'holds a small private record of each NFC lease open, '
                    'so that the next start of the service aborts the '
                    'leases of a killed process.'),
    cfg.IntOpt('vmware_backup_compression_level',
               default=0, min=0, max=9,
               help='Deflate level of the stream-optimized VMDK uploaded '
                    'to vCenter on restore. 0 sends the data uncompressed '
                    '(deflate\'s stored blocks; zeros are still left out): '
                    'no compression here, a plain copy on the ESXi host, '
                    'no compressing pass to find the upload\'s length; '
                    'like VMware\'s own NBD transport, which compresses '
                    'only when asked. Levels 1 (fastest) to 9 send fewer '
                    'bytes for CPU time on both sides (two compressing '
                    'passes here, inflating on the ESXi host): worth it '
                    'where the link to the ESXi hosts\' management '
                    'network is slower than about 1 Gbit/s.'),
    cfg.IntOpt('vmware_backup_compression_threads',
               default=0, min=0,
               help='Number of threads preparing (at levels 1-9 '
                    'compressing) grains of the VMDK uploaded on restore; '
                    '0 means one per CPU.'),
    cfg.IntOpt('vmware_backup_transfer_idle_timeout',
               default=600, min=10,
               help='Seconds a disk export or import may go without moving '
                    'a byte before it is abandoned. There is no limit on '
                    'the total time of a transfer whose data still flows.'),
    cfg.IntOpt('vmware_backup_lease_ready_timeout',
               default=300, min=10,
               help='Seconds to wait for vCenter to make an export or '
                    'import lease ready.'),
    cfg.IntOpt('vmware_backup_export_niceness',
               default=10, min=0, max=19,
               help='How many steps below the service\'s own CPU priority '
                    'the thread that reads and decodes a disk export runs '
                    'during a backup (added to its nice value). Where the '
                    'two compete for the CPU, the backup driver\'s '
                    'compression and hashing, usually the slowest stage of '
                    'a backup, then get the larger share (at 10, about '
                    'ten times the export\'s); the export, read ahead of '
                    'the backup driver, still gets all the CPU that is '
                    'left, so none goes unused. 0 runs it at the '
                    'service\'s own priority.'),
    cfg.BoolOpt('vmware_backup_restore_in_volume_service',
                default=True,
                help='Let cinder-volume create a volume from a backup by '
                     'importing the backup straight into the new backing, '
                     'when this node\'s [DEFAULT] backup_driver is the one '
                     'that made the backup and it can be set up here. '
                     'cinder-volume then reads the backup repository '
                     'itself (the posix directory or NFS share mounted, '
                     'the Swift or S3 credentials set on this node) and '
                     'stages the data in vmware_backup_staging_dir. When '
                     'false, or when that is not possible or fails, '
                     'Cinder\'s own path is taken (an empty volume, then '
                     'a restore through cinder-backup).'),
    cfg.BoolOpt('vmware_backup_restore_streaming',
                default=True,
                help='Restore a backup made by Cinder\'s chunked backup '
                     'drivers onto a VMware volume without staging its '
                     'data in a local file: the chain of backups is '
                     'resolved from their metadata and each object read '
                     'once, in disk order, straight into the VMDK stream. '
                     'When false, or for other backup drivers, the data '
                     'is staged in vmware_backup_staging_dir first.'),
    cfg.ListOpt('vmware_backup_transports',
                default=['hotadd', 'nbd'],
                item_type=cfg.types.String(choices=['hotadd', 'nbd']),
                help='Transports a VMware backup or restore may move the '
                     'disk\'s data with, in the order they are tried. '
                     '"hotadd": this host is a VM of the same vCenter '
                     '(the backup proxy, see vmware_backup_proxy_vm); the '
                     'disk, or a snapshot of it, is added to that VM and '
                     'read or written as a local block device, with '
                     'random access (changed-block tracking then reads '
                     'only what changed). "nbd": an NFC export or import '
                     'lease streams the whole disk. The first transport '
                     'that can serve an operation runs it; the log says '
                     'which ran and, when HotAdd was passed over, why.'),
    cfg.StrOpt('vmware_backup_proxy_vm',
               help='The VM this host is, for the HotAdd transport: its '
                    'name, or its BIOS or instance UUID. Unset: the VM '
                    'whose BIOS UUID is this host\'s '
                    '(/sys/class/dmi/id/product_uuid), when there is one.'),
    cfg.StrOpt('vmware_backup_hotadd_device_dir',
               default='/dev/disk/by-id',
               help='Directory where this host\'s block devices appear '
                    'under a name made of the disk\'s serial (udev\'s '
                    '"wwn-0x<disk UUID>" links). A disk hot-added to the '
                    'proxy VM is found there; disk.EnableUUID must be TRUE '
                    'on the proxy VM so that its guest sees the serials.'),
    cfg.IntOpt('vmware_backup_hotadd_device_timeout',
               default=60,
               min=1,
               help='Seconds to wait for a hot-added disk to appear as a '
                    'block device on this host before the disk is removed '
                    'from the proxy VM again and the next transport is '
                    'tried.'),
    cfg.BoolOpt('vmware_backup_change_tracking',
                default=True,
                help='Enable vSphere changed-block tracking on the volumes\' '
                     'backing VMs (at creation, and on an existing backing '
                     'before its next backup) and record each backup\'s '
                     'changeId: an incremental backup then reads only the '
                     'areas QueryChangedDiskAreas reports as changed since '
                     'its parent. Any doubt (no changeId, tracking reset '
                     'by an extend, a relocation or a restore) reads the '
                     'whole disk, with the reason in the log.'),
    cfg.BoolOpt('vmware_backup_restore_lock',
                default=True,
                help='While a restore writes a volume\'s backing VM, '
                     'disable the vSphere methods that would change it '
                     '(power on, snapshot, reconfigure, relocate, destroy) '
                     'on the backing and on the VMs of the instances the '
                     'volume is attached to, through the '
                     'AuthorizationManager, with the plugin\'s extension as '
                     'their source; they are enabled again when the restore '
                     'ends (when vCenter cannot be reached then, the '
                     'service retries after 2 s and 5 s, then every 60 s '
                     'until it succeeds), and by the next start of the '
                     'service after a restore that was killed. Needs the '
                     'vCenter privileges '
                     'Global.DisableMethods and Global.EnableMethods: a '
                     'restore that cannot take the lock fails before any '
                     'data moves.'),
]

#: Options of the KVM/qcow2 volume driver (a backend section).
qcow2_opts = [
    cfg.StrOpt('qcow2_volumes_dir',
               default='/var/lib/cinder/qcow2',
               help='Directory on a filesystem this host already has '
                    'mounted (local, or a cluster filesystem such as IBM '
                    'Storage Scale/GPFS, CephFS or NFS mounted by the '
                    'operator) where volumes and snapshots are kept as '
                    'qcow2 files.'),
    cfg.StrOpt('qcow2_libvirt_uri',
               default='qemu:///system',
               help='libvirt URI of the hypervisor whose running domains '
                    'may use the volumes. Backups of a volume attached to '
                    'a running domain freeze it online (external snapshot, '
                    'active block commit). Empty: no domain runs on this '
                    'host, every volume is frozen offline with qemu-img.'),
    cfg.StrOpt('qcow2_connection_type',
               default='local',
               choices=['local', 'gpfs', 'nfs'],
               help='driver_volume_type of the connection info: "local" '
                    '(os-brick LocalConnector) or "gpfs" (a file disk on a '
                    'pre-mounted filesystem) give the file path as '
                    'device_path; Nova 34 attaches both as raw. "nfs": '
                    'qcow2_volumes_dir is the NFS export '
                    'qcow2_nfs_export, which the compute hosts mount '
                    '(Nova\'s LibvirtNFSVolumeDriver, the only one of '
                    'Nova\'s that passes format qcow2 to libvirt).'),
    cfg.StrOpt('qcow2_nfs_export',
               help='With qcow2_connection_type = nfs: the NFS export '
                    '("host:/path") that is qcow2_volumes_dir on this '
                    'host, as the compute hosts mount it.'),
    cfg.StrOpt('qcow2_nfs_mount_options',
               help='With qcow2_connection_type = nfs: mount options the '
                    'connection passes to the compute hosts ("options" of '
                    'the connection info, e.g. "-o vers=4.2").'),
    cfg.StrOpt('qcow2_nfs_mount_point_base',
               default='/var/lib/nova/mnt',
               help='With qcow2_connection_type = nfs: Nova\'s [libvirt] '
                    'nfs_mount_point_base on the compute hosts. A running '
                    'domain sees a volume at <base>/<md5 of the export>/'
                    '<file>; the online freeze finds the domain and names '
                    'its overlays by that path.'),
    cfg.StrOpt('qcow2_backup_staging_dir',
               help='Directory for the private sparse staging file of a '
                    'restore and the bounded decode windows of a backup. '
                    'Defaults to .cvb-staging in qcow2_volumes_dir (the '
                    'same filesystem).'),
    cfg.IntOpt('qcow2_backup_decode_window_mb',
               default=64, min=1,
               help='Size in MiB of the temporary window qemu-img decodes '
                    'compressed or encrypted clusters into during a backup '
                    '(plain clusters are read in place).'),
    cfg.IntOpt('qcow2_block_commit_timeout',
               default=600, min=10,
               help='Seconds an active block commit may take to converge '
                    'and pivot before it is aborted (the domain then keeps '
                    'running on the overlay; the merge is retried when the '
                    'driver starts).'),
    cfg.BoolOpt('qcow2_merge_leftovers_at_start',
                default=True,
                help='At start, merge the overlays and remove the temporary '
                     'files that interrupted backups and restores left in '
                     'qcow2_volumes_dir (only the driver\'s own, by name, '
                     'and only when no operation holds their lock).'),
    cfg.BoolOpt('qcow2_dirty_bitmaps',
                default=True,
                help='Leave a persistent dirty bitmap in a volume\'s qcow2 '
                     'image with each backup, named after the backup and '
                     'created at its point in time, so that the next '
                     'incremental backup reads only the areas written '
                     'since. Any doubt about a bitmap (missing, marked '
                     'inconsistent, the volume resized or restored since) '
                     'makes that backup read the whole image, with the '
                     'reason in the log.'),
    cfg.IntOpt('qcow2_dirty_bitmaps_kept',
               default=2, min=1,
               help='How many of the newest backups of a volume keep their '
                    'dirty bitmap in its image. An incremental backup '
                    'whose parent\'s bitmap is gone (the parent is older, '
                    'or was made another way) reads the whole image.'),
]

#: Options of the backup manager (``[DEFAULT]`` of cinder-backup nodes).
backup_manager_opts = [
    cfg.BoolOpt('driver_owned_backup_enabled',
                default=True,
                help='Let the volume driver of a backend that implements '
                     'the driver-owned backup protocol back up and restore '
                     'its volumes inside cinder-backup. When false, '
                     'cinder_vmdk_backup.backup.manager.BackupManager '
                     'behaves exactly like Cinder\'s own manager.'),
    cfg.IntOpt('driver_owned_backup_setup_retry_interval',
               default=300, min=0,
               help='Seconds after which cinder-backup tries again to set '
                    'up the volume driver of a backend that failed to set '
                    'up. Until then, that backend\'s volumes take Cinder\'s '
                    'own backup path.'),
    cfg.IntOpt('driver_owned_backup_read_ahead_mb',
               default=32, min=0,
               help='MiB a driver-owned backup reads from the volume '
                    '(e.g. a vCenter export being decoded) ahead of the '
                    'backup driver, so that reading and the backup '
                    'driver\'s hashing and compression run at the same '
                    'time. Costs up to this much memory per running '
                    'backup (at least one piece of the backup driver\'s '
                    'chunk, pieces being at most 32 MiB), plus the piece '
                    'being read. 0 reads only when the backup driver '
                    'asks.'),
    cfg.BoolOpt('driver_owned_backup_tune_malloc',
                default=True,
                help='On glibc, make cinder-backup give buffers of 1 MiB '
                     'and more back to the system when they are freed, and '
                     'use at most two malloc arenas (what the environment '
                     'variables MALLOC_MMAP_THRESHOLD_=1048576 and '
                     'MALLOC_ARENA_MAX=2 do; those, or GLIBC_TUNABLES, '
                     'when set, win). With glibc\'s defaults, the tens of '
                     'MiB a backup moves at a time stay in the process '
                     'after use: the peak RSS of a 1 GiB backup measured '
                     '530-600 MiB instead of about 320 MiB.'),
    cfg.StrOpt('driver_owned_backup_zlib_implementation',
               default='isal',
               choices=[('isal', 'Intel ISA-L (python-isal), at '
                                 'driver_owned_backup_isal_level'),
                        ('zlib', "Python's zlib at its default level, "
                                 'as Cinder does')],
               help='What compresses and inflates the data of driver-owned '
                    'backups and restores when backup_compression_algorithm '
                    'is zlib (or gzip) and the backup driver is one of '
                    'Cinder\'s chunked drivers (posix, swift, s3, nfs, '
                    '...). Both write standard zlib streams, recorded as '
                    'such, that any Cinder restores. ISA-L compresses 7-15x '
                    'faster than zlib level 6 (log-like text about 20 % '
                    'larger at level 2, random data the same) and inflates '
                    'about twice as fast. Falls back to zlib when isal '
                    'cannot be imported.'),
    cfg.IntOpt('driver_owned_backup_isal_level',
               default=2, min=0, max=3,
               help='ISA-L compression level for '
                    'driver_owned_backup_zlib_implementation = isal. '
                    'Level 3 stores log-like text about 1 % smaller than '
                    'level 2 at half the speed (a third on random data); '
                    'level 0 is the fastest and compresses least.'),
    cfg.BoolOpt('driver_owned_backup_extent_handoff',
                default=True,
                help='Write a driver-owned backup into Cinder\'s chunked '
                     'backup drivers (posix, nfs, swift, s3, gcs) by '
                     'extents: only the areas that may have changed since '
                     'the parent backup are read (those a dirty bitmap or '
                     'changed-block tracking reports), holes are never '
                     'read, objects are at most '
                     'driver_owned_backup_object_mb, and the list of '
                     'digests streams instead of being held in memory. The '
                     'objects, metadata and sha256 file are in Cinder\'s '
                     'own format: any Cinder restores them. When false, '
                     'or for other backup drivers, the whole volume is '
                     'streamed through the backup driver\'s own backup().'),
    cfg.IntOpt('driver_owned_backup_object_mb',
               default=32, min=1,
               help='Largest object, in MiB of data before compression, '
                    'that the extent hand-off writes (rounded down to a '
                    'multiple of the hash block). It bounds the memory of a '
                    'backup and of any restore of it, whatever '
                    'backup_file_size or the driver\'s object size is; '
                    'runs of zeros are written as larger objects of '
                    'compressed zeros.'),
    cfg.IntOpt('driver_owned_backup_hash_block_kb',
               default=1024, min=0,
               help='Size in KiB of the block each SHA-256 digest of a '
                    'full driver-owned backup covers (the "chunk_size" of '
                    'its sha256 file; an incremental keeps its parent\'s). '
                    'Cinder\'s drivers use 32 KiB: one digest per 32 KiB '
                    'is about 2.3 GB of digests per TiB, rewritten with '
                    'every incremental. Larger blocks keep that list '
                    'small; Cinder restores such backups as any other, '
                    'but Cinder\'s own (non driver-owned) incremental on '
                    'top of one refuses with "Hash block size has '
                    'changed". 0 uses the backup driver\'s own size. Must '
                    'be a multiple of 4 KiB.'),
]

#: Options of instance-group backups (cinder-api and cinder-backup), in
#: ``[instance_groups]``.
instance_group_opts = [
    cfg.IntOpt('sync_timeout',
               default=3600, min=1,
               help='Seconds a synchronous instance-group request (backup, '
                    'restore, restore to new volumes, delete of a backup '
                    'set) waits in cinder-api for the operation to end. '
                    'When it has not ended by then the answer says it is '
                    'still running; the operation goes on and its outcome '
                    'shows in the list of backup sets.'),
    cfg.FloatOpt('poll_interval',
                 default=1.0, min=0.05,
                 help='Seconds between two reads of the database while a '
                      'synchronous instance-group request waits.'),
    cfg.IntOpt('power_state_timeout',
               default=60, min=1,
               help='Seconds cinder-api waits for cinder-backup to say '
                    'whether an instance is shut down before a restore.'),
    cfg.IntOpt('restore_new_timeout',
               default=3600, min=1,
               help='Seconds cinder-backup waits for the new volumes of a '
                    'restore to new volumes to become available before it '
                    'gives up (and boots no server).'),
]

#: Checks of what a driver-owned restore writes (cinder-backup), in
#: ``[DEFAULT]``.
restore_check_opts = [
    cfg.BoolOpt('driver_owned_restore_check_digests',
                default=True,
                help='Check every block a driver-owned restore writes '
                     'against the SHA-256 list Cinder stored with the '
                     'backup, and fail the restore (target volume in '
                     'error, naming the damaged region) on a mismatch. '
                     'Cinder\'s own restore never reads that list: a '
                     'flipped byte in a backup object would otherwise be '
                     'restored silently.'),
]

#: Options of backup verification (cinder-backup), in
#: ``[backup_verification]``.
verification_opts = [
    cfg.StrOpt('scratch_dir',
               help='Directory of the scratch files a deep verification '
                    'restores a backup into before comparing it (files '
                    '0600, removed afterwards). Default: the backup '
                    'service\'s state_path/verification.'),
]

#: Options of backup plans (cinder-api and cinder-backup), in
#: ``[backup_plans]``.
plan_opts = [
    cfg.StrOpt('connection',
               secret=True,
               help='SQLAlchemy URL of the database holding backup plans '
                    'and their runs. Default: Cinder\'s own '
                    '[database] connection (the plugin\'s tables are '
                    'prefixed cvb_ and versioned apart from Cinder\'s). '
                    'Create or upgrade them with '
                    '"cinder-vmdk-backup-manage db sync".'),
    cfg.IntOpt('tick_interval',
               default=20, min=1,
               help='Seconds between two looks of each cinder-backup '
                    'service for due backup plans.'),
]

_OPT_GROUPS = (
    ('backend_defaults', vmdk_backup_opts),
    ('DEFAULT', backup_manager_opts),
    ('backend_defaults', qcow2_opts),
    ('instance_groups', instance_group_opts),
    ('DEFAULT', restore_check_opts),
    ('backup_verification', verification_opts),
    ('backup_plans', plan_opts),
)


def list_opts():
    """Return the plugin's options for oslo-config-generator.

    :returns: a list of ``(group name, [options])`` tuples
    """
    grouped = {}
    for group, opts in _OPT_GROUPS:
        grouped.setdefault(group, []).append(opts)
    return [(group, list(itertools.chain(*lists)))
            for group, lists in grouped.items()]
