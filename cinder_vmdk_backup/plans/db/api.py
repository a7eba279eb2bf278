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

"""Database API of backup plans and their runs.

Every function returns plain dicts (:data:`PLAN_KEYS`, :data:`RUN_KEYS`),
never ORM objects; datetimes come back aware in UTC, and may be given
aware (any zone) or naive (then UTC, as ``oslo_utils.timeutils.utcnow()``
returns them).

Functions taking a ``context`` (a Cinder ``RequestContext``) scope by
project: a non-admin context sees only its project's plans and runs, and
another project's plan is :class:`~cinder_vmdk_backup.exception.
BackupPlanNotFound`, as if it did not exist. The functions without a
context are the runner's, in cinder-backup, and see every project.

The database is ``[backup_plans] connection``, or else Cinder's own
``[database] connection``, through an oslo.db enginefacade of its own
(never Cinder's: the two may be different databases, and a transaction
here never joins one of Cinder's). Each function is one transaction.

The functions the runner races on between nodes are compare-and-set
updates, decided by the database: :func:`plan_claim_slot` (the slot of a
plan) and :func:`run_claim` (a queued run).
"""

import threading
import uuid

from oslo_config import cfg
from oslo_db import api as oslo_db_api
from oslo_db.sqlalchemy import enginefacade
from oslo_db.sqlalchemy import utils as db_utils
from oslo_utils import timeutils
import sqlalchemy as sa

from cinder.common import config as cinder_config  # noqa: F401 (state_path)
from cinder.db import api as cinder_db  # noqa: F401 ([database] options)
from cinder.i18n import _

from cinder_vmdk_backup import exception
from cinder_vmdk_backup import opts
from cinder_vmdk_backup.plans.db import models
from cinder_vmdk_backup.plans import schedule as schedule_mod

CONF = cfg.CONF
CONF.register_opts(opts.plan_opts, group='backup_plans')

UTC = schedule_mod.UTC

TARGET_TYPES = ('volume', 'instance_group', 'volume_type')
RUN_KINDS = ('scheduled', 'manual', 'catch_up', 'retry')
RUN_STATUSES = ('queued', 'running', 'succeeded', 'partial', 'failed',
                'skipped', 'interrupted')
UNFINISHED = ('queued', 'running')

SCHEDULE_KEYS = ('minute', 'hour', 'day_of_month', 'month', 'day_of_week',
                 'timezone')
PLAN_KEYS = ('id', 'project_id', 'user_id', 'name', 'description',
             'target_type', 'target_id') + SCHEDULE_KEYS + (
    'active', 'keep', 'full_every', 'bandwidth_mib_s', 'exclude',
    'next_run_at', 'runs_since_full', 'created_at', 'updated_at')
RUN_KEYS = ('id', 'plan_id', 'project_id', 'kind', 'scheduled_for',
            'started_at', 'finished_at', 'heartbeat_at', 'status', 'host',
            'full', 'backup_ids', 'group_snapshot_ids', 'deleted_backup_ids',
            'error')

_PLAN_DEFAULTS = {
    'name': None, 'description': None, 'minute': '0', 'hour': '0',
    'day_of_month': '*', 'month': '*', 'day_of_week': '*',
    'timezone': 'UTC', 'active': True, 'keep': 1, 'full_every': 1,
    'bandwidth_mib_s': None, 'exclude': [], 'runs_since_full': 0,
}
#: What plan_create may be given (id too, for a caller choosing it).
_PLAN_WRITABLE = frozenset(PLAN_KEYS) - {'created_at', 'updated_at'}
#: What plan_update may change.
_PLAN_UPDATABLE = _PLAN_WRITABLE - {'id', 'project_id', 'user_id'}
_RUN_WRITABLE = frozenset(RUN_KEYS) - {'id', 'plan_id', 'project_id'}
_RUN_LISTS = ('backup_ids', 'group_snapshot_ids', 'deleted_backup_ids')
_PLAN_FILTERS = frozenset(('project_id', 'active', 'target_type',
                           'target_id', 'all_projects'))

_manager = None
_manager_lock = threading.Lock()


class _Scope(object):
    """What an enginefacade transaction hangs on, one per call.

    Never Cinder's RequestContext: a transaction here must not join one of
    Cinder's.
    """


def _engine_options():
    options = dict(CONF.database.items())
    options['connection'] = (CONF.backup_plans.connection or
                             CONF.database.connection)
    options['sqlite_fk'] = True
    return options


