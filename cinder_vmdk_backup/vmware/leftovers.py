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

"""Names of our temporary VMs, and removal of those a crash left behind.

A temporary VM is named ``cvb-tmp-<node>-<epoch>-<volume id>``: ``node``
is a short hash of the name of the node that created it, ``epoch`` the
second it was created. Several cinder-backup processes (other nodes, or
``backup_workers`` on one node) share one vCenter, so a process removes
only VMs of its own node created *before* it started: those belong to a
process that no longer runs. Everything else is left alone.
"""

import hashlib
import re
import time

from oslo_log import log as logging
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

LOG = logging.getLogger(__name__)

TEMP_VM_PREFIX = 'cvb-tmp-'

_NAME_RE = re.compile(r'^%s(?P<node>[0-9a-f]{8})-(?P<epoch>[0-9]{9,12})-'
                      % re.escape(TEMP_VM_PREFIX))


def node_tag(node_name):
    """Return the 8 hex digits that stand for a node in temp VM names."""
    return hashlib.sha256(node_name.encode('utf-8')).hexdigest()[:8]


def temp_vm_name(node, volume_id, now=None):
    """Return a temporary VM name for work on ``volume_id``.

    :param node: :func:`node_tag` of this node
    """
    epoch = int(time.time() if now is None else now)
    return '%s%s-%d-%s' % (TEMP_VM_PREFIX, node, epoch, volume_id)


def parse_temp_vm_name(name):
    """Return ``(node, epoch)`` of a temporary VM name, or None."""
    match = _NAME_RE.match(name or '')
    if not match:
        return None
    return match.group('node'), int(match.group('epoch'))


def is_leftover(name, node, started_at):
    """Tell whether ``name`` is a temp VM a dead process of ``node`` left."""
    parsed = parse_temp_vm_name(name)
    return bool(parsed and parsed[0] == node and parsed[1] < started_at)


def _vm_names(session, max_objects):
    result = session.invoke_api(vim_util, 'get_objects', session.vim,
                                'VirtualMachine', max_objects,
                                properties_to_collect=['name'])
    while result:
        for obj in result.objects:
            name = None
            for prop in getattr(obj, 'propSet', None) or []:
                if prop.name == 'name':
                    name = prop.val
            yield name, obj.obj
        result = session.invoke_api(vim_util, 'continue_retrieval',
                                    session.vim, result)


def find_leftovers(session, node, started_at, max_objects=100):
    """List ``(name, vm_ref)`` of temp VMs left by dead processes of node."""
    return [(name, ref) for name, ref in _vm_names(session, max_objects)
            if is_leftover(name, node, started_at)]


def remove_leftovers(session, node, started_at, max_objects=100):
    """Destroy temp VMs (and their disks) left by dead processes of node.

    Failures are logged and skipped: a leftover must not stop a service
    from starting.

    :returns: names of the VMs removed
    """
    removed = []
    for name, ref in find_leftovers(session, node, started_at,
                                    max_objects):
        try:
            task = session.invoke_api(session.vim, 'Destroy_Task', ref)
            session.wait_for_task(task)
        except vexc.ManagedObjectNotFoundException:
            continue
        except vexc.VimException as exc:
            LOG.warning('Could not remove leftover temporary VM %(name)s: '
                        '%(exc)s', {'name': name, 'exc': exc})
            continue
        LOG.info('Removed leftover temporary VM %s of an interrupted '
                 'backup operation.', name)
        removed.append(name)
    return removed
