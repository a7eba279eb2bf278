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

"""An instance group's members, kept in Cinder's own records.

An instance group is a Cinder generic volume group of the group type
``instance_group_type`` (made here on first use). Its members are volumes
whose ``group_id`` is the group's; each carries admin metadata (which only
an admin can change) naming the instance, the volume's mountpoint in it and
whether it is the boot volume. The group's instance is the one its members
name; an instance's group is the instance group whose members name it.
"""

from cinder.db import api as db
from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.objects import fields
from cinder.volume import group_types
from cinder.volume import volume_utils
from oslo_log import log as logging

from cinder_vmdk_backup import exception as cvb_exception

LOG = logging.getLogger(__name__)

GROUP_TYPE_NAME = 'instance_group_type'
GROUP_TYPE_SPEC = 'cinder_vmdk_backup:instance_group'

INSTANCE_KEY = 'instance_group_instance_id'
MOUNTPOINT_KEY = 'instance_group_mountpoint'
BOOT_KEY = 'instance_group_boot'
ADMIN_KEYS = (INSTANCE_KEY, MOUNTPOINT_KEY, BOOT_KEY)

#: Mountpoints of a root disk (Nova's device names).
ROOT_DEVICES = ('/dev/vda', '/dev/sda', '/dev/xvda', '/dev/hda')


def _admin(context):
    return context if context.is_admin else context.elevated()


def group_type(context, create=True):
    """The ``instance_group_type`` group type (dict), made on first use.

    :returns: the group type, or None when it does not exist and
        ``create`` is false
    """
    admin = _admin(context)
    try:
        return group_types.get_group_type_by_name(admin, GROUP_TYPE_NAME)
    except exception.GroupTypeNotFoundByName:
        if not create:
            return None
    try:
        group_types.create(
            admin, GROUP_TYPE_NAME,
            group_specs={GROUP_TYPE_SPEC: '<is> True'}, is_public=False,
            description='Instance groups of cinder-vmdk-backup: the volumes '
                        'of one instance, backed up as one set.')
        LOG.info('Group type %s created.', GROUP_TYPE_NAME)
    except exception.GroupTypeCreateFailed:
        # Another cinder-api made it meanwhile (the name is unique).
        LOG.debug('Group type %s made by another process.', GROUP_TYPE_NAME)
    return group_types.get_group_type_by_name(admin, GROUP_TYPE_NAME)


def is_instance_group(context, group):
    gtype = group_type(context, create=False)
    return gtype is not None and group.group_type_id == gtype['id']


def is_boot(mountpoint, volume):
    """Whether a volume at ``mountpoint`` is its instance's boot volume."""
    if mountpoint:
        return mountpoint in ROOT_DEVICES
    return bool(volume.bootable)


def attached_volumes(context, instance_id):
    """The volumes Cinder has attached to ``instance_id``.

    :returns: ``[(Volume, mountpoint)]`` in mountpoint order; volumes the
        caller cannot see are left out
    """
    attachments = objects.VolumeAttachmentList.get_all_by_instance_uuid(
        _admin(context), instance_id)
    found = {}
    for attachment in attachments:
        if attachment.attach_status != fields.VolumeAttachStatus.ATTACHED:
            continue
        try:
            volume = objects.Volume.get_by_id(context, attachment.volume_id)
        except exception.VolumeNotFound:
            continue
        found[volume.id] = (volume, attachment.mountpoint)
    return sorted(found.values(), key=lambda pair: (pair[1] or '', pair[0].id))


def admin_metadata(context, volume_id):
    return db.volume_admin_metadata_get(_admin(context), volume_id)


def mark(context, volume, instance_id, mountpoint, boot):
    """Record the instance, mountpoint and boot flag on a member volume."""
    db.volume_admin_metadata_update(
        _admin(context), volume.id,
        {INSTANCE_KEY: instance_id, MOUNTPOINT_KEY: mountpoint or '',
         BOOT_KEY: str(bool(boot))}, False)


def unmark(context, volume_id):
    admin = _admin(context)
    present = db.volume_admin_metadata_get(admin, volume_id)
    for key in ADMIN_KEYS:
        if key in present:
            db.volume_admin_metadata_delete(admin, volume_id, key)


def members(context, group):
    """The group's member volumes with what their admin metadata says.

    :returns: ``[{'volume', 'instance_id', 'mountpoint', 'boot'}]`` in
        mountpoint order
    """
    volumes = objects.VolumeList.get_all_by_generic_group(
        _admin(context), group.id)
    result = []
    for volume in volumes:
        meta = admin_metadata(context, volume.id)
        result.append({'volume': volume,
                       'instance_id': meta.get(INSTANCE_KEY),
                       'mountpoint': meta.get(MOUNTPOINT_KEY) or None,
                       'boot': meta.get(BOOT_KEY) == 'True'})
    return sorted(result, key=lambda m: (m['mountpoint'] or '',
                                         m['volume'].id))


def instance_of(context, group, found_members=None):
    """The instance the group's members name, or None (no members)."""
    if found_members is None:
        found_members = members(context, group)
    ids = {m['instance_id'] for m in found_members if m['instance_id']}
    if len(ids) > 1:
        LOG.warning('The members of instance group %(group)s name several '
                    'instances: %(ids)s.',
                    {'group': group.id, 'ids': sorted(ids)})
    return sorted(ids)[0] if ids else None


