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

"""The plugin's policies: rules, defaults, entry points."""

import configparser
import os
import subprocess
import sys

from cinder import context
from cinder import exception
from cinder.tests.unit import test
import ddt
import fixtures
from oslo_policy import policy
from oslo_utils import importutils

from cinder_vmdk_backup import policies

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
PROJECT = '6f2b0b9e4c9a4d3e8f1a2b3c4d5e6f70'
OTHER = '0a1b2c3d4e5f40718293a4b5c6d7e8f9'

ROUTES = {
    policies.CREATE: ('POST', '/instance-groups'),
    policies.GET_ALL: ('GET', '/instance-groups'),
    policies.GET: ('GET', '/instance-groups/{group_id}'),
    policies.BACKUP: ('POST', '/instance-groups/{group_id}/backup'),
    policies.RESTORE: ('PUT', '/instance-groups/{group_id}/restore'),
    policies.RESTORE_NEW: ('PUT', '/instance-groups/{group_id}/restore_new'),
    policies.DELETE_BACKUP: ('PUT',
                             '/instance-groups/{group_id}/delete_backup'),
    policies.UPDATE_MEMBERS: ('PUT', '/instance-groups/{group_id}/members'),
    policies.DELETE: ('DELETE', '/instance-groups/{group_id}'),
    policies.VERIFY_SET: ('POST',
                          '/instance-groups/{group_id}/verify_backup'),
    policies.PLAN_CREATE: ('POST', '/backup-plans'),
    policies.PLAN_GET_ALL: ('GET', '/backup-plans'),
    policies.PLAN_GET: ('GET', '/backup-plans/{plan_id}'),
    policies.PLAN_UPDATE: ('PUT', '/backup-plans/{plan_id}'),
    policies.PLAN_DELETE: ('DELETE', '/backup-plans/{plan_id}'),
    policies.PLAN_RUN: ('POST', '/backup-plans/{plan_id}/run'),
    policies.VERIFY: ('POST', '/backup-verifications'),
    policies.VERIFY_GET: ('GET', '/backup-verifications/{backup_id}'),
    policies.VERIFY_GET_ALL: ('GET', '/backup-verifications'),
}
READ = (policies.GET, policies.GET_ALL, policies.PLAN_GET,
        policies.PLAN_GET_ALL, policies.VERIFY_GET, policies.VERIFY_GET_ALL)
WRITE = tuple(sorted(set(ROUTES) - set(READ)))


def entry_points(group):
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, 'setup.cfg'))
    lines = parser['entry_points'][group].strip().splitlines()
    return dict(tuple(p.strip() for p in line.split('=', 1))
                for line in lines)


