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
                    'a backup never stages data on local disk.'),
    cfg.IntOpt('vmware_backup_compression_level',
               default=1, min=1, max=9,
               help='Deflate level of the stream-optimized VMDK uploaded '
                    'to vCenter on restore. 1 is fastest; higher levels '
                    'trade CPU time for fewer bytes on the network.'),
    cfg.IntOpt('vmware_backup_compression_threads',
               default=0, min=0,
               help='Number of threads compressing grains of the VMDK '
                    'uploaded on restore; 0 means one per CPU.'),
    cfg.IntOpt('vmware_backup_transfer_idle_timeout',
               default=600, min=10,
               help='Seconds a disk export or import may go without moving '
                    'a byte before it is abandoned. There is no limit on '
                    'the total time of a transfer whose data still flows.'),
    cfg.IntOpt('vmware_backup_lease_ready_timeout',
               default=300, min=10,
               help='Seconds to wait for vCenter to make an export or '
                    'import lease ready.'),
    cfg.BoolOpt('vmware_backup_restore_in_volume_service',
                default=True,
                help='Let cinder-volume create a volume from a backup by '
                     'importing the backup straight into the new backing, '
                     'when this node\'s [DEFAULT] backup_driver is the one '
                     'that made the backup and it can be set up here. When '
                     'false, or when that is not possible or fails, '
                     'Cinder\'s own path is taken (an empty volume, then '
                     'a restore through cinder-backup).'),
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
]

_OPT_GROUPS = (
    ('backend_defaults', vmdk_backup_opts),
    ('DEFAULT', backup_manager_opts),
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
