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

"""Retention of a backup plan: which sets to keep, when to start a full.

A *set* is what one successful run of a plan made: one backup (a volume
plan), the backups of one instance-group set, or one backup per volume (a
volume-type plan). Cinder refuses to delete a backup that still has an
incremental child, so a set can only go once nothing kept depends on it:

* :func:`choose` is pure: given the sets oldest first (each backup with the
  ids of its children, whoever made them) and ``keep``, it answers which
  sets to delete: the ones older than the newest ``keep``, except any that
  still has a backup with a child that stays (a kept set's incremental,
  another plan's or a user's backup on top of it). A blocked set blocks its
  own parents in turn, so no kept incremental ever loses its chain.
* :func:`next_backup_is_full` keeps chains short enough for that: with
  incrementals the oldest kept set pins its whole chain, so a new full is
  started when ``full_every`` is reached, when there is no parent, or when
  one more incremental would make retention keep more than ``keep +
  full_every`` sets.
* :func:`apply` deletes what :func:`choose` picked, child first, through
  Cinder's backup API (or the instance-group API for group sets), waits for
  each deletion to end and records the deleted ids on the run. A deletion
  that fails stops the pruning; the run's ``error`` says which and why and
  nothing else is touched (the next run tries again).
"""

import datetime
import time

from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.objects import fields
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: Run statuses whose backups form a set (a partial run's backups are
#: kept and pruned like the others').
SET_STATUSES = ('succeeded', 'partial')

#: Backup statuses of a set that retention may count and delete.
SETTLED = (fields.BackupStatus.AVAILABLE, fields.BackupStatus.ERROR)

#: Seconds one backup deletion may take before retention gives up on it.
DELETE_TIMEOUT = 3600.0

#: Longest pause between two looks at a deletion.
POLL_INTERVAL = 2.0


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class RetentionStopped(Exception):
    """A deletion failed; the message says which and why."""


# -- pure decisions -----------------------------------------------------------

def choose(sets, keep):
    """The sets to delete, oldest first.

    :param sets: the plan's sets, oldest first; each a dict with
        ``backups``: a list of dicts with ``id`` and ``children`` (ids of
        every backup whose parent it is, whoever made them); other keys are
        passed through
    :param keep: how many of the newest sets to keep (>= 1)
    :returns: the sets (the same dicts) to delete, oldest first: never one
        with a backup whose child is not deleted too
    """
    if keep < 1:
        raise ValueError('keep must be at least 1')
    candidates = list(sets[:-keep]) if len(sets) > keep else []
    while True:
        doomed = {backup['id'] for s in candidates for backup in s['backups']}
        blocked = [s for s in candidates if any(
            child not in doomed
            for backup in s['backups'] for child in backup['children'])]
        if not blocked:
            return candidates
        candidates = [s for s in candidates if s not in blocked]


def deletion_order(backups):
    """Backups (dicts with ``id`` and ``children``) ordered child first."""
    pending = {backup['id']: backup for backup in backups}
    ordered = []
    while pending:
        ready = [b for b in pending.values()
                 if not any(child in pending for child in b['children'])]
        if not ready:
            raise ValueError('the backups %s form a parent loop'
                             % ', '.join(sorted(pending)))
        for backup in ready:
            ordered.append(backup)
            del pending[backup['id']]
    return ordered


def _chain_length(runs):
    """Sets in the chain the next incremental would extend, or None.

    ``runs`` newest first; counts successful runs back to the newest full
    one (included). None when no full one is among them.
    """
    count = 0
    for run in runs:
        if run.get('status') not in SET_STATUSES or not run.get(
                'backup_ids'):
            continue
        count += 1
        if run.get('full'):
            return count
    return None


def _newest_first(runs):
    return sorted(runs, key=_run_time, reverse=True)


def _run_time(run):
    for key in ('scheduled_for', 'started_at', 'finished_at'):
        if run.get(key) is not None:
            return run[key]
    return _EPOCH


def next_backup_is_full(context, plan, runs):
    """Whether the plan's next run makes full backups, and why.

    :param context: a context scoped to the plan's project (Cinder reads)
    :param plan: the plan dict (``keep``, ``full_every``,
        ``runs_since_full``)
    :param runs: the plan's runs (any order)
    :returns: ``(True, reason)`` or ``(False, reason)``; the reason is
        text for logs and the run record
    """
    full_every = int(plan.get('full_every') or 1)
    keep = int(plan.get('keep') or 1)
    if full_every <= 1:
        return True, _('every run is a full backup (full_every is 1)')
    runs = _newest_first(runs)
    previous = next((run for run in runs
                     if run.get('status') in SET_STATUSES
                     and run.get('backup_ids')), None)
    if previous is None:
        return True, _('no earlier backup of this plan to build on')
    problems = []
    for backup_id in previous['backup_ids']:
        try:
            backup = objects.Backup.get_by_id(context, backup_id)
        except exception.BackupNotFound:
            problems.append(_('backup %s of the previous run is gone')
                            % backup_id)
            continue
        if backup.status != fields.BackupStatus.AVAILABLE:
            problems.append(_('backup %(id)s of the previous run is '
                              '%(status)s') % {'id': backup_id,
                                               'status': backup.status})
    if len(problems) == len(previous['backup_ids']):
        # (Some left: the volumes without a parent get a full anyway.)
        return True, '; '.join(problems)
    since_full = plan.get('runs_since_full')
    if since_full is not None and int(since_full) + 1 >= full_every:
        return True, _('%(n)d incremental runs since the last full '
                       '(full_every %(k)d)') % {'n': int(since_full),
                                                'k': full_every}
    chain = _chain_length(runs)
    if chain is None and since_full is None:
        return True, _('no full backup among the runs of this plan')
    if chain is not None and chain + 1 > keep + full_every:
        return True, _('one more incremental would make a chain of '
                       '%(n)d sets, more than keep + full_every '
                       '(%(limit)d) to keep') % {
                           'n': chain + 1, 'limit': keep + full_every}
    return False, _('incremental on the previous run\'s backups')


# -- applying them ------------------------------------------------------------

def _children(context, backup_id):
    backups = objects.BackupList.get_all(
        _admin(context), filters={'parent_id': backup_id})
    return [b.id for b in backups]


def _admin(context):
    return context if context.is_admin else context.elevated()


def plan_sets(context, runs):
    """The plan's sets as :func:`choose` wants them, oldest first.

    A set's backups that are gone already are left out; a set with none
    left is no set any more. A set with a backup that is busy (being
    created, restored or deleted) is neither counted nor deleted: it is
    returned apart, so that its backups still protect their parents. (A
    backup in error counts with its set and is deleted with it.)

    :returns: ``(sets, others)``
    """
    sets, others = [], []
    # Deletions are recorded on the run that pruned: known gone, not read.
    gone = set()
    for run in runs:
        gone.update(run.get('deleted_backup_ids') or ())
    for run in reversed(_newest_first(runs)):
        if run.get('status') not in SET_STATUSES or not run.get(
                'backup_ids'):
            continue
        backups, healthy = [], True
        for backup_id in run['backup_ids']:
            if backup_id in gone:
                continue
            try:
                backup = objects.Backup.get_by_id(_admin(context), backup_id)
            except exception.BackupNotFound:
                continue
            healthy &= backup.status in SETTLED
            backups.append({
                'id': backup.id, 'parent_id': backup.parent_id,
                'status': backup.status,
                'group_snapshot_id': (backup.metadata or {}).get(
                    'group_snapshot_id'),
                'instance_group_id': (backup.metadata or {}).get(
                    'instance_group_id'),
                'instance_id': (backup.metadata or {}).get('instance_id'),
                'children': _children(context, backup.id)})
        if not backups:
            continue
        entry = {'run_id': run['id'], 'backups': backups,
                 'group_snapshot_ids': list(
                     run.get('group_snapshot_ids') or ())}
        (sets if healthy else others).append(entry)
    return sets, others


def apply(context, plan, run, backup_api=None, group_api=None, db_api=None,
          sleep=time.sleep, clock=time.monotonic, timeout=DELETE_TIMEOUT,
          synthesize=None):
    """Delete the plan's sets beyond ``keep`` after ``run`` succeeded.

    :param context: a context of the plan's project allowed to delete its
        backups (the runner's admin context scoped to the project)
    :param plan: the plan dict
    :param run: the run dict that just succeeded (the deleted ids are
        recorded on it)
    :param backup_api: Cinder's ``cinder.backup.api.API()`` (default one)
    :param group_api: the plugin's instance-group API (default one), for
        sets made by an instance-group plan
    :param db_api: the plans DB API module (default
        :mod:`cinder_vmdk_backup.plans.db.api`)
    :param synthesize: ``synthesize(backup_id) -> {'id': ...}`` (in
        cinder-backup: :func:`.synthetic.synthesize` bound to the context
        and the backup driver) to prune old sets that a kept incremental
        still needs: an incremental of an old set whose children are all
        in one kept set is replaced by a synthetic full that joins that
        kept set (and ages out with it); None: old sets wait for the kept
        chain to age out
    :returns: the ids of the backups deleted, in deletion order
    """
    if db_api is None:
        from cinder_vmdk_backup.plans.db import api as db_api
    runs = db_api.run_get_all(context, plan['id'], limit=None)
    if not any(r['id'] == run['id'] for r in runs):
        runs = list(runs) + [run]
    sets, _others = plan_sets(context, runs)
    doomed = choose(sets, int(plan['keep']))
    if synthesize is not None and _synthesize_blocked(
            context, plan, run, sets, doomed, synthesize, db_api):
        runs = db_api.run_get_all(context, plan['id'], limit=None)
        if not any(r['id'] == run['id'] for r in runs):
            runs = list(runs) + [run]
        sets, _others = plan_sets(context, runs)
        doomed = choose(sets, int(plan['keep']))
    deleted = []
    if not doomed:
        return deleted
    LOG.info('Backup plan %(plan)s keeps %(keep)s sets: deleting %(n)d '
             'older ones (runs %(runs)s).',
             {'plan': plan['id'], 'keep': plan['keep'], 'n': len(doomed),
              'runs': ', '.join(s['run_id'] for s in doomed)})
    progress = _Progress(db_api, run, deleted)
    try:
        # Newest set first: a set's children are in newer sets.
        for entry in reversed(doomed):
            if entry['group_snapshot_ids']:
                _delete_group_set(context, entry, group_api, progress)
            else:
                _delete_backups(context, entry['backups'], backup_api,
                                sleep, clock, timeout, progress)
    except RetentionStopped as exc:
        LOG.warning('Retention of backup plan %(plan)s stopped after '
                    '%(n)d deletions: %(err)s',
                    {'plan': plan['id'], 'n': len(deleted), 'err': exc})
        db_api.run_update(run['id'], {
            'deleted_backup_ids': progress.recorded,
            'error': _('retention stopped: %s') % exc})
    return deleted


def _synthesize_blocked(context, plan, run, sets, doomed, synthesize,
                        db_api):
    """Replace the incrementals that hold old sets back; True if any."""
    keep = int(plan['keep'])
    if len(sets) <= keep:
        return False
    kept = {b['id']: entry for entry in sets[-keep:]
            for b in entry['backups']}
    done = False
    for entry in sets[:-keep]:
        if entry in doomed:
            continue
        for backup in entry['backups']:
            homes = {kept[c]['run_id'] if c in kept else None
                     for c in backup['children']}
            if not backup['parent_id'] or len(homes) != 1 or None in homes:
                continue
            try:
                result = synthesize(backup['id'])
            except Exception as exc:
                LOG.warning('Backup plan %(plan)s: no synthetic full of '
                            'backup %(backup)s: %(err)s',
                            {'plan': plan['id'], 'backup': backup['id'],
                             'err': exc})
                db_api.run_update(run['id'], {'error': _(
                    'retention: no synthetic full of backup %(backup)s: '
                    '%(err)s') % {'backup': backup['id'], 'err': exc}})
                return done
            home = kept[backup['children'][0]]
            current = db_api.run_get(context, home['run_id'])
            db_api.run_update(home['run_id'], {'backup_ids': list(
                current['backup_ids']) + [result['id']]})
            LOG.info('Backup plan %(plan)s: synthetic full %(new)s replaces '
                     'backup %(old)s and joins the set of run %(run)s.',
                     {'plan': plan['id'], 'new': result['id'],
                      'old': backup['id'], 'run': home['run_id']})
            done = True
    return done


class _Progress(object):
    """Records each deletion on the run as it ends."""

    def __init__(self, db_api, run, deleted):
        self.db_api = db_api
        self.run_id = run['id']
        self.deleted = deleted
        self.recorded = list(run.get('deleted_backup_ids') or ())

    def done(self, backup_ids):
        self.deleted.extend(backup_ids)
        self.recorded.extend(backup_ids)
        self.db_api.run_update(self.run_id,
                               {'deleted_backup_ids': list(self.recorded)})


class _Collected(object):
    def __init__(self):
        self.deleted = []

    def done(self, backup_ids):
        self.deleted.extend(backup_ids)


def delete_backups(context, backup_ids, backup_api=None, sleep=time.sleep,
                   clock=time.monotonic, timeout=DELETE_TIMEOUT):
    """Delete backups in this order through Cinder's API, one by one.

    Each deletion is waited for; the first that fails (refused, ended in
    error, or not done within ``timeout``) stops the rest.

    :returns: the ids deleted
    :raises RetentionStopped: with the ids deleted before in ``deleted``
    """
    progress = _Collected()
    try:
        _delete_backups(context, [{'id': i, 'children': []}
                                  for i in backup_ids],
                        backup_api, sleep, clock, timeout, progress,
                        ordered=True)
    except RetentionStopped as exc:
        exc.deleted = progress.deleted
        raise
    return progress.deleted


def _delete_backups(context, backups, backup_api, sleep, clock, timeout,
                    progress, ordered=False):
    if backup_api is None:
        from cinder.backup import api as cinder_backup_api
        backup_api = cinder_backup_api.API()
    for entry in backups if ordered else deletion_order(backups):
        try:
            backup = objects.Backup.get_by_id(context, entry['id'])
        except exception.BackupNotFound:
            continue
        try:
            backup_api.delete(context, backup)
        except Exception as exc:
            raise RetentionStopped(_('backup %(id)s could not be deleted: '
                                     '%(err)s') % {'id': entry['id'],
                                                   'err': exc}) from exc
        _wait_deleted(context, entry['id'], sleep, clock, timeout)
        progress.done([entry['id']])


def _wait_deleted(context, backup_id, sleep, clock, timeout):
    deadline = clock() + timeout
    interval = 0.05
    while True:
        try:
            backup = objects.Backup.get_by_id(context, backup_id)
        except exception.BackupNotFound:
            return
        if backup.status != fields.BackupStatus.DELETING:
            raise RetentionStopped(_(
                'the deletion of backup %(id)s ended %(status)s: '
                '%(reason)s') % {'id': backup_id, 'status': backup.status,
                                 'reason': backup.fail_reason or '-'})
        if clock() >= deadline:
            raise RetentionStopped(_(
                'backup %(id)s is still being deleted after %(s)d s')
                % {'id': backup_id, 's': timeout})
        sleep(interval)
        interval = min(interval * 2, POLL_INTERVAL)


def _delete_group_set(context, entry, group_api, progress):
    if group_api is None:
        from cinder_vmdk_backup.group import api as instance_group_api
        group_api = instance_group_api.API()
    backups = entry['backups']
    group_id = next((b['instance_group_id'] for b in backups
                     if b['instance_group_id']), None)
    instance_id = next((b['instance_id'] for b in backups
                        if b['instance_id']), None)
    for group_snapshot_id in entry['group_snapshot_ids']:
        members = [b['id'] for b in backups
                   if b['group_snapshot_id'] in (None, group_snapshot_id)]
        try:
            answer = group_api.delete_backup(
                context, group_id, instance_id,
                group_snapshot_id=group_snapshot_id)
        except Exception as exc:
            raise RetentionStopped(_(
                'backup set %(set)s of instance group %(group)s could not '
                'be deleted: %(err)s') % {'set': group_snapshot_id,
                                          'group': group_id,
                                          'err': exc}) from exc
        if not answer.get('success'):
            raise RetentionStopped(_(
                'backup set %(set)s of instance group %(group)s was not '
                'deleted: %(msg)s') % {
                    'set': group_snapshot_id, 'group': group_id,
                    'msg': answer.get('msg') or (
                        _('still running') if answer.get('still_running')
                        else '-')})
        progress.done(members)