def _transactions():
    global _manager
    with _manager_lock:
        if _manager is None:
            manager = enginefacade.transaction_context()
            manager.configure(**_engine_options())
            _manager = manager
        return _manager


def _writer():
    return _transactions().writer.using(_Scope())


def _reader():
    return _transactions().reader.using(_Scope())


def get_engine():
    """Return the engine of the plans database (started on first use)."""
    return _transactions().writer.get_engine()


def reset_engine():
    """Forget the engine, so that the next call reads the options again.

    For tests and tools that change ``[backup_plans] connection``.
    """
    global _manager
    with _manager_lock:
        if _manager is not None and _manager.is_started:
            _manager.writer.get_engine().dispose()
        _manager = None


# Conversions -------------------------------------------------------------

def _to_db_time(value, key):
    if value is None:
        return None
    if not hasattr(value, 'tzinfo') or not hasattr(value, 'hour'):
        raise exception.InvalidBackupPlan(
            reason=_("%s must be a datetime") % key)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _from_db_time(value):
    return None if value is None else value.replace(tzinfo=UTC)


_PLAN_TIMES = ('next_run_at', 'created_at', 'updated_at')
_RUN_TIMES = ('scheduled_for', 'started_at', 'finished_at', 'heartbeat_at')


def _plan_dict(row):
    plan = {key: getattr(row, key) for key in PLAN_KEYS}
    for key in _PLAN_TIMES:
        plan[key] = _from_db_time(plan[key])
    plan['exclude'] = list(plan['exclude'] or [])
    return plan


def _run_dict(row):
    run = {key: getattr(row, key) for key in RUN_KEYS}
    for key in _RUN_TIMES:
        run[key] = _from_db_time(run[key])
    for key in _RUN_LISTS:
        run[key] = list(run[key] or [])
    return run


# Validation --------------------------------------------------------------

def _unknown(keys, allowed, what):
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise exception.InvalidBackupPlan(
            reason=_("%(what)s cannot be given %(keys)s") % {
                'what': what, 'keys': ', '.join(unknown)})


def _check_id_list(values, key):
    ids = values[key]
    if not isinstance(ids, (list, tuple)) or not all(
            isinstance(item, str) for item in ids):
        raise exception.InvalidBackupPlan(
            reason=_("%s must be a list of ids") % key)
    values[key] = list(ids)


def _check_plan(plan):
    """Check a whole plan's values (after defaults or an update merged)."""
    if plan['target_type'] not in TARGET_TYPES:
        raise exception.InvalidBackupPlan(
            reason=_("target type %(type)r is not one of %(types)s") % {
                'type': plan['target_type'],
                'types': ', '.join(TARGET_TYPES)})
    if not plan.get('target_id'):
        raise exception.InvalidBackupPlan(reason=_("the target is missing"))
    for key in ('keep', 'full_every'):
        value = plan[key]
        if isinstance(value, bool) or not isinstance(value, int) or \
                value < 1:
            raise exception.InvalidBackupPlan(
                reason=_("%s must be a whole number of at least 1") % key)
    bandwidth = plan['bandwidth_mib_s']
    if bandwidth is not None:
        if isinstance(bandwidth, bool) or not isinstance(
                bandwidth, (int, float)) or not bandwidth > 0:
            raise exception.InvalidBackupPlan(
                reason=_("bandwidth_mib_s must be a number above 0 or "
                         "null"))
        plan['bandwidth_mib_s'] = float(bandwidth)
    _check_id_list(plan, 'exclude')
    plan['active'] = bool(plan['active'])
    return schedule_mod.Schedule(*(plan[key] for key in SCHEDULE_KEYS))


def _check_run(values):
    if 'status' in values and values['status'] not in RUN_STATUSES:
        raise exception.InvalidBackupPlan(
            reason=_("run status %r is unknown") % values['status'])
    if 'kind' in values and values['kind'] not in RUN_KINDS:
        raise exception.InvalidBackupPlan(
            reason=_("run kind %r is unknown") % values['kind'])
    for key in _RUN_LISTS:
        if key in values:
            _check_id_list(values, key)
    for key in _RUN_TIMES:
        if key in values:
            values[key] = _to_db_time(values[key], key)
    if values.get('full') is not None:
        values['full'] = bool(values['full'])


