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

"""JSON schemas of the backup-plan API's request bodies.

The shape is checked here (keys known, types, ranges: a ``keep`` of 0 is
refused naming ``keep``); what needs the cron grammar or the database (a
cron field out of range, a target that does not exist, exclusions) is
checked by :mod:`cinder_vmdk_backup.plans.api`, whose refusal names the
field too. Both answer 400.
"""

import copy

from cinder.api.validation import parameter_types

#: Most sets a plan keeps, and longest full_every: far above any sane
#: plan, low enough to catch a typo of a few digits too many.
MAX_COUNT = 10000

# A cron field: digits, names (jan, mon), '*', ',', '-', '/'. An integer
# is taken for a single value. The grammar is schedule.Schedule's.
_cron_field = {
    'type': ['string', 'integer'],
    'pattern': '^[0-9A-Za-z*,/-]+$',
    'minLength': 1, 'maxLength': 128,
    'minimum': 0,
}

_timezone = {'type': 'string', 'minLength': 1, 'maxLength': 64,
             'pattern': '^[A-Za-z0-9_+/-]+$'}

_count = {'type': 'integer', 'minimum': 1, 'maximum': MAX_COUNT}


def _object(properties, required=(), min_properties=None):
    schema = {'type': 'object', 'properties': properties,
              'additionalProperties': False}
    if required:
        schema['required'] = list(required)
    if min_properties:
        schema['minProperties'] = min_properties
    return schema


# Exactly one of the three kinds of target.
target = _object({
    'volume_id': parameter_types.uuid,
    'instance_group_id': parameter_types.uuid,
    'volume_type': {'type': 'string', 'minLength': 1, 'maxLength': 255},
}, min_properties=1)
target['maxProperties'] = 1

schedule = _object({
    'minute': _cron_field,
    'hour': _cron_field,
    'day_of_month': _cron_field,
    'month': _cron_field,
    'day_of_week': _cron_field,
    'timezone': _timezone,
}, required=('minute', 'hour'))

_plan_properties = {
    'name': {'type': ['string', 'null'], 'minLength': 1, 'maxLength': 255},
    'description': parameter_types.description,
    'target': target,
    'schedule': schedule,
    'active': {'type': 'boolean'},
    'keep': _count,
    'full_every': _count,
    'bandwidth_mib_s': {'type': ['number', 'null'], 'minimum': 0,
                        'exclusiveMinimum': True, 'maximum': 1048576},
    'exclude': {
        'type': 'array',
        'items': parameter_types.uuid,
        'uniqueItems': True,
        'maxItems': 1000,
    },
}

create = _object({
    'backup_plan': _object(_plan_properties,
                           required=('target', 'schedule', 'keep')),
}, required=('backup_plan',))

# A change: any subset (at least one key); a schedule may be partial too.
_update_properties = copy.deepcopy(_plan_properties)
_update_properties['schedule'].pop('required')
_update_properties['schedule']['minProperties'] = 1

update = _object({
    'backup_plan': _object(_update_properties, min_properties=1),
}, required=('backup_plan',))
