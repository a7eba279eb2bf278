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

"""The commands, through the real client, against a scripted Cinder."""

import json

import ddt
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from osc_lib.cli import format_columns
from osc_lib.test import base

from cinder_vmdk_backup.client import exceptions
from cinder_vmdk_backup.client import instance_groups as ig_client
from cinder_vmdk_backup.osc.v1 import instance_groups
from tests.unit.client import http_peer

PROJECT = 'f0e1d2c3b4a5968778695a4b3c2d1e0f'
GROUP = '9b0c4b6e-44a5-4bd2-8c39-0d2c7a6b1f10'
INSTANCE = '3f8a1c2e-5d6b-4e7f-8091-a2b3c4d5e6f7'
SET = '1d2e3f40-5a6b-4c7d-8e9f-a0b1c2d3e4f5'
PREFIX = '/v3/%s/instance-groups' % PROJECT
VOLUMES = [{'id': 'v1', 'mountpoint': '/dev/vda', 'boot': True},
           {'id': 'v2', 'mountpoint': '/dev/vdb', 'boot': False}]
GROUP_DICT = {
    'id': GROUP, 'name': 'web', 'description': 'the web VM',
    'status': 'available', 'project_id': PROJECT, 'user_id': 'u1',
    'group_type_id': 'gt1', 'instance_id': INSTANCE,
    'availability_zone': 'nova', 'created_at': '2026-12-06T08:00:00.000000',
    'volumes': VOLUMES}
GROUP_TITLES = ('ID', 'Name', 'Description', 'Status', 'Instance ID',
                'Availability Zone', 'Group Type ID', 'Project ID',
                'User ID', 'Created At', 'Volumes')
RESULT = {'operation': 'backup', 'success': True, 'instance_id': INSTANCE,
          'group_id': GROUP, 'group_snapshot_id': SET,
          'volume_id': ['v1', 'v2'], 'volume_snapshot_id': ['s1', 's2'],
          'backup_id': ['b1', 'b2']}
RESULT_TITLES = ('Operation', 'Success', 'Instance ID', 'Group ID',
                 'Backup Set ID', 'Volume IDs', 'Volume Snapshot IDs',
                 'Backup IDs')


def _backup(bid, vid, mountpoint):
    return {'id': bid, 'volume_id': vid, 'status': 'available',
            'metadata': {'instance_group_id': GROUP,
                         'group_snapshot_id': SET, 'instance_id': INSTANCE,
                         'mountpoint': mountpoint}}


SETS = [
    {'id': SET, 'group_id': GROUP, 'project_id': PROJECT, 'user_id': 'u1',
     'name': 'nightly', 'description': 'before upgrade',
     'status': 'available', 'group_type_id': 'gt1',
     'created_at': '2026-12-06T08:10:00.000000',
     'backups': [_backup('b1', 'v1', '/dev/vda'),
                 _backup('b2', 'v2', '/dev/vdb')]},
    {'id': 'set2', 'group_id': GROUP, 'name': 'running', 'description': '',
     'status': 'creating', 'created_at': '2026-12-06T09:00:00.000000',
     'backups': []}]


class CommandTestCase(base.TestCommand):

    def setUp(self):
        super().setUp()
        self.peer = self.useFixture(http_peer.HttpPeer())
        session = ks_session.Session(auth=token_endpoint.Token(
            self.peer.url + '/v3/' + PROJECT, 'tok'))
        self.app.client_manager.instance_groups = (
            ig_client.InstanceGroupClient(session=session))

    def take(self, cls, argv):
        cmd = cls(self.app, None)
        parsed = self.check_parser(cmd, argv, [])
        return cmd.take_action(parsed)

    def sent(self):
        """(method, path, body) of each request the server got."""
        return [(r.method, r.path, r.body) for r in self.peer.requests]

    def assert_parser_error(self, cls, argv):
        self.assertRaises(base.ParserException, self.check_parser,
                          cls(self.app, None), argv, [])


