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

"""Python client of Cinder's backup-plan API (this plugin's extension).

One method per route of ``/v3/{project_id}/backup-plans``; JSON in, plain
dicts and lists out. Transport as :mod:`.instance_groups`'s client: a
keystoneauth1 :class:`~keystoneauth1.adapter.Adapter` on the
``block-storage`` service, whose endpoint ends in the project id; a
refused request raises an exception of
:mod:`cinder_vmdk_backup.client.exceptions` with Cinder's message.
"""

import urllib.parse

from oslo_utils import uuidutils

from cinder_vmdk_backup.client import base
from cinder_vmdk_backup.client import exceptions
from cinder_vmdk_backup.client.i18n import _

SERVICE_TYPE = base.SERVICE_TYPE

_BASE = '/backup-plans'

#: The keys of a plan's schedule (the five cron fields, then the zone).
SCHEDULE_KEYS = ('minute', 'hour', 'day_of_month', 'month', 'day_of_week',
                 'timezone')


def _quote(value):
    return urllib.parse.quote(str(value), safe='')


def _plan_path(plan_id, action=None):
    path = '%s/%s' % (_BASE, _quote(plan_id))
    return '%s/%s' % (path, action) if action else path


class BackupPlanClient(base.ExtensionClient):
    """Client of the backup-plan routes.

    :param session: a keystoneauth1 :class:`~keystoneauth1.session.Session`
        (ignored when ``adapter`` is given)
    :param adapter: a ready :class:`~keystoneauth1.adapter.Adapter` (e.g.
        the instance-group client's: the same endpoint)
    :param interface: endpoint interface (``public``, ``internal``, ...)
    :param region_name: region of the endpoint
    :param endpoint_override: Cinder's v3 endpoint with the project id
    :param adapter_kwargs: more arguments for the Adapter
    """

    # -- plans --------------------------------------------------------------

    @staticmethod
    def _plan_body(target=None, schedule=None, **values):
        """The ``backup_plan`` object: given values only (None: left out).

        ``bandwidth_mib_s`` is sent as null when it is the string
        ``'none'`` (no cap), since None means "not given".
        """
        plan = {key: value for key, value in values.items()
                if value is not None}
        if plan.get('bandwidth_mib_s') == 'none':
            plan['bandwidth_mib_s'] = None
        if target:
            plan['target'] = dict(target)
        if schedule:
            plan['schedule'] = {key: value for key, value in schedule.items()
                                if value is not None}
        return plan

    def create_plan(self, target, schedule, keep, name=None,
                    description=None, active=None, full_every=None,
                    bandwidth_mib_s=None, exclude=None):
        """Create a plan.

        :param target: ``{"volume_id": id}``, ``{"instance_group_id": id}``
            or ``{"volume_type": name or id}``
        :param schedule: ``{"minute", "hour"[, "day_of_month", "month",
            "day_of_week", "timezone"]}`` (cron fields)
        :param keep: backup sets to keep (>= 1)
        :returns: the plan dict
        """
        body = self._plan_body(
            target=target, schedule=schedule, keep=keep, name=name,
            description=description, active=active, full_every=full_every,
            bandwidth_mib_s=bandwidth_mib_s,
            exclude=list(exclude) if exclude else None)
        return self._request('POST', _BASE,
                             {'backup_plan': body})['backup_plan']

    def list_plans(self, all_projects=False, **filters):
        """The plans seen by the caller.

        :param all_projects: every project's (admins)
        :param filters: ``active``, ``target_type``, ``target_id``,
            ``marker``, ``limit``
        """
        params = {k: v for k, v in filters.items() if v is not None}
        for key, value in params.items():
            if isinstance(value, bool):
                params[key] = 'true' if value else 'false'
        if all_projects:
            params['all_tenants'] = 'true'
        return self._request('GET', _BASE, params=params)['backup_plans']

    def get_plan(self, plan_id):
        """The plan with its latest runs (``runs``)."""
        return self._request('GET', _plan_path(plan_id))['backup_plan']

    def find_plan(self, name_or_id, all_projects=False):
        """The plan whose id, or else whose name, is ``name_or_id``.

        :raises NotFound: no plan has that id or name
        :raises NoUniqueMatch: several plans have that name
        """
        if uuidutils.is_uuid_like(name_or_id):
            try:
                return self.get_plan(name_or_id)
            except exceptions.NotFound:
                pass  # a name that looks like a UUID
        named = [p for p in self.list_plans(all_projects=all_projects)
                 if p.get('name') == name_or_id]
        if len(named) == 1:
            return self.get_plan(named[0]['id'])
        if named:
            raise exceptions.NoUniqueMatch(
                _('More than one backup plan is named %s; give its ID')
                % name_or_id)
        raise exceptions.NotFound(
            _('No backup plan with a name or ID of %s exists.') % name_or_id)

    def resolve_plan_id(self, name_or_id):
        """The id of a plan given by id (used as is) or by name."""
        if uuidutils.is_uuid_like(name_or_id):
            return name_or_id
        return self.find_plan(name_or_id)['id']

    def update_plan(self, plan_id, target=None, schedule=None, **values):
        """Change the given values (None: unchanged).

        ``bandwidth_mib_s='none'`` removes the cap; ``exclude=[]`` the
        exclusions.
        """
        body = self._plan_body(target=target, schedule=schedule, **values)
        if 'exclude' in body:
            body['exclude'] = list(body['exclude'])
        if not body:
            raise ValueError(_('Nothing to change'))
        return self._request('PUT', _plan_path(plan_id),
                             {'backup_plan': body})['backup_plan']

    def delete_plan(self, plan_id):
        """Delete a plan (its backups are kept)."""
        self._request('DELETE', _plan_path(plan_id))

    # -- runs ---------------------------------------------------------------

    def run_plan(self, plan_id):
        """Queue a run now; the queued run."""
        return self._request('POST',
                             _plan_path(plan_id, 'run'))['backup_plan_run']

    def list_runs(self, plan_id, limit=None):
        """The plan's runs, newest first."""
        params = {'limit': limit} if limit else None
        return self._request('GET', _plan_path(plan_id, 'runs'),
                             params=params)['backup_plan_runs']

    # -- targets ------------------------------------------------------------

    def resolve_volume_id(self, name_or_id):
        """A volume's id, from its id (used as is) or its name."""
        if uuidutils.is_uuid_like(name_or_id):
            return name_or_id
        volumes = self._request('GET', '/volumes',
                                params={'name': name_or_id})['volumes']
        if len(volumes) == 1:
            return volumes[0]['id']
        if volumes:
            raise exceptions.NoUniqueMatch(
                _('More than one volume is named %s; give its ID')
                % name_or_id)
        raise exceptions.NotFound(
            _('No volume with a name or ID of %s exists.') % name_or_id)
