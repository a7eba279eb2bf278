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

"""Instance groups: all volumes of an instance backed up as one set.

The records are Cinder's own, so that Cinder's tools, quotas and policies
see them; the plugin adds no table:

* an **instance group** is a Cinder generic volume group of the private
  group type ``instance_group_type`` (made on first use); its member
  volumes carry admin metadata (not user-editable) naming the instance,
  their mountpoint and whether they are its boot volume
  (:mod:`.members`). Cinder refuses to delete, migrate or unmanage a
  member volume, as for any group;
* a **backup set** is a Cinder group snapshot of that group. Its per-volume
  snapshot rows stand for the point in time while the data is read and are
  destroyed once the set is complete: a set holds no storage but its
  backups;
* each member **backup** is an ordinary Cinder backup with metadata
  (``instance_group_id``, ``group_snapshot_id``, ``instance_id``,
  ``mountpoint``, ...). A later set is incremental on the earlier one,
  volume by volume; deleting an older set retires the backups a newer set
  still needs (they are deleted with their last dependent), so no set ever
  breaks another (:mod:`.records`).

cinder-api (:mod:`cinder_vmdk_backup.api.contrib.instance_groups`, then
:mod:`.api`) validates, records, locks the group (status ``updating``:
one operation at a time, 409 otherwise) and casts to one cinder-backup
(:mod:`.rpcapi`); the plugin's backup manager runs the set there
(:mod:`.manager`) with the volume drivers it has loaded: one
``backup_volumes(..., all_or_nothing=True)`` call takes one point in time
for all members (one atomic libvirt snapshot of the domain's disks, one
vCenter snapshot of the instance's VM) and feeds each backup. A set is all
or nothing; a cinder-backup killed midway leaves a set in error, cleaned
at its next start.
"""
