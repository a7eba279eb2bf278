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

"""The runner of backup plans, one in every cinder-backup service.

Every ``[backup_plans] tick_interval`` seconds each runner does, in order:

1. **Follow** the runs it started: a run is done when each of its backups
   (or backup sets) is made or failed; until then its ``heartbeat_at`` is
   refreshed. A done run is ``succeeded``, ``partial`` or ``failed``;
   retention (:mod:`.retention`, with synthetic fulls) follows a success
   in a worker thread, never in the tick (see below).
2. **Recover** runs whose node died: ``running``, not followed here, a
   heartbeat older than three ticks and their host gone from the runners'
   group (or the host is this node, started again), or a heartbeat older
   than ten ticks whatever the group says. Such a run is marked
   ``interrupted`` and retried once (kind ``retry``) by the node that
   takes it over first (a compare-and-swap on the run,
   :func:`~.db.api.run_update_if`); the retry takes over the backups the
   dead node had asked for that are still good, and asks again for the
   others. A retry that is interrupted in turn is not retried.
3. **Manual runs** (``queued``, from "run now") are claimed
   (:func:`~.db.api.run_claim`, atomic) and started.
4. **Due plans** (``next_run_at <= now``) fire.

Which node fires a due plan: Cinder's coordination layer (``[coordination]
backend_url``) holds a group of the plan runners, :data:`GROUP`, each
member with its cinder-backup host as capability. Once per tick a runner
reads the group (one request) and places the live hosts on a consistent
hash ring (:class:`tooz.hashring.HashRing`); a plan (or a queued run)
belongs to the host the ring gives for its id. The owner fires it at
once; another node fires it only once the slot is :data:`GRACE_TICKS`
ticks late (an owner that stopped without leaving the group, e.g. on a
``file://`` backend whose members never expire). A node that dies leaves
the group when its coordination lease expires, and its share moves to the
others at their next tick. No lock per plan: the tick costs one request to
the coordination backend whatever the number of plans.

The database decides: :func:`~.db.api.plan_claim_slots` moves each
claimed plan's ``next_run_at`` from the slot this node saw to the next one
and records its run, all claims of a tick in one transaction, each only if
nobody else moved that plan first. So a slot runs exactly once even when
two nodes disagree on the ring (while a member joins or leaves), or when
the coordination layer fails or is a per-host ``file://`` backend (then
each node owns every plan, and the first claim wins).

The new ``next_run_at`` is the schedule's next time after *now*, not
after the slot: the slots missed while every node was down collapse
into one run (kind ``catch_up`` when the slot is more than one tick
old). A plan whose previous run is still running gets a ``skipped`` run
for the slot (a warning in the log, visible in the plan's runs) and its
``next_run_at`` advanced. A failed run is not retried before the next
slot.

Retention (:func:`.retention.apply`: deletions waited for, up to an hour
each, and synthetic fulls) runs in a daemon thread per plan, at most
:data:`RETENTION_WORKERS` at a time on a node and one at a time per plan
(a success that comes while its plan's retention is still going is
applied after it). Its synthetic fulls (:func:`.synthetic.synthesize`)
are made on the node that holds the chain: the cinder-backup whose host
made the backups of the run, with its backup driver. The run is
``succeeded`` (``finished_at``) when its backups are made; retention
records what it deleted (``deleted_backup_ids``), any failure in
``error``, and its end in ``heartbeat_at``.
"""

import datetime
import threading

from cinder import context as cinder_context
from cinder import coordination
from cinder import exception as cinder_exception
from cinder.i18n import _
from cinder import objects
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import timeutils
from tooz import coordination as tooz_coordination
from tooz import hashring

from cinder_vmdk_backup import opts
from cinder_vmdk_backup.plans import notices
from cinder_vmdk_backup.plans import targets

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.plan_opts, group='backup_plans')

#: The coordination group of the plan runners (one member per node).
GROUP = b'cvb-backup-plan-runners'
#: A run whose heartbeat is older than this many ticks has lost its node
#: (when that node left the group, or is this one started again).
STALE_TICKS = 3
#: ... and older than this many, whatever the group says.
LOST_TICKS = 10
#: Ticks a slot may be late before a node other than its owner fires it.
GRACE_TICKS = 2
#: Retention jobs (deletions, synthetic fulls) a node runs at a time.
RETENTION_WORKERS = 2
#: Runs read per plan to decide whether its next run is a full one.
_RUNS_FOR_FULL = 20

