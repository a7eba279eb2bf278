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

"""The verification commands, through the real client, against a
scripted Cinder (tests.unit.client.http_peer)."""

import io
import json
from unittest import mock

from cinder_vmdk_backup.osc.v1 import backup_verifications as commands
from tests.unit.osc.v1 import test_instance_groups as base

PROJECT = base.PROJECT
BACKUP = '7c9e6679-7425-40de-944b-e07fc1f90ae7'
OTHER = 'b2b2b2b2-0000-4000-8000-000000000002'
VERIFICATION = 'a3bb189e-8bf9-4888-9912-ace4e6543002'
PREFIX = '/v3/%s/backup-verifications' % PROJECT
PROBLEM = {'backup_id': OTHER, 'object': 'volume_x/backup-00003',
           'offset': 4194304, 'length': 1048576, 'reason': 'md5_mismatch'}
TITLES = ('Backup ID', 'Backup Name', 'Backup Status', 'Status',
          'Verification ID', 'Deep', 'Progress', 'Started At', 'Finished At',
          'Summary', 'Problems')


def entry(status='queued', progress=0, backup_id=BACKUP, problems=()):
    return {'backup_id': backup_id, 'backup_name': 'nightly',
            'backup_status': 'available', 'status': status,
            'verification_id': VERIFICATION, 'deep': False,
            'progress': progress, 'started_at': None, 'finished_at': None,
            'summary': None, 'problem_count': len(problems),
            'problems': list(problems)}


class VerificationCommandTestCase(base.CommandTestCase):

    def setUp(self):
        super().setUp()
        self.app.stderr = io.StringIO()


class TestVerify(VerificationCommandTestCase):

    def test_verify(self):
        self.peer.answer(202, {'verification': entry()})
        titles, data = self.take(commands.VerifyBackup, [BACKUP])
        self.assertEqual(TITLES, titles)
        self.assertEqual('queued', data[3])
        self.assertEqual([('POST', PREFIX, {'verification': {
            'backup_id': BACKUP, 'deep': False}})], self.sent())

    def test_verify_by_name_deep(self):
        self.peer.answer(200, {'backups': [{'id': BACKUP,
                                            'name': 'nightly'}]})
        self.peer.answer(202, {'verification': entry()})
        self.take(commands.VerifyBackup, ['nightly', '--deep'])
        self.assertEqual(
            ('POST', PREFIX, {'verification': {'backup_id': BACKUP,
                                               'deep': True}}),
            self.sent()[1])

    def test_verify_wait_shows_progress_and_result(self):
        self.peer.answer(202, {'verification': entry()})
        self.peer.answer(200, {'verification': entry('running', 30)})
        self.peer.answer(200, {'verification': entry('running', 30)})
        self.peer.answer(200, {'verification': entry(
            'failed', 100, problems=[PROBLEM])})
        cmd = commands.VerifyBackup(self.app, None)
        parsed = self.check_parser(cmd, [BACKUP, '--wait'], [])
        with mock.patch('time.sleep', autospec=True):
            titles, data = cmd.take_action(parsed)
        self.assertEqual('failed', data[3])
        problems = data[-1]
        self.assertEqual([PROBLEM], problems.machine_readable())
        self.assertEqual(
            'md5_mismatch: volume_x/backup-00003 at volume offset 4194304, '
            '1048576 bytes (backup %s)' % OTHER, problems.human_readable())
        # Each change once.
        self.assertEqual(
            ['Backup %s: running 30%%' % BACKUP,
             'Backup %s: failed 100%%' % BACKUP],
            self.app.stderr.getvalue().splitlines())
        self.assertEqual(4, len(self.peer.requests))

    def test_verify_needs_a_backup(self):
        self.assert_parser_error(commands.VerifyBackup, [])


