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

"""Python client of Cinder's instance-group API (this plugin's extension).

One method per route of ``/v3/{project_id}/instance-groups``; JSON in,
plain dicts and lists out. It speaks through a keystoneauth1
:class:`~keystoneauth1.adapter.Adapter` on the ``block-storage`` service
(keystoneauth1 matches its aliases ``volumev3``, ``volume``...), whose
catalog endpoint already ends in the project id, as Cinder's v3 endpoint
``/v3/%(project_id)s`` does. A refused request raises an exception of
:mod:`cinder_vmdk_backup.client.exceptions` with Cinder's message.

Only keystoneauth1 and oslo.i18n are needed: the OpenStack client's
virtualenv has them, and no Cinder.
"""

import urllib.parse

from oslo_utils import uuidutils

from cinder_vmdk_backup.client import base
from cinder_vmdk_backup.client import exceptions
from cinder_vmdk_backup.client.i18n import _

SERVICE_TYPE = base.SERVICE_TYPE

_BASE = '/instance-groups'


def _quote(value):
    # A group id is one path segment, whatever the caller passed.
    return urllib.parse.quote(str(value), safe='')


class InstanceGroupClient(base.ExtensionClient):
    """Client of the instance-group routes.

    :param session: a keystoneauth1 :class:`~keystoneauth1.session.Session`
        (ignored when ``adapter`` is given)
    :param adapter: a ready :class:`~keystoneauth1.adapter.Adapter`
    :param interface: endpoint interface (``public``, ``internal``, ...)
    :param region_name: region of the endpoint
    :param endpoint_override: Cinder's v3 endpoint with the project id,
        instead of the catalog's
    :param adapter_kwargs: more arguments for the Adapter (e.g.
        ``connect_retries``, ``global_request_id``)
    """

    @staticmethod
    def _set_selector(body, group_snapshot_id, name):
        if not group_snapshot_id and not name:
            raise ValueError(_('Name the backup set: give group_snapshot_id '
                               'or name'))
        if group_snapshot_id:
            body['group_snapshot_id'] = group_snapshot_id
        if name:
            body['name'] = name

    @staticmethod
    def _set_async(body, wait):
        # The API's documented form is the string "true".
        if not wait:
            body['async'] = 'true'

    # -- groups ------------------------------------------------------------

    def create_group(self, instance_id, name=None, description=None):
        """Make the instance group of an instance from its attachments.

        :returns: the group dict (``id``, ``name``, ``status``,
            ``instance_id``, ``volumes`` [{id, mountpoint, boot}], ...)
        """
        group = {'instance_id': instance_id}
        if name is not None:
            group['name'] = name
        if description is not None:
            group['description'] = description
        answer = self._request('POST', _BASE, {'instance_group': group})
        return answer['instance_group']

    def list_groups(self, instance_id=None):
        """The instance groups seen by the caller, or the instance's one."""
        params = {'instance_id': instance_id} if instance_id else None
        answer = self._request('GET', _BASE, params=params)
        return answer['instance_groups']

    def find_group(self, name_or_id):
        """The group whose id, or else whose name, is ``name_or_id``.

        The API has no route answering one group, so this reads the list.

        :raises NotFound: no group has that id or name
        :raises NoUniqueMatch: the name is the name of several groups
        """
        groups = self.list_groups()
        for group in groups:
            if group.get('id') == name_or_id:
                return group
        named = [g for g in groups if g.get('name') == name_or_id]
        if len(named) == 1:
            return named[0]
        if named:
            raise exceptions.NoUniqueMatch(
                _('More than one instance group is named %s; give its '
                  'ID') % name_or_id)
        raise exceptions.NotFound(
            _('No instance group with a name or ID of %s exists.')
            % name_or_id)

    def resolve_group_id(self, name_or_id):
        """The id of a group given by id (used as is) or by name."""
        if uuidutils.is_uuid_like(name_or_id):
            return name_or_id
        return self.find_group(name_or_id)['id']

    def update_members(self, group_id, instance_id, add_volumes=None,
                       remove_volumes=None):
        """Add or remove member volumes; neither: re-read the attachments.

        :returns: the group dict after the change
        """
        body = {'instance_id': instance_id}
        if add_volumes:
            body['add_volumes'] = list(add_volumes)
        if remove_volumes:
            body['remove_volumes'] = list(remove_volumes)
        answer = self._request(
            'PUT', '%s/%s/members' % (_BASE, _quote(group_id)), body)
        return answer['instance_group']

    def delete_group(self, group_id):
        """Delete the group (refused while it has backup sets)."""
        self._request('DELETE', '%s/%s' % (_BASE, _quote(group_id)))

    # -- backup sets -------------------------------------------------------

    def list_backup_sets(self, group_id):
        """Every backup set of the group, each with its ``backups``."""
        return self._request('GET', '%s/%s' % (_BASE, _quote(group_id)))

    def backup(self, group_id, instance_id, name, description=None,
               wait=True):
        """Back up every volume of the instance as one set.

        :param wait: False: answer once the request is submitted
        :returns: the result dict (``operation``, ``success``,
            ``group_snapshot_id``, ``backup_id`` [...], ...) or
            ``{"msg": ...}`` when submitted (or still running after the
            server's wait)
        """
        body = {'instance_id': instance_id, 'name': name}
        if description is not None:
            body['description'] = description
        self._set_async(body, wait)
        return self._request(
            'POST', '%s/%s/backup' % (_BASE, _quote(group_id)), body)

    def restore(self, group_id, instance_id, group_snapshot_id=None,
                name=None, wait=True):
        """Restore a set onto the instance's volumes (instance shut down)."""
        body = {'instance_id': instance_id}
        self._set_selector(body, group_snapshot_id, name)
        self._set_async(body, wait)
        return self._request(
            'PUT', '%s/%s/restore' % (_BASE, _quote(group_id)), body)

    def restore_new(self, group_id, instance_id, group_snapshot_id=None,
                    name=None, volume_type=None, availability_zone=None,
                    volumes=None, server=None, wait=True):
        """Restore a set onto new volumes (and a new server when asked).

        :param volumes: ``{original volume id: {"volume_type": ...,
            "availability_zone": ..., "name": ...}}``, per volume choices
        :param server: ``{"name": ..., "flavor": ...}`` to boot a new server
            from the new volumes; None: volumes only
        :returns: the result dict, with ``new_volume_id`` [...] and
            ``server_id``, or ``{"msg": ...}``
        """
        body = {'instance_id': instance_id}
        self._set_selector(body, group_snapshot_id, name)
        if volume_type:
            body['volume_type'] = volume_type
        if availability_zone:
            body['availability_zone'] = availability_zone
        if volumes:
            body['volumes'] = volumes
        if server:
            body['server'] = server
        self._set_async(body, wait)
        return self._request(
            'PUT', '%s/%s/restore_new' % (_BASE, _quote(group_id)), body)

    def delete_backup(self, group_id, instance_id, group_snapshot_id=None,
                      name=None):
        """Delete one backup set (older sets' data kept while needed)."""
        body = {'instance_id': instance_id}
        self._set_selector(body, group_snapshot_id, name)
        return self._request(
            'PUT', '%s/%s/delete_backup' % (_BASE, _quote(group_id)), body)
