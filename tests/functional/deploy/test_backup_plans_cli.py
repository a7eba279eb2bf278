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

"""End to end: backup plans through ``openstack volume backup plan ...``.

The plugin profile of tools/deploy (cinder-api with the backup-plan
extension, the plugin's tables made by ``cinder-vmdk-backup-manage db
sync`` in the deployment's MariaDB, Keystone, RabbitMQ, vcsim), driven by
the plugin's OpenStack client commands as a user would: a plan of a volume
(named by its name) created, listed, shown, changed, run now (a queued
run; a second "run now" refused while it waits), its runs listed,
deleted; a volume-type plan with an exclusion; the refusals a user meets
(a cron field out of range, a keep of 0, an unknown volume) with Cinder's
message naming the field. What runs the queued run (the plan runner in
cinder-backup) is the runner's test's.
"""

import time

import testtools

from tests.functional.deploy import deployment

MISSING = '00000000-0000-4000-8000-0000000000ff'


class BackupPlanCliTest(testtools.TestCase):

    profile = 'plugin'

    def setUp(self):
        super().setUp()
        missing = deployment.missing_prerequisites()
        if missing:
            self.skipTest('the deployment needs %s (tools/deploy/install.sh '
                          'installs them)' % ', '.join(missing))
        self.dep = deployment.Deployment(self.profile)
        if not self.dep.claim():
            self.skipTest('another test run on this machine is using the '
                          '%s deployment in %s'
                          % (self.profile, self.dep.deploy_dir))
        self.addCleanup(self.dep.release)
        self.addCleanup(self.dep.stop)
        started = time.monotonic()
        self.dep.start()
        self.up_seconds = time.monotonic() - started

    def plan(self, *args, **kwargs):
        args = ('volume', 'backup', 'plan') + args
        if any(' ' in arg for arg in args):
            # The client's interactive mode (the deployment's shell)
            # splits a quoted argument ("30 2 * * *"): a process of its
            # own, as a user's shell runs it (a global option first).
            args = ('--os-volume-api-version',
                    self.dep.env['OS_VOLUME_API_VERSION']) + args
        return self.dep.openstack(*args, **kwargs)

    def refused(self, *args):
        """The plan command fails; its error text."""
        try:
            self.plan(*args, json=False)
        except deployment.DeploymentError as exc:
            return str(exc)
        self.fail('openstack volume backup plan %s was not refused'
                  % ' '.join(args))

    def test_plan_commands(self):
        started = time.monotonic()
        volume = self.dep.openstack('volume', 'create', '--size', '1',
                                    'plan-data')
        self.dep.wait('volume', volume['id'], ('available',))

        created = self.plan(
            'create', '--volume', 'plan-data', '--schedule', '30 2 * * *',
            '--timezone', 'Europe/Berlin', '--keep', '3', '--full-every',
            '7', '--bandwidth', '40', '--name', 'nightly')
        plan_id = created['ID']
        self.assertEqual(('volume %s' % volume['id'], '30 2 * * *',
                          'Europe/Berlin', 3, 7, 40.0, True),
                         (created['Target'], created['Schedule'],
                          created['Timezone'], created['Keep'],
                          created['Full Every'],
                          created['Bandwidth (MiB/s)'], created['Active']))
        self.assertTrue(created['Next Run At'].endswith(':30:00Z'),
                        created)

        listed = {p['ID']: p for p in self.plan('list')}
        self.assertEqual('nightly', listed[plan_id]['Name'])
        shown = self.plan('show', 'nightly')
        self.assertEqual((plan_id, []), (shown['ID'],
                                         shown['Latest Runs']))

        # (Commands without output: what they did is shown after.)
        self.plan('set', 'nightly', '--keep', '2', '--schedule',
                  '0 4 * * sat', '--no-bandwidth', '--disable', json=False)
        shown = self.plan('show', plan_id)
        self.assertEqual((2, '0 4 * * sat', None, False, 'Europe/Berlin'),
                         (shown['Keep'], shown['Schedule'],
                          shown['Bandwidth (MiB/s)'], shown['Active'],
                          shown['Timezone']))
        self.assertEqual([], [p for p in self.plan('list', '--enabled')
                              if p['ID'] == plan_id])

        run = self.plan('run', 'nightly')
        self.assertEqual(('manual', plan_id), (run['Kind'], run['Plan ID']))
        self.assertIn(run['Status'], ('queued', 'running', 'succeeded'))
        if run['Status'] != 'succeeded':
            text = self.refused('run', 'nightly')
            self.assertIn('has a run', text)
            self.assertIn('HTTP 409', text)
        runs = self.plan('run', 'list', 'nightly')
        self.assertEqual([run['ID']], [r['ID'] for r in runs])

        # Refusals name what is wrong.
        base = ['create', '--volume', volume['id'], '--keep', '1']
        text = self.refused(*base + ['--schedule', '61 2 * * *'])
        self.assertIn('minute', text)
        self.assertIn('HTTP 400', text)
        text = self.refused('create', '--volume', volume['id'], '--keep',
                            '0', '--schedule', '0 2 * * *')
        self.assertIn('keep', text)
        self.assertIn('HTTP 400', text)
        text = self.refused('create', '--volume', MISSING, '--keep', '1',
                            '--schedule', '0 2 * * *')
        self.assertIn('target volume %s not found' % MISSING, text)
        text = self.refused(*base + ['--schedule', '0 2 * * *',
                                     '--timezone', 'Mars/Olympus'])
        self.assertIn('Mars/Olympus', text)

        # A plan of every volume of a type, one volume left out.
        vtype = self.dep.openstack('volume', 'show',
                                   volume['id'])['type']
        typed = self.plan('create', '--volume-type', vtype, '--schedule',
                          '0 1 * * *', '--keep', '1', '--exclude',
                          volume['id'], '--name', 'all-of-type')
        self.assertEqual([volume['id']], typed['Exclude'])
        self.assertTrue(typed['Target'].startswith('volume type '))

        self.plan('delete', 'nightly', typed['ID'], json=False)
        self.assertIn(plan_id, self.refused('show', plan_id))
        text = self.refused('show', 'nightly')
        self.assertIn('No backup plan with a name or ID of nightly', text)
        self.assertEqual([], [p for p in self.plan('list')
                              if p['ID'] in (plan_id, typed['ID'])])
        self.dep.openstack('volume', 'delete', volume['id'], json=False)
        print('\nbackup plan CLI: deployment up in %.1fs, commands in %.1fs'
              % (self.up_seconds, time.monotonic() - started))