# Plans -------------------------------------------------------------------

def _scoped_plans(session, context):
    query = session.query(models.BackupPlan).filter_by(deleted=False)
    if not context.is_admin:
        query = query.filter_by(project_id=context.project_id)
    return query


def _plan_row(session, context, plan_id):
    row = _scoped_plans(session, context).filter_by(id=plan_id).first()
    if row is None:
        raise exception.BackupPlanNotFound(plan_id=plan_id)
    return row


def _sqlite_locked(exc):
    """sqlite's answer to two writers (a deferred transaction of each)."""
    return 'database is locked' in str(exc)


#: Writes are retried whole on a deadlock (MySQL, MariaDB) or sqlite's
#: "database is locked" (two runners of one sqlite file); a claim, a
#: compare-and-swap, then finds its slot taken or takes it.
_retried = oslo_db_api.wrap_db_retry(
    max_retries=5, retry_interval=0.1, inc_retry_interval=True,
    retry_on_deadlock=True, exception_checker=_sqlite_locked)


@_retried
def plan_create(context, values):
    """Create a plan; return it.

    :param values: plan keys; ``target_type`` and ``target_id`` are
        required, the others default (schedule ``0 0 * * *`` UTC, active,
        keep 1, full every run, no cap, no exclusion). ``project_id`` and
        ``user_id`` default to the context's. ``next_run_at`` defaults to
        the schedule's first firing after now.
    :raises InvalidBackupPlan: a value is invalid
    """
    values = dict(values)
    _unknown(values, _PLAN_WRITABLE, _("a backup plan"))
    plan = dict(_PLAN_DEFAULTS)
    plan.update(values)
    plan.setdefault('id', str(uuid.uuid4()))
    plan.setdefault('project_id', context.project_id)
    plan.setdefault('user_id', context.user_id)
    plan.setdefault('target_type', None)
    plan.setdefault('target_id', None)
    if plan['project_id'] != context.project_id and not context.is_admin:
        raise exception.InvalidBackupPlan(
            reason=_("a plan can only be created in the caller's project"))
    schedule = _check_plan(plan)
    now = timeutils.utcnow()
    if plan.get('next_run_at') is None:
        plan['next_run_at'] = schedule.next_after(now)
    plan['next_run_at'] = _to_db_time(plan['next_run_at'], 'next_run_at')
    with _writer() as session:
        row = models.BackupPlan(created_at=now, deleted=False, **plan)
        session.add(row)
        session.flush()
        return _plan_dict(row)


def plan_get(context, plan_id):
    """Return a plan.

    :raises BackupPlanNotFound: no such plan (or deleted, or another
        project's for a non-admin context)
    """
    with _reader() as session:
        return _plan_dict(_plan_row(session, context, plan_id))


def plan_get_all(context, filters=None, marker=None, limit=None):
    """Return plans, oldest first.

    :param filters: ``active`` (bool), ``target_type``, ``target_id``; for
        an admin context ``project_id`` (one project) or ``all_projects``
        (every project; otherwise only the context's)
    :param marker: the id of the plan the page starts after
    :param limit: most plans returned
    :raises BackupPlanNotFound: the marker is not a plan listed here (as
        Cinder's lists raise their NotFound for a bad marker)
    """
    filters = dict(filters or {})
    _unknown(filters, _PLAN_FILTERS, _("a list of backup plans"))
    all_projects = filters.pop('all_projects', False)
    project_id = filters.pop('project_id', None)
    with _reader() as session:
        query = session.query(models.BackupPlan).filter_by(deleted=False)
        if not context.is_admin:
            query = query.filter_by(project_id=context.project_id)
        elif project_id:
            query = query.filter_by(project_id=project_id)
        elif not all_projects:
            query = query.filter_by(project_id=context.project_id)
        if 'active' in filters:
            query = query.filter_by(active=bool(filters.pop('active')))
        for key, value in filters.items():
            query = query.filter(getattr(models.BackupPlan, key) == value)
        marker_row = None
        if marker is not None:
            marker_row = query.filter_by(id=marker).first()
            if marker_row is None:
                raise exception.BackupPlanNotFound(plan_id=marker)
        query = db_utils.paginate_query(
            query, models.BackupPlan, limit, ['created_at', 'id'],
            marker=marker_row, sort_dir='asc')
        return [_plan_dict(row) for row in query.all()]


