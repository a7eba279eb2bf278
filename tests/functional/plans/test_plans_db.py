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

"""The plans database for real: the manage command and racing nodes.

* ``cinder-vmdk-backup-manage db sync`` / ``db version`` run as a command
  (a process of its own reading a cinder.conf) against a private MariaDB
  server (:mod:`.mariadb`) and against an sqlite file reached through
  Cinder's ``[database] connection``;
* two processes ("nodes") of two threads each race for the same slots of a
  plan with ``plan_claim_slot``: every slot is won exactly once, on
  MariaDB (row locks, REPEATABLE READ) and on sqlite (file lock).
"""

import datetime
import json
import os
import subprocess
import sys

from cinder import context
import fixtures
from oslotest import base
import sqlalchemy as sa

from cinder_vmdk_backup.plans.db import api
from cinder_vmdk_backup.plans.db import migration
from tests.functional.plans import mariadb
from tests import plans_db

UTC = datetime.timezone.utc
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
SLOTS = 40


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                  if p])
    return env


def manage(conf_file, *args):
    """Run cinder-vmdk-backup-manage (this tree's) with a config file."""
    return subprocess.run(
        [sys.executable, '-W', 'ignore', '-m',
         'cinder_vmdk_backup.cmd.manage', '--config-file', conf_file] +
        list(args), capture_output=True, text=True, env=_env(), timeout=120)


def last_line(text):
    return text.strip().splitlines()[-1]


class _Base(base.BaseTestCase):

    def write_conf(self, text):
        path = os.path.join(self.useFixture(
            fixtures.TempDir()).path, 'cinder.conf')
        with open(path, 'w') as conf:
            conf.write(text)
        return path

    def race(self, url):
        """Two processes x two threads claim SLOTS slots of one plan."""
        self.useFixture(plans_db.PlansDatabase(url=url, sync=False))
        migration.db_sync()
        ctx = context.RequestContext('user', 'project', is_admin=False)
        first = datetime.datetime(2026, 1, 1, tzinfo=UTC)
        plan = api.plan_create(ctx, {'target_type': 'volume',
                                     'target_id': 'vol', 'minute': '*',
                                     'hour': '*', 'next_run_at': first})
        nodes = [subprocess.Popen(
            [sys.executable, '-W', 'ignore', '-m',
             'tests.functional.plans.claim_worker', url, plan['id'],
             first.isoformat(), str(SLOTS), host, '2'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=_env())
            for host in ('node-a', 'node-b')]
        for node in nodes:
            self.addCleanup(node.kill)
            self.assertEqual('ready', node.stdout.readline().strip())
        for node in nodes:  # both at once
            node.stdin.write('go\n')
            node.stdin.flush()
        won = {}
        for node, host in zip(nodes, ('node-a', 'node-b')):
            out, err = node.communicate(timeout=120)
            self.assertEqual(0, node.returncode, out + err[-2000:])
            won[host] = json.loads(out.strip().splitlines()[-1])
        slots = sorted(s for wins in won.values() for s, _run in wins)
        # every slot exactly once, across both nodes and all threads
        self.assertEqual(list(range(SLOTS)), slots)
        runs = api.run_get_all(ctx, plan['id'], limit=None)
        self.assertEqual(SLOTS, len(runs))
        self.assertEqual(sorted(first + datetime.timedelta(minutes=s)
                                for s in range(SLOTS)),
                         sorted(r['scheduled_for'] for r in runs))
        got = api.plan_get(ctx, plan['id'])
        self.assertEqual(first + datetime.timedelta(minutes=SLOTS),
                         got['next_run_at'])
        # no increment lost or doubled
        self.assertEqual(SLOTS, got['runs_since_full'])
        return won


class SqliteTestCase(_Base):
    """The fallback: Cinder's own [database] connection, an sqlite file."""

    def test_manage_db_sync_through_cinder_database(self):
        directory = self.useFixture(fixtures.TempDir()).path
        path = os.path.join(directory, 'cinder.sqlite')
        conf = self.write_conf(
            '[DEFAULT]\nstate_path = %s\n[database]\nconnection = '
            'sqlite:///%s\n' % (directory, path))
        result = manage(conf, 'db', 'sync')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('0001_initial', result.stdout)
        result = manage(conf, 'db', 'version')
        self.assertEqual('0001_initial', last_line(result.stdout))
        engine = sa.create_engine('sqlite:///' + path)
        self.addCleanup(engine.dispose)
        self.assertEqual({'cvb_alembic_version', 'cvb_backup_plans',
                          'cvb_backup_plan_runs'},
                         set(sa.inspect(engine).get_table_names()))

    def test_claim_slot_race(self):
        directory = self.useFixture(fixtures.TempDir()).path
        won = self.race('sqlite:///%s/plans.sqlite' % directory)
        self.assertEqual(SLOTS, sum(len(w) for w in won.values()))


class MariaDBTestCase(_Base):
    """A real MariaDB server, as the deployment's."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = None
        why = mariadb.missing()
        if why is None:
            cls.server = mariadb.MariaDB().start()

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.server is None:
            self.skipTest(mariadb.missing())

    def test_manage_db_sync(self):
        # The plans database apart from Cinder's (which is not reachable:
        # db sync must not touch it).
        conf = self.write_conf(
            '[database]\nconnection = mysql+pymysql://nobody:x@127.0.0.1:1/'
            'cinder\n[backup_plans]\nconnection = %s\n' % self.server.url())
        result = manage(conf, 'db', 'sync')
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('0001_initial', result.stdout)
        self.assertEqual('0001_initial',
                         last_line(manage(conf, 'db', 'version').stdout))
        self.assertEqual(
            {('cvb_alembic_version',), ('cvb_backup_plan_runs',),
             ('cvb_backup_plans',)}, set(self.server.query('SHOW TABLES')))
        columns = {row[0]: row[1] for row in self.server.query(
            'SHOW COLUMNS FROM cvb_backup_plan_runs')}
        self.assertEqual('datetime(6)', columns['heartbeat_at'])
        engines = {row[0]: row[1] for row in self.server.query(
            "SELECT table_name, engine FROM information_schema.tables "
            "WHERE table_schema = 'cvb_plans'")}
        self.assertEqual({'InnoDB'}, set(engines.values()))
        # a wrong password: a clear failure, and no password in it
        wrong = self.write_conf('[backup_plans]\nconnection = %s\n' %
                                self.server.url(password='secret-wrong'))
        result = manage(wrong, 'db', 'sync')
        self.assertEqual(1, result.returncode)
        self.assertIn('Access denied', result.stderr)
        self.assertNotIn('secret-wrong', result.stderr + result.stdout)
        self.assertNotIn(self.server.password,
                         result.stderr + result.stdout)

    def test_claim_slot_race(self):
        self.server.query('DROP TABLE IF EXISTS cvb_backup_plan_runs, '
                          'cvb_backup_plans, cvb_alembic_version')
        won = self.race(self.server.url())
        self.assertEqual(SLOTS, sum(len(w) for w in won.values()))
