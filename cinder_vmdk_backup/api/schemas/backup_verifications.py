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

"""JSON schemas of the backup-verification API's request bodies.

Unknown keys are refused (``additionalProperties``), ids must look like
UUIDs; ``deep`` is a JSON boolean or the string "true"/"false", as the
instance-group API's ``async``.
"""

from cinder.api.validation import parameter_types

from cinder_vmdk_backup.api.schemas import instance_groups

deep_flag = instance_groups.async_flag


create = {
    'type': 'object',
    'properties': {
        'verification': {
            'type': 'object',
            'properties': {
                'backup_id': parameter_types.uuid,
                'deep': deep_flag,
            },
            'required': ['backup_id'],
            'additionalProperties': False,
        },
    },
    'required': ['verification'],
    'additionalProperties': False,
}