@_retried
def plan_update(context, plan_id, values):
    """Change a plan; return it.

    A change of a schedule field without a ``next_run_at`` recomputes it
    from now.

    :raises BackupPlanNotFound: see :func:`plan_get`
    :raises InvalidBackupPlan: a value is invalid
    """
    values = dict(values)
    _unknown(values, _PLAN_UPDATABLE, _("a backup plan update"))
    with _writer() as session:
        row = _plan_row(session, context, plan_id)
        plan = _plan_dict(row)
        plan.update(values)
        schedule = _check_plan(plan)
        now = timeutils.utcnow()
        if 'next_run_at' not in values and any(
                key in values and values[key] != getattr(row, key)
                for key in SCHEDULE_KEYS):
            plan['next_run_at'] = schedule.next_after(now)
        for key in _PLAN_UPDATABLE:
            value = plan[key]
            if key == 'next_run_at':
                value = _to_db_time(value, key)
            setattr(row, key, value)
        row.updated_at = now
        session.flush()
        return _plan_dict(row)


@_retried
def plan_delete(context, plan_id):
    """Soft-delete a plan (it never runs again); its runs are kept.

    :raises BackupPlanNotFound: see :func:`plan_get`
    """
    with _writer() as session:
        row = _plan_row(session, context, plan_id)
        now = timeutils.utcnow()
        row.deleted = True
        row.deleted_at = now
        row.active = False
        row.updated_at = now


def plans_due(now, limit=None):
    """Return the active plans whose ``next_run_at`` is ``now`` or earlier.

    Every project's, the earliest due first.
    """
    now = _to_db_time(now, 'now')
    with _reader() as session:
        query = session.query(models.BackupPlan).filter(
            models.BackupPlan.deleted == sa.false(),
            models.BackupPlan.active == sa.true(),
            models.BackupPlan.next_run_at <= now,
        ).order_by(models.BackupPlan.next_run_at, models.BackupPlan.id)
        if limit is not None:
            query = query.limit(limit)
        return [_plan_dict(row) for row in query.all()]


@_retried
def plan_claim_slot(plan_id, expected_next_run_at, next_run_at, run_values):
    """Take a plan's due slot, once across every node; return the new run.

    One transaction: moves the plan's ``next_run_at`` from
    ``expected_next_run_at`` to ``next_run_at`` only if it still is
    ``expected_next_run_at`` (and the plan active, not deleted), and then
    records the run. When ``run_values['full']`` is known it also counts
    the runs since the last full backup (a full one: 0; an incremental
    one: one more).

    :param run_values: run keys; ``kind`` defaults to ``scheduled``,
        ``status`` to ``queued``, ``scheduled_for`` to
        ``expected_next_run_at``
    :returns: the run, or None when another node took the slot first (or
        the plan was changed, deactivated or deleted meanwhile)
    """
    values = dict(run_values)
    _unknown(values, _RUN_WRITABLE, _("a run of a backup plan"))
    values.setdefault('scheduled_for', expected_next_run_at)
    _check_run(values)
    expected = _to_db_time(expected_next_run_at, 'expected_next_run_at')
    now = timeutils.utcnow()
    changes = {'next_run_at': _to_db_time(next_run_at, 'next_run_at'),
               'updated_at': now}
    if values.get('full') is True:
        changes['runs_since_full'] = 0
    elif values.get('full') is False:
        changes['runs_since_full'] = models.BackupPlan.runs_since_full + 1
    with _writer() as session:
        plans = models.BackupPlan
        won = session.query(plans).filter(
            plans.id == plan_id,
            plans.deleted == sa.false(),
            plans.active == sa.true(),
            plans.next_run_at == expected,
        ).update(changes, synchronize_session=False)
        if won != 1:
            return None
        project_id = session.query(plans.project_id).filter(
            plans.id == plan_id).scalar()
        return _insert_run(session, plan_id, project_id, values, now)


def _insert_run(session, plan_id, project_id, values, now):
    run = {'kind': 'scheduled', 'status': 'queued', 'backup_ids': [],
           'group_snapshot_ids': [], 'deleted_backup_ids': []}
    run.update(values)
    row = models.BackupPlanRun(id=str(uuid.uuid4()), plan_id=plan_id,
                               project_id=project_id, created_at=now, **run)
    session.add(row)
    session.flush()
    return _run_dict(row)


# Runs --------------------------------------------------------------------

