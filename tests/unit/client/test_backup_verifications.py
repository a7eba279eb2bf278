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

"""VerificationClient against a real keystoneauth1 session and HTTP."""

import ddt

from cinder_vmdk_backup.client import backup_verifications
from cinder_vmdk_backup.client import exceptions
from tests.unit.client import test_instance_groups as base

PROJECT = base.PROJECT
BACKUP = '7c9e6679-7425-40de-944b-e07fc1f90ae7'
VERIFICATION = 'a3bb189e-8bf9-4888-9912-ace4e6543002'
PREFIX = '/v3/%s/backup-verifications' % PROJECT


def entry(status='queued', progress=0, verification_id=VERIFICATION,
          backup_id=BACKUP):
    return {'backup_id': backup_id, 'status': status, 'progress': progress,
            'verification_id': verification_id, 'problems': []}


class VerificationClientTestCase(base.ClientTestCase):

    def setUp(self):
        super().setUp()
        self.client = backup_verifications.VerificationClient(
            adapter=self.client.adapter)


@ddt.ddt
class TestRoutes(VerificationClientTestCase):

    @ddt.data(True, False)
    def test_verify(self, deep):
        self.peer.answer(202, {'verification': entry()})
        self.assertEqual(entry(), self.client.verify(BACKUP, deep=deep))
        self.assert_request('POST', PREFIX, {'verification': {
            'backup_id': BACKUP, 'deep': deep}})

    def test_get(self):
        self.peer.answer(200, {'verification': entry('ok', 100)})
        self.assertEqual('ok', self.client.get(BACKUP)['status'])
        self.assert_request('GET', '%s/%s' % (PREFIX, BACKUP))

    def test_get_quotes_the_id(self):
        self.peer.answer(404, {'itemNotFound': {
            'message': 'Backup a/b could not be found.', 'code': 404}})
        exc = self.assertRaises(exceptions.NotFound, self.client.get, 'a/b')
        self.assertIn('a/b could not be found', str(exc))
        self.assertEqual('%s/a%%2Fb' % PREFIX, self.peer.requests[0].path)

    def test_list(self):
        self.peer.answer(200, {'verifications': [entry()]})
        self.assertEqual([entry()], self.client.list())
        self.assert_request('GET', PREFIX)

    def test_list_filters(self):
        self.peer.answer(200, {'verifications': []})
        self.client.list(status='failed', volume_id='v1', all_projects=True)
        self.assert_request('GET', PREFIX, query={
            'status': ['failed'], 'volume_id': ['v1'],
            'all_tenants': ['true']})

    def test_verify_set(self):
        answer = {'verification_id': VERIFICATION, 'group_id': base.GROUP,
                  'group_snapshot_id': base.SET, 'backups': [entry()]}
        self.peer.answer(202, {'verification': answer})
        self.assertEqual(answer, self.client.verify_set(
            base.GROUP, base.INSTANCE, name='nightly', deep=True))
        self.assert_request(
            'POST', '/v3/%s/instance-groups/%s/verify_backup' % (
                PROJECT, base.GROUP),
            {'instance_id': base.INSTANCE, 'name': 'nightly', 'deep': True})

    def test_verify_set_needs_a_set(self):
        self.assertRaises(ValueError, self.client.verify_set, base.GROUP,
                          base.INSTANCE)
        self.assertEqual([], self.peer.requests)

    def test_busy(self):
        self.peer.answer(409, {'badRequest': {
            'message': 'Backup %s is being verified already' % BACKUP,
            'code': 409}})
        exc = self.assertRaises(exceptions.Conflict, self.client.verify,
                                BACKUP)
        self.assertIn('being verified already', str(exc))

    # -- names ---------------------------------------------------------------

    def test_resolve_id(self):
        self.assertEqual(BACKUP, self.client.resolve_backup_id(BACKUP))
        self.assertEqual([], self.peer.requests)

    def test_resolve_name(self):
        self.peer.answer(200, {'backups': [
            {'id': BACKUP, 'name': 'nightly'},
            {'id': 'other', 'name': 'nightly-2'}]})
        self.assertEqual(BACKUP, self.client.resolve_backup_id('nightly'))
        self.assert_request('GET', '/v3/%s/backups' % PROJECT,
                            query={'name': ['nightly']})

    @ddt.data(([], exceptions.NotFound),
              ([{'id': 'b1', 'name': 'n'}, {'id': 'b2', 'name': 'n'}],
               exceptions.NoUniqueMatch))
    @ddt.unpack
    def test_resolve_name_refused(self, backups, error):
        self.peer.answer(200, {'backups': backups})
        self.assertRaises(error, self.client.resolve_backup_id, 'n')


class TestWait(VerificationClientTestCase):

    def setUp(self):
        super().setUp()
        self.now = 0.0
        self.slept = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds

    def test_until_the_end(self):
        for answer in (entry('queued'), entry('running', 40),
                       entry('running', 90), entry('failed', 100)):
            self.peer.answer(200, {'verification': answer})
        seen = []
        (final,) = self.client.wait([BACKUP], VERIFICATION, interval=3,
                                    progress=seen.append, clock=self.clock,
                                    sleep=self.sleep)
        self.assertEqual('failed', final['status'])
        self.assertEqual([0, 40, 90, 100], [e['progress'] for e in seen])
        self.assertEqual([3, 3, 3], self.slept)

    def test_several_backups(self):
        other = 'b2b2b2b2-0000-4000-8000-000000000002'
        for answer in (entry('running', 50), entry('ok', 100, backup_id=other),
                       entry('ok', 100)):
            self.peer.answer(200, {'verification': answer})
        finals = self.client.wait([BACKUP, other], VERIFICATION,
                                  clock=self.clock, sleep=self.sleep)
        self.assertEqual([(BACKUP, 'ok'), (other, 'ok')],
                         [(e['backup_id'], e['status']) for e in finals])
        self.assertEqual(['%s/%s' % (PREFIX, BACKUP),
                          '%s/%s' % (PREFIX, other),
                          '%s/%s' % (PREFIX, BACKUP)],
                         [r.path for r in self.peer.requests])

    def test_replaced_by_another_verification(self):
        self.peer.answer(200, {'verification': entry(
            'running', 10, verification_id='newer')})
        (final,) = self.client.wait([BACKUP], VERIFICATION,
                                    clock=self.clock, sleep=self.sleep)
        self.assertEqual('newer', final['verification_id'])
        self.assertEqual([], self.slept)

    def test_timeout(self):
        for _i in range(3):
            self.peer.answer(200, {'verification': entry('running', 5)})
        exc = self.assertRaises(
            backup_verifications.VerificationTimeout, self.client.wait,
            [BACKUP], VERIFICATION, timeout=4, interval=2, clock=self.clock,
            sleep=self.sleep)
        self.assertIn(BACKUP, str(exc))
        self.assertEqual(3, len(self.peer.requests))