class TestGroups(CommandTestCase):

    def test_create(self):
        self.peer.answer(201, {'instance_group': GROUP_DICT})
        titles, data = self.take(instance_groups.CreateInstanceGroup, [
            INSTANCE, '--name', 'web', '--description', 'the web VM'])
        self.assertEqual(GROUP_TITLES, titles)
        self.assertEqual((GROUP, 'web', 'the web VM', 'available', INSTANCE,
                          'nova', 'gt1', PROJECT, 'u1',
                          '2026-12-06T08:00:00.000000'), data[:-1])
        self.assertEqual('v1 /dev/vda boot\nv2 /dev/vdb',
                         data[-1].human_readable())
        self.assertEqual(VOLUMES, data[-1].machine_readable())
        self.assertEqual([('POST', PREFIX, {'instance_group': {
            'instance_id': INSTANCE, 'name': 'web',
            'description': 'the web VM'}})], self.sent())

    def test_create_needs_instance(self):
        self.assert_parser_error(instance_groups.CreateInstanceGroup, [])

    def test_list(self):
        self.peer.answer(200, {'instance_groups': [GROUP_DICT]})
        titles, rows = self.take(instance_groups.ListInstanceGroup,
                                 ['--instance', INSTANCE])
        self.assertEqual(('ID', 'Name', 'Status', 'Instance ID',
                          'Availability Zone'), titles)
        self.assertEqual([(GROUP, 'web', 'available', INSTANCE, 'nova')],
                         list(rows))
        req = self.peer.requests[0]
        self.assertEqual(('GET', PREFIX, {'instance_id': [INSTANCE]}),
                         (req.method, req.path, req.query))

    def test_list_long(self):
        self.peer.answer(200, {'instance_groups': [GROUP_DICT]})
        titles, rows = self.take(instance_groups.ListInstanceGroup,
                                 ['--long'])
        self.assertEqual(('ID', 'Name', 'Status', 'Instance ID',
                          'Availability Zone', 'Description', 'Volumes',
                          'Created At'), titles)
        row = list(rows)[0]
        self.assertEqual('the web VM', row[5])
        self.assertEqual(VOLUMES, row[6].machine_readable())
        self.assertEqual({}, self.peer.requests[0].query)

    def test_show_by_name(self):
        other = dict(GROUP_DICT, id='g0', name='db', volumes=[])
        self.peer.answer(200, {'instance_groups': [other, GROUP_DICT]})
        titles, data = self.take(instance_groups.ShowInstanceGroup, ['web'])
        self.assertEqual(GROUP_TITLES, titles)
        self.assertEqual(GROUP, data[0])
        self.assertEqual(VOLUMES, data[-1].machine_readable())

    def test_show_unknown(self):
        self.peer.answer(200, {'instance_groups': [GROUP_DICT]})
        self.assertRaises(exceptions.NotFound, self.take,
                          instance_groups.ShowInstanceGroup, ['nope'])

    def test_delete(self):
        self.peer.answer(200)
        self.assertIsNone(self.take(instance_groups.DeleteInstanceGroup,
                                    [GROUP]))
        self.assertEqual([('DELETE', PREFIX + '/' + GROUP, None)],
                         self.sent())

    def test_delete_by_name(self):
        self.peer.answer(200, {'instance_groups': [GROUP_DICT]})
        self.peer.answer(200)
        self.take(instance_groups.DeleteInstanceGroup, ['web'])
        self.assertEqual([('GET', PREFIX, None),
                          ('DELETE', PREFIX + '/' + GROUP, None)],
                         self.sent())

    def test_delete_refused(self):
        self.peer.answer(400, {'badRequest': {
            'message': 'Instance group has backup sets', 'code': 400}})
        exc = self.assertRaises(exceptions.BadRequest, self.take,
                                instance_groups.DeleteInstanceGroup, [GROUP])
        self.assertIn('Instance group has backup sets (HTTP 400)', str(exc))

    def test_set(self):
        self.peer.answer(200, {'instance_group': GROUP_DICT})
        self.take(instance_groups.SetInstanceGroup, [
            GROUP, '--instance', INSTANCE, '--add-volume', 'v3',
            '--add-volume', 'v4', '--remove-volume', 'v2'])
        self.assertEqual([('PUT', PREFIX + '/' + GROUP + '/members', {
            'instance_id': INSTANCE, 'add_volumes': ['v3', 'v4'],
            'remove_volumes': ['v2']})], self.sent())

    def test_set_reread(self):
        self.peer.answer(200, {'instance_group': GROUP_DICT})
        self.take(instance_groups.SetInstanceGroup,
                  [GROUP, '--instance', INSTANCE])
        self.assertEqual([('PUT', PREFIX + '/' + GROUP + '/members',
                           {'instance_id': INSTANCE})], self.sent())

    def test_set_needs_instance(self):
        self.assert_parser_error(instance_groups.SetInstanceGroup,
                                 [GROUP, '--add-volume', 'v3'])