@_retried
def run_create(plan_id, values):
    """Record a run of a plan that is not a claimed slot; return it.

    A manual run (``kind`` manual, ``status`` queued: any node's runner
    claims it with :func:`run_claim`) or a skipped slot (``status``
    skipped).

    :raises BackupPlanNotFound: no such plan (or deleted)
    """
    values = dict(values)
    _unknown(values, _RUN_WRITABLE, _("a run of a backup plan"))
    _check_run(values)
    with _writer() as session:
        project_id = session.query(models.BackupPlan.project_id).filter(
            models.BackupPlan.id == plan_id,
            models.BackupPlan.deleted == sa.false()).scalar()
        if project_id is None:
            raise exception.BackupPlanNotFound(plan_id=plan_id)
        return _insert_run(session, plan_id, project_id, values,
                           timeutils.utcnow())


@_retried
def run_claim(run_id, host):
    """Take a queued run for ``host``: queued -> running, atomically.

    :returns: the run (``host``, ``started_at`` and ``heartbeat_at`` set),
        or None when it is not queued (any more)
    :raises BackupPlanRunNotFound: no such run
    """
    now = timeutils.utcnow()
    with _writer() as session:
        runs = models.BackupPlanRun
        won = session.query(runs).filter(
            runs.id == run_id, runs.status == 'queued',
        ).update({'status': 'running', 'host': host, 'started_at': now,
                  'heartbeat_at': now, 'updated_at': now},
                 synchronize_session=False)
        row = session.query(runs).filter_by(id=run_id).first()
        if row is None:
            raise exception.BackupPlanRunNotFound(run_id=run_id)
        return _run_dict(row) if won == 1 else None


@_retried
def run_update(run_id, values):
    """Change a run; return it.

    :raises BackupPlanRunNotFound: no such run
    :raises InvalidBackupPlan: a value is invalid
    """
    values = dict(values)
    _unknown(values, _RUN_WRITABLE, _("a run of a backup plan"))
    _check_run(values)
    with _writer() as session:
        row = session.query(models.BackupPlanRun).filter_by(
            id=run_id).first()
        if row is None:
            raise exception.BackupPlanRunNotFound(run_id=run_id)
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = timeutils.utcnow()
        session.flush()
        return _run_dict(row)


def _scoped_runs(session, context):
    query = session.query(models.BackupPlanRun)
    if not context.is_admin:
        query = query.filter_by(project_id=context.project_id)
    return query


def run_get(context, run_id):
    """Return a run.

    :raises BackupPlanRunNotFound: no such run (or another project's for
        a non-admin context)
    """
    with _reader() as session:
        row = _scoped_runs(session, context).filter_by(id=run_id).first()
        if row is None:
            raise exception.BackupPlanRunNotFound(run_id=run_id)
        return _run_dict(row)