@ddt.ddt
class PoliciesTestCase(test.TestCase):

    def setUp(self):
        super(PoliciesTestCase, self).setUp()
        policy_file = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                   'policy.yaml')
        with open(policy_file, 'w') as f:
            f.write('{}')
        self.override_config('policy_file', policy_file,
                             group='oslo_policy')
        policies.reset()
        self.addCleanup(policies.reset)

    def test_rules_cover_every_route(self):
        rules = policies.list_rules()
        self.assertEqual(set(ROUTES), {r.name for r in rules})
        for rule in rules:
            self.assertIsInstance(rule, policy.DocumentedRuleDefault)
            self.assertEqual([{'method': ROUTES[rule.name][0],
                               'path': ROUTES[rule.name][1]}],
                             rule.operations)
            self.assertEqual(['project'], rule.scope_types)
            self.assertGreater(len(rule.description), 10)

    def ctx(self, project_id, *roles):
        return context.RequestContext('u', project_id, roles=list(roles),
                                      is_admin='admin' in roles)

    @ddt.data(*ROUTES)
    def test_project_member(self, rule):
        self.assertTrue(policies.authorize(
            self.ctx(PROJECT, 'member', 'reader'), rule,
            {'project_id': PROJECT}))

    @ddt.data(*READ)
    def test_project_reader_reads(self, rule):
        self.assertTrue(policies.authorize(
            self.ctx(PROJECT, 'reader'), rule, {'project_id': PROJECT}))

    @ddt.data(*WRITE)
    def test_project_reader_cannot_change(self, rule):
        exc = self.assertRaises(exception.PolicyNotAuthorized,
                                policies.authorize,
                                self.ctx(PROJECT, 'reader'), rule,
                                {'project_id': PROJECT})
        self.assertIn(rule, str(exc))
        self.assertEqual(403, exc.code)

    @ddt.data(*ROUTES)
    def test_other_project_member_refused(self, rule):
        self.assertRaises(exception.PolicyNotAuthorized, policies.authorize,
                          self.ctx(OTHER, 'member', 'reader'), rule,
                          {'project_id': PROJECT})

    @ddt.data(*ROUTES)
    def test_admin_of_any_project(self, rule):
        self.assertTrue(policies.authorize(
            self.ctx(OTHER, 'admin', 'member', 'reader'), rule,
            {'project_id': PROJECT}))

    def test_system_scope_is_refused_not_raised_as_invalid_scope(self):
        ctx = context.RequestContext('u', None, roles=['admin'],
                                     system_scope='all', is_admin=True)
        self.assertRaises(exception.PolicyNotAuthorized, policies.authorize,
                          ctx, policies.GET, {'project_id': PROJECT})

    def test_enforcer_made_once_on_cinder_conf(self):
        enforcer = policies.get_enforcer()
        self.assertIs(enforcer, policies.get_enforcer())
        self.assertIs(policies.CONF, enforcer.conf)
        # Cinder's base rules are there for our defaults to refer to.
        self.assertIn('xena_system_admin_or_project_member',
                      enforcer.registered_rules)
        policies.reset()
        self.assertIsNot(enforcer, policies.get_enforcer())

    def test_entry_points_resolve(self):
        (target,) = entry_points('oslo.policy.policies').values()
        self.assertEqual({'cinder_vmdk_backup'},
                         set(entry_points('oslo.policy.policies')))
        module, func = target.split(':')
        self.assertIs(policies.list_rules,
                      getattr(importutils.import_module(module), func))
        module, func = entry_points('oslo.policy.enforcer')[
            'cinder_vmdk_backup'].split(':')
        self.assertIs(policies.get_enforcer,
                      getattr(importutils.import_module(module), func))

    def test_sample_generator(self):
        # oslo.policy's own generator finds the rules through the entry
        # point. The plugin is not (re)installed for the test: a minimal
        # distribution record with setup.cfg's entry points is put on the
        # generator's path instead.
        site = self.useFixture(fixtures.TempDir()).path
        dist = os.path.join(site, 'cinder_vmdk_backup_api_test-0.dist-info')
        os.mkdir(dist)
        with open(os.path.join(dist, 'METADATA'), 'w') as f:
            f.write('Metadata-Version: 2.1\nName: '
                    'cinder-vmdk-backup-api-test\nVersion: 0\n')
        with open(os.path.join(dist, 'entry_points.txt'), 'w') as f:
            f.write('[oslo.policy.policies]\n')
            for name, target in entry_points(
                    'oslo.policy.policies').items():
                f.write('%s = %s\n' % (name, target))
        out = os.path.join(site, 'policy.yaml.sample')
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([site, ROOT]),
                   HOME=site)
        proc = subprocess.run(
            [sys.executable, '-c',
             'from oslo_policy import generator; generator.generate_sample()',
             '--namespace', 'cinder_vmdk_backup', '--output-file', out],
            env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(0, proc.returncode, proc.stderr)
        with open(out) as f:
            sample = f.read()
        for name, (method, path) in ROUTES.items():
            self.assertIn('#"%s": ' % name, sample)
            self.assertIn('# %s  %s' % (method, path), sample)
