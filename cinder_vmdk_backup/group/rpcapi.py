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

"""cinder-api's client of the instance-group endpoint of cinder-backup.

Topic ``cinder-backup`` (Cinder's), server = the chosen cinder-backup host,
namespace ``instance_groups``, version 1.0. Every argument is an id or a
plain dict (no versioned objects), so the endpoint reads the records it
acts on from the database itself.
"""

from cinder.common import constants
from cinder.objects import base as objects_base
from cinder import rpc
from oslo_config import cfg
import oslo_messaging as messaging

from cinder_vmdk_backup import opts

CONF = cfg.CONF
CONF.register_opts(opts.instance_group_opts, group='instance_groups')

NAMESPACE = 'instance_groups'
VERSION = '1.0'


class InstanceGroupAPI(object):
    """Casts and calls to one cinder-backup host's group endpoint."""

    def __init__(self):
        target = messaging.Target(topic=constants.BACKUP_TOPIC,
                                  namespace=NAMESPACE, version=VERSION)
        self.client = rpc.get_client(
            target, serializer=objects_base.CinderObjectSerializer())

    def _prepare(self, host, **kwargs):
        return self.client.prepare(server=host, version=VERSION, **kwargs)

    def backup_set(self, ctxt, host, group_snapshot_id):
        self._prepare(host).cast(ctxt, 'backup_set',
                                 group_snapshot_id=group_snapshot_id)

    def restore_set(self, ctxt, host, group_id, group_snapshot_id,
                    operation_id):
        self._prepare(host).cast(ctxt, 'restore_set', group_id=group_id,
                                 group_snapshot_id=group_snapshot_id,
                                 operation_id=operation_id)

    def restore_set_new(self, ctxt, host, group_id, group_snapshot_id,
                        operation_id, volumes, server=None):
        self._prepare(host).cast(ctxt, 'restore_set_new', group_id=group_id,
                                 group_snapshot_id=group_snapshot_id,
                                 operation_id=operation_id, volumes=volumes,
                                 server=server)

    def delete_set(self, ctxt, host, group_id, group_snapshot_id):
        self._prepare(host).cast(ctxt, 'delete_set', group_id=group_id,
                                 group_snapshot_id=group_snapshot_id)

    def instance_power_state(self, ctxt, host, instance_id, volume_ids):
        """Ask cinder-backup whether the instance runs (an RPC call).

        :returns: ``[state, who]``
        """
        cctxt = self._prepare(
            host, timeout=CONF.instance_groups.power_state_timeout)
        return cctxt.call(ctxt, 'instance_power_state',
                          instance_id=instance_id, volume_ids=volume_ids)
