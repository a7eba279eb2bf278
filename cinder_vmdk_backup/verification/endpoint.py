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

"""The verification endpoint of cinder-backup.

The plugin's :class:`~cinder_vmdk_backup.backup.manager.BackupManager`
registers :class:`VerificationEndpoint` as an extra RPC endpoint
(namespace ``backup_verification``, version 1.0). cinder-api queues a
verification on the backup's metadata (:func:`.records.queue`) and casts
``verify_backup``; here it waits for one of Cinder's operation slots
(``backup_max_operations``, the semaphore Cinder's own backups and
restores take), runs :func:`.verifier.verify` with the configured backup
service, and records progress and the outcome (:mod:`.records`).

What a verification never does: change the backup's status. A backup
whose data is found damaged stays as it was (usually ``available``): its
verification record says ``failed`` and names what is damaged; whether to
delete it, or to keep it for the parts that restore, is the owner's call.
A backup deleted (or being deleted) while it waits or runs ends the
verification quietly; a newer verification of the same backup (queued
after this one was taken for dead) makes this one stop.
"""

import time

from cinder import exception
from cinder import objects
from cinder.objects import fields
from oslo_log import log as logging
import oslo_messaging as messaging

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.verification import records
from cinder_vmdk_backup.verification import verifier

LOG = logging.getLogger(__name__)

#: Least seconds between two progress records (each is a database write).
PROGRESS_INTERVAL = 5.0
#: Least seconds between two checks that the backup is still there.
CANCEL_CHECK_INTERVAL = 2.0

_GONE = (fields.BackupStatus.DELETING, fields.BackupStatus.DELETED)


class _Superseded(Exception):
    """Another verification of the backup was queued meanwhile."""


class VerificationEndpoint(object):
    """RPC endpoint of backup verification in cinder-backup.

    :param manager: the plugin's BackupManager (its backup service and its
        operation semaphore are used)
    """

    target = messaging.Target(namespace='backup_verification',
                              version='1.0')

    def __init__(self, manager, clock=None):
        self.manager = manager
        self._clock = clock or time.monotonic

    def verify_backup(self, context, backup_id, verification_id,
                      deep=False):
        """Verify one backup (a cast: the outcome goes to its records)."""
        semaphore = getattr(self.manager, '_semaphore', None)
        if semaphore is None:
            return self._verify(context, backup_id, verification_id, deep)
        with semaphore:
            return self._verify(context, backup_id, verification_id, deep)

    def _load(self, context, backup_id):
        try:
            backup = objects.Backup.get_by_id(context, backup_id)
        except exception.BackupNotFound:
            return None
        if backup.status in _GONE:
            return None
        return backup

    def _verify(self, context, backup_id, verification_id, deep):
        backup = self._load(context, backup_id)
        if backup is None:
            LOG.info('Verification %(id)s of backup %(backup)s not run: '
                     'the backup was deleted.',
                     {'id': verification_id, 'backup': backup_id})
            return
        queued = (backup.metadata or {}).get(records.ID)
        if queued and queued != verification_id:
            LOG.info('Verification %(id)s of backup %(backup)s not run: '
                     'verification %(other)s replaced it.',
                     {'id': verification_id, 'backup': backup_id,
                      'other': queued})
            return
        LOG.info('Verification %(id)s of backup %(backup)s started%(deep)s.',
                 {'id': verification_id, 'backup': backup_id,
                  'deep': ' (deep: with a restore)' if deep else ''})
        records.start(backup, verification_id, deep)
        watcher = _Watcher(backup, verification_id, self._clock)
        try:
            service = self.manager.service(context)
            report = verifier.verify(service, backup, deep=deep,
                                     progress=watcher.progress,
                                     cancelled=watcher.cancelled)
        except (verifier.Cancelled, _Superseded):
            self._ended_early(backup, verification_id, watcher)
            return
        except Exception as exc:
            if watcher.gone():
                self._ended_early(backup, verification_id, watcher)
                return
            reason = (exc.msg if isinstance(
                exc, cvb_exception.VerificationError) else
                '%s: %s' % (type(exc).__name__, exc))
            LOG.error('Verification %(id)s of backup %(backup)s could not '
                      'run: %(reason)s',
                      {'id': verification_id, 'backup': backup_id,
                       'reason': reason})
            self._record(backup, records.fail, reason)
            return
        if watcher.gone() or watcher.superseded:
            # Deleted (objects vanishing under the reads) or replaced
            # while it ran: its outcome is nobody's.
            self._ended_early(backup, verification_id, watcher)
            return
        if report.ok:
            LOG.info('Verification %(id)s of backup %(backup)s: %(summary)s',
                     {'id': verification_id, 'backup': backup_id,
                      'summary': report.summary()})
        else:
            LOG.warning('Verification %(id)s of backup %(backup)s FAILED: '
                        '%(summary)s; problems: %(problems)s',
                        {'id': verification_id, 'backup': backup_id,
                         'summary': report.summary(),
                         'problems': report.problems})
        self._record(backup, records.finish, report)

    @staticmethod
    def _record(backup, write, what):
        try:
            write(backup, what)
        except exception.BackupNotFound:
            LOG.info('Backup %s was deleted during its verification.',
                     backup.id)

    @staticmethod
    def _ended_early(backup, verification_id, watcher):
        if watcher.superseded:
            LOG.info('Verification %(id)s of backup %(backup)s stopped: '
                     'a newer verification replaced it.',
                     {'id': verification_id, 'backup': backup.id})
        else:
            LOG.info('Verification %(id)s of backup %(backup)s stopped: '
                     'the backup is being deleted.',
                     {'id': verification_id, 'backup': backup.id})


class _Watcher(object):
    """The verifier's callbacks: progress recorded, deletion noticed."""

    def __init__(self, backup, verification_id, clock):
        self._backup = backup
        self._id = verification_id
        self._clock = clock
        self._last_progress = None
        self._last_check = None
        self.superseded = False
        self._gone = False

    def progress(self, percent):
        now = self._clock()
        if (self._last_progress is not None and percent < 100 and
                now - self._last_progress < PROGRESS_INTERVAL):
            return
        self._last_progress = now
        if self.cancelled(force=True):
            return
        try:
            records.progress(self._backup, percent)
        except exception.BackupNotFound:
            self._gone = True

    def cancelled(self, force=False):
        """Whether the verification should stop (backup gone, replaced)."""
        if self._gone or self.superseded:
            return True
        now = self._clock()
        if (not force and self._last_check is not None and
                now - self._last_check < CANCEL_CHECK_INTERVAL):
            return False
        self._last_check = now
        return self.gone() or self.superseded

    def gone(self):
        backup = self._backup
        try:
            with backup.as_read_deleted():
                backup.refresh()
        except exception.BackupNotFound:
            self._gone = True
            return True
        if backup.deleted or backup.status in _GONE:
            self._gone = True
            return True
        if (backup.metadata or {}).get(records.ID) not in (None, self._id):
            self.superseded = True
        return self._gone