class TestShowList(VerificationCommandTestCase):

    def test_show(self):
        self.peer.answer(200, {'verification': entry('ok', 100)})
        titles, data = self.take(commands.ShowBackupVerification, [BACKUP])
        self.assertEqual(TITLES, titles)
        self.assertEqual((BACKUP, 'nightly', 'available', 'ok'), data[:4])
        self.assertEqual([('GET', '%s/%s' % (PREFIX, BACKUP), None)],
                         self.sent())

    def test_list(self):
        self.peer.answer(200, {'verifications': [
            entry('ok', 100), entry('unverified', 0, backup_id=OTHER)]})
        titles, rows = self.take(commands.ListBackupVerification,
                                 ['--status', 'ok', '--all-projects'])
        self.assertEqual(('Backup ID', 'Backup Name', 'Status',
                          'Finished At', 'Summary'), titles)
        self.assertEqual([BACKUP, OTHER], [r[0] for r in rows])
        req = self.peer.requests[0]
        self.assertEqual({'status': ['ok'], 'all_tenants': ['true']},
                         req.query)

    def test_list_long(self):
        self.peer.answer(200, {'verifications': [
            entry('failed', 100, problems=[PROBLEM])]})
        titles, rows = self.take(commands.ListBackupVerification,
                                 ['--long'])
        self.assertEqual('Problems', titles[-1])
        self.assertEqual([PROBLEM], rows[0][-1].machine_readable())

    def test_list_bad_status(self):
        self.assert_parser_error(commands.ListBackupVerification,
                                 ['--status', 'broken'])


class TestVerifySet(VerificationCommandTestCase):

    def _answer(self, *members):
        return {'verification': {
            'verification_id': VERIFICATION, 'group_id': base.GROUP,
            'group_snapshot_id': base.SET, 'backups': list(members)}}

    def test_verify_set(self):
        self.peer.answer(202, self._answer(entry(), entry(backup_id=OTHER)))
        titles, data = self.take(commands.VerifyBackupSet, [
            base.GROUP, '--instance-id', base.INSTANCE, '--name', 'nightly'])
        self.assertEqual(('Verification ID', 'Group ID', 'Backup Set ID',
                          'Status', 'Backups', 'Problems'), titles)
        self.assertEqual((VERIFICATION, base.GROUP, base.SET, 'queued'),
                         data[:4])
        self.assertEqual('%s queued 0%%\n%s queued 0%%' % (BACKUP, OTHER),
                         data[4].human_readable())
        self.assertEqual([('POST', '/v3/%s/instance-groups/%s/verify_backup'
                           % (PROJECT, base.GROUP),
                           {'instance_id': base.INSTANCE, 'name': 'nightly',
                            'deep': False})], self.sent())

    def test_verify_set_wait(self):
        self.peer.answer(202, self._answer(entry(), entry(backup_id=OTHER)))
        self.peer.answer(200, {'verification': entry('ok', 100)})
        self.peer.answer(200, {'verification': entry(
            'failed', 100, backup_id=OTHER, problems=[PROBLEM])})
        cmd = commands.VerifyBackupSet(self.app, None)
        parsed = self.check_parser(cmd, [
            base.GROUP, '--instance', base.INSTANCE, '--set-id', base.SET,
            '--deep', '--wait'], [])
        with mock.patch('time.sleep', autospec=True):
            _titles, data = cmd.take_action(parsed)
        self.assertEqual('failed', data[3])
        self.assertEqual([PROBLEM], data[5].machine_readable())
        self.assertEqual(
            {'instance_id': base.INSTANCE, 'group_snapshot_id': base.SET,
             'deep': True}, self.sent()[0][2])
        self.assertEqual(json.loads(json.dumps(
            data[4].machine_readable()))[1]['status'], 'failed')

    def test_needs_instance_and_one_set(self):
        for argv in ([base.GROUP, '--name', 'n'],
                     [base.GROUP, '--instance-id', base.INSTANCE],
                     [base.GROUP, '--instance-id', base.INSTANCE,
                      '--name', 'n', '--set-id', base.SET]):
            self.assert_parser_error(commands.VerifyBackupSet, argv)
