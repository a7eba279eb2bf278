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

"""The plan runner's own cost: N plans due in the same minute, two nodes.

Issue 18's benchmark. Two :class:`~cinder_vmdk_backup.plans.runner.
PlanRunner` (hosts ``backup-a`` and ``backup-b``) tick at the same moment,
each in its own thread, over the real plans database (an sqlite file
migrated with ``db_sync``) and a real etcd (tooz ``etcd3+http://``, one
Cinder ``Coordinator`` per node). What a run asks Cinder for is replaced
by a stub that records the time of the request and answers at once
(Cinder's backup API costs the same whoever calls it; the runner's own
work is what is measured), and so are notifications.

Reported per node and tick: CPU seconds of the tick's thread
(``time.thread_time``), SQL statements it sent to the plans database,
plans started / lost to the other node / left to their owner;
the time from the ticks' start until every due backup was requested; and
the check that no plan fired twice. Three ticks: the one that fires every
plan (``fire``), the next (``follow``: every run found done and
finished), and one with nothing to do (``idle``). Target: ``fire`` under
1 s of CPU for 200 plans; no plan fires twice.

Each node fires only its share of the due plans (the consistent hash ring
over the runners' group in etcd, read once per tick) and claims them in
one transaction; nothing is locked per plan.

Usage: ``python -m bench plan_runner [--plans 200] [--repeat 3]
[--coordination etcd|none] [--db sqlite|mariadb]`` (``none``: no group,
every node tries every plan and the database's compare-and-swap alone
decides: the worst case; ``mariadb``: a private MariaDB as the plans
database, as a deployment's, instead of an sqlite file).
"""

import argparse
import collections
import datetime
import statistics
import sys
import tempfile
import threading
import time

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


class _Work(object):
    """Stands in for plans.targets.Targets: asks for nothing, records when."""

    def __init__(self):
        self.requests = collections.Counter()
        self.last_request = 0.0
        self._lock = threading.Lock()

    def start(self, context, plan, run, full, adopt=None, record=None):
        with self._lock:
            self.requests[(plan['id'], run['scheduled_for'])] += 1
            self.last_request = time.monotonic()
        return ['backup-of-' + run['id']], [], []

    def progress(self, context, run):
        from cinder_vmdk_backup.plans import targets
        outcome = targets.Outcome()
        outcome.made = list(run['backup_ids'])
        return outcome


class _NoCoordinator(object):
    """``--coordination none``: no runners' group (the worst case).

    Each node owns every plan; the database's compare-and-swap alone decides.
    """

    coordinator = None
    started = True

    def start(self):
        pass

    def stop(self):
        pass


class _Notices(object):
    def notify(self, *args, **kwargs):
        pass

    def tell_user(self, *args, **kwargs):
        pass


def _setup(root, mariadb=None):
    from oslo_config import cfg
    conf = cfg.CONF
    conf([], project='cinder', default_config_files=[])
    from cinder_vmdk_backup.plans.db import api as plans_db
    from cinder_vmdk_backup.plans.db import migration
    if mariadb is not None:
        _fresh_database(mariadb)
        url = mariadb.url()
    else:
        url = 'sqlite:///%s/plans.sqlite' % root
    conf.set_override('connection', url, group='backup_plans')
    conf.set_override('tick_interval', 20, group='backup_plans')
    plans_db.reset_engine()
    migration.db_sync()
    return plans_db


def _fresh_database(mariadb):
    import pymysql
    conn = pymysql.connect(unix_socket=mariadb.socket, user='root')
    try:
        with conn.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS %s' % mariadb.database)
            cur.execute('CREATE DATABASE %s CHARACTER SET utf8mb4' %
                        mariadb.database)
    finally:
        conn.close()


def _count_statements(engine):
    from sqlalchemy import event
    counts = collections.Counter()

    @event.listens_for(engine, 'before_cursor_execute')
    def count(conn, cursor, statement, parameters, context, executemany):
        counts[threading.get_ident()] += 1

    return counts


def _make_plans(plans_db, count):
    from cinder import context
    admin = context.get_admin_context()
    for n in range(count):
        plans_db.plan_create(admin, {
            'name': 'plan-%d' % n, 'project_id': 'project-%d' % (n % 20),
            'user_id': 'user', 'minute': '*', 'hour': '*',
            'target_type': 'volume' if n % 4 else 'instance_group',
            'target_id': 'target-%d' % n, 'keep': 3, 'full_every': 7,
            'next_run_at': T0})


def _tick_both(nodes, at, counts):
    from cinder import context
    admin = context.get_admin_context()
    results = {}

    def tick(node):
        before_cpu = time.thread_time()
        before_sql = counts[threading.get_ident()]
        stats = node.tick(admin, now=at)
        results[node.host] = {
            'cpu': time.thread_time() - before_cpu,
            'sql': counts[threading.get_ident()] - before_sql,
            'stats': dict(stats)}

    threads = [threading.Thread(target=tick, args=(node,)) for node in nodes]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started, time.monotonic() - started, results


