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

"""The backup-plan API: scheduled backups with retention.

An extension of cinder-api's v3 API: enable it with ``[DEFAULT]
osapi_volume_extension =
cinder_vmdk_backup.api.contrib.backup_plans.Backup_plans`` next to
``cinder.api.contrib.standard_extensions``. Routes, below
``/v3/{project_id}``:

========  ==============================  ============  ======  ===========
method    path                            action        answer  policy
========  ==============================  ============  ======  ===========
POST      /backup-plans                   create        201     create
GET       /backup-plans[?all_tenants=1]   index         200     get_all
GET       /backup-plans/{plan_id}         show (+runs)  200     get
PUT       /backup-plans/{plan_id}         update        200     update
DELETE    /backup-plans/{plan_id}         delete        204     delete
POST      /backup-plans/{plan_id}/run     run           202     run
GET       /backup-plans/{plan_id}/runs    runs          200     get
========  ==============================  ============  ======  ===========

The controller validates the body's shape (JSON schema), looks the plan up
in the caller's scope (404 for another project's plan), checks the
plugin's policy (``backup_plan:*``) on the plan's project, then calls
:class:`cinder_vmdk_backup.plans.api.API`, its only dependency.
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
from cinder_vmdk_backup.api.schemas import backup_plans as schema
from cinder_vmdk_backup.api.views import backup_plans as views
from cinder_vmdk_backup import policies

LOG = logging.getLogger(__name__)

PLANS_API_CLASS = 'cinder_vmdk_backup.plans.api.API'

#: Runs shown with a plan.
SHOW_RUNS = 5
#: Most plans or runs one request lists.
MAX_LIMIT = 1000

_INDEX_PARAMS = ('all_tenants', 'project_id', 'active', 'target_type',
                 'target_id', 'marker', 'limit')
_TARGET_TYPES = ('volume', 'instance_group', 'volume_type')


def load_plans_api():
    """The controller's only dependency, imported on first use."""
    return importutils.import_object(PLANS_API_CLASS)


def _bool_param(name, value):
    try:
        return strutils.bool_from_string(value, strict=True)
    except ValueError:
        raise webob.exc.HTTPBadRequest(explanation=_(
            "%(name)s=%(value)s: true or false expected.") % {
                'name': name, 'value': value})


def _limit(value, highest):
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= highest:
        raise webob.exc.HTTPBadRequest(explanation=_(
            "limit=%(value)s: a whole number from 1 to %(highest)d "
            "expected.") % {'value': value, 'highest': highest})
    return limit


def _uuid_param(name, value):
    if not uuidutils.is_uuid_like(value):
        raise webob.exc.HTTPBadRequest(explanation=_(
            "%(name)s %(value)s is not a UUID.") % {'name': name,
                                                    'value': value})
    return value


