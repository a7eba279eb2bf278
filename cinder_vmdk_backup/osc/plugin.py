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

"""The OpenStack client plugin of the instance-group API.

Loaded by python-openstackclient through the ``openstack.cli.extension``
entry point ``instance_groups``; its commands are the entry points of
``openstack.instance_groups.v1`` (``openstack volume instance group ...``).
Nothing here imports Cinder: the OpenStack client's virtualenv has none.
"""

import logging

from osc_lib import utils

from cinder_vmdk_backup.client.i18n import _
from cinder_vmdk_backup.client import instance_groups

LOG = logging.getLogger(__name__)

DEFAULT_API_VERSION = '1'
API_VERSION_OPTION = 'os_instance_groups_api_version'
API_NAME = 'instance_groups'
API_VERSIONS = ('1',)

# Configuration keys of an endpoint given instead of the catalog's
# (--os-block-storage-endpoint-override, clouds.yaml
# block_storage_endpoint_override; the older volume_ spelling too).
_OVERRIDE_KEYS = ('block_storage_endpoint_override',
                  'volume_endpoint_override')


def make_client(instance):
    """The InstanceGroupClient of the OpenStack client's session.

    :param instance: osc-lib's ClientManager: its keystoneauth1 session,
        region and interface choose Cinder's endpoint from the catalog
        (``block-storage`` and its aliases, e.g. ``volumev3``)
    """
    config = instance.get_configuration() or {}
    override = next((config[k] for k in _OVERRIDE_KEYS if config.get(k)),
                    None)
    client = instance_groups.InstanceGroupClient(
        session=instance.session, interface=instance.interface,
        region_name=instance.region_name, endpoint_override=override)
    LOG.debug('Instance group client of region %(region)s, interface '
              '%(interface)s', {'region': instance.region_name,
                                'interface': instance.interface})
    return client


def build_option_parser(parser):
    """Add the plugin's global option to the OpenStack client's parser."""
    parser.add_argument(
        '--os-instance-groups-api-version',
        metavar='<instance-groups-api-version>',
        default=utils.env('OS_INSTANCE_GROUPS_API_VERSION',
                          default=DEFAULT_API_VERSION),
        help=_('Instance group API version, default=%s '
               '(Env: OS_INSTANCE_GROUPS_API_VERSION)')
        % DEFAULT_API_VERSION)
    return parser