def run_once(count, etcd_url, mode='etcd', mariadb=None):
    from cinder import context
    from cinder import coordination
    from oslo_config import cfg

    from cinder_vmdk_backup.plans import runner

    with tempfile.TemporaryDirectory() as root:
        plans_db = _setup(root, mariadb)
        counts = _count_statements(plans_db.get_engine())
        _make_plans(plans_db, count)
        cfg.CONF.set_override('backend_url', etcd_url, group='coordination')
        work = _Work()
        nodes = []
        coordinators = []
        try:
            for host in ('backup-a', 'backup-b'):
                if mode == 'etcd':
                    coordinator = coordination.Coordinator(
                        agent_id=host, prefix='cinder-')
                else:
                    coordinator = _NoCoordinator()
                coordinator.start()
                coordinators.append(coordinator)
                nodes.append(runner.PlanRunner(
                    host, coordinator=coordinator, work=work,
                    notices=_Notices(), retention=False))
            for node in nodes:
                # (What PlanRunner.start() does: join the runners' group.)
                node.membership.refresh()
            report = {}
            started, wall, results = _tick_both(
                nodes, T0 + datetime.timedelta(seconds=1), counts)
            report['fire'] = results
            report['until_requested'] = work.last_request - started
            report['fire_wall'] = wall
            for name, second in (('follow', 21), ('idle', 41)):
                _s, _w, results = _tick_both(
                    nodes, T0 + datetime.timedelta(seconds=second), counts)
                report[name] = results
            report['requests'] = sum(work.requests.values())
            report['twice'] = sum(1 for n in work.requests.values()
                                  if n > 1)
            admin = context.get_admin_context()
            report['runs'] = sum(
                len(plans_db.run_get_all(admin, plan['id'], limit=None))
                for plan in plans_db.plan_get_all(
                    admin, filters={'all_projects': True}))
            return report
        finally:
            for node in nodes:
                node.stop()
            for coordinator in coordinators:
                coordinator.stop()
            plans_db.reset_engine()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench plan_runner')
    parser.add_argument('--plans', type=int, default=200)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--coordination', choices=('etcd', 'none'),
                        default='etcd',
                        help='etcd (real, default) or none: no runners\' '
                             'group, the database alone decides')
    parser.add_argument('--db', choices=('sqlite', 'mariadb'),
                        default='sqlite',
                        help='the plans database: an sqlite file (default) '
                             'or a private MariaDB (Debian mariadb-server, '
                             'as a deployment\'s)')
    args = parser.parse_args(argv)
    from cinder import objects
    objects.register_all()
    from tests.functional.plans import etcd
    why_not = etcd.available()
    if why_not:
        print('plan_runner: skipped (%s)' % why_not)
        return 0
    mariadb = None
    if args.db == 'mariadb':
        from tests.functional.plans import mariadb as mariadb_fixture
        why_not = mariadb_fixture.missing()
        if why_not:
            print('plan_runner: skipped (%s)' % why_not)
            return 0
        mariadb = mariadb_fixture.MariaDB().start()
    server = etcd.Etcd(lock_timeout=10)
    try:
        server.setUp()
        reports = [run_once(args.plans, server.url, args.coordination,
                            mariadb)
                   for _ in range(args.repeat)]
    finally:
        server.cleanUp()
        if mariadb is not None:
            mariadb.stop()
    ok = True
    print('plan_runner: %d plans due at once, 2 nodes, %d repeats, %s '
          'coordination, %s (medians)' % (
              args.plans, args.repeat, args.coordination, args.db))
    for phase in ('fire', 'follow', 'idle'):
        for host in ('backup-a', 'backup-b'):
            cpu = statistics.median(r[phase][host]['cpu'] for r in reports)
            sql = statistics.median(r[phase][host]['sql'] for r in reports)
            last = reports[-1][phase][host]['stats']
            print('  %-6s %s: CPU %.3f s, %d SQL statements, %s' % (
                phase, host, cpu, sql, ', '.join(
                    '%s=%d' % kv for kv in sorted(last.items())) or '-'))
    fire_cpu = max(statistics.median(r['fire'][h]['cpu'] for r in reports)
                   for h in ('backup-a', 'backup-b'))
    until = statistics.median(r['until_requested'] for r in reports)
    print('  every due backup requested %.3f s after the ticks began '
          '(fire tick wall %.3f s)' % (
              until, statistics.median(r['fire_wall'] for r in reports)))
    twice = sum(r['twice'] for r in reports)
    requests = [r['requests'] for r in reports]
    print('  requests per repeat %s (plans %d); plans fired twice: %d; '
          'runs recorded %s' % (requests, args.plans, twice,
                                [r['runs'] for r in reports]))
    if twice or any(n != args.plans for n in requests):
        print('  FAIL: a plan fired twice or not at all')
        ok = False
    print('  fire tick CPU (worst node) %.3f s: target < 1 s: %s' % (
        fire_cpu, 'met' if fire_cpu < 1 else 'NOT met'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
