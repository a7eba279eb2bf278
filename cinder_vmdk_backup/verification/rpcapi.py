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

"""cinder-api's client of the verification endpoint of cinder-backup.

Topic ``cinder-backup`` (Cinder's), server = the chosen cinder-backup host,
namespace ``backup_verification``, version 1.0. Only ids and plain values
cross: the endpoint reads the backup from the database itself (a backup
deleted meanwhile ends the verification quietly there).
"""

from cinder.common import constants
from cinder.objects import base as objects_base
from cinder import rpc
import oslo_messaging as messaging

NAMESPACE = 'backup_verification'
VERSION = '1.0'


class VerificationAPI(object):
    """Casts to one cinder-backup host's verification endpoint."""

    def __init__(self):
        target = messaging.Target(topic=constants.BACKUP_TOPIC,
                                  namespace=NAMESPACE, version=VERSION)
        self.client = rpc.get_client(
            target, serializer=objects_base.CinderObjectSerializer())

    def verify_backup(self, ctxt, host, backup_id, verification_id,
                      deep=False):
        """Ask ``host`` to verify a backup (a cast: no answer awaited).

        :param deep: also restore into a scratch file and compare
        """
        cctxt = self.client.prepare(server=host, version=VERSION)
        cctxt.cast(ctxt, 'verify_backup', backup_id=backup_id,
                   verification_id=verification_id, deep=bool(deep))
