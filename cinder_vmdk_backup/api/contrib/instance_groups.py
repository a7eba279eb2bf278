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

"""The instance-group API: back up and restore all volumes of a server.

An extension of cinder-api's v3 API (no patch of Cinder): enable it with
``[DEFAULT] osapi_volume_extension =
cinder_vmdk_backup.api.contrib.instance_groups.Instance_groups`` next to
``cinder.api.contrib.standard_extensions``. Routes, below
``/v3/{project_id}``:

========  ==========================================  ==========  ======
method    path                                        action      answer
========  ==========================================  ==========  ======
POST      /instance-groups                            create      201
GET       /instance-groups[?instance_id=]             index       200
GET       /instance-groups/{group_id}                 show (sets) 200
DELETE    /instance-groups/{group_id}                 delete      200
POST      /instance-groups/{group_id}/backup          backup      201
PUT       /instance-groups/{group_id}/restore         restore     201
PUT       /instance-groups/{group_id}/restore_new     restore_new 201
PUT       /instance-groups/{group_id}/delete_backup   delete_b.   201
PUT       /instance-groups/{group_id}/members         members     200
========  ==========================================  ==========  ======

A synchronous operation that outlives ``[instance_groups] sync_timeout``
answers 202 with ``{"msg": ...}``: it goes on, the list shows its end.
The controller validates, looks the group up in the caller's scope (404
for another project's group), checks the plugin's policy on the group's
project, then calls :class:`cinder_vmdk_backup.group.api.API`, its only
dependency.
"""

from http import HTTPStatus

from cinder.api import extensions
from cinder.api.openstack import wsgi
from cinder.api import validation
from cinder.i18n import _
from oslo_log import log as logging
from oslo_utils import importutils
from oslo_utils import uuidutils
import webob

from cinder_vmdk_backup.api.contrib import backup_verifications
from cinder_vmdk_backup.api.contrib import common
from cinder_vmdk_backup.api.schemas import instance_groups as schema
from cinder_vmdk_backup.api.views import backup_verifications as \
    verification_views
from cinder_vmdk_backup.api.views import instance_groups as views
from cinder_vmdk_backup import policies

LOG = logging.getLogger(__name__)

GROUP_API_CLASS = 'cinder_vmdk_backup.group.api.API'


def load_group_api():
    """The controller's only dependency, imported on first use."""
    return importutils.import_object(GROUP_API_CLASS)


def _wait(body):
    """``async`` (schema-checked: a bool or "true"/"false") -> wait."""
    value = body.get('async', False)
    if isinstance(value, str):
        value = value.lower() == 'true'
    return not value


def _set_selector(body):
    """The backup set the body names: (group_snapshot_id, name)."""
    group_snapshot_id = body.get('group_snapshot_id')
    name = body.get('name')
    if group_snapshot_id is None and name is None:
        raise webob.exc.HTTPBadRequest(explanation=_(
            "Name the backup set: give 'group_snapshot_id' or 'name' (or "
            "both)."))
    return group_snapshot_id, name


def _operation_answer(result):
    if result.get('still_running'):
        return wsgi.ResponseObject({'msg': result.get('msg')},
                                   code=HTTPStatus.ACCEPTED)
    return result


