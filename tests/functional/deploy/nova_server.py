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

"""Boot a Nova server from a volume, with no network, through Nova's API.

Run with the OpenStack client's virtualenv (keystoneauth1), the user's
credentials and region from the usual OS_* variables (the deployment's
openrc)::

    python nova_server.py create NAME FLAVOR_NAME VOLUME_ID

prints ``{"id": SERVER_ID}``. ``openstack server create --nic none
--volume ...`` makes the same POST /servers, but then shows the server,
and Nova's server view asks Neutron for the server's security groups
(there is no Neutron in the deployment): the command fails after the
server was created. This makes only the POST.

It imports nothing of the project: the client's virtualenv does not have
it.
"""

import json
import os
import sys

from keystoneauth1 import adapter
from keystoneauth1 import loading
from keystoneauth1 import session

#: networks 'none' needs 2.37.
MICROVERSION = '2.37'


def _compute():
    auth = loading.get_plugin_loader('password').load_from_options(
        auth_url=os.environ['OS_AUTH_URL'],
        username=os.environ['OS_USERNAME'],
        password=os.environ['OS_PASSWORD'],
        project_name=os.environ['OS_PROJECT_NAME'],
        user_domain_name=os.environ.get('OS_USER_DOMAIN_NAME', 'Default'),
        project_domain_name=os.environ.get('OS_PROJECT_DOMAIN_NAME',
                                           'Default'))
    return adapter.Adapter(session.Session(auth=auth),
                           service_type='compute', interface='public',
                           region_name=os.environ.get('OS_REGION_NAME'),
                           default_microversion=MICROVERSION)


def create(name, flavor_name, volume_id):
    compute = _compute()
    flavors = compute.get('/flavors').json()['flavors']
    flavor = [f['id'] for f in flavors if f['name'] == flavor_name]
    if not flavor:
        sys.exit('no flavor %s' % flavor_name)
    body = {'server': {
        'name': name, 'flavorRef': flavor[0], 'networks': 'none',
        'block_device_mapping_v2': [{
            'boot_index': 0, 'uuid': volume_id, 'source_type': 'volume',
            'destination_type': 'volume', 'delete_on_termination': False}]}}
    created = compute.post('/servers', json=body).json()['server']
    print(json.dumps({'id': created['id']}))


def main(argv):
    if len(argv) == 4 and argv[0] == 'create':
        create(*argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main(sys.argv[1:])
