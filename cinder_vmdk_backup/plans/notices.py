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

"""What a run of a backup plan tells the world: notifications, user messages.

Notifications (publisher ``backup_plan.<host>``): ``backup_plan.run.start``
when a run asks for its backups, ``backup_plan.run.end`` when it
succeeded, ``backup_plan.run.error`` when it failed, partly failed or was
interrupted by the end of the node that ran it.

A run that did not succeed also leaves a Cinder user message in the plan's
project. Cinder 29's message API has fixed texts only; the closest it
offers is the action ``BACKUP_CREATE`` ("create backup") with the detail
``BACKUP_CREATE_DRIVER_ERROR`` (a backup of the run ended in error),
``BACKUP_SERVICE_DOWN`` (the node running it stopped) or the detail
Cinder maps from the exception that stopped the run (over quota, ...;
``UNKNOWN_ERROR`` otherwise). The message names the volume of a volume
plan (``resource_type`` ``VOLUME``), else the plan itself
(``VOLUME_BACKUP``, ``resource_uuid`` the plan's id): ``cinder
message-list --resource_uuid <plan id>`` finds it.
"""

from cinder.message import api as message_api
from cinder.message import message_field
from cinder import rpc
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

EVENT_PREFIX = 'backup_plan.run.'
START = 'start'
END = 'end'
ERROR = 'error'

#: Why a run failed, as the message detail Cinder offers.
BACKUP_ERROR = message_field.Detail.BACKUP_CREATE_DRIVER_ERROR
NODE_DOWN = message_field.Detail.BACKUP_SERVICE_DOWN


def _iso(when):
    return when.isoformat() if when else None


def payload(plan, run):
    return {
        'plan_id': plan['id'], 'plan_name': plan.get('name'),
        'project_id': plan['project_id'],
        'target_type': plan['target_type'], 'target_id': plan['target_id'],
        'run_id': run['id'], 'kind': run.get('kind'),
        'status': run.get('status'), 'host': run.get('host'),
        'scheduled_for': _iso(run.get('scheduled_for')),
        'started_at': _iso(run.get('started_at')),
        'finished_at': _iso(run.get('finished_at')),
        'full': run.get('full'),
        'backup_ids': list(run.get('backup_ids') or ()),
        'group_snapshot_ids': list(run.get('group_snapshot_ids') or ()),
        'error': run.get('error'),
    }


class Notices(object):
    """Sends the notifications and user messages of runs.

    Neither may stop a run: a failure to send is logged.

    :param host: this cinder-backup's host (the publisher id's)
    """

    def __init__(self, host, messages=None):
        self.host = host
        self._messages = messages

    @property
    def messages(self):
        if self._messages is None:
            self._messages = message_api.API()
        return self._messages

    def notify(self, context, event, plan, run):
        try:
            notifier = rpc.get_notifier('backup_plan', self.host)
            send = notifier.error if event == ERROR else notifier.info
            send(context, EVENT_PREFIX + event, payload(plan, run))
        except Exception:
            LOG.exception('Could not send the %(event)s notification of '
                          'run %(run)s of backup plan %(plan)s.',
                          {'event': event, 'run': run['id'],
                           'plan': plan['id']})

    def tell_user(self, context, plan, run, detail=None, exception=None):
        """A user message in the plan's project (``context``'s)."""
        if plan['target_type'] == 'volume':
            resource = (message_field.Resource.VOLUME, plan['target_id'])
        else:
            resource = (message_field.Resource.VOLUME_BACKUP, plan['id'])
        try:
            self.messages.create(
                context, message_field.Action.BACKUP_CREATE,
                resource_type=resource[0], resource_uuid=resource[1],
                exception=exception, detail=detail)
        except Exception:
            LOG.exception('Could not leave a user message about run %(run)s '
                          'of backup plan %(plan)s.',
                          {'run': run['id'], 'plan': plan['id']})
