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

"""Cinder's attachment API calls Nova's compute manager makes.

Run with the OpenStack client's virtualenv (python-cinderclient and
keystoneauth1, which is what Nova calls Cinder with), the user's
credentials and region from the usual OS_* variables (the deployment's
openrc), Nova's service user's from CVB_NOVA_USERNAME and
CVB_NOVA_PASSWORD (project 'service')::

    python cinder_attachments.py reserve VOLUME INSTANCE_UUID
    python cinder_attachments.py update ATTACHMENT CONNECTOR_JSON
    python cinder_attachments.py complete ATTACHMENT
    python cinder_attachments.py delete ATTACHMENT

``reserve`` is Nova's attachment_create without a connector (the volume
becomes 'reserved'); ``update`` hands Cinder the connector and prints the
connection_info as JSON, shaped as Nova shapes it; ``complete`` marks the
volume in-use once the hypervisor has attached it; ``delete`` is the
detach's last step. The
python-openstackclient and cinder command lines cannot make the update
call with a connector that names the instance's VM (the ``instance`` key
Nova's VMware driver puts in it), hence this script.

Every call carries the user's token and, as Nova's do, a service token
of Nova's service user (keystoneauth's ServiceTokenAuthWrapper): Cinder
lets only such a request delete the attachment of a volume that is
connected to an instance (Bug #2004555).

It imports nothing of the project: the client's virtualenv does not have
it.
"""

import json
import os
import sys

from cinderclient import client
from keystoneauth1 import loading
from keystoneauth1 import service_token
from keystoneauth1 import session

# 3.44: attachment complete; 3.54: attachment mode.
API_VERSION = '3.54'


def _password_auth(username, password, project_name):
    return loading.get_plugin_loader('password').load_from_options(
        auth_url=os.environ['OS_AUTH_URL'], username=username,
        password=password, project_name=project_name,
        user_domain_name=os.environ.get('OS_USER_DOMAIN_NAME', 'Default'),
        project_domain_name=os.environ.get('OS_PROJECT_DOMAIN_NAME',
                                           'Default'))


def _client():
    user = _password_auth(os.environ['OS_USERNAME'],
                          os.environ['OS_PASSWORD'],
                          os.environ['OS_PROJECT_NAME'])
    nova = _password_auth(os.environ['CVB_NOVA_USERNAME'],
                          os.environ['CVB_NOVA_PASSWORD'], 'service')
    auth = service_token.ServiceTokenAuthWrapper(user, nova)
    return client.Client(API_VERSION, session=session.Session(auth=auth),
                         region_name=os.environ.get('OS_REGION_NAME'))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    command, args = argv[0], argv[1:]
    attachments = _client().attachments
    if command == 'reserve' and len(args) == 2:
        created = attachments.create(args[0], None, instance_id=args[1],
                                     mode='rw')
        print(json.dumps({'id': created['id']}))
    elif command == 'update' and len(args) == 2:
        updated = attachments.update(args[0], json.loads(args[1]))
        # The attachment API answers the connection data flat; Nova makes
        # it the usual {'driver_volume_type': ..., 'data': {...}}.
        flat = updated.connection_info or {}
        print(json.dumps({'id': updated.id, 'connection_info': {
            'driver_volume_type': flat.get('driver_volume_type'),
            'data': flat}}))
    elif command == 'complete' and len(args) == 1:
        attachments.complete(args[0])
    elif command == 'delete' and len(args) == 1:
        attachments.delete(args[0])
    else:
        sys.exit('unknown command or arguments: %s\n%s'
                 % (' '.join(argv), __doc__))


if __name__ == '__main__':
    main(sys.argv[1:])