def run_get_all(context, plan_id, limit=20):
    """Return the runs of a plan (a deleted plan's too), newest first.

    :param limit: most runs returned; None for all
    """
    with _reader() as session:
        runs = models.BackupPlanRun
        query = _scoped_runs(session, context).filter(
            runs.plan_id == plan_id).order_by(runs.created_at.desc(),
                                              runs.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return [_run_dict(row) for row in query.all()]


def runs_unfinished(plan_id=None):
    """Return the queued and running runs (of one plan), oldest first."""
    with _reader() as session:
        runs = models.BackupPlanRun
        query = session.query(runs).filter(runs.status.in_(UNFINISHED))
        if plan_id is not None:
            query = query.filter(runs.plan_id == plan_id)
        query = query.order_by(runs.created_at, runs.id)
        return [_run_dict(row) for row in query.all()]


# Batches of the runner ---------------------------------------------------
#
# A tick that fires hundreds of plans pays per statement and per
# transaction: these do in one transaction what the functions above do in
# one per plan or run.

@_retried
def plan_claim_slots(claims):
    """:func:`plan_claim_slot` for many plans, in one transaction.

    :param claims: ``(plan_id, expected_next_run_at, next_run_at,
        run_values)`` tuples
    :returns: one entry per claim, in order: the new run, or None when
        another node took that slot first (each claim is decided alone,
        as by :func:`plan_claim_slot`)
    """
    prepared = []
    for plan_id, expected, next_run_at, run_values in claims:
        values = dict(run_values)
        _unknown(values, _RUN_WRITABLE, _("a run of a backup plan"))
        values.setdefault('scheduled_for', expected)
        _check_run(values)
        prepared.append((plan_id, _to_db_time(expected,
                                              'expected_next_run_at'),
                         _to_db_time(next_run_at, 'next_run_at'), values))
    now = timeutils.utcnow()
    plans = models.BackupPlan
    results = []
    with _writer() as session:
        projects = dict(session.query(plans.id, plans.project_id).filter(
            plans.id.in_([c[0] for c in prepared])).all()) if prepared \
            else {}
        for plan_id, expected, next_run_at, values in prepared:
            changes = {'next_run_at': next_run_at, 'updated_at': now}
            if values.get('full') is True:
                changes['runs_since_full'] = 0
            elif values.get('full') is False:
                changes['runs_since_full'] = plans.runs_since_full + 1
            won = session.query(plans).filter(
                plans.id == plan_id,
                plans.deleted == sa.false(),
                plans.active == sa.true(),
                plans.next_run_at == expected,
            ).update(changes, synchronize_session=False)
            if won != 1:
                results.append(None)
                continue
            run = {'kind': 'scheduled', 'status': 'queued', 'backup_ids': [],
                   'group_snapshot_ids': [], 'deleted_backup_ids': []}
            run.update(values)
            run.update(id=str(uuid.uuid4()), plan_id=plan_id,
                       project_id=projects[plan_id], created_at=now)
            results.append(run)
        rows = [r for r in results if r is not None]
        if rows:
            session.execute(sa.insert(models.BackupPlanRun.__table__),
                            rows)
    out = []
    for run in results:
        if run is None:
            out.append(None)
            continue
        run = {key: run.get(key) for key in RUN_KEYS}
        for key in _RUN_TIMES:
            run[key] = _from_db_time(run[key])
        for key in _RUN_LISTS:
            run[key] = list(run[key] or [])
        out.append(run)
    return out


def runs_recent(plan_ids, limit=20):
    """The newest runs of several plans: ``{plan id: [run, newest first]}``.

    One query (a window function) instead of :func:`run_get_all` per
    plan; every plan id is a key, with an empty list when it has no run.
    """
    result = {plan_id: [] for plan_id in plan_ids}
    if not result:
        return result
    runs = models.BackupPlanRun
    with _reader() as session:
        rank = sa.func.row_number().over(
            partition_by=runs.plan_id,
            order_by=(runs.created_at.desc(), runs.id.desc())).label('rank')
        inner = session.query(runs.id.label('run_id'), rank).filter(
            runs.plan_id.in_(list(result))).subquery()
        query = session.query(runs).join(
            inner, inner.c.run_id == runs.id).filter(
            inner.c.rank <= limit).order_by(runs.plan_id, inner.c.rank)
        for row in query.all():
            result[row.plan_id].append(_run_dict(row))
    return result


@_retried
def run_set(run_id, values):
    """:func:`run_update` in one statement, returning nothing.

    For the runner's frequent small writes (the backups a run asked for).
    """
    values = dict(values)
    _unknown(values, _RUN_WRITABLE, _("a run of a backup plan"))
    _check_run(values)
    values['updated_at'] = timeutils.utcnow()
    with _writer() as session:
        session.execute(sa.update(models.BackupPlanRun.__table__).where(
            models.BackupPlanRun.__table__.c.id == run_id).values(**values))


@_retried
def run_update_if(run_id, expected, values):
    """Change a run only if it still has the ``expected`` values.

    The compare-and-swap with which one node, and only one, takes over a
    run whose node stopped.

    :param expected: run keys and the values they must still have
        (datetimes compared as stored)
    :returns: the run changed, or None when it no longer matched
    """
    values = dict(values)
    _unknown(values, _RUN_WRITABLE, _("a run of a backup plan"))
    _check_run(values)
    runs = models.BackupPlanRun
    conditions = [runs.id == run_id]
    for key, value in expected.items():
        if key in _RUN_TIMES:
            value = _to_db_time(value, key)
        column = getattr(runs, key)
        conditions.append(column.is_(None) if value is None
                          else column == value)
    values['updated_at'] = timeutils.utcnow()
    with _writer() as session:
        won = session.query(runs).filter(*conditions).update(
            values, synchronize_session=False)
        if won != 1:
            return None
        return _run_dict(session.query(runs).filter_by(id=run_id).one())
