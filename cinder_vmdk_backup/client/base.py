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

"""The transport the plugin's API clients share.

A client of one of the plugin's cinder-api extensions speaks through a
keystoneauth1 :class:`~keystoneauth1.adapter.Adapter` on the
``block-storage`` service (keystoneauth1 matches its aliases ``volumev3``,
``volume``...), whose catalog endpoint already ends in the project id, as
Cinder's v3 endpoint ``/v3/%(project_id)s`` does. JSON in, plain dicts and
lists out; a refused request raises an exception of
:mod:`cinder_vmdk_backup.client.exceptions` with Cinder's message.
"""

from keystoneauth1 import adapter as ks_adapter

from cinder_vmdk_backup.client import exceptions
from cinder_vmdk_backup.client.i18n import _

SERVICE_TYPE = 'block-storage'


class ExtensionClient(object):
    """Requests to Cinder's v3 API of the caller's project.

    :param session: a keystoneauth1 :class:`~keystoneauth1.session.Session`
        (ignored when ``adapter`` is given)
    :param adapter: a ready :class:`~keystoneauth1.adapter.Adapter` (e.g.
        another of these clients': the same endpoint)
    :param interface: endpoint interface (``public``, ``internal``, ...)
    :param region_name: region of the endpoint
    :param endpoint_override: Cinder's v3 endpoint with the project id,
        instead of the catalog's
    :param adapter_kwargs: more arguments for the Adapter (e.g.
        ``connect_retries``, ``global_request_id``)
    """

    def __init__(self, session=None, adapter=None, interface=None,
                 region_name=None, endpoint_override=None, **adapter_kwargs):
        if adapter is None:
            if session is None:
                raise ValueError(_('%s needs a session or an adapter')
                                 % type(self).__name__)
            adapter = ks_adapter.Adapter(
                session, service_type=SERVICE_TYPE, interface=interface,
                region_name=region_name, endpoint_override=endpoint_override,
                **adapter_kwargs)
        self.adapter = adapter

    def _request(self, method, path, body=None, params=None):
        """Send one request; the decoded JSON answer, None when empty."""
        kwargs = {'headers': {'Accept': 'application/json'},
                  'raise_exc': False}
        if body is not None:
            kwargs['json'] = body
        if params:
            kwargs['params'] = params
        resp = self.adapter.request(path, method, **kwargs)
        if resp.status_code >= 400:
            raise exceptions.from_response(resp, method, resp.url)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise exceptions.ClientException(
                _('Cinder answered %(method)s %(path)s with a body that is '
                  'not JSON') % {'method': method, 'path': path},
                code=resp.status_code,
                request_id=resp.headers.get('x-openstack-request-id'),
                method=method, url=resp.url)