class InstanceGroupsController(wsgi.Controller):
    """Instance groups and their backup sets."""

    _view_builder_class = views.ViewBuilder

    def __init__(self, group_api=None, verification_api=None):
        super(InstanceGroupsController, self).__init__()
        self._group_api = group_api
        self._verification_api = verification_api

    @property
    def group_api(self):
        # Made on first use: loading the extension (every cinder-api start,
        # and the extension list) does not import the service side.
        if self._group_api is None:
            self._group_api = load_group_api()
        return self._group_api

    @property
    def verification_api(self):
        if self._verification_api is None:
            self._verification_api = (
                backup_verifications.load_verification_api())
        return self._verification_api

    def _group(self, context, group_id, rule, instance_id=None):
        """The group, looked up in the caller's scope, then authorized.

        The lookup comes first so that a group of another project is a 404
        for a non-admin, whatever the policy says.
        """
        group = self.group_api.get(context, group_id)
        policies.authorize(context, rule,
                           {'project_id': group['project_id']})
        if (instance_id is not None and group.get('instance_id')
                and instance_id != group['instance_id']):
            raise webob.exc.HTTPBadRequest(explanation=_(
                "Instance %(instance)s is not the instance of instance "
                "group %(group)s (%(own)s).") % {
                    'instance': instance_id, 'group': group_id,
                    'own': group['instance_id']})
        return group

    def index(self, req):
        """Instance groups of the project, or the group of an instance."""
        context = req.environ['cinder.context']
        unknown = set(req.GET) - {'instance_id'}
        if unknown:
            raise webob.exc.HTTPBadRequest(explanation=_(
                "Unknown query parameter(s): %s; only 'instance_id' is "
                "accepted.") % ', '.join(sorted(unknown)))
        instance_id = req.GET.get('instance_id')
        if instance_id is not None and not uuidutils.is_uuid_like(
                instance_id):
            raise webob.exc.HTTPBadRequest(explanation=_(
                "instance_id %s is not a UUID.") % instance_id)
        with common.http_errors():
            policies.authorize(context, policies.GET_ALL,
                               {'project_id': context.project_id})
            groups = self.group_api.get_all(context,
                                            instance_id=instance_id)
        return self._view_builder.detail_list(groups)

    @wsgi.response(HTTPStatus.CREATED)
    @common.body_required
    @validation.schema(schema.create)
    def create(self, req, body):
        """Make the instance group of an instance."""
        context = req.environ['cinder.context']
        params = body['instance_group']
        with common.http_errors():
            policies.authorize(context, policies.CREATE,
                               {'project_id': context.project_id})
            LOG.info('Create the instance group of instance %s.',
                     params['instance_id'])
            group = self.group_api.create(
                context, params['instance_id'], name=params.get('name'),
                description=params.get('description'))
        return self._view_builder.detail(group)

    def show(self, req, id):
        """The backup sets of a group (the specification's List)."""
        context = req.environ['cinder.context']
        with common.http_errors():
            self._group(context, id, policies.GET)
            sets = self.group_api.list_sets(context, id)
        return wsgi.ResponseObject(self._view_builder.sets(sets))

    def delete(self, req, id):
        """Delete a group without backup sets (its volumes stay)."""
        context = req.environ['cinder.context']
        with common.http_errors():
            self._group(context, id, policies.DELETE)
            LOG.info('Delete instance group %s.', id)
            self.group_api.delete(context, id)
        return None

    @wsgi.response(HTTPStatus.CREATED)
    @common.body_required
    @validation.schema(schema.backup)
    def backup(self, req, id, body):
        """Back up every volume of the group as one set."""
        context = req.environ['cinder.context']
        with common.http_errors():
            self._group(context, id, policies.BACKUP,
                        instance_id=body['instance_id'])
            LOG.info('Back up instance group %(group)s as set %(name)s.',
                     {'group': id, 'name': body['name']})
            result = self.group_api.backup(
                context, id, body['instance_id'], body['name'],
                description=body.get('description'), wait=_wait(body))
        return _operation_answer(result)

    @wsgi.response(HTTPStatus.CREATED)
    @common.body_required
    @validation.schema(schema.restore)
    def restore(self, req, id, body):
        """Restore a set onto the group's volumes (instance shut down)."""
        context = req.environ['cinder.context']
        group_snapshot_id, name = _set_selector(body)
        with common.http_errors():
            self._group(context, id, policies.RESTORE,
                        instance_id=body['instance_id'])
            LOG.info('Restore instance group %(group)s from set '
                     '%(set)s.', {'group': id,
                                  'set': group_snapshot_id or name})
            result = self.group_api.restore(
                context, id, body['instance_id'],
                group_snapshot_id=group_snapshot_id, name=name,
                wait=_wait(body))
        return _operation_answer(result)

    @wsgi.response(HTTPStatus.CREATED)
    @common.body_required
    @validation.schema(schema.restore_new)
    def restore_new(self, req, id, body):
        """Restore a set to new volumes, and a new server if asked."""
        context = req.environ['cinder.context']
        group_snapshot_id, name = _set_selector(body)
        with common.http_errors():
            self._group(context, id, policies.RESTORE_NEW,
                        instance_id=body['instance_id'])
            LOG.info('Restore instance group %(group)s from set %(set)s '
                     'to new volumes.',
                     {'group': id, 'set': group_snapshot_id or name})
            result = self.group_api.restore_new(
                context, id, body['instance_id'],
                group_snapshot_id=group_snapshot_id, name=name,
                volume_type=body.get('volume_type'),
                availability_zone=body.get('availability_zone'),
                volumes=body.get('volumes'), server=body.get('server'),
                wait=_wait(body))
        return _operation_answer(result)

    @wsgi.response(HTTPStatus.CREATED)
    @common.body_required
    @validation.schema(schema.delete_backup)
    def delete_backup(self, req, id, body):
        """Delete a backup set (never breaking a newer one)."""
        context = req.environ['cinder.context']
        group_snapshot_id, name = _set_selector(body)
        with common.http_errors():
            self._group(context, id, policies.DELETE_BACKUP,
                        instance_id=body['instance_id'])
            LOG.info('Delete set %(set)s of instance group %(group)s.',
                     {'group': id, 'set': group_snapshot_id or name})
            result = self.group_api.delete_backup(
                context, id, body['instance_id'],
                group_snapshot_id=group_snapshot_id, name=name)
        return _operation_answer(result)

    @wsgi.response(HTTPStatus.ACCEPTED)
    @common.body_required
    @validation.schema(schema.verify_backup)
    def verify_backup(self, req, id, body):
        """Verify every backup of a set (in cinder-backup; 202)."""
        context = req.environ['cinder.context']
        group_snapshot_id, name = _set_selector(body)
        deep = backup_verifications.flag(body.get('deep', False))
        with common.http_errors():
            self._group(context, id, policies.VERIFY_SET,
                        instance_id=body['instance_id'])
            LOG.info('Verify set %(set)s of instance group %(group)s '
                     '(deep: %(deep)s).',
                     {'group': id, 'set': group_snapshot_id or name,
                      'deep': deep})
            result = self.verification_api.verify_set(
                context, id, body['instance_id'],
                group_snapshot_id=group_snapshot_id, name=name, deep=deep)
        return verification_views.ViewBuilder().set_verification(result)

    @common.body_required
    @validation.schema(schema.update_members)
    def members(self, req, id, body):
        """Add or remove volumes; neither: re-read the attachments."""
        context = req.environ['cinder.context']
        add = body.get('add_volumes')
        remove = body.get('remove_volumes')
        both = set(add or ()) & set(remove or ())
        if both:
            raise webob.exc.HTTPBadRequest(explanation=_(
                "Volume(s) %s both added and removed.") %
                ', '.join(sorted(both)))
        with common.http_errors():
            self._group(context, id, policies.UPDATE_MEMBERS,
                        instance_id=body['instance_id'])
            LOG.info('Update the members of instance group %s.', id)
            group = self.group_api.update_members(
                context, id, body['instance_id'], add_volumes=add,
                remove_volumes=remove)
        return self._view_builder.detail(group)


class Instance_groups(extensions.ExtensionDescriptor):
    """Back up and restore all volumes of a server as one set."""

    name = 'InstanceGroups'
    alias = 'instance-groups'
    updated = '2026-12-06T00:00:00+00:00'

    def get_resources(self):
        controller = InstanceGroupsController()
        return [extensions.ResourceExtension(
            'instance-groups', controller,
            member_actions={'backup': 'POST',
                            'restore': 'PUT',
                            'restore_new': 'PUT',
                            'delete_backup': 'PUT',
                            'members': 'PUT',
                            'verify_backup': 'POST'})]
