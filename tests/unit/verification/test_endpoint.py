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

"""The verification endpoint: Cinder's real database, the verifier mocked.

The verifier runs for real against Cinder's posix driver in
tests/functional/verification.
"""

from unittest import mock

from cinder.backup import manager as cinder_manager
from cinder import context
from cinder import objects
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.verification import endpoint
from cinder_vmdk_backup.verification import records
from cinder_vmdk_backup.verification import verifier


class EndpointTestCase(test.TestCase):

    def setUp(self):
        super(EndpointTestCase, self).setUp()
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        volume = test_utils.create_volume(self.ctxt, size=1)
        self.backup = test_utils.create_backup(self.ctxt, volume.id,
                                               status='available')
        self.manager = mock.create_autospec(cinder_manager.BackupManager,
                                            instance=True)
        self.manager._semaphore = mock.MagicMock()
        # An instance attribute (the backup service's class) in Cinder.
        self.manager.service = mock.Mock()
        self.verify = self.mock_object(verifier, 'verify', autospec=True)
        self.clock = mock.Mock(return_value=0.0)
        self.endpoint = endpoint.VerificationEndpoint(self.manager,
                                                      clock=self.clock)

    def _record(self):
        return records.read(objects.Backup.get_by_id(self.ctxt,
                                                     self.backup.id))

    def _queue(self, verification_id='v1', deep=False):
        records.queue(self.backup, verification_id, deep)

    def test_target(self):
        self.assertEqual('backup_verification', endpoint.VerificationEndpoint
                         .target.namespace)
        self.assertEqual('1.0', endpoint.VerificationEndpoint.target.version)

    def test_ok_recorded_within_the_semaphore(self):
        self._queue(deep=True)
        report = verifier.Report(self.backup.id)
        report.chain = [self.backup.id]

        def verify(service, backup, deep, progress, cancelled):
            self.manager._semaphore.__enter__.assert_called_once_with()
            self.manager._semaphore.__exit__.assert_not_called()
            self.assertEqual('running', self._record()['status'])
            progress(50)
            self.assertEqual(50, self._record()['progress'])
            self.assertFalse(cancelled())
            return report

        self.verify.side_effect = verify
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1', True)
        self.verify.assert_called_once_with(
            self.manager.service.return_value, mock.ANY, deep=True,
            progress=mock.ANY, cancelled=mock.ANY)
        self.manager._semaphore.__exit__.assert_called_once()
        record = self._record()
        self.assertEqual(('ok', 100, True),
                         (record['status'], record['progress'],
                          record['deep']))
        self.assertEqual('available', objects.Backup.get_by_id(
            self.ctxt, self.backup.id).status)

    def test_failed_leaves_the_status(self):
        self._queue()
        report = verifier.Report(self.backup.id)
        report.add(self.backup.id, verifier.MISSING, 0, 1024, obj='o-00001')
        self.verify.return_value = report
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        record = self._record()
        self.assertEqual('failed', record['status'])
        self.assertEqual('o-00001', record['problems'][0]['object'])
        self.assertEqual('available', objects.Backup.get_by_id(
            self.ctxt, self.backup.id).status)

    def test_could_not_run_is_error(self):
        self._queue()
        self.verify.side_effect = cvb_exception.VerificationError(
            reason='the store is down')
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        record = self._record()
        self.assertEqual('error', record['status'])
        self.assertIn('the store is down', record['summary'])

    def test_unexpected_error_is_error(self):
        self._queue()
        self.verify.side_effect = RuntimeError('boom')
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        self.assertEqual('RuntimeError: boom', self._record()['summary'])

    def test_backup_deleted_before_it_runs(self):
        self._queue()
        self.backup.destroy()
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        self.verify.assert_not_called()

    def test_backup_deleting_before_it_runs(self):
        self._queue()
        self.backup.status = 'deleting'
        self.backup.save()
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        self.verify.assert_not_called()
        self.assertEqual('queued', self._record()['status'])

    def test_backup_deleted_while_it_runs_ends_quietly(self):
        self._queue()

        def verify(service, backup, deep, progress, cancelled):
            objects.Backup.get_by_id(self.ctxt, self.backup.id).destroy()
            self.clock.return_value = 100.0
            if cancelled():
                raise verifier.Cancelled()

        self.verify.side_effect = verify
        finish = self.mock_object(records, 'finish', autospec=True)
        fail = self.mock_object(records, 'fail', autospec=True)
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        self.verify.assert_called_once()
        finish.assert_not_called()
        fail.assert_not_called()

    def test_replaced_verification_not_run(self):
        self._queue('v2')
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        self.verify.assert_not_called()
        self.assertEqual('queued', self._record()['status'])

    def test_replaced_while_running_stops(self):
        self._queue()

        def verify(service, backup, deep, progress, cancelled):
            other = objects.Backup.get_by_id(self.ctxt, self.backup.id)
            metadata = dict(other.metadata)
            metadata[records.ID] = 'v2'
            other.metadata = metadata
            other.save()
            self.clock.return_value = 100.0
            if cancelled():
                raise verifier.Cancelled()
            return verifier.Report(self.backup.id)

        self.verify.side_effect = verify
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        self.assertEqual('running', self._record()['status'])

    def test_progress_is_throttled(self):
        self._queue()
        saves = []

        def verify(service, backup, deep, progress, cancelled):
            real = records.progress
            with mock.patch.object(records, 'progress',
                                   side_effect=lambda b, p: saves.append(p)
                                   or real(b, p)):
                progress(10)
                progress(20)           # too soon
                self.clock.return_value = endpoint.PROGRESS_INTERVAL + 1
                progress(30)
            return verifier.Report(self.backup.id)

        self.verify.side_effect = verify
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        self.assertEqual([10, 30], saves)

    def test_deleting_when_it_ends_records_nothing(self):
        self._queue()

        def verify(service, backup, deep, progress, cancelled):
            other = objects.Backup.get_by_id(self.ctxt, self.backup.id)
            other.status = 'deleting'
            other.save()
            report = verifier.Report(self.backup.id)
            report.add(self.backup.id, verifier.MISSING, 0, 1, obj='o')
            return report

        self.verify.side_effect = verify
        self.endpoint.verify_backup(self.ctxt, self.backup.id, 'v1')
        self.assertEqual('running', self._record()['status'])
