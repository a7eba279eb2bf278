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

"""What instance groups ask Nova, through Cinder's own Nova client.

Cinder's ``[nova]`` section says how to reach Nova
(:func:`cinder.compute.nova.novaclient`: the configured service user, or the
request's token and the identity endpoint of its service catalog). Where
none of that leads to Nova (a KVM host without Nova), every function here
answers None and the caller asks the volume driver instead.
"""

from cinder.compute import nova as cinder_nova
from cinder.i18n import _
from oslo_config import cfg
from oslo_log import log as logging

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.group import records

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

#: Nova's server status of a shut down instance.
SHUT_DOWN_STATUS = 'SHUTOFF'
#: Server statuses in which the guest runs (or may run at any moment).
RUNNING_STATUSES = ('ACTIVE', 'PAUSED', 'SUSPENDED', 'REBOOT', 'HARD_REBOOT',
                    'MIGRATING', 'RESIZE', 'VERIFY_RESIZE', 'REBUILD',
                    'RESCUE', 'BUILD', 'PASSWORD', 'REVERT_RESIZE')


def _configured(context):
    """Whether Cinder's [nova] settings can lead to Nova at all."""
    nova_conf = CONF[cinder_nova.NOVA_GROUP]
    if nova_conf.auth_type or nova_conf.token_auth_url:
        return True
    return any(service.get('type') == 'identity'
               for service in (context.service_catalog or ()))


def _client(context, timeout=30):
    privileged = bool(CONF[cinder_nova.NOVA_GROUP].auth_type)
    return cinder_nova.novaclient(context, privileged_user=privileged,
                                  timeout=timeout)


def power_state(context, instance_id):
    """``(state, who)`` from Nova, or None when Nova cannot tell.

    ``state`` is ``shutoff`` for a server whose status is SHUTOFF,
    ``running`` for statuses in which the guest runs, else ``unknown``.
    """
    if not _configured(context):
        return None
    try:
        server = _client(context).servers.get(instance_id)
    except Exception as exc:
        # Unreachable, not found, not allowed: the driver is asked.
        LOG.info('Nova did not answer for instance %(instance)s '
                 '(%(exc)s); asking the volume driver.',
                 {'instance': instance_id, 'exc': type(exc).__name__})
        return None
    status = getattr(server, 'status', None)
    if status == SHUT_DOWN_STATUS:
        state = 'shutoff'
    elif status in RUNNING_STATUSES:
        state = 'running'
    else:
        state = 'unknown'
    return state, 'Nova server %s (status %s)' % (instance_id, status)


def _instance_flavor(client, backups):
    """The flavor id of the set's instance, the default of a new server.

    :raises InstanceGroupInvalid: Nova cannot tell it (the server is gone)
    """
    instance_id = next((b.metadata[records.INSTANCE_KEY] for b in backups
                        if (b.metadata or {}).get(records.INSTANCE_KEY)),
                       None)
    try:
        # (Compute API 2.1, as Cinder's client speaks: the flavor's id.)
        return client.servers.get(instance_id).flavor['id']
    except Exception as exc:
        raise cvb_exception.InstanceGroupInvalid(reason=_(
            'no flavor was given for the new server and the flavor of '
            'instance %(instance)s is unknown (%(exc)s); give one') %
            {'instance': instance_id, 'exc': type(exc).__name__})


def boot(context, server, backups, new_volumes):
    """Boot a server from restored volumes, when Nova is reachable.

    :param server: ``{"name": ..., "flavor": ...}``; without a flavor, the
        set's instance's
    :param backups: the set's member backups (their metadata gives the
        mountpoints and the boot volume)
    :param new_volumes: ``{backup id: new Volume}``
    :returns: the new server's id, or None when Nova is not configured
    :raises InstanceGroupInvalid: Nova refused the server
    """
    if not _configured(context):
        LOG.info('Nova is not configured; no server booted.')
        return None
    mapping = []
    for index, backup in enumerate(sorted(
            backups, key=lambda b: (b.metadata or {}).get(
                records.BOOT_KEY) != 'True')):
        metadata = backup.metadata or {}
        boot_volume = index == 0
        entry = {'uuid': new_volumes[backup.id].id,
                 'source_type': 'volume', 'destination_type': 'volume',
                 'delete_on_termination': False,
                 'boot_index': 0 if boot_volume else -1}
        mountpoint = metadata.get(records.MOUNTPOINT_KEY)
        if mountpoint:
            entry['device_name'] = mountpoint
        mapping.append(entry)
    client = _client(context, timeout=120)
    flavor = server.get('flavor') or _instance_flavor(client, backups)
    try:
        kwargs = {'block_device_mapping_v2': mapping}
        if server.get('nics'):
            kwargs['nics'] = server['nics']
        created = client.servers.create(server.get('name'), None, flavor,
                                        **kwargs)
    except Exception as exc:
        raise cvb_exception.InstanceGroupInvalid(reason=(
            'Nova refused the new server: %s' % exc))
    LOG.info('Server %(server)s booted from restored volumes %(vols)s.',
             {'server': created.id, 'vols': [e['uuid'] for e in mapping]})
    return created.id