SCHEDULED = 'scheduled'
MANUAL = 'manual'
CATCH_UP = 'catch_up'
RETRY = 'retry'

QUEUED = 'queued'
RUNNING = 'running'
SUCCEEDED = 'succeeded'
PARTIAL = 'partial'
FAILED = 'failed'
SKIPPED = 'skipped'
INTERRUPTED = 'interrupted'


def _utcnow():
    return timeutils.utcnow(with_timezone=True)


def _aware(when):
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=datetime.timezone.utc)
    return when


class Stats(dict):
    """What one tick did, by counter (missing counters are 0)."""

    def __missing__(self, key):
        return 0

    def add(self, key, count=1):
        self[key] = self[key] + count


class Membership(object):
    """The live plan runners, from Cinder's coordination layer.

    :param host: this node's host
    :param coordinator: a Cinder ``Coordinator`` (its tooz driver is
        ``.coordinator``) or a tooz driver
    """

    def __init__(self, host, coordinator):
        self.host = host
        self._coordinator = coordinator
        self._joined = None
        self._hosts = None
        self._ring = None
        self._last_error = None

    def _driver(self):
        driver = getattr(self._coordinator, 'coordinator', self._coordinator)
        if driver is None:
            raise RuntimeError('the coordinator is not started')
        return driver

    def join(self):
        driver = self._driver()
        if self._joined is driver:
            return driver
        try:
            driver.join_group_create(GROUP, capabilities={'host': self.host})
        except tooz_coordination.MemberAlreadyExist:
            pass
        self._joined = driver
        return driver

    def leave(self):
        driver, self._joined = self._joined, None
        if driver is None:
            return
        try:
            driver.leave_group(GROUP).get()
        except Exception as exc:
            LOG.debug('Could not leave the group of the plan runners: %s',
                      exc)

    def refresh(self):
        """Read the group (once per tick); return the live hosts.

        A coordination layer that fails (not started, backend down, no
        groups) leaves this node alone on the ring: it then owns every
        plan and the database's compare-and-swap decides (logged once).
        """
        try:
            driver = self.join()
            members = driver.get_members_with_capabilities(GROUP).get()
            hosts = {caps.get('host') for caps in members.values()
                     if isinstance(caps, dict) and caps.get('host')}
            if self.host not in hosts:
                # (Our membership expired, e.g. the process was paused
                # longer than the lease: join again, or the others would
                # fire our share too.)
                self._joined = None
                self.join()
            self._last_error = None
        except Exception as exc:
            if str(exc) != self._last_error:
                LOG.warning('The group of the backup plan runners cannot be '
                            'read (%(exc)s): this node fires every due plan '
                            'and the database decides alone which node runs '
                            'it.', {'exc': exc})
            self._last_error = str(exc)
            self._joined = None
            hosts = set()
        hosts.add(self.host)
        if hosts != self._hosts:
            LOG.info('Backup plan runners: %s.', ', '.join(sorted(hosts)))
            self._hosts = hosts
            self._ring = hashring.HashRing(sorted(hosts))
        return set(hosts)

    @property
    def hosts(self):
        return set(self._hosts or {self.host})

    def owner(self, key):
        """The host a plan (or run) id belongs to."""
        if self._ring is None:
            self.refresh()
        [host] = self._ring.get_nodes(key.encode('utf-8'))
        return host

    def mine(self, key):
        return self.owner(key) == self.host


