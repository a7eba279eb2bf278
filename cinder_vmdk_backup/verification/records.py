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

"""The last verification of a backup, kept on the backup's metadata.

cinder-api queues a verification (:func:`queue`), cinder-backup runs it
(:func:`start`, :func:`progress`, then :func:`finish` or :func:`fail`),
and anyone reads it back (:func:`read`). Everything lives in Cinder's
backup metadata (values of at most :data:`TEXT_LIMIT` characters) under
keys starting with :data:`PREFIX`, so a backup list shows it and nothing
else needs a table:

``cvb_verify_status``
    ``queued``, ``running``, ``ok``, ``failed`` (the backup's data is
    damaged or missing) or ``error`` (the verification could not run)
``cvb_verify_id``, ``cvb_verify_deep``
    the verification's uuid, and whether it also restores the backup
``cvb_verify_started_at``, ``cvb_verify_finished_at``,
``cvb_verify_updated_at``
    ISO 8601 UTC times; ``updated_at`` moves with every change and tells
    a verification whose cinder-backup died (:data:`STALE_AFTER`)
``cvb_verify_progress``
    0 to 100
``cvb_verify_summary``
    one line for people
``cvb_verify_problems``, ``cvb_verify_problem_<n>``
    how many problems were found, and the first :data:`MAX_PROBLEMS` of
    them, each ``"<reason> <offset> <length> <backup id> <object|->"``
"""

import datetime

from cinder import objects
from oslo_utils import strutils
from oslo_utils import timeutils

from cinder_vmdk_backup import exception as cvb_exception

PREFIX = 'cvb_verify_'
STATUS = PREFIX + 'status'
ID = PREFIX + 'id'
DEEP = PREFIX + 'deep'
STARTED_AT = PREFIX + 'started_at'
FINISHED_AT = PREFIX + 'finished_at'
UPDATED_AT = PREFIX + 'updated_at'
PROGRESS = PREFIX + 'progress'
SUMMARY = PREFIX + 'summary'
PROBLEM_COUNT = PREFIX + 'problems'
PROBLEM = PREFIX + 'problem_%d'

QUEUED = 'queued'
RUNNING = 'running'
OK = 'ok'
FAILED = 'failed'
ERROR = 'error'
BUSY = (QUEUED, RUNNING)

#: Longest text a metadata value holds (Cinder's column).
TEXT_LIMIT = 255
#: Problems kept on the backup (the count says how many there were).
MAX_PROBLEMS = 5
#: A queued or running verification not updated for this long is taken
#: for dead (its cinder-backup stopped): another may be queued. A running
#: one updates at least every few seconds; a queued one may wait this
#: long for a free operation slot (``backup_max_operations``).
STALE_AFTER = datetime.timedelta(hours=1)


def _now():
    return timeutils.utcnow().replace(microsecond=0)


def _iso(when):
    return when.strftime('%Y-%m-%dT%H:%M:%SZ')


def _parse_time(text):
    if not text:
        return None
    try:
        return timeutils.normalize_time(timeutils.parse_isotime(text))
    except ValueError:
        return None


def _save(backup, values, drop_problems=False):
    metadata = dict(backup.metadata or {})
    if drop_problems:
        for key in [k for k in metadata if k.startswith(PREFIX + 'problem')]:
            del metadata[key]
    for key, value in values.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = str(value)[:TEXT_LIMIT]
    metadata[UPDATED_AT] = _iso(_now())
    backup.metadata = metadata
    backup.save()


def _fresh(backup):
    """The backup again from the database (deleted ones included)."""
    with backup.as_read_deleted():
        backup.refresh()
    return backup


def is_stale(record, now=None):
    """Whether a queued or running record was left by a dead service."""
    updated = _parse_time(record.get('updated_at'))
    if updated is None:
        return True
    return (now or timeutils.utcnow()) - updated > STALE_AFTER


