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

"""verification.api.API against Cinder's real database (sqlite).

Cinder's objects, policies and services table, the real verification
records (:mod:`cinder_vmdk_backup.verification.records`) and, for sets,
the real instance-group API; only the cast to cinder-backup is an autospec
of :class:`~cinder_vmdk_backup.verification.rpcapi.VerificationAPI`. A
refused request must leave every record as it was.
"""

from unittest import mock

from cinder import context
from cinder import exception
from cinder import objects
from cinder.tests.unit import fake_constants as fake
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils
from oslo_utils import timeutils
from oslo_utils import uuidutils

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.verification import api as verification_api
from cinder_vmdk_backup.verification import records
from cinder_vmdk_backup.verification import rpcapi
from tests.unit.group import test_api as group_test_api

HOST_A = 'backup-a'
HOST_B = 'backup-b'


def add_service(ctxt, host, az='az1', up=True):
    service = objects.Service(ctxt, host=host, binary='cinder-backup',
                              topic='cinder-backup', availability_zone=az,
                              report_count=1, disabled=False)
    service.create()
    service.updated_at = (timeutils.utcnow() if up else
                          timeutils.utcnow().replace(year=2000))
    service.save()


class VerificationApiTestCase(test.TestCase):

    def setUp(self):
        super().setUp()
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           roles=['member', 'reader'])
        self.admin = context.get_admin_context()
        self.rpc = mock.create_autospec(rpcapi.VerificationAPI,
                                        instance=True)
        self.api = verification_api.API(rpc_api=self.rpc)
        add_service(self.admin, HOST_A)
        self.full = self._backup(volume_id=fake.VOLUME_ID)
        self.incr = self._backup(volume_id=fake.VOLUME_ID,
                                 parent_id=self.full.id)

    def _backup(self, ctxt=None, status='available', host=HOST_A,
                availability_zone='az1', **kwargs):
        return test_utils.create_backup(
            ctxt or self.ctxt, status=status, host=host,
            availability_zone=availability_zone, **kwargs)

    def _metadata(self, backup):
        return dict(objects.Backup.get_by_id(self.admin, backup.id).metadata)

    # -- verify ---------------------------------------------------------------

    def test_verify_queues_and_casts_to_the_backup_host(self):
        answer = self.api.verify(self.ctxt, self.incr.id, deep=True)
        self.rpc.verify_backup.assert_called_once_with(
            self.ctxt, HOST_A, self.incr.id, mock.ANY, True)
        verification_id = self.rpc.verify_backup.call_args[0][3]
        self.assertTrue(uuidutils.is_uuid_like(verification_id))
        self.assertEqual('queued', answer['status'])
        self.assertEqual(verification_id, answer['verification_id'])
        self.assertTrue(answer['deep'])
        self.assertEqual(self.incr.id, answer['backup_id'])
        self.assertEqual('available', answer['backup_status'])
        self.assertEqual(fake.PROJECT_ID, answer['project_id'])
        self.assertEqual(0, answer['progress'])
        self.assertEqual([], answer['problems'])
        # Recorded on the backup, where cinder-backup and lists read it.
        self.assertEqual('queued',
                         self._metadata(self.incr)[records.STATUS])
        self.assertEqual('available', objects.Backup.get_by_id(
            self.admin, self.incr.id).status)

    def test_verify_on_another_host_when_the_backup_host_is_down(self):
        backup = self._backup(host='gone')
        add_service(self.admin, 'gone', up=False)
        add_service(self.admin, HOST_B, az='az2')
        self.api.verify(self.ctxt, backup.id)
        self.rpc.verify_backup.assert_called_once_with(
            self.ctxt, HOST_A, backup.id, mock.ANY, False)

    def test_no_backup_service_up(self):
        backup = self._backup(host='gone', availability_zone='az9')
        self.assertRaises(exception.ServiceNotFound, self.api.verify,
                          self.ctxt, backup.id)
        self.rpc.verify_backup.assert_not_called()
        self.assertNotIn(records.STATUS, self._metadata(backup))

    def test_backup_not_available(self):
        backup = self._backup(status='creating')
        exc = self.assertRaises(exception.InvalidBackup, self.api.verify,
                                self.ctxt, backup.id)
        self.assertIn('creating', str(exc))
        self.rpc.verify_backup.assert_not_called()
        self.assertNotIn(records.STATUS, self._metadata(backup))

    def test_parent_not_available(self):
        self.full.status = 'deleting'
        self.full.save()
        exc = self.assertRaises(exception.InvalidBackup, self.api.verify,
                                self.ctxt, self.incr.id)
        self.assertIn(self.full.id, str(exc))
        self.assertIn('deleting', str(exc))
        self.rpc.verify_backup.assert_not_called()
        self.assertNotIn(records.STATUS, self._metadata(self.incr))

    def test_parent_record_gone_is_for_the_verification_to_report(self):
        self.full.destroy()
        self.api.verify(self.ctxt, self.incr.id)
        self.rpc.verify_backup.assert_called_once_with(
            self.ctxt, HOST_A, self.incr.id, mock.ANY, False)

    def test_other_project(self):
        other = context.RequestContext(fake.USER2_ID, fake.PROJECT2_ID,
                                       roles=['member'])
        self.assertRaises(exception.BackupNotFound, self.api.verify,
                          other, self.full.id)
        self.assertRaises(exception.BackupNotFound, self.api.get,
                          other, self.full.id)
        self.rpc.verify_backup.assert_not_called()
        # An admin of any project may.
        self.api.verify(self.admin, self.full.id)
        self.rpc.verify_backup.assert_called_once()

    def test_busy(self):
        first = self.api.verify(self.ctxt, self.full.id)
        exc = self.assertRaises(cvb_exception.VerificationBusy,
                                self.api.verify, self.ctxt, self.full.id)
        self.assertIn(first['verification_id'], str(exc))
        self.assertEqual(1, self.rpc.verify_backup.call_count)
        self.assertEqual(first['verification_id'],
                         self._metadata(self.full)[records.ID])

    def test_again_after_the_end(self):
        first = self.api.verify(self.ctxt, self.full.id)
        backup = objects.Backup.get_by_id(self.admin, self.full.id)
        records.fail(backup, 'the store is down')
        second = self.api.verify(self.ctxt, self.full.id)
        self.assertNotEqual(first['verification_id'],
                            second['verification_id'])
        self.assertEqual('queued', second['status'])
        self.assertIsNone(second['summary'])

    def test_cast_fails(self):
        self.rpc.verify_backup.side_effect = RuntimeError('no broker')
        self.assertRaises(RuntimeError, self.api.verify, self.ctxt,
                          self.full.id)
        record = self.api.get(self.ctxt, self.full.id)
        self.assertEqual('error', record['status'])
        self.assertIn(HOST_A, record['summary'])
        # Not busy: the user may try again.
        self.rpc.verify_backup.side_effect = None
        self.assertEqual('queued', self.api.verify(
            self.ctxt, self.full.id)['status'])

    # -- get, get_all ---------------------------------------------------------

    def test_get_unverified(self):
        record = self.api.get(self.ctxt, self.full.id)
        self.assertEqual('unverified', record['status'])
        self.assertIsNone(record['verification_id'])
        self.assertEqual([], record['problems'])
        self.assertEqual(0, record['problem_count'])

    def test_get_all(self):
        other = context.RequestContext(fake.USER2_ID, fake.PROJECT2_ID,
                                       roles=['member'])
        theirs = self._backup(ctxt=other, volume_id=fake.VOLUME2_ID)
        mine_elsewhere = self._backup(volume_id=fake.VOLUME2_ID)
        self.api.verify(self.ctxt, self.full.id)

        listed = self.api.get_all(self.ctxt)
        self.assertEqual(
            {self.full.id: 'queued', self.incr.id: 'unverified',
             mine_elsewhere.id: 'unverified'},
            {e['backup_id']: e['status'] for e in listed})
        self.assertEqual([self.full.id], [
            e['backup_id'] for e in self.api.get_all(
                self.ctxt, {'status': 'queued'})])
        self.assertEqual({self.full.id, self.incr.id}, {
            e['backup_id'] for e in self.api.get_all(
                self.ctxt, {'volume_id': fake.VOLUME_ID})})
        # all_tenants: admins only.
        self.assertNotIn(theirs.id, [e['backup_id'] for e in
                                     self.api.get_all(
                                         self.ctxt, {'all_tenants': True})])
        self.assertIn(theirs.id, [e['backup_id'] for e in self.api.get_all(
            self.admin, {'all_tenants': True})])