@ddt.ddt
class TestBackupSets(CommandTestCase):

    @ddt.data(([], {}), (['--async'], {'async': 'true'}))
    @ddt.unpack
    def test_create(self, extra_args, extra_body):
        self.peer.answer(201, RESULT)
        titles, data = self.take(instance_groups.CreateBackupSet, [
            GROUP, '--instance', INSTANCE, '--name', 'nightly',
            '--description', 'before upgrade'] + extra_args)
        self.assertEqual(RESULT_TITLES, titles)
        self.assertEqual(('backup', True, INSTANCE, GROUP, SET), data[:5])
        self.assertIsInstance(data[5], format_columns.ListColumn)
        self.assertEqual(['b1', 'b2'], data[7].machine_readable())
        body = {'instance_id': INSTANCE, 'name': 'nightly',
                'description': 'before upgrade'}
        body.update(extra_body)
        self.assertEqual([('POST', PREFIX + '/' + GROUP + '/backup', body)],
                         self.sent())

    def test_create_submitted(self):
        self.peer.answer(201, {'msg': 'Backup request submitted'})
        self.assertEqual(
            (('Message',), ('Backup request submitted',)),
            self.take(instance_groups.CreateBackupSet, [
                GROUP, '--instance', INSTANCE, '--name', 'n', '--async']))

    @ddt.data([GROUP, '--name', 'n'], [GROUP, '--instance', INSTANCE])
    def test_create_needs(self, argv):
        self.assert_parser_error(instance_groups.CreateBackupSet, argv)

    def test_create_busy(self):
        self.peer.answer(409, {'conflictingRequest': {
            'message': 'Instance group %s is busy' % GROUP, 'code': 409}})
        exc = self.assertRaises(
            exceptions.Conflict, self.take, instance_groups.CreateBackupSet,
            [GROUP, '--instance', INSTANCE, '--name', 'n'])
        self.assertEqual(409, exc.code)

    def test_list(self):
        self.peer.answer(200, SETS)
        titles, rows = self.take(instance_groups.ListBackupSet, [GROUP])
        self.assertEqual(('ID', 'Name', 'Status', 'Created At', 'Backups'),
                         titles)
        self.assertEqual([
            (SET, 'nightly', 'available', '2026-12-06T08:10:00.000000', 2),
            ('set2', 'running', 'creating', '2026-12-06T09:00:00.000000',
             0)], rows)
        self.assertEqual([('GET', PREFIX + '/' + GROUP, None)], self.sent())

    def test_list_long(self):
        self.peer.answer(200, SETS)
        titles, rows = self.take(instance_groups.ListBackupSet,
                                 [GROUP, '--long'])
        self.assertEqual(('ID', 'Name', 'Status', 'Created At', 'Backups',
                          'Description', 'Backup IDs', 'Volume IDs',
                          'Mountpoints'), titles)
        first = rows[0]
        self.assertEqual('before upgrade', first[5])
        self.assertEqual((['b1', 'b2'], ['v1', 'v2'],
                          ['/dev/vda', '/dev/vdb']),
                         tuple(c.machine_readable() for c in first[6:]))
        self.assertEqual('', rows[1][6].human_readable())

    @ddt.data(
        (['--set', SET], {'group_snapshot_id': SET}),
        (['--name', 'nightly'], {'name': 'nightly'}),
        (['--name', 'nightly', '--async'],
         {'name': 'nightly', 'async': 'true'}))
    @ddt.unpack
    def test_restore(self, extra_args, extra_body):
        self.peer.answer(201, dict(RESULT, operation='restore',
                                   volume_snapshot_id=[]))
        titles, data = self.take(
            instance_groups.RestoreBackupSet,
            [GROUP, '--instance', INSTANCE] + extra_args)
        self.assertEqual('restore', data[0])
        body = {'instance_id': INSTANCE}
        body.update(extra_body)
        self.assertEqual([('PUT', PREFIX + '/' + GROUP + '/restore', body)],
                         self.sent())

    @ddt.data(instance_groups.RestoreBackupSet,
              instance_groups.RestoreNewBackupSet,
              instance_groups.DeleteBackupSet)
    def test_set_choice(self, cls):
        # Neither --set nor --name, or both: the parser refuses.
        self.assert_parser_error(cls, [GROUP, '--instance', INSTANCE])
        self.assert_parser_error(cls, [GROUP, '--instance', INSTANCE,
                                       '--set', SET, '--name', 'n'])
        self.assert_parser_error(cls, [GROUP, '--set', SET])
        self.assertEqual([], self.peer.requests)

    def test_restore_new(self):
        answer = dict(RESULT, operation='restore_new',
                      new_volume_id=['n1', 'n2'], server_id='srv')
        self.peer.answer(201, answer)
        titles, data = self.take(instance_groups.RestoreNewBackupSet, [
            GROUP, '--instance', INSTANCE, '--set', SET,
            '--volume-type', 'std', '--availability-zone', 'az2',
            '--volume', 'v1:type=fast,az=az3,name=root',
            '--volume', 'v2:name=data',
            '--server-name', 'clone', '--flavor', 'm1.small', '--async'])
        self.assertEqual(RESULT_TITLES + ('New Volume IDs', 'Server ID'),
                         titles)
        self.assertEqual(['n1', 'n2'], data[8].machine_readable())
        self.assertEqual('srv', data[9])
        self.assertEqual([('PUT', PREFIX + '/' + GROUP + '/restore_new', {
            'instance_id': INSTANCE, 'group_snapshot_id': SET,
            'volume_type': 'std', 'availability_zone': 'az2',
            'volumes': {'v1': {'volume_type': 'fast',
                               'availability_zone': 'az3', 'name': 'root'},
                        'v2': {'name': 'data'}},
            'server': {'name': 'clone', 'flavor': 'm1.small'},
            'async': 'true'})], self.sent())

    def test_restore_new_volumes_only(self):
        self.peer.answer(201, {'msg': 'Restore request submitted'})
        self.take(instance_groups.RestoreNewBackupSet,
                  [GROUP, '--instance', INSTANCE, '--name', 'nightly'])
        self.assertEqual([('PUT', PREFIX + '/' + GROUP + '/restore_new', {
            'instance_id': INSTANCE, 'name': 'nightly'})], self.sent())

    @ddt.data('v1', 'v1:', ':type=x', 'v1:type', 'v1:type=', 'v1:size=3',
              'v1:type=a,,name=b')
    def test_restore_new_bad_volume(self, spec):
        self.assert_parser_error(instance_groups.RestoreNewBackupSet, [
            GROUP, '--instance', INSTANCE, '--name', 'n', '--volume', spec])

    def test_restore_new_volume_twice(self):
        self.assert_parser_error(instance_groups.RestoreNewBackupSet, [
            GROUP, '--instance', INSTANCE, '--name', 'n',
            '--volume', 'v1:type=a', '--volume', 'v1:name=b'])

    def test_delete(self):
        answer = {'operation': 'delete_backup', 'success': True,
                  'instance_id': INSTANCE, 'group_id': GROUP,
                  'group_snapshot_id': SET, 'backup_id': ['b1', 'b2']}
        self.peer.answer(201, answer)
        titles, data = self.take(instance_groups.DeleteBackupSet, [
            GROUP, '--instance', INSTANCE, '--name', 'nightly'])
        self.assertEqual(('Operation', 'Success', 'Instance ID', 'Group ID',
                          'Backup Set ID', 'Backup IDs'), titles)
        self.assertEqual(['b1', 'b2'], data[5].machine_readable())
        self.assertEqual([('PUT', PREFIX + '/' + GROUP + '/delete_backup', {
            'instance_id': INSTANCE, 'name': 'nightly'})], self.sent())

    def test_unknown_answer_keys_shown(self):
        self.peer.answer(201, dict(RESULT, extra_thing='x'))
        titles, data = self.take(instance_groups.CreateBackupSet, [
            GROUP, '--instance', INSTANCE, '--name', 'n'])
        self.assertEqual('Extra Thing', titles[-1])
        self.assertEqual('x', data[-1])