class PlanRunner(object):
    """Runs the due backup plans of every project, from this node.

    :param host: this cinder-backup's host name (recorded on its runs)
    :param clock: returns the current time, aware UTC (tests inject one)
    :param db: the plans DB API (default :mod:`..plans.db.api`)
    :param coordinator: a Cinder coordinator (default
        ``cinder.coordination.COORDINATOR``, started by cinder-backup)
    :param work: the :class:`~.targets.Targets` that asks for backups
    :param notices: the :class:`~.notices.Notices` that tells the world
    :param retention: the retention module (default :mod:`.retention`;
        False: none)
    :param backup_service: ``backup_service(context)`` -> this node's
        backup driver (cinder-backup's manager gives it), for the
        synthetic fulls of retention; None: no synthetic fulls
    """

    def __init__(self, host, clock=None, db=None, coordinator=None,
                 work=None, notices=None, retention=None,
                 backup_service=None):
        self.host = host
        self._clock = clock or _utcnow
        self._db = db
        self.membership = Membership(
            host, coordinator or coordination.COORDINATOR)
        self._work = work or targets.Targets()
        self._notices = notices
        self._retention = retention
        self._backup_service = backup_service
        #: run id -> the plan (as started) of the runs this node follows
        self._following = {}
        #: queued run id -> when this node first saw it
        self._seen_queued = {}
        self._thread = None
        self._stopping = threading.Event()
        self._tick_lock = threading.Lock()
        self._retention_slots = threading.BoundedSemaphore(
            RETENTION_WORKERS)
        self._retention_guard = threading.Lock()
        #: plan id -> its retention thread; plan id -> (plan, run) next
        self._retention_jobs = {}
        self._retention_next = {}

    # -- collaborators --

    @property
    def db(self):
        if self._db is None:
            from cinder_vmdk_backup.plans.db import api as plans_db
            self._db = plans_db
        return self._db

    @property
    def notices(self):
        if self._notices is None:
            self._notices = notices.Notices(self.host)
        return self._notices

    @property
    def retention(self):
        if self._retention is None:
            try:
                from cinder_vmdk_backup.plans import retention
            except ImportError:
                retention = False
            self._retention = retention
        return self._retention or None

    @staticmethod
    def tick_interval():
        return CONF.backup_plans.tick_interval

    _schedules = {}

    @classmethod
    def next_after(cls, plan, when):
        """The plan's next slot strictly after ``when`` (aware UTC)."""
        from cinder_vmdk_backup.plans import schedule
        key = tuple(plan[k] for k in ('minute', 'hour', 'day_of_month',
                                      'month', 'day_of_week', 'timezone'))
        parsed = cls._schedules.get(key)
        if parsed is None:
            parsed = schedule.Schedule(*key)
            if len(cls._schedules) > 4096:
                cls._schedules.clear()
            cls._schedules[key] = parsed
        return parsed.next_after(when)

    # -- the loop --

    def ready(self):
        """Whether the plans database answers (its tables are set up).

        :returns: None if it does, else why not
        """
        try:
            self.db.runs_unfinished()
        except Exception as exc:
            return '%s: %s' % (type(exc).__name__, exc)
        return None

    def start(self):
        """Join the runners' group; tick now, then every tick_interval.

        (The first tick catches up on the slots missed while down.)
        """
        if self._thread is not None:
            return
        self._stopping.clear()
        self.membership.refresh()
        self._thread = threading.Thread(target=self._loop,
                                        name='cvb-plan-runner', daemon=True)
        self._thread.start()
        LOG.info('Backup plan runner of %(host)s started (every %(tick)s '
                 's).', {'host': self.host, 'tick': self.tick_interval()})

    def _loop(self):
        context = cinder_context.get_admin_context()
        last_error = None
        while not self._stopping.is_set():
            try:
                self.tick(context)
                last_error = None
            except Exception as exc:
                # (Once per kind of failure, not every tick: a plans
                # database that is not set up yet fails every tick.)
                if str(exc) != last_error:
                    LOG.exception('A tick of the backup plan runner '
                                  'failed; it tries again every %s s.',
                                  self.tick_interval())
                last_error = str(exc)
            self._stopping.wait(self.tick_interval())

    def stop(self, timeout=None):
        """End the loop; leave the runners' group.

        The runs this node follows stay ``running``: their backups go on
        in Cinder, and another node (or this one when it starts again)
        takes them over once their heartbeat is stale. A retention job
        under way ends with the process (the next success of its plan
        prunes what it left).
        """
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._tick_lock:
            self._following.clear()
            self.membership.leave()

    def wait_retention(self, timeout=None):
        """Wait for the retention jobs under way (tests, tools)."""
        deadline = None if timeout is None else (
            timeutils.now() + timeout)
        while True:
            with self._retention_guard:
                jobs = list(self._retention_jobs.values())
            if not jobs:
                return True
            for job in jobs:
                left = None if deadline is None else max(
                    0, deadline - timeutils.now())
                job.join(left)
                if job.is_alive():
                    return False

    # -- one tick --

    def tick(self, context, now=None):
        """Do one round (see the module's description); return its Stats."""
        now = _aware(now) if now is not None else self._clock()
        stats = Stats()
        with self._tick_lock:
            hosts = self.membership.refresh()
            unfinished = self.db.runs_unfinished()
            ended = self._follow(context, now, unfinished, stats)
            unfinished = [r for r in unfinished if r['id'] not in ended]
            busy = {r['plan_id'] for r in unfinished
                    if r['status'] == RUNNING}
            self._recover(context, now, unfinished, hosts, busy, stats)
            self._manual(context, now, unfinished, busy, stats)
            self._due(context, now, busy, stats)
        if any(stats[k] for k in ('started', 'skipped', 'finished',
                                  'interrupted')):
            LOG.info('Backup plan tick at %(now)s: %(stats)s',
                     {'now': now.isoformat(), 'stats': dict(stats)})
        return stats

    def _grace(self):
        return datetime.timedelta(
            seconds=GRACE_TICKS * self.tick_interval())

    # 1. follow --

    def _follow(self, context, now, unfinished, stats):
        """Follow this node's runs; return the ids of those that ended."""
        current = {r['id']: r for r in unfinished}
        following = dict(self._following)
        for run_id, plan in following.items():
            run = current.get(run_id)
            try:
                if run is None:
                    run = self.db.run_get(context, run_id)
                self._follow_one(context, now, run, plan, stats)
            except Exception:
                LOG.exception('Could not follow run %(run)s of backup plan '
                              '%(plan)s; trying again at the next tick.',
                              {'run': run_id, 'plan': plan['id']})
        return {run_id for run_id in following
                if run_id not in self._following}

    def _follow_one(self, context, now, run, plan, stats):
        if run['status'] != RUNNING or run['host'] != self.host:
            # Another node found it stale and took it over.
            LOG.warning('Run %(run)s of backup plan %(plan)s is now '
                        '%(status)s on %(host)s; no longer followed here.',
                        {'run': run['id'], 'plan': plan['id'],
                         'status': run['status'], 'host': run['host']})
            self._following.pop(run['id'], None)
            return
        outcome = self._work.progress(targets.plan_context(plan), run)
        if not outcome.done:
            self.db.run_set(run['id'], {'heartbeat_at': now})
            stats.add('following')
            return
        # (``error`` holds what could not even be asked for at the start,
        # e.g. a volume of a volume-type plan in error.)
        errors = [run['error']] if run.get('error') else []
        if outcome.failures or errors:
            status = PARTIAL if outcome.made else FAILED
        else:
            status = SUCCEEDED
        self._finish(plan, run, status, now, stats,
                     errors=errors + outcome.failures,
                     values={'backup_ids': self._merge(run, outcome.made)},
                     detail=notices.BACKUP_ERROR)

    @staticmethod
    def _merge(run, made):
        ids = list(run.get('backup_ids') or ())
        ids.extend(b for b in made if b not in ids)
        return ids

    def _plan(self, context, plan_id, run):
        """The plan (deleted ones included, as the run knew it)."""
        try:
            return self.db.plan_get(context, plan_id)
        except Exception as exc:
            if type(exc).__name__ != 'BackupPlanNotFound':
                raise
            return {'id': plan_id, 'name': None, 'deleted': True,
                    'project_id': run['project_id'],
                    'user_id': None, 'target_type': None,
                    'target_id': None}

    @staticmethod
    def _end_values(status, now, errors, values):
        values = dict(values or {})
        values.update({'status': status, 'finished_at': now,
                       'heartbeat_at': now,
                       'error': '; '.join(errors)[:4000] or None})
        return values

    def _finish(self, plan, run, status, now, stats, errors=(), values=None,
                detail=None, exception=None):
        values = self._end_values(status, now, errors, values)
        self.db.run_set(run['id'], values)
        run = dict(run, **values)
        return self._ended(plan, run, stats, detail=detail,
                           exception=exception)

    def _ended(self, plan, run, stats, detail=None, exception=None):
        """Tell the world a run ended (recorded already)."""
        self._following.pop(run['id'], None)
        status = run['status']
        stats.add('finished')
        stats.add(status)
        context = targets.plan_context(plan)
        if status == SUCCEEDED:
            self.notices.notify(context, notices.END, plan, run)
            LOG.info('Run %(run)s of backup plan %(plan)s succeeded: '
                     'backups %(backups)s.',
                     {'run': run['id'], 'plan': plan['id'],
                      'backups': ', '.join(run.get('backup_ids') or ())
                      or 'none'})
            self._queue_retention(plan, run)
            return run
        LOG.warning('Run %(run)s of backup plan %(plan)s %(status)s: '
                    '%(error)s', {'run': run['id'], 'plan': plan['id'],
                                  'status': status, 'error': run['error']})
        self.notices.notify(context, notices.ERROR, plan, run)
        if plan.get('target_type'):
            self.notices.tell_user(context, plan, run, detail=detail,
                                   exception=exception)
        return run

    # retention, off the tick --

    def _queue_retention(self, plan, run):
        if self.retention is None or plan.get('deleted'):
            return
        with self._retention_guard:
            job = self._retention_jobs.get(plan['id'])
            if job is not None:
                # One at a time per plan: the newest success goes next.
                self._retention_next[plan['id']] = (plan, run)
                return
            job = threading.Thread(
                target=self._retention_job, args=(plan, run),
                name='cvb-plan-retention-%s' % plan['id'][:8], daemon=True)
            self._retention_jobs[plan['id']] = job
        job.start()

    def _retention_job(self, plan, run):
        while True:
            with self._retention_slots:
                self._apply_retention(plan, run)
            with self._retention_guard:
                following = self._retention_next.pop(plan['id'], None)
                if following is None:
                    del self._retention_jobs[plan['id']]
                    return
            plan, run = following

    def _apply_retention(self, plan, run):
        context = targets.plan_context(plan)
        try:
            kwargs = {}
            synthesize = self._synthesizer(context, run)
            if synthesize is not None:
                kwargs['synthesize'] = synthesize
            self.retention.apply(context, plan, run, **kwargs)
        except Exception as exc:
            LOG.exception('Retention after run %(run)s of backup plan '
                          '%(plan)s failed.',
                          {'run': run['id'], 'plan': plan['id']})
            self._record(run['id'], {
                'error': ('retention: %s' % exc)[:4000]})
        # Its end: a finished run's heartbeat is the last time its node
        # worked on it.
        self._record(run['id'], {'heartbeat_at': self._clock()})

    def _record(self, run_id, values):
        try:
            self.db.run_set(run_id, values)
        except Exception:
            LOG.exception('Could not record %(keys)s on run %(run)s.',
                          {'keys': ', '.join(sorted(values)),
                           'run': run_id})

    def _synthesizer(self, context, run):
        """``synthesize(backup_id)`` on this node's driver, or None.

        Only when this node holds the chain: the run's backups were made
        by this host (synthetic fulls read the chain and write the new full
        through this node's backup driver).
        """
        if self._backup_service is None or not run.get('backup_ids'):
            return None
        try:
            hosts = {objects.Backup.get_by_id(context, backup_id).host
                     for backup_id in run['backup_ids']}
        except Exception:
            return None
        if hosts != {self.host}:
            LOG.debug('Run %(run)s: its backups are held by %(hosts)s; no '
                      'synthetic full from %(me)s.',
                      {'run': run['id'], 'hosts': ', '.join(
                          sorted(str(h) for h in hosts)), 'me': self.host})
            return None
        from cinder_vmdk_backup.plans import synthetic
        service = self._backup_service(context)

        def synthesize(backup_id):
            backup = objects.Backup.get_by_id(context, backup_id)
            if backup.host != self.host:
                raise cinder_exception.InvalidBackup(reason=_(
                    'backup %(id)s is held by cinder-backup on %(host)s')
                    % {'id': backup_id, 'host': backup.host})
            return synthetic.synthesize(context, service, backup_id)

        return synthesize

    # 2. recover --

    def _recover(self, context, now, unfinished, hosts, busy, stats):
        stale_before = now - datetime.timedelta(
            seconds=STALE_TICKS * self.tick_interval())
        lost_before = now - datetime.timedelta(
            seconds=LOST_TICKS * self.tick_interval())
        for run in unfinished:
            if run['status'] != RUNNING or run['id'] in self._following:
                continue
            beat = _aware(run.get('heartbeat_at') or run.get('started_at'))
            if beat is None or beat <= lost_before:
                pass
            elif beat > stale_before:
                continue
            elif run['host'] in hosts and run['host'] != self.host:
                continue    # its node is alive (maybe slow)
            if not self.membership.mine(run['plan_id']) and (
                    beat is not None and beat > stale_before - self._grace()):
                continue    # its plan's owner takes it over first
            try:
                self._recover_one(context, now, run, beat, busy, stats)
            except Exception:
                LOG.exception('Could not take over run %(run)s of backup '
                              'plan %(plan)s.',
                              {'run': run['id'], 'plan': run['plan_id']})

    def _recover_one(self, context, now, run, beat, busy, stats):
        plan = self._plan(context, run['plan_id'], run)
        errors = ['cinder-backup on %s stopped following this run (last '
                  'heartbeat %s)' % (run['host'], beat.isoformat() if beat
                                     else 'never')]
        values = self._end_values(INTERRUPTED, now, errors, None)
        # Only if its node did not beat meanwhile, and only one taker.
        ended = self.db.run_update_if(
            run['id'], {'status': RUNNING, 'host': run['host'],
                        'heartbeat_at': run.get('heartbeat_at')}, values)
        if ended is None:
            stats.add('lost')
            return
        self._ended(plan, ended, stats, detail=notices.NODE_DOWN)
        busy.discard(plan['id'])
        if run.get('kind') == RETRY or plan.get('deleted'):
            return
        # Recorded running on this node at once (never queued, where
        # another node's "run now" pass could claim it without taking
        # over the dead node's backups).
        retry = self.db.run_create(plan['id'], {
            'kind': RETRY, 'status': RUNNING, 'host': self.host,
            'scheduled_for': run.get('scheduled_for'), 'started_at': now,
            'heartbeat_at': now, 'full': run.get('full')})
        LOG.warning('Run %(run)s of backup plan %(plan)s was interrupted '
                    '(%(host)s stopped); retried here as run %(retry)s.',
                    {'run': run['id'], 'plan': plan['id'],
                     'host': run['host'], 'retry': retry['id']})
        stats.add('retried')
        busy.add(plan['id'])
        self._start(plan, retry, now, stats, adopt=run)

    # 3. manual runs --

    def _manual(self, context, now, unfinished, busy, stats):
        queued = {r['id'] for r in unfinished if r['status'] == QUEUED}
        for run_id in list(self._seen_queued):
            if run_id not in queued:
                del self._seen_queued[run_id]
        for run in unfinished:
            if run['status'] != QUEUED or run['plan_id'] in busy:
                continue
            seen = self._seen_queued.setdefault(run['id'], now)
            if not self.membership.mine(run['plan_id']) and (
                    now - seen < self._grace()):
                stats.add('left_to_owner')
                continue
            try:
                claimed = self.db.run_claim(run['id'], self.host)
                if claimed is None:
                    continue
                self._seen_queued.pop(run['id'], None)
                plan = self._plan(context, run['plan_id'], claimed)
                if plan.get('deleted'):
                    self._finish(plan, claimed, FAILED, now, stats,
                                 errors=['the backup plan was deleted'])
                    continue
                full = self._full(plan, self._recent([plan])[plan['id']])
                claimed = self.db.run_update(claimed['id'], {
                    'started_at': now, 'heartbeat_at': now, 'full': full})
                self.db.plan_update(context, plan['id'], {
                    'runs_since_full': 0 if full else
                    (plan.get('runs_since_full') or 0) + 1})
                busy.add(plan['id'])
                stats.add('manual')
                self._start(plan, claimed, now, stats)
            except Exception:
                LOG.exception('Could not start the queued run %(run)s of '
                              'backup plan %(plan)s.',
                              {'run': run['id'], 'plan': run['plan_id']})

    # 4. due plans --

    def _due(self, context, now, busy, stats):
        grace = self._grace()
        mine = []
        for plan in self.db.plans_due(now):
            stats.add('due')
            slot = _aware(plan['next_run_at'])
            if not self.membership.mine(plan['id']) and now - slot < grace:
                stats.add('left_to_owner')
                continue
            mine.append(plan)
        if not mine:
            return
        recent = self._recent([p for p in mine if p['id'] not in busy])
        claims, fired = [], []
        for plan in mine:
            try:
                claims.append(self._claim(plan, now, busy, recent))
                fired.append(plan)
            except Exception:
                LOG.exception('Could not run backup plan %s; it is tried '
                              'again at the next tick.', plan['id'])
        runs = self.db.plan_claim_slots(claims)
        for plan, claim, run in zip(fired, claims, runs):
            try:
                self._fired(plan, claim, run, now, busy, stats)
            except Exception:
                LOG.exception('Could not run backup plan %s; it is tried '
                              'again at the next tick.', plan['id'])

    def _recent(self, plans):
        """The newest runs of ``plans`` (one query), for :meth:`_full`."""
        limit = max([_RUNS_FOR_FULL] + [
            2 * ((p.get('keep') or 1) + (p.get('full_every') or 1)) + 2
            for p in plans])
        return self.db.runs_recent([p['id'] for p in plans], limit=limit)

    def _claim(self, plan, now, busy, recent):
        slot = _aware(plan['next_run_at'])
        next_run_at = self.next_after(plan, now)
        late = (now - slot).total_seconds() > self.tick_interval()
        kind = CATCH_UP if late else SCHEDULED
        if plan['id'] in busy:
            values = {'kind': kind, 'status': SKIPPED, 'host': self.host,
                      'scheduled_for': slot, 'started_at': now,
                      'finished_at': now, 'full': None,
                      'error': 'the previous run is still running'}
        else:
            values = {'kind': kind, 'status': RUNNING, 'host': self.host,
                      'scheduled_for': slot, 'started_at': now,
                      'heartbeat_at': now,
                      'full': self._full(plan, recent[plan['id']])}
        return (plan['id'], slot, next_run_at, values)

    def _fired(self, plan, claim, run, now, busy, stats):
        _plan_id, slot, next_run_at, values = claim
        if run is None:
            stats.add('lost')
            return
        if values['status'] == SKIPPED:
            stats.add('skipped')
            LOG.warning('Backup plan %(plan)s: the slot of %(slot)s is '
                        'skipped, its previous run is still running '
                        '(next slot %(next)s).',
                        {'plan': plan['id'], 'slot': slot.isoformat(),
                         'next': next_run_at.isoformat()})
            return
        if values['kind'] == CATCH_UP:
            stats.add('catch_up')
            LOG.info('Backup plan %(plan)s missed its slot of %(slot)s: '
                     'one catch-up run now (next slot %(next)s).',
                     {'plan': plan['id'], 'slot': slot.isoformat(),
                      'next': next_run_at.isoformat()})
        busy.add(plan['id'])
        self._start(plan, run, now, stats)

    def _full(self, plan, runs):
        """Whether the run makes full backups (else incremental).

        Retention decides (:func:`.retention.next_backup_is_full`) when it
        is there; otherwise a full every ``full_every`` runs. A volume
        with no backup to build on gets a full anyway (:mod:`.targets`).

        :param runs: the plan's newest runs, newest first
        """
        retention = self.retention
        if retention is not None:
            full, reason = retention.next_backup_is_full(
                targets.plan_context(plan), plan, runs)
            LOG.debug('Backup plan %(plan)s: full=%(full)s (%(why)s).',
                      {'plan': plan['id'], 'full': full, 'why': reason})
            return bool(full)
        if not any(r['status'] in (SUCCEEDED, PARTIAL) and r['backup_ids']
                   for r in runs):
            return True
        return (plan.get('runs_since_full') or 0) + 1 >= (
            plan.get('full_every') or 1)

    # -- start a run --

    def _start(self, plan, run, now, stats, adopt=None):
        """Ask for the run's backups; follow it from the next tick."""
        context = targets.plan_context(plan)
        self.notices.notify(context, notices.START, plan, run)
        self._following[run['id']] = plan
        stats.add('started')

        recorded = []

        def record(backup_ids, set_ids):
            self.db.run_set(run['id'], {'backup_ids': backup_ids,
                                        'group_snapshot_ids': set_ids,
                                        'heartbeat_at': now})
            recorded[:] = [(backup_ids, set_ids)]

        try:
            backup_ids, set_ids, errors = self._work.start(
                context, plan, run, bool(run.get('full')), adopt=adopt,
                record=record)
        except Exception as exc:
            LOG.exception('Run %(run)s of backup plan %(plan)s could not '
                          'ask for its backups.',
                          {'run': run['id'], 'plan': plan['id']})
            self._finish(plan, run, FAILED, now, stats, errors=[str(exc)],
                         exception=exc)
            return
        values = {'backup_ids': backup_ids, 'group_snapshot_ids': set_ids,
                  'error': '; '.join(errors)[:4000] or None}
        if backup_ids or set_ids:
            # (One statement less per run when the last record said it
            # all: a tick that fires hundreds of plans feels it.)
            if errors or recorded != [(backup_ids, set_ids)]:
                self.db.run_set(run['id'], values)
            return
        # Nothing to follow: ends now.
        if errors:
            self._finish(plan, run, FAILED, now, stats, errors=errors,
                         values=values)
        else:
            self._finish(plan, run, SUCCEEDED, now, stats, values=values)
