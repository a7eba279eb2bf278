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
message naming the field.

The deployment runs with ``CVB_DEPLOY_PLANS=1``: two cinder-backup
services (hosts ``cvb-plugin`` and ``cvb-plugin-backup2``), a real etcd as
Cinder's coordination backend and a plan runner ticking every 5 s. One
deployment for the module (setUpClass). test_runs_across_two_nodes drives
a plan that fires every minute through both nodes: exactly one backup set
per slot, keep=3 leaving exactly the newest three sets (each restored),
the node running a plan killed (SIGKILL by its PID) mid-run leaving the
run's retry and the next slot to the other node, and every cinder-backup
stopped over two slots catching up once when they start again.
"""

import datetime
import json
import os
import time

import testtools

from tests.functional.deploy import deployment

MISSING = '00000000-0000-4000-8000-0000000000ff'
#: cinder-backup service (its PID file's name) by host.
NODES = {'cvb-plugin': 'cinder-backup',
         'cvb-plugin-backup2': 'cinder-backup2'}
DONE = ('succeeded', 'partial', 'failed', 'skipped', 'interrupted')


def _when(text):
    """A run's time as the client prints it (ISO 8601, UTC)."""
    if text is None:
        return None
    when = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when


class BackupPlanCliTest(testtools.TestCase):

    profile = 'plugin'
    dep = None
    problem = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dep, cls.problem = None, None
        missing = deployment.missing_prerequisites()
        if not os.access('/usr/bin/etcd', os.X_OK):
            missing.append('etcd-server (the coordination backend)')
        if missing:
            cls.problem = ('the deployment needs %s (tools/deploy/install.sh '
                           'installs them)' % ', '.join(missing))
            return
        dep = deployment.Deployment(cls.profile,
                                    env={'CVB_DEPLOY_PLANS': '1'})
        if not dep.claim():
            cls.problem = ('another test run on this machine is using the '
                           '%s deployment in %s'
                           % (cls.profile, dep.deploy_dir))
            return
        cls.dep = dep
        cls.module_started = time.monotonic()
        try:
            dep.start()
        except Exception:
            cls._stop()
            raise
        cls.up_seconds = time.monotonic() - cls.module_started

    @classmethod
    def _stop(cls):
        if cls.dep is not None:
            try:
                cls.dep.stop()
            finally:
                cls.dep.release()
                cls.dep = None

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.dep is not None:
                print('\nbackup plans: module wall %.1fs (deployment up in '
                      '%.1fs)' % (time.monotonic() - cls.module_started,
                                  cls.up_seconds))
            cls._stop()
        finally:
            super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.problem:
            self.skipTest(self.problem)

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
        # A cinder-backup's runner claims the queued run and makes it.
        done = self.wait_run('nightly', run['ID'])
        self.assertEqual(('succeeded', 1), (done['Status'],
                                            len(done['Backup IDs'])), done)
        self.assertIn(done['Host'], NODES)
        self.dep.wait('volume backup', done['Backup IDs'][0],
                      ('available',))

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
        self.dep.openstack('volume', 'backup', 'delete',
                           done['Backup IDs'][0], json=False)
        self.dep.wait_gone('volume backup', done['Backup IDs'][0])
        self.dep.openstack('volume', 'delete', volume['id'], json=False)
        print('\nbackup plan CLI: commands in %.1fs'
              % (time.monotonic() - started))

    # -- plans across the two backup nodes ---------------------------------

    def runs(self, plan):
        """The plan's runs (newest first), with their hosts."""
        return self.plan('run', 'list', plan, '--long', '--limit', '100')

    def wait_runs(self, plan, what, predicate, timeout=240):
        """Poll the plan's runs until predicate(runs) is true-ish."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs(plan)
            found = predicate(runs)
            if found:
                return found
            if time.monotonic() > deadline:
                self.fail('backup plan %s: no %s after %ss: %s'
                          % (plan, what, timeout, runs))
            time.sleep(1)

    def wait_run(self, plan, run_id, timeout=240):
        return self.wait_runs(
            plan, 'end of run %s' % run_id,
            lambda runs: next((r for r in runs if r['ID'] == run_id and
                               r['Status'] in DONE), None), timeout)

    def wait_slot(self, plan, slot, timeout=240):
        """The finished run of one slot (scheduled or caught up)."""
        return self.wait_runs(
            plan, 'run for the slot of %s' % slot.isoformat(),
            lambda runs: next(
                (r for r in runs if _when(r['Scheduled For']) == slot and
                 r['Kind'] in ('scheduled', 'catch_up') and
                 r['Status'] in DONE), None), timeout)

    def kill_mid_run(self, plan_id, slot):
        """Kill the node running the slot's run while it runs.

        Only once the run's backups are made or made by the other node
        (the database says): a backup that the killed cinder-backup
        itself was making would stay 'creating' until that host starts
        again (Cinder's own cleanup), and the retry with it. Watched in
        the database (the run's state changes within a tick).

        :returns: (killed run id, killed host), or None when the run
            ended before that moment came
        """
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            rows = self.dep.db_rows(
                'SELECT id, status, host, backup_ids, scheduled_for FROM '
                'cvb_backup_plan_runs WHERE plan_id = %s AND kind = '
                '\'scheduled\' ORDER BY created_at DESC LIMIT 1', (plan_id,))
            if rows and rows[0][4] is not None and \
                    rows[0][4].replace(tzinfo=datetime.timezone.utc) >= slot:
                run_id, status, host, backup_ids, _slot = rows[0]
                if status in DONE:
                    return None
                backups = json.loads(backup_ids or '[]')
                if status == 'running' and backups:
                    states = self.dep.db_rows(
                        'SELECT status, host FROM backups WHERE id IN (%s)'
                        % ', '.join(['%s'] * len(backups)), backups)
                    if len(states) == len(backups) and all(
                            s == 'available' or h != host
                            for s, h in states):
                        self.dep.kill_service(NODES[host])
                        return run_id, host
            time.sleep(0.2)
        self.fail('backup plan %s: no run of the slot of %s'
                  % (plan_id, slot.isoformat()))

    def forget_dead_backup_host(self, survivor):
        """Restart cinder-scheduler: it forgets the killed backup host.

        Cinder 29's scheduler picks a backup host at random among every
        cinder-backup that ever reported to it (HostManager's
        backup_service_states is never pruned; neither a service's
        liveness nor its disabled flag is consulted): a backup asked for
        after a node died goes to the dead node's queue half of the time
        and stays 'creating' until that node starts again, whichever
        runner asked for it. A restarted scheduler knows only the nodes
        that report to it again.
        """
        log = 'Received backup service update from %s:' % survivor
        seen = self.dep.log('cinder-scheduler').count(log)
        self.dep.stop_services('cinder-scheduler')
        self.dep.start_service('cinder-scheduler')
        deadline = time.monotonic() + 60
        while self.dep.log('cinder-scheduler').count(log) <= seen:
            if time.monotonic() > deadline:
                self.fail('cinder-scheduler did not hear from %s again'
                          % survivor)
            time.sleep(0.5)

    def test_runs_across_two_nodes(self):
        started = time.monotonic()
        minute = datetime.timedelta(minutes=1)
        volume = self.dep.openstack('volume', 'create', '--size', '1',
                                    'plan-e2e')
        self.dep.wait('volume', volume['id'], ('available',))
        created = self.plan(
            'create', '--volume', volume['id'], '--schedule', '* * * * *',
            '--keep', '3', '--full-every', '1', '--name', 'every-minute')
        plan_id = created['ID']
        first = _when(created['Next Run At'])

        # Both nodes up: the first slot runs once, on one of them.
        run = self.wait_slot(plan_id, first)
        self.assertEqual('succeeded', run['Status'], run)
        self.assertIn(run['Host'], NODES)

        # The node running the next slot's run is killed mid-run.
        slot = first + minute
        killed = None
        for _attempt in range(3):
            killed = self.kill_mid_run(plan_id, slot)
            if killed:
                break
            slot += minute
        self.assertIsNotNone(killed, 'every run ended before the kill')
        killed_id, victim = killed
        killed_at = datetime.datetime.now(datetime.timezone.utc)
        survivor = next(h for h in NODES if h != victim)
        self.forget_dead_backup_host(survivor)
        # The other node finds the run stale, marks it interrupted and
        # retries it, taking over its backup.
        retry = self.wait_runs(
            plan_id, 'retry', lambda runs: next(
                (r for r in runs if r['Kind'] == 'retry' and
                 r['Status'] in DONE), None), timeout=120)
        interrupted = next(r for r in self.runs(plan_id)
                           if r['ID'] == killed_id)
        self.assertEqual(('interrupted', victim),
                         (interrupted['Status'], interrupted['Host']))
        self.assertEqual(('succeeded', survivor, slot),
                         (retry['Status'], retry['Host'],
                          _when(retry['Scheduled For'])), retry)
        self.assertEqual(interrupted['Backup IDs'], retry['Backup IDs'])
        # The next slot is the other node's.
        after = slot + minute
        while after <= killed_at:
            after += minute
        run = self.wait_slot(plan_id, after)
        self.assertEqual(('scheduled', 'succeeded', survivor),
                         (run['Kind'], run['Status'], run['Host']), run)

        # Every cinder-backup stopped over two slots, then started again:
        # one catch-up run, for the first slot missed.
        self.dep.stop_services(*NODES.values())
        missed = _when(self.plan('show', plan_id)['Next Run At'])
        while datetime.datetime.now(datetime.timezone.utc) < \
                missed + minute + datetime.timedelta(seconds=3):
            time.sleep(1)
        for service in NODES.values():
            self.dep.start_service(service)
        catch_up = self.wait_slot(plan_id, missed, timeout=300)
        self.assertEqual(('catch_up', 'succeeded'),
                         (catch_up['Kind'], catch_up['Status']), catch_up)
        # Keep=3: retention after the catch-up run.
        runs = self.wait_runs(
            plan_id, 'retention after the catch-up run',
            lambda runs: runs if any(
                r['ID'] == catch_up['ID'] and r['Deleted Backup IDs']
                for r in runs) else None, timeout=120)
        self.assertEqual(
            [catch_up['ID']],
            [r['ID'] for r in runs
             if _when(r['Scheduled For']) >= missed])
        self.assertGreater(_when(self.plan('show', plan_id)['Next Run At']),
                           missed + minute)

        # Exactly one backup set per slot, over consecutive slots.
        sets = {}
        for r in sorted(runs, key=lambda r: r['Started At']):
            self.assertNotEqual('skipped', r['Status'], r)
            if r['Status'] == 'succeeded':
                sets.setdefault(_when(r['Scheduled For']), []).append(
                    tuple(r['Backup IDs']))
        for when, made in sets.items():
            self.assertEqual(1, len(set(made)), (when, made))
            self.assertEqual(1, len(made[0]), (when, made))
        slots = sorted(sets)
        self.assertEqual(slots[:-1], [first + i * minute
                                      for i in range(len(slots) - 1)])
        self.assertEqual(missed, slots[-1])
        ordered = [sets[when][0][0] for when in slots]
        self.assertGreaterEqual(len(ordered), 4)

        # Exactly the newest three sets are left, each restorable.
        listed = {b['ID']: b for b in self.dep.openstack(
            'volume', 'backup', 'list')}
        self.assertEqual(ordered[-3:],
                         [b for b in ordered if b in listed])
        restored = [self.dep.openstack(
            'volume', 'create', '--size', '1', '--backup', backup_id,
            'restored-%d' % i) for i, backup_id in enumerate(ordered[-3:])]
        for volume_made in restored:
            self.dep.wait('volume', volume_made['id'], ('available',),
                          failures=('error', 'error_restoring'))
        hosts = sorted({r['Host'] for r in runs})
        print('\nbackup plans across two nodes: %d slots, runs on %s, '
              'scenario %.1fs' % (len(slots), ', '.join(hosts),
                                  time.monotonic() - started))