class TestOutput(CommandTestCase):
    """The whole command, formatted by cliff as the user reads it."""

    def _run(self, cls, argv):
        cmd = cls(self.app, None)
        cmd.run(self.check_parser(cmd, argv, []))
        return self.fake_stdout.make_string()

    def test_backup_list_json(self):
        self.peer.answer(200, SETS)
        out = json.loads(self._run(instance_groups.ListBackupSet,
                                   [GROUP, '--long', '-f', 'json']))
        self.assertEqual(2, len(out))
        self.assertEqual({'ID': SET, 'Name': 'nightly',
                          'Status': 'available',
                          'Created At': '2026-12-06T08:10:00.000000',
                          'Backups': 2, 'Description': 'before upgrade',
                          'Backup IDs': ['b1', 'b2'],
                          'Volume IDs': ['v1', 'v2'],
                          'Mountpoints': ['/dev/vda', '/dev/vdb']}, out[0])

    def test_show_json(self):
        self.peer.answer(200, {'instance_groups': [GROUP_DICT]})
        out = json.loads(self._run(instance_groups.ShowInstanceGroup,
                                   [GROUP, '-f', 'json']))
        self.assertEqual(VOLUMES, out['Volumes'])
        self.assertEqual(INSTANCE, out['Instance ID'])

    def test_backup_table(self):
        self.peer.answer(201, RESULT)
        out = self._run(instance_groups.CreateBackupSet, [
            GROUP, '--instance', INSTANCE, '--name', 'n', '-f', 'table'])
        self.assertIn('| Backup Set ID ', out)
        self.assertIn(SET, out)
        self.assertIn('b1, b2', out)
