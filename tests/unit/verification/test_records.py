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

"""Verification records on backups in Cinder's real database (sqlite)."""

import datetime
from unittest import mock

from oslo_utils import timeutils

from cinder import context
from cinder import objects
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.verification import records
from cinder_vmdk_backup.verification import verifier


def _report(problems=0, backup_id=fake.BACKUP_ID):
    report = verifier.Report(backup_id)
    report.chain = [backup_id]
    report.objects_checked = 3
    report.bytes_checked = 3 * 1024 * 1024
    for index in range(problems):
        report.add(backup_id, verifier.DIGEST_MISMATCH, index * 32768,
                   32768, obj='volume_%s_20260101000000_backup_%s-%05d' % (
                       fake.VOLUME_ID, backup_id, index + 1),
                   detail='x' * 300)
    report.regions = [(0, 32768 * problems)] if problems else []
    return report


class RecordsTestCase(test.TestCase):

    def setUp(self):
        super(RecordsTestCase, self).setUp()
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=True)
        volume = test_utils.create_volume(self.ctxt, size=1)
        self.backup = test_utils.create_backup(self.ctxt, volume.id,
                                               status='available')

    def _fresh(self):
        return objects.Backup.get_by_id(self.ctxt, self.backup.id)

    def test_never_verified(self):
        self.assertIsNone(records.read(self._fresh()))

    def test_queue_then_busy(self):
        records.queue(self.backup, 'v1', True)
        record = records.read(self._fresh())
        self.assertEqual('queued', record['status'])
        self.assertEqual('v1', record['verification_id'])
        self.assertTrue(record['deep'])
        self.assertEqual(0, record['progress'])
        exc = self.assertRaises(cvb_exception.VerificationBusy,
                                records.queue, self._fresh(), 'v2', False)
        self.assertEqual(409, exc.code)
        self.assertIn('v1', str(exc))
        records.start(self._fresh(), 'v1', True)
        self.assertRaises(cvb_exception.VerificationBusy, records.queue,
                          self._fresh(), 'v2', False)

    def test_stale_record_may_be_replaced(self):
        records.queue(self.backup, 'v1', False)
        later = timeutils.utcnow() + records.STALE_AFTER + (
            datetime.timedelta(minutes=1))
        with mock.patch.object(timeutils, 'utcnow', return_value=later):
            records.queue(self._fresh(), 'v2', False)
        self.assertEqual('v2', records.read(self._fresh())['verification_id'])

    def test_run_to_ok(self):
        records.queue(self.backup, 'v1', False)
        backup = self._fresh()
        records.start(backup, 'v1')
        records.progress(backup, 42)
        record = records.read(self._fresh())
        self.assertEqual(('running', 42), (record['status'],
                                           record['progress']))
        self.assertIsNotNone(record['started_at'])
        records.finish(backup, _report())
        record = records.read(self._fresh())
        self.assertEqual('ok', record['status'])
        self.assertEqual(100, record['progress'])
        self.assertEqual([], record['problems'])
        self.assertEqual(0, record['problem_count'])
        self.assertTrue(record['summary'].startswith('ok: 1 backup(s)'))
        self.assertIsNotNone(record['finished_at'])
        # Done: another may be queued.
        records.queue(self._fresh(), 'v2', False)

    def test_failed_keeps_a_bounded_list_of_problems(self):
        records.start(self.backup, 'v1')
        records.finish(self.backup, _report(problems=8))
        backup = self._fresh()
        record = records.read(backup)
        self.assertEqual('failed', record['status'])
        self.assertEqual(8, record['problem_count'])
        self.assertEqual(records.MAX_PROBLEMS, len(record['problems']))
        self.assertEqual({'backup_id': fake.BACKUP_ID,
                          'object': 'volume_%s_20260101000000_backup_%s-'
                                    '00002' % (fake.VOLUME_ID,
                                               fake.BACKUP_ID),
                          'offset': 32768, 'length': 32768,
                          'reason': 'digest_mismatch'},
                         record['problems'][1])
        for value in backup.metadata.values():
            self.assertLessEqual(len(value), records.TEXT_LIMIT)
        # A new verification forgets the old problems.
        records.queue(backup, 'v2', False)
        record = records.read(self._fresh())
        self.assertEqual([], record['problems'])
        self.assertEqual([], [k for k in self._fresh().metadata
                              if k.startswith('cvb_verify_problem_')])

    def test_fail_is_error(self):
        records.start(self.backup, 'v1')
        records.fail(self.backup, 'the store cannot be reached: ' + 'x' * 400)
        record = records.read(self._fresh())
        self.assertEqual('error', record['status'])
        self.assertEqual(records.TEXT_LIMIT, len(record['summary']))

    def test_other_metadata_kept(self):
        self.backup.metadata = {'instance_group_id': 'g1'}
        self.backup.save()
        records.queue(self._fresh(), 'v1', False)
        self.assertEqual('g1', self._fresh().metadata['instance_group_id'])
