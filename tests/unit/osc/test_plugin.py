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

"""The plugin module and the entry points the OpenStack client loads."""

import argparse
import configparser
import importlib
import os

from cliff import commandmanager
import fixtures
from keystoneauth1 import access
from keystoneauth1 import fixture as ks_fixture
from keystoneauth1.identity import access as access_plugin
from keystoneauth1 import session as ks_session
from osc_lib.command import command
import testtools

from cinder_vmdk_backup.client import instance_groups as ig_client
from cinder_vmdk_backup.osc import plugin
from tests.unit.client import http_peer

PROJECT = 'f0e1d2c3b4a5968778695a4b3c2d1e0f'
SETUP_CFG = os.path.join(os.path.dirname(__file__), '..', '..', '..',
                         'setup.cfg')


class _ClientManager(object):
    """What make_client reads of osc-lib's ClientManager."""

    def __init__(self, session, region_name, interface, config=None):
        self.session = session
        self.region_name = region_name
        self.interface = interface
        self._config = config or {}

    def get_configuration(self):
        return dict(self._config)


class TestMakeClient(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.peer = self.useFixture(http_peer.HttpPeer())
        token = ks_fixture.V3Token(project_id=PROJECT)
        # Cinder registers its v3 API as block-storage and volumev3.
        for stype in ('volumev3',):
            service = token.add_service(stype)
            for region in ('RegionOne', 'RegionTwo'):
                for interface in ('public', 'internal'):
                    service.add_endpoint(interface, '%s/%s-%s/v3/%s' % (
                        self.peer.url, region, interface, PROJECT),
                        region=region)
        self.session = ks_session.Session(auth=access_plugin.AccessInfoPlugin(
            access.create(body=token, auth_token='tok')))

    def _path(self, manager):
        client = plugin.make_client(manager)
        self.assertIsInstance(client, ig_client.InstanceGroupClient)
        self.peer.answer(200, {'instance_groups': []})
        client.list_groups()
        return self.peer.requests[-1].path

    def test_region_and_interface(self):
        self.assertEqual(
            '/RegionTwo-internal/v3/%s/instance-groups' % PROJECT,
            self._path(_ClientManager(self.session, 'RegionTwo',
                                      'internal')))
        self.assertEqual(
            '/RegionOne-public/v3/%s/instance-groups' % PROJECT,
            self._path(_ClientManager(self.session, 'RegionOne', 'public')))

    def test_endpoint_override(self):
        manager = _ClientManager(self.session, 'RegionOne', 'public', {
            'block_storage_endpoint_override': self.peer.url + '/o/v3/p'})
        self.assertEqual('/o/v3/p/instance-groups', self._path(manager))


class TestModule(testtools.TestCase):

    def test_attributes(self):
        self.assertEqual('instance_groups', plugin.API_NAME)
        self.assertIn(plugin.DEFAULT_API_VERSION, plugin.API_VERSIONS)
        self.assertEqual('os_instance_groups_api_version',
                         plugin.API_VERSION_OPTION)

    def test_option_parser(self):
        self.useFixture(fixtures.EnvironmentVariable(
            'OS_INSTANCE_GROUPS_API_VERSION', None))
        parser = plugin.build_option_parser(argparse.ArgumentParser())
        self.assertEqual('1', getattr(parser.parse_args([]),
                                      plugin.API_VERSION_OPTION))
        self.assertEqual('2', getattr(parser.parse_args(
            ['--os-instance-groups-api-version', '2']),
            plugin.API_VERSION_OPTION))


class TestEntryPoints(testtools.TestCase):

    def setUp(self):
        super().setUp()
        cfg = configparser.ConfigParser()
        cfg.read(SETUP_CFG)
        self.points = cfg['entry_points']

    def _group(self, name):
        pairs = {}
        for line in self.points[name].strip().splitlines():
            key, _sep, target = line.partition('=')
            pairs[key.strip()] = target.strip()
        return pairs

    def _load(self, target):
        module, _sep, attr = target.partition(':')
        obj = importlib.import_module(module)
        return getattr(obj, attr) if attr else obj

    def test_extension(self):
        self.assertIs(plugin, self._load(
            self._group('openstack.cli.extension')['instance_groups']))

    def test_commands(self):
        # The group name is what the OpenStack client derives from the
        # plugin: openstack.<API_NAME>.v<major of DEFAULT_API_VERSION>.
        group = 'openstack.%s.v%s' % (plugin.API_NAME,
                                      plugin.DEFAULT_API_VERSION)
        commands = self._group(group)
        # (Other parts add theirs: these must be there.)
        self.assertLessEqual({
            'volume_instance_group_create', 'volume_instance_group_list',
            'volume_instance_group_show', 'volume_instance_group_delete',
            'volume_instance_group_set',
            'volume_instance_group_backup_create',
            'volume_instance_group_backup_list',
            'volume_instance_group_backup_restore',
            'volume_instance_group_backup_restore_new',
            'volume_instance_group_backup_delete',
            'volume_instance_group_backup_verify', 'volume_backup_verify',
            'volume_backup_verification_show',
            'volume_backup_verification_list',
            'volume_backup_plan_create', 'volume_backup_plan_list',
            'volume_backup_plan_show', 'volume_backup_plan_set',
            'volume_backup_plan_delete', 'volume_backup_plan_run',
            'volume_backup_plan_run_list'}, set(commands))
        manager = commandmanager.CommandManager('cvb.none')
        for name, target in commands.items():
            cls = self._load(target)
            self.assertTrue(issubclass(cls, command.Command), name)
            manager.add_command(name.replace('_', ' '), cls)
        for argv, cls_name, rest in [
                (['volume', 'instance', 'group', 'backup', 'restore', 'new',
                  'g1', '--name', 'n'], 'RestoreNewBackupSet',
                 ['g1', '--name', 'n']),
                (['volume', 'instance', 'group', 'backup', 'restore', 'g1',
                  '--name', 'n'], 'RestoreBackupSet', ['g1', '--name', 'n']),
                (['volume', 'instance', 'group', 'list'],
                 'ListInstanceGroup', []),
                (['volume', 'instance', 'group', 'backup', 'list', 'g1'],
                 'ListBackupSet', ['g1']),
                (['volume', 'backup', 'plan', 'run', 'list', 'p1'],
                 'ListBackupPlanRun', ['p1']),
                (['volume', 'backup', 'plan', 'run', 'p1'],
                 'RunBackupPlan', ['p1']),
                (['volume', 'backup', 'verify', 'b1', '--wait'],
                 'VerifyBackup', ['b1', '--wait']),
                (['volume', 'backup', 'verification', 'show', 'b1'],
                 'ShowBackupVerification', ['b1']),
                (['volume', 'backup', 'verification', 'list'],
                 'ListBackupVerification', []),
                (['volume', 'instance', 'group', 'backup', 'verify', 'g1'],
                 'VerifyBackupSet', ['g1'])]:
            cls, _name, args = manager.find_command(argv)
            self.assertEqual((cls_name, rest), (cls.__name__, args))