def queue(backup, verification_id, deep):
    """Record a new verification as queued.

    :raises VerificationBusy: the backup has a queued or running
        verification that is not stale
    """
    record = read(backup)
    if record and record['status'] in BUSY and not is_stale(record):
        raise cvb_exception.VerificationBusy(
            backup_id=backup.id, verification_id=record['verification_id'],
            status=record['status'])
    _save(backup, {STATUS: QUEUED, ID: verification_id, DEEP: bool(deep),
                   STARTED_AT: None, FINISHED_AT: None, PROGRESS: 0,
                   SUMMARY: None}, drop_problems=True)


def start(backup, verification_id, deep=False):
    """Record that the verification runs (queued by cinder-api or not)."""
    _save(backup, {STATUS: RUNNING, ID: verification_id, DEEP: bool(deep),
                   STARTED_AT: _iso(_now()), FINISHED_AT: None,
                   PROGRESS: 0, SUMMARY: None}, drop_problems=True)


def progress(backup, percent):
    """Record how far the running verification is (0 to 100)."""
    _save(backup, {PROGRESS: max(0, min(100, int(percent)))})


def finish(backup, report):
    """Record the outcome of a verification that ran to its end.

    :param report: a :class:`~.verifier.Report`
    """
    values = {STATUS: OK if report.ok else FAILED,
              FINISHED_AT: _iso(_now()), PROGRESS: 100,
              SUMMARY: report.summary(),
              PROBLEM_COUNT: len(report.problems)}
    for index, problem in enumerate(report.problems[:MAX_PROBLEMS]):
        values[PROBLEM % index] = _problem_text(problem)
    _save(backup, values, drop_problems=True)


def fail(backup, reason):
    """Record that the verification could not run (status ``error``)."""
    _save(backup, {STATUS: ERROR, FINISHED_AT: _iso(_now()),
                   SUMMARY: reason})


def current_id(backup):
    """The id of the backup's last verification (from the database)."""
    return (_fresh(backup).metadata or {}).get(ID)


def _problem_text(problem):
    text = '%s %d %d %s %s' % (problem['reason'], problem['offset'],
                               problem['length'], problem['backup_id'],
                               problem.get('object') or '-')
    return text[:TEXT_LIMIT]


def _problem_of(text):
    parts = text.split(' ', 4)
    if len(parts) != 5:
        return None
    reason, offset, length, backup_id, name = parts
    try:
        return {'backup_id': backup_id,
                'object': None if name == '-' else name,
                'offset': int(offset), 'length': int(length),
                'reason': reason}
    except ValueError:
        return None


def read(backup):
    """The backup's last verification, or None if it never had one.

    :returns: a dict with ``status``, ``verification_id``, ``deep``,
        ``started_at``, ``finished_at``, ``updated_at``, ``progress``
        (int), ``summary``, ``problems`` (the ones kept, as dicts with
        ``backup_id``, ``object``, ``offset``, ``length``, ``reason``) and
        ``problem_count`` (all of them)
    """
    metadata = backup.metadata or {}
    status = metadata.get(STATUS)
    if not status:
        return None
    problems = []
    for index in range(MAX_PROBLEMS):
        text = metadata.get(PROBLEM % index)
        problem = _problem_of(text) if text else None
        if problem is not None:
            problems.append(problem)
    try:
        count = int(metadata.get(PROBLEM_COUNT, len(problems)))
    except ValueError:
        count = len(problems)
    try:
        percent = int(metadata.get(PROGRESS) or 0)
    except ValueError:
        percent = 0
    return {'status': status,
            'verification_id': metadata.get(ID),
            'deep': strutils.bool_from_string(metadata.get(DEEP)),
            'started_at': metadata.get(STARTED_AT),
            'finished_at': metadata.get(FINISHED_AT),
            'updated_at': metadata.get(UPDATED_AT),
            'progress': percent,
            'summary': metadata.get(SUMMARY),
            'problems': problems,
            'problem_count': count}


def read_by_id(context, backup_id):
    """:func:`read` of a backup given by id (BackupNotFound if none)."""
    return read(objects.Backup.get_by_id(context, backup_id))
