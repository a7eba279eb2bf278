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

"""The backup-verification API: check that backups still restore.

An extension of cinder-api's v3 API: enable it with ``[DEFAULT]
osapi_volume_extension =
cinder_vmdk_backup.api.contrib.backup_verifications.Backup_verifications``
next to Cinder's standard extensions. Routes, below ``/v3/{project_id}``:

========  ==================================  =======  ======
method    path                                action   answer
========  ==================================  =======  ======
POST      /backup-verifications               create   202
GET       /backup-verifications               index    200
GET       /backup-verifications/{backup_id}   show     200
========  ==================================  =======  ======

A verification runs in cinder-backup: the POST answers once it is queued
(status ``queued``); its progress and result are read with GET. The set
of an instance group is verified through the instance-group API's
``POST /instance-groups/{group_id}/verify_backup``. The controller
validates, looks the backup up in the caller's scope (404 for another
project's), checks the plugin's policy on the backup's project, then calls
:class:`cinder_vmdk_backup.verification.api.API`, its only dependency.
"""

from http import HTTPStatus

from cinder.api import extensions
from cinder.api.openstack import wsgi
from cinder.api import validation
from cinder.i18n import _
from oslo_log import log as logging
from oslo_utils import importutils
from oslo_utils import strutils
from oslo_utils import uuidutils
import webob

from cinder_vmdk_backup.api.contrib import common
from cinder_vmdk_backup.api.schemas import backup_verifications as schema
from cinder_vmdk_backup.api.views import backup_verifications as views
from cinder_vmdk_backup import policies

LOG = logging.getLogger(__name__)

VERIFICATION_API_CLASS = 'cinder_vmdk_backup.verification.api.API'

#: Query parameters of the list.
LIST_FILTERS = ('status', 'volume_id', 'all_tenants')
STATUSES = ('unverified', 'queued', 'running', 'ok', 'failed', 'error')


def load_verification_api():
    """The controllers' dependency, imported on first use."""
    return importutils.import_object(VERIFICATION_API_CLASS)


def flag(value):
    """A schema-checked flag (a bool or "true"/"false") as a bool."""
    if isinstance(value, str):
        return value.lower() == 'true'
    return bool(value)


class BackupVerificationsController(wsgi.Controller):
    """Verifications of backups, by backup id."""

    _view_builder_class = views.ViewBuilder

    def __init__(self, verification_api=None):
        super(BackupVerificationsController, self).__init__()
        self._verification_api = verification_api

    @property
    def verification_api(self):
        if self._verification_api is None:
            self._verification_api = load_verification_api()
        return self._verification_api

    def _authorized_entry(self, context, backup_id, rule):
        """The backup's record, found in the caller's scope, authorized.

        The lookup comes first so that another project's backup is a 404
        for a non-admin, whatever the policy says.
        """
        entry = self.verification_api.get(context, backup_id)
        policies.authorize(context, rule,
                           {'project_id': entry['project_id']})
        return entry

    def index(self, req):
        """The caller's backups with their verification (never: too)."""
        context = req.environ['cinder.context']
        unknown = set(req.GET) - set(LIST_FILTERS)
        if unknown:
            raise webob.exc.HTTPBadRequest(explanation=_(
                "Unknown query parameter(s): %(unknown)s; accepted: "
                "%(known)s.") % {'unknown': ', '.join(sorted(unknown)),
                                 'known': ', '.join(LIST_FILTERS)})
        filters = {}
        status = req.GET.get('status')
        if status is not None:
            if status not in STATUSES:
                raise webob.exc.HTTPBadRequest(explanation=_(
                    "status %(status)s is not one of %(known)s.") % {
                        'status': status, 'known': ', '.join(STATUSES)})
            filters['status'] = status
        volume_id = req.GET.get('volume_id')
        if volume_id is not None:
            if not uuidutils.is_uuid_like(volume_id):
                raise webob.exc.HTTPBadRequest(explanation=_(
                    "volume_id %s is not a UUID.") % volume_id)
            filters['volume_id'] = volume_id
        if 'all_tenants' in req.GET:
            try:
                filters['all_tenants'] = strutils.bool_from_string(
                    req.GET['all_tenants'], strict=True)
            except ValueError as exc:
                raise webob.exc.HTTPBadRequest(explanation=str(exc))
        with common.http_errors():
            policies.authorize(context, policies.VERIFY_GET_ALL,
                               {'project_id': context.project_id})
            entries = self.verification_api.get_all(context, filters)
        return self._view_builder.detail_list(entries)

    def show(self, req, id):
        """The last verification of one backup."""
        context = req.environ['cinder.context']
        if not uuidutils.is_uuid_like(id):
            raise webob.exc.HTTPNotFound(explanation=_(
                "Backup %s could not be found.") % id)
        with common.http_errors():
            entry = self._authorized_entry(context, id, policies.VERIFY_GET)
        return self._view_builder.detail(entry)

    @wsgi.response(HTTPStatus.ACCEPTED)
    @common.body_required
    @validation.schema(schema.create)
    def create(self, req, body):
        """Queue the verification of a backup (and its chain)."""
        context = req.environ['cinder.context']
        params = body['verification']
        backup_id = params['backup_id']
        deep = flag(params.get('deep', False))
        with common.http_errors():
            self._authorized_entry(context, backup_id, policies.VERIFY)
            LOG.info('Verify backup %(backup)s (deep: %(deep)s).',
                     {'backup': backup_id, 'deep': deep})
            entry = self.verification_api.verify(context, backup_id,
                                                 deep=deep)
        return self._view_builder.detail(entry)


class Backup_verifications(extensions.ExtensionDescriptor):
    """Verify backups: read them back from the store and check them."""

    name = 'BackupVerifications'
    alias = 'backup-verifications'
    updated = '2026-12-06T00:00:00+00:00'

    def get_resources(self):
        return [extensions.ResourceExtension(
            'backup-verifications', BackupVerificationsController())]
