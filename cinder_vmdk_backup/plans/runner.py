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
   retention (:mod:`.retention`) follows a success.
2. **Recover** runs whose node died: ``running``, not followed here, a
   heartbeat older than three ticks, and the plan's lock free to take.
   Such a run is marked ``interrupted`` and retried once (kind
   ``retry``) by the node that finds it; the retry takes over the backups
   the dead node had asked for that are still good, and asks again for
   the others. A retry that is interrupted in turn is not retried.
3. **Manual runs** (``queued``, from "run now") are claimed
   (:func:`~.db.api.run_claim`, atomic) and started.
4. **Due plans** (``next_run_at <= now``) fire.

Which node fires a due plan: first a non-blocking tooz lock
``cvb-backup-plan-<plan id>`` through Cinder's coordinator
(``[coordination] backend_url``), then the database decides:
:func:`~.db.api.plan_claim_slot` moves ``next_run_at`` from the slot this
node saw to the next one and records the run in one transaction, only
if nobody else moved it first. So a slot runs exactly once even when the
lock layer fails or is a per-host ``file://`` backend. The node that
started a run keeps the plan's lock while it follows the run, so that
the others see it alive; a node that dies loses its lock when its
coordination lease expires.

The new ``next_run_at`` is the schedule's next time after *now*, not
after the slot: the slots missed while every node was down collapse
into one run (kind ``catch_up`` when the slot is more than one tick
old). A plan whose previous run is still running gets a ``skipped`` run
for the slot (a warning in the log, visible in the plan's runs) and its
``next_run_at`` advanced. A failed run is not retried before the next
slot.
"""

import datetime
import threading

from cinder import context as cinder_context
from cinder import coordination
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import timeutils

from cinder_vmdk_backup import opts
from cinder_vmdk_backup.plans import notices
from cinder_vmdk_backup.plans import targets

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.plan_opts, group='backup_plans')

LOCK_PREFIX = 'cvb-backup-plan-'
#: A run whose heartbeat is older than this many ticks has lost its node.
STALE_TICKS = 3

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


class PlanRunner(object):
    """Runs the due backup plans of every project, from this node.

    :param host: this cinder-backup's host name (recorded on its runs)
    :param clock: returns the current time, aware UTC (tests inject one)
    :param db: the plans DB API (default :mod:`..plans.db.api`)
    :param coordinator: a Cinder coordinator (default
        ``cinder.coordination.COORDINATOR``, started by cinder-backup)
    :param work: the :class:`~.targets.Targets` that asks for backups
    :param notices: the :class:`~.notices.Notices` that tells the world
    :param retention: the retention module (default :mod:`.retention`
        when it exists)
    """

    def __init__(self, host, clock=None, db=None, coordinator=None,
                 work=None, notices=None, retention=None):
        self.host = host
        self._clock = clock or _utcnow
        self._db = db
        self._coordinator = coordinator or coordination.COORDINATOR
        self._work = work or targets.Targets()
        self._notices = notices
        self._retention = retention
        #: plan id -> the tooz lock this node holds on it
        self._held = {}
        #: run id -> plan id of the runs this node follows
        self._following = {}
        self._thread = None
        self._stopping = threading.Event()
        self._tick_lock = threading.Lock()

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

    @staticmethod
    def next_after(plan, when):
        """The plan's next slot strictly after ``when`` (aware UTC)."""
        from cinder_vmdk_backup.plans import schedule
        return schedule.Schedule(
            plan['minute'], plan['hour'], plan['day_of_month'],
            plan['month'], plan['day_of_week'],
            plan['timezone']).next_after(when)

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
        """Tick now (catching up) and then every ``tick_interval``."""
        if self._thread is not None:
            return
        self._stopping.clear()
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
        """End the loop; release the locks this node holds.

        The runs this node follows stay ``running``: their backups go on
        in Cinder, and another node (or this one when it starts again)
        takes them over once their heartbeat is stale.
        """
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._tick_lock:
            for plan_id in list(self._held):
                self._unlock(plan_id)
            self._following.clear()

    # -- one tick --

    def tick(self, context, now=None):
        """Do one round (see the module's description); return its Stats."""
        now = _aware(now) if now is not None else self._clock()
        stats = Stats()
        with self._tick_lock:
            self._follow(context, now, stats)
            unfinished = self.db.runs_unfinished()
            busy = {r['plan_id'] for r in unfinished
                    if r['status'] == RUNNING}
            self._recover(context, now, unfinished, busy, stats)
            self._manual(context, now, unfinished, busy, stats)
            self._due(context, now, busy, stats)
        if any(stats[k] for k in ('started', 'skipped', 'finished',
                                  'interrupted')):
            LOG.info('Backup plan tick at %(now)s: %(stats)s',
                     {'now': now.isoformat(), 'stats': dict(stats)})
        return stats

    # 1. follow --

    def _follow(self, context, now, stats):
        for run_id, plan_id in list(self._following.items()):
            try:
                self._follow_one(context, now, run_id, plan_id, stats)
            except Exception:
                LOG.exception('Could not follow run %(run)s of backup plan '
                              '%(plan)s; trying again at the next tick.',
                              {'run': run_id, 'plan': plan_id})

    def _follow_one(self, context, now, run_id, plan_id, stats):
        run = self.db.run_get(context, run_id)
        if run['status'] != RUNNING or run['host'] != self.host:
            # Another node found it stale and took it over.
            LOG.warning('Run %(run)s of backup plan %(plan)s is now '
                        '%(status)s on %(host)s; no longer followed here.',
                        {'run': run_id, 'plan': plan_id,
                         'status': run['status'], 'host': run['host']})
            self._forget(run_id, plan_id)
            return
        plan = self._plan(context, plan_id, run)
        outcome = self._work.progress(targets.plan_context(plan), run)
        if not outcome.done:
            self.db.run_update(run_id, {'heartbeat_at': now})
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

    def _forget(self, run_id, plan_id):
        """Stop following a run; its plan's lock goes with the last one."""
        if self._following.pop(run_id, None) is None:
            return
        if plan_id not in self._following.values():
            self._unlock(plan_id)

    def _finish(self, plan, run, status, now, stats, errors=(), values=None,
                detail=None, exception=None):
        values = dict(values or {})
        values.update({'status': status, 'finished_at': now,
                       'heartbeat_at': now,
                       'error': '; '.join(errors)[:4000] or None})
        run = self.db.run_update(run['id'], values)
        self._forget(run['id'], plan['id'])
        stats.add('finished')
        stats.add(status)
        context = targets.plan_context(plan)
        if status == SUCCEEDED:
            self._apply_retention(context, plan, run)
            self.notices.notify(context, notices.END, plan, run)
            LOG.info('Run %(run)s of backup plan %(plan)s succeeded: '
                     'backups %(backups)s.',
                     {'run': run['id'], 'plan': plan['id'],
                      'backups': ', '.join(run.get('backup_ids') or ())
                      or 'none'})
            return run
        LOG.warning('Run %(run)s of backup plan %(plan)s %(status)s: '
                    '%(error)s', {'run': run['id'], 'plan': plan['id'],
                                  'status': status, 'error': run['error']})
        self.notices.notify(context, notices.ERROR, plan, run)
        if plan.get('target_type'):
            self.notices.tell_user(context, plan, run, detail=detail,
                                   exception=exception)
        return run

    def _apply_retention(self, context, plan, run):
        retention = self.retention
        if retention is None or plan.get('deleted'):
            return
        try:
            retention.apply(context, plan, run)
        except Exception as exc:
            LOG.exception('Retention after run %(run)s of backup plan '
                          '%(plan)s failed.',
                          {'run': run['id'], 'plan': plan['id']})
            self.db.run_update(run['id'], {
                'error': ('retention: %s' % exc)[:4000]})

    # 2. recover --

    def _recover(self, context, now, unfinished, busy, stats):
        stale_before = now - datetime.timedelta(
            seconds=STALE_TICKS * self.tick_interval())
        for run in unfinished:
            if run['status'] != RUNNING or run['id'] in self._following:
                continue
            beat = _aware(run.get('heartbeat_at') or run.get('started_at'))
            if beat is not None and beat > stale_before:
                continue
            if not self._lock(run['plan_id']):
                continue
            try:
                self._recover_one(context, now, run, stale_before, busy,
                                  stats)
            except Exception:
                LOG.exception('Could not take over run %(run)s of backup '
                              'plan %(plan)s.',
                              {'run': run['id'], 'plan': run['plan_id']})
            finally:
                if run['plan_id'] not in self._following.values():
                    self._unlock(run['plan_id'])

    def _recover_one(self, context, now, run, stale_before, busy, stats):
        # Read again under the lock: its node may have beaten meanwhile.
        run = self.db.run_get(context, run['id'])
        beat = _aware(run.get('heartbeat_at') or run.get('started_at'))
        if run['status'] != RUNNING or (beat and beat > stale_before):
            return
        plan = self._plan(context, run['plan_id'], run)
        self._finish(plan, run, INTERRUPTED, now, stats,
                     errors=['cinder-backup on %s stopped following this '
                             'run (last heartbeat %s)' %
                             (run['host'], beat.isoformat() if beat
                              else 'never')],
                     detail=notices.NODE_DOWN)
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
        for run in unfinished:
            if run['status'] != QUEUED or run['plan_id'] in busy:
                continue
            if not self._lock(run['plan_id']):
                continue
            try:
                claimed = self.db.run_claim(run['id'], self.host)
                if claimed is None:
                    continue
                plan = self._plan(context, run['plan_id'], claimed)
                if plan.get('deleted'):
                    self._finish(plan, claimed, FAILED, now, stats,
                                 errors=['the backup plan was deleted'])
                    continue
                full = self._full(plan)
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
            finally:
                if run['plan_id'] not in self._following.values():
                    self._unlock(run['plan_id'])

    # 4. due plans --

    def _due(self, context, now, busy, stats):
        for plan in self.db.plans_due(now):
            stats.add('due')
            if not self._lock(plan['id']):
                stats.add('locked_elsewhere')
                continue
            try:
                self._fire(plan, now, busy, stats)
            except Exception:
                LOG.exception('Could not run backup plan %s; it is tried '
                              'again at the next tick.', plan['id'])
            finally:
                if plan['id'] not in self._following.values():
                    self._unlock(plan['id'])

    def _fire(self, plan, now, busy, stats):
        slot = _aware(plan['next_run_at'])
        next_run_at = self.next_after(plan, now)
        late = (now - slot).total_seconds() > self.tick_interval()
        kind = CATCH_UP if late else SCHEDULED
        if plan['id'] in busy:
            run = self.db.plan_claim_slot(
                plan['id'], slot, next_run_at,
                {'kind': kind,
                 'status': SKIPPED, 'host': self.host,
                 'scheduled_for': slot, 'started_at': now,
                 'finished_at': now, 'full': None,
                 'error': 'the previous run is still running'})
            if run is None:
                stats.add('lost')
                return
            stats.add('skipped')
            LOG.warning('Backup plan %(plan)s: the slot of %(slot)s is '
                        'skipped, its previous run is still running '
                        '(next slot %(next)s).',
                        {'plan': plan['id'], 'slot': slot.isoformat(),
                         'next': next_run_at.isoformat()})
            return
        full = self._full(plan)
        run = self.db.plan_claim_slot(
            plan['id'], slot, next_run_at,
            {'kind': kind,
             'status': RUNNING, 'host': self.host, 'scheduled_for': slot,
             'started_at': now, 'heartbeat_at': now, 'full': full})
        if run is None:
            stats.add('lost')
            return
        if late:
            stats.add('catch_up')
            LOG.info('Backup plan %(plan)s missed its slot of %(slot)s: '
                     'one catch-up run now (next slot %(next)s).',
                     {'plan': plan['id'], 'slot': slot.isoformat(),
                      'next': next_run_at.isoformat()})
        busy.add(plan['id'])
        self._start(plan, run, now, stats)

    def _full(self, plan):
        """Whether the run makes full backups (else incremental).

        Retention decides (:func:`.retention.next_backup_is_full`) when it
        is there; otherwise a full every ``full_every`` runs. A volume
        with no backup to build on gets a full anyway (:mod:`.targets`).
        """
        retention = self.retention
        # (Enough runs to see the whole chain retention may keep.)
        limit = 2 * ((plan.get('keep') or 1) +
                     (plan.get('full_every') or 1)) + 2
        runs = self.db.run_get_all(cinder_context.get_admin_context(),
                                   plan['id'], limit=max(20, limit))
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
        self._following[run['id']] = plan['id']
        stats.add('started')

        recorded = []

        def record(backup_ids, set_ids):
            self.db.run_update(run['id'], {'backup_ids': backup_ids,
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
                self.db.run_update(run['id'], values)
            return
        # Nothing to follow: ends now.
        if errors:
            self._finish(plan, run, FAILED, now, stats, errors=errors,
                         values=values)
        else:
            self._finish(plan, run, SUCCEEDED, now, stats, values=values)

    # -- locks --

    def _lock(self, plan_id):
        """Take the plan's lock without waiting; False if another has it.

        A lock layer that fails (no coordinator, backend down) does not
        stop plans: the database's compare-and-swap still decides, and
        the failure is logged.
        """
        if plan_id in self._held:
            return True
        try:
            lock = self._coordinator.get_lock(LOCK_PREFIX + plan_id)
            if not lock.acquire(blocking=False):
                return False
        except Exception as exc:
            LOG.warning('No coordination lock on backup plan %(plan)s '
                        '(%(exc)s); the database decides alone which node '
                        'runs it.', {'plan': plan_id, 'exc': exc})
            return True
        self._held[plan_id] = lock
        return True

    def _unlock(self, plan_id):
        lock = self._held.pop(plan_id, None)
        if lock is None:
            return
        try:
            lock.release()
        except Exception as exc:
            LOG.warning('Could not release the lock on backup plan '
                        '%(plan)s: %(exc)s', {'plan': plan_id, 'exc': exc})
