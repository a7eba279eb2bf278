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

"""Notifications and user messages of plan runs (Cinder's fake notifier,
the message API autospec'd)."""

import datetime
from unittest import mock

from cinder import context
from cinder.message import api as message_api
from cinder.message import message_field
from cinder import rpc
from cinder.tests.unit import test

from cinder_vmdk_backup.plans import notices

PLAN = {'id': 'plan-1', 'name': 'nightly', 'project_id': 'p1',
        'target_type': 'volume', 'target_id': 'vol-1'}
RUN = {'id': 'run-1', 'kind': 'scheduled', 'status': 'failed',
       'host': 'backup-a', 'backup_ids': ['b1'],
       'scheduled_for': datetime.datetime(2026, 12, 6, 2, 0,
                                          tzinfo=datetime.timezone.utc),
       'error': 'disk on fire'}


class NoticesTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.messages = mock.create_autospec(message_api.API,
                                             instance=True)
        self.notices = notices.Notices('backup-a', messages=self.messages)
        self.ctxt = context.RequestContext('u1', 'p1', is_admin=True)

    def test_notifications(self):
        self.notices.notify(self.ctxt, notices.START, PLAN, RUN)
        self.notices.notify(self.ctxt, notices.ERROR, PLAN, RUN)
        sent = self.notifier.notifications
        self.assertEqual(
            [('backup_plan.run.start', 'INFO'),
             ('backup_plan.run.error', 'ERROR')],
            [(n['event_type'], n['priority']) for n in sent])
        self.assertEqual('backup_plan.backup-a', sent[0]['publisher_id'])
        payload = sent[1]['payload']
        self.assertEqual(('plan-1', 'run-1', ['b1'], 'disk on fire',
                          '2026-12-06T02:00:00+00:00'),
                         (payload['plan_id'], payload['run_id'],
                          payload['backup_ids'], payload['error'],
                          payload['scheduled_for']))

    def test_user_message_on_the_volume_or_the_plan(self):
        self.notices.tell_user(self.ctxt, PLAN, RUN,
                               detail=notices.BACKUP_ERROR)
        self.messages.create.assert_called_once_with(
            self.ctxt, message_field.Action.BACKUP_CREATE,
            resource_type='VOLUME', resource_uuid='vol-1',
            exception=None, detail=notices.BACKUP_ERROR)
        self.messages.create.reset_mock()
        exc = RuntimeError('x')
        self.notices.tell_user(self.ctxt, dict(PLAN, target_type='volume_'
                                               'type'), RUN, exception=exc)
        self.messages.create.assert_called_once_with(
            self.ctxt, message_field.Action.BACKUP_CREATE,
            resource_type='VOLUME_BACKUP', resource_uuid='plan-1',
            exception=exc, detail=None)

    def test_failures_to_tell_never_stop_a_run(self):
        self.messages.create.side_effect = RuntimeError('db gone')
        # (Cinder's TestCase already replaced get_notifier by a mock.)
        rpc.get_notifier.side_effect = AssertionError('no notifier')
        self.notices.notify(self.ctxt, notices.END, PLAN, RUN)
        self.notices.tell_user(self.ctxt, PLAN, RUN)
