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

"""JSON schemas of the instance-group API's request bodies.

Every object refuses keys it does not know (``additionalProperties``), ids
must look like UUIDs. What a schema cannot say clearly (a set named by
neither ``name`` nor ``group_snapshot_id``, a volume both added and
removed) the controller checks.
"""

import copy

from cinder.api.validation import parameter_types

_UUID_PATTERN = ('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-'
                 '[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')

# The spec sends "true"; JSON booleans are taken too. Nothing else: a
# client that wrote "yes" gets a 400 rather than a guess.
async_flag = {
    'type': ['boolean', 'string'],
    'pattern': '^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$',
}

_optional_name = {
    'type': ['string', 'null'], 'minLength': 1, 'maxLength': 255,
}

_uuid_list = {
    'type': 'array',
    'items': parameter_types.uuid,
    'minItems': 1,
    'uniqueItems': True,
}

_short_string = {'type': 'string', 'minLength': 1, 'maxLength': 255}


def _body(properties, required):
    schema = {
        'type': 'object',
        'properties': properties,
        'additionalProperties': False,
    }
    if required:
        schema['required'] = required
    return schema


create = _body({
    'instance_group': _body({
        'instance_id': parameter_types.uuid,
        'name': _optional_name,
        'description': parameter_types.description,
    }, ['instance_id']),
}, ['instance_group'])


backup = _body({
    'instance_id': parameter_types.uuid,
    'name': parameter_types.name,
    'description': parameter_types.description,
    'async': async_flag,
}, ['instance_id', 'name'])


delete_backup = _body({
    'instance_id': parameter_types.uuid,
    'group_snapshot_id': parameter_types.uuid,
    'name': parameter_types.name,
}, ['instance_id'])


restore = copy.deepcopy(delete_backup)
restore['properties']['async'] = async_flag


restore_new = copy.deepcopy(restore)
restore_new['properties'].update({
    'volume_type': _short_string,
    'availability_zone': _short_string,
    # Keys are the ids of the set's original volumes.
    'volumes': {
        'type': 'object',
        'patternProperties': {
            _UUID_PATTERN: _body({
                'volume_type': _short_string,
                'availability_zone': _short_string,
                'name': _optional_name,
            }, []),
        },
        'additionalProperties': False,
    },
    'server': _body({
        'name': parameter_types.name,
        'flavor': _short_string,
    }, []),
})


# POST /instance-groups/{id}/verify_backup
verify_backup = copy.deepcopy(delete_backup)
verify_backup['properties']['deep'] = async_flag


update_members = _body({
    'instance_id': parameter_types.uuid,
    'add_volumes': _uuid_list,
    'remove_volumes': _uuid_list,
}, ['instance_id'])
