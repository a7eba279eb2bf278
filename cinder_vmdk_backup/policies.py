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

"""Policies of the instance-group API (``instance_group:*``).

The plugin enforces its rules with an :class:`oslo_policy.policy.Enforcer`
of its own, built on Cinder's configuration object, so it reads the same
``[oslo_policy] policy_file`` as cinder-api: an operator overrides these
rules and Cinder's in one file. Cinder's base rules (``admin_api``,
``xena_system_admin_or_project_reader`` ...) are registered in it too, so
the defaults below mean what they mean for Cinder's backups, and an
override of one of those base rules in the policy file applies to both.

The defaults follow Cinder 29's backup policies: readers of the project may
list and show, members of the project may create, back up, restore and
delete, an admin may act on every project.
"""

import threading

from cinder import exception
from cinder.policies import base
from oslo_config import cfg
from oslo_policy import policy

CONF = cfg.CONF

CREATE = 'instance_group:create'
GET = 'instance_group:get'
GET_ALL = 'instance_group:get_all'
BACKUP = 'instance_group:backup'
RESTORE = 'instance_group:restore'
RESTORE_NEW = 'instance_group:restore_new'
DELETE_BACKUP = 'instance_group:delete_backup'
UPDATE_MEMBERS = 'instance_group:update_members'
DELETE = 'instance_group:delete'

PLAN_CREATE = 'backup_plan:create'
PLAN_GET = 'backup_plan:get'
PLAN_GET_ALL = 'backup_plan:get_all'
PLAN_UPDATE = 'backup_plan:update'
PLAN_DELETE = 'backup_plan:delete'
PLAN_RUN = 'backup_plan:run'
VERIFY = 'backup_verification:verify'
VERIFY_GET = 'backup_verification:get'
VERIFY_GET_ALL = 'backup_verification:get_all'
VERIFY_SET = 'instance_group:verify_backup'

_PATH = '/instance-groups'
_PLANS = '/backup-plans'
_PLAN = _PLANS + '/{plan_id}'
_VERIFICATIONS = '/backup-verifications'
_MEMBER = _PATH + '/{group_id}'
_SCOPE = ['project']


def _rule(name, check_str, description, method, path):
    return policy.DocumentedRuleDefault(
        name=name, check_str=check_str, description=description,
        operations=[{'method': method, 'path': path}],
        scope_types=_SCOPE)


_RULES = [
    _rule(CREATE, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Create the instance group of an instance (a generic volume '
          'group of its volumes).', 'POST', _PATH),
    _rule(GET_ALL, base.SYSTEM_READER_OR_PROJECT_READER,
          'List instance groups, or find the group of an instance.',
          'GET', _PATH),
    _rule(GET, base.SYSTEM_READER_OR_PROJECT_READER,
          'List the backup sets of an instance group.', 'GET', _MEMBER),
    _rule(BACKUP, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Back up every volume of an instance group as one set.',
          'POST', _MEMBER + '/backup'),
    _rule(RESTORE, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Restore a backup set onto the volumes of its instance.',
          'PUT', _MEMBER + '/restore'),
    _rule(RESTORE_NEW, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Restore a backup set to new volumes (and a new server).',
          'PUT', _MEMBER + '/restore_new'),
    _rule(DELETE_BACKUP, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Delete a backup set of an instance group.',
          'PUT', _MEMBER + '/delete_backup'),
    _rule(UPDATE_MEMBERS, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Add or remove member volumes of an instance group.',
          'PUT', _MEMBER + '/members'),
    _rule(DELETE, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Delete an instance group (no volume and no server is deleted).',
          'DELETE', _MEMBER),
    _rule(VERIFY_SET, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Verify every backup of a backup set of an instance group.',
          'POST', _MEMBER + '/verify_backup'),
    _rule(PLAN_CREATE, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Create a backup plan (scheduled backups with retention).',
          'POST', _PLANS),
    _rule(PLAN_GET_ALL, base.SYSTEM_READER_OR_PROJECT_READER,
          'List backup plans.', 'GET', _PLANS),
    _rule(PLAN_GET, base.SYSTEM_READER_OR_PROJECT_READER,
          'Show a backup plan and its runs.', 'GET', _PLAN),
    _rule(PLAN_UPDATE, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Change a backup plan.', 'PUT', _PLAN),
    _rule(PLAN_DELETE, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Delete a backup plan (its backups are kept).', 'DELETE', _PLAN),
    _rule(PLAN_RUN, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Run a backup plan now.', 'POST', _PLAN + '/run'),
    _rule(VERIFY, base.SYSTEM_ADMIN_OR_PROJECT_MEMBER,
          'Verify a backup (read it back from the store and check it).',
          'POST', _VERIFICATIONS),
    _rule(VERIFY_GET, base.SYSTEM_READER_OR_PROJECT_READER,
          'Show the last verification of a backup.',
          'GET', _VERIFICATIONS + '/{backup_id}'),
    _rule(VERIFY_GET_ALL, base.SYSTEM_READER_OR_PROJECT_READER,
          'List the verification results of backups.', 'GET',
          _VERIFICATIONS),
]


def list_rules():
    """The plugin's rules (entry point ``oslo.policy.policies``)."""
    return list(_RULES)


_ENFORCER = None
_LOCK = threading.Lock()


def get_enforcer():
    """The plugin's enforcer, made on first use.

    Also the ``oslo.policy.enforcer`` entry point, for oslopolicy-checker
    and oslopolicy-policy-generator.
    """
    global _ENFORCER
    with _LOCK:
        if _ENFORCER is None:
            enforcer = policy.Enforcer(CONF)
            enforcer.register_defaults(base.list_rules())
            enforcer.register_defaults(list_rules())
            _ENFORCER = enforcer
    return _ENFORCER


def reset():
    """Forget the enforcer (tests; a changed configuration)."""
    global _ENFORCER
    with _LOCK:
        if _ENFORCER is not None:
            _ENFORCER.clear()
        _ENFORCER = None


def authorize(context, rule, target):
    """Check ``rule`` for ``context`` on ``target``.

    :param context: the request's :class:`cinder.context.RequestContext`
    :param rule: one of this module's rule names
    :param target: at least ``{'project_id': <the group's project>}``
    :raises cinder.exception.PolicyNotAuthorized: (HTTP 403) when refused,
        also when the token's scope does not fit the rule
    """
    enforcer = get_enforcer()
    try:
        return enforcer.enforce(rule, target, context, do_raise=True,
                                exc=exception.PolicyNotAuthorized,
                                action=rule)
    except policy.InvalidScope:
        raise exception.PolicyNotAuthorized(action=rule)