class BackupPlansController(wsgi.Controller):
    """Backup plans and their runs."""

    _view_builder_class = views.ViewBuilder

    def __init__(self, plans_api=None):
        super(BackupPlansController, self).__init__()
        self._plans_api = plans_api

    @property
    def plans_api(self):
        # Made on first use: loading the extension (every cinder-api
        # start, the extension list) does not touch the plans database.
        if self._plans_api is None:
            self._plans_api = load_plans_api()
        return self._plans_api

    def _plan(self, context, plan_id, rule):
        """The plan, looked up in the caller's scope, then authorized.

        The lookup comes first so that a plan of another project is a 404
        for a non-admin, whatever the policy says.
        """
        plan = self.plans_api.get(context, plan_id)
        policies.authorize(context, rule,
                           {'project_id': plan['project_id']})
        return plan

    def _filters(self, context, params):
        unknown = set(params) - set(_INDEX_PARAMS)
        if unknown:
            raise webob.exc.HTTPBadRequest(explanation=_(
                "Unknown query parameter(s): %(unknown)s; accepted: "
                "%(known)s.") % {'unknown': ', '.join(sorted(unknown)),
                                 'known': ', '.join(_INDEX_PARAMS)})
        filters = {}
        # As Cinder's own lists: all_tenants and project_id are an
        # admin's; a non-admin's are ignored (its own project only).
        if context.is_admin:
            if 'all_tenants' in params:
                filters['all_projects'] = _bool_param(
                    'all_tenants', params['all_tenants'])
            if 'project_id' in params:
                filters['project_id'] = params['project_id']
                filters['all_projects'] = True
        if 'active' in params:
            filters['active'] = _bool_param('active', params['active'])
        if 'target_type' in params:
            if params['target_type'] not in _TARGET_TYPES:
                raise webob.exc.HTTPBadRequest(explanation=_(
                    "target_type=%(value)s: one of %(types)s expected.") % {
                        'value': params['target_type'],
                        'types': ', '.join(_TARGET_TYPES)})
            filters['target_type'] = params['target_type']
        if 'target_id' in params:
            filters['target_id'] = params['target_id']
        return filters

    def index(self, req):
        """Plans of the project (``?all_tenants=1``: every one, admins)."""
        context = req.environ['cinder.context']
        params = dict(req.GET)
        filters = self._filters(context, params)
        marker = params.get('marker')
        if marker is not None:
            _uuid_param('marker', marker)
        limit = params.get('limit')
        if limit is not None:
            limit = _limit(limit, MAX_LIMIT)
        with common.http_errors():
            policies.authorize(context, policies.PLAN_GET_ALL,
                               {'project_id': context.project_id})
            plans = self.plans_api.get_all(context, filters=filters,
                                           marker=marker, limit=limit)
        return self._view_builder.detail_list(plans)

    @wsgi.response(HTTPStatus.CREATED)
    @common.body_required
    @validation.schema(schema.create)
    def create(self, req, body):
        """Create a plan (its target checked, its first slot computed)."""
        context = req.environ['cinder.context']
        request = body['backup_plan']
        with common.http_errors():
            policies.authorize(context, policies.PLAN_CREATE,
                               {'project_id': context.project_id})
            LOG.info('Create a backup plan of %s.', request['target'])
            plan = self.plans_api.create(context, request)
        return self._view_builder.detail(plan)

    def show(self, req, id):
        """A plan with its latest runs."""
        context = req.environ['cinder.context']
        with common.http_errors():
            plan = self._plan(context, id, policies.PLAN_GET)
            runs = self.plans_api.runs(context, id, limit=SHOW_RUNS)
        return self._view_builder.detail(plan, runs)

    @common.body_required
    @validation.schema(schema.update)
    def update(self, req, id, body):
        """Change what the body names; the rest stays."""
        context = req.environ['cinder.context']
        with common.http_errors():
            self._plan(context, id, policies.PLAN_UPDATE)
            LOG.info('Change backup plan %(plan)s: %(keys)s.',
                     {'plan': id,
                      'keys': ', '.join(sorted(body['backup_plan']))})
            plan = self.plans_api.update(context, id, body['backup_plan'])
        return self._view_builder.detail(plan)

    @wsgi.response(HTTPStatus.NO_CONTENT)
    def delete(self, req, id):
        """Delete a plan; its backups and its runs' records stay."""
        context = req.environ['cinder.context']
        with common.http_errors():
            self._plan(context, id, policies.PLAN_DELETE)
            LOG.info('Delete backup plan %s.', id)
            self.plans_api.delete(context, id)
        return None

    @wsgi.response(HTTPStatus.ACCEPTED)
    def run(self, req, id, body=None):
        """Queue a run of the plan now (a cinder-backup runner takes it)."""
        context = req.environ['cinder.context']
        if body:
            raise webob.exc.HTTPBadRequest(explanation=_(
                "Running a plan takes no body."))
        with common.http_errors():
            self._plan(context, id, policies.PLAN_RUN)
            LOG.info('Run backup plan %s now.', id)
            run = self.plans_api.run_now(context, id)
        return self._view_builder.run_detail(run)

    def runs(self, req, id):
        """The plan's runs, newest first (``?limit=``, default 20)."""
        context = req.environ['cinder.context']
        unknown = set(req.GET) - {'limit'}
        if unknown:
            raise webob.exc.HTTPBadRequest(explanation=_(
                "Unknown query parameter(s): %s; only 'limit' is "
                "accepted.") % ', '.join(sorted(unknown)))
        limit = req.GET.get('limit')
        kwargs = {}
        if limit is not None:
            kwargs['limit'] = _limit(limit, MAX_LIMIT)
        with common.http_errors():
            self._plan(context, id, policies.PLAN_GET)
            runs = self.plans_api.runs(context, id, **kwargs)
        return self._view_builder.run_list(runs)


class Backup_plans(extensions.ExtensionDescriptor):
    """Scheduled backups of volumes, instance groups and volume types."""

    name = 'BackupPlans'
    alias = 'backup-plans'
    updated = '2026-12-06T00:00:00+00:00'

    def get_resources(self):
        controller = BackupPlansController()
        return [extensions.ResourceExtension(
            'backup-plans', controller,
            member_actions={'run': 'POST', 'runs': 'GET'})]