class VerifySetTestCase(group_test_api.GroupApiBase):
    """Sets made by the real instance-group API (its test base)."""

    def setUp(self):
        super().setUp()
        self.vrpc = mock.create_autospec(rpcapi.VerificationAPI,
                                         instance=True)
        self.api_v = verification_api.API(rpc_api=self.vrpc)
        self.nightly = self._backup('nightly')
        self.group_id = self.group['id']

    def _set_backups(self):
        return [b for b in group_test_api.records.set_backups(
            self.ctxt, self.nightly['group_snapshot_id'])]

    def test_verify_set(self):
        result = self.api_v.verify_set(self.ctxt, self.group_id,
                                       group_test_api.INSTANCE,
                                       name='nightly', deep=True)
        backups = self._set_backups()
        self.assertEqual(2, len(backups))
        self.assertEqual(self.nightly['group_snapshot_id'],
                         result['group_snapshot_id'])
        self.assertEqual(self.group_id, result['group_id'])
        self.assertEqual(sorted(b.id for b in backups),
                         sorted(e['backup_id'] for e in result['backups']))
        verification_id = result['verification_id']
        self.assertEqual(
            sorted((b.id, verification_id, True) for b in backups),
            sorted((c[0][2], c[0][3], c[0][4])
                   for c in self.vrpc.verify_backup.call_args_list))
        for backup in backups:
            record = records.read(backup)
            self.assertEqual(('queued', verification_id),
                             (record['status'], record['verification_id']))

    def test_by_id_and_wrong_instance(self):
        set_id = self.nightly['group_snapshot_id']
        self.api_v.verify_set(self.ctxt, self.group_id,
                              group_test_api.INSTANCE,
                              group_snapshot_id=set_id)
        self.assertEqual(2, self.vrpc.verify_backup.call_count)
        self.assertRaises(cvb_exception.InstanceGroupInvalid,
                          self.api_v.verify_set, self.ctxt, self.group_id,
                          group_test_api.OTHER_INSTANCE, name='nightly')
        self.assertRaises(cvb_exception.BackupSetNotFound,
                          self.api_v.verify_set, self.ctxt, self.group_id,
                          group_test_api.INSTANCE, name='weekly')

    def test_one_member_busy(self):
        backups = self._set_backups()
        busy = backups[-1]
        records.queue(busy, 'earlier-verification', False)
        self.assertRaises(cvb_exception.VerificationBusy,
                          self.api_v.verify_set, self.ctxt, self.group_id,
                          group_test_api.INSTANCE, name='nightly')
        self.vrpc.verify_backup.assert_not_called()
        for backup in backups[:-1]:
            record = records.read(objects.Backup.get_by_id(self.ctxt,
                                                           backup.id))
            self.assertEqual('error', record['status'])
            self.assertIn(busy.id, record['summary'])
        self.assertEqual('earlier-verification', records.read(
            objects.Backup.get_by_id(self.ctxt, busy.id))['verification_id'])