def instance_groups(context, instance_id=None):
    """Instance groups visible to ``context``, optionally of one instance."""
    gtype = group_type(context, create=False)
    if gtype is None:
        return []
    filters = {'group_type_id': gtype['id']}
    if context.is_admin:
        groups = objects.GroupList.get_all(context, filters=filters)
    else:
        groups = objects.GroupList.get_all_by_project(
            context, context.project_id, filters=filters)
    if instance_id is None:
        return list(groups)
    return [group for group in groups
            if instance_of(context, group) == instance_id]


def _check_members(volumes, group=None):
    """Refuse volumes that cannot be members together.

    :param volumes: ``[(Volume, mountpoint)]``
    """
    for volume, _mountpoint in volumes:
        if volume.group_id and (group is None or volume.group_id != group.id):
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'volume %(vol)s already belongs to group %(group)s') %
                {'vol': volume.id, 'group': volume.group_id})
        if volume.status not in ('available', 'in-use'):
            raise cvb_exception.InstanceGroupInvalid(reason=_(
                'volume %(vol)s is %(status)s, not available or in-use') %
                {'vol': volume.id, 'status': volume.status})
    backends = {volume_utils.extract_host(volume.host, 'backend')
                for volume, _m in volumes}
    if len(backends) > 1:
        # One driver call takes one point in time; several backends
        # would each take their own.
        raise cvb_exception.InstanceGroupInvalid(reason=_(
            'the volumes are on different backends (%s); an instance '
            'group takes one point in time through one backend') %
            ', '.join(sorted(str(b) for b in backends)))


def boot_volume(volumes):
    """The boot volume of ``[(Volume, mountpoint)]``, else the first."""
    for volume, mountpoint in volumes:
        if is_boot(mountpoint, volume):
            return volume
    return volumes[0][0]


def create_group(context, instance_id, name=None, description=None):
    """Make the instance group of ``instance_id`` from its attachments.

    :returns: the new ``objects.Group``
    :raises InstanceGroupInvalid: the instance has no attached volume,
        already has a group, or its volumes cannot be members
    """
    volumes = attached_volumes(context, instance_id)
    if not volumes:
        raise cvb_exception.InstanceGroupInvalid(reason=_(
            'instance %s has no volume attached in Cinder') % instance_id)
    if instance_groups(context, instance_id):
        raise cvb_exception.InstanceGroupInvalid(reason=_(
            'instance %s already has an instance group') % instance_id)
    _check_members(volumes)
    gtype = group_type(context)
    boot = boot_volume(volumes)
    group = objects.Group(
        context=context, user_id=context.user_id,
        project_id=context.project_id,
        name=name or 'instance-%s' % instance_id,
        description=description,
        status=fields.GroupStatus.AVAILABLE,
        group_type_id=gtype['id'],
        volume_type_ids=sorted({v.volume_type_id for v, _m in volumes
                                if v.volume_type_id}),
        host=boot.host, cluster_name=boot.cluster_name,
        availability_zone=boot.availability_zone)
    group.create()
    try:
        for volume, mountpoint in volumes:
            join(context, group, volume, instance_id, mountpoint)
    except Exception:
        for volume, _mountpoint in volumes:
            leave(context, volume)
        group.destroy()
        raise
    LOG.info('Instance group %(group)s of instance %(instance)s made with '
             'volumes %(vols)s.', {'group': group.id, 'instance': instance_id,
                                   'vols': [v.id for v, _m in volumes]})
    return group


def join(context, group, volume, instance_id, mountpoint):
    volume.group_id = group.id
    volume.save()
    mark(context, volume, instance_id, mountpoint,
         is_boot(mountpoint, volume))


def leave(context, volume):
    volume.group_id = None
    volume.save()
    unmark(context, volume.id)


def update_members(context, group, instance_id, add_volumes=None,
                   remove_volumes=None):
    """Change the members; neither list given: follow the attachments.

    :returns: ``(added ids, removed ids)``
    """
    current = {m['volume'].id: m for m in members(context, group)}
    attached = {volume.id: (volume, mountpoint) for volume, mountpoint
                in attached_volumes(context, instance_id)}
    if add_volumes is None and remove_volumes is None:
        add_ids = [vid for vid in attached if vid not in current]
        remove_ids = [vid for vid in current if vid not in attached]
    else:
        add_ids = [vid for vid in add_volumes or () if vid not in current]
        remove_ids = [vid for vid in remove_volumes or ()]
        for vid in add_ids:
            if vid not in attached:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'volume %(vol)s is not attached to instance '
                    '%(instance)s') % {'vol': vid, 'instance': instance_id})
        for vid in remove_ids:
            if vid not in current:
                raise cvb_exception.InstanceGroupInvalid(reason=_(
                    'volume %(vol)s is not a member of group %(group)s') %
                    {'vol': vid, 'group': group.id})
    if len(current) - len(set(remove_ids)) + len(add_ids) < 1:
        raise cvb_exception.InstanceGroupInvalid(reason=_(
            'an instance group keeps at least one volume; delete the '
            'group instead'))
    adding = [attached[vid] for vid in add_ids]
    kept = [(m['volume'], m['mountpoint']) for vid, m in current.items()
            if vid not in remove_ids]
    _check_members(adding + kept, group)
    for volume, mountpoint in adding:
        join(context, group, volume, instance_id, mountpoint)
    for vid in remove_ids:
        leave(context, current[vid]['volume'])
    type_ids = sorted({v.volume_type_id for v, _m in adding + kept
                       if v.volume_type_id})
    for type_id in type_ids:
        if type_id not in (group.volume_type_ids or []):
            try:
                db.group_volume_type_mapping_create(_admin(context),
                                                    group.id, type_id)
            except exception.GroupVolumeTypeMappingExists:
                pass
    return add_ids, remove_ids
