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

"""The "recovery" lock: a backing's vSphere methods disabled during a restore.

While a restore writes a volume's disk, nothing else may power its backing
on, snapshot it, reconfigure, relocate or destroy it. vSphere has its own
mechanism for that, the one backup applications use (VDDK's
``PrepareForAccess``): ``AuthorizationManager.DisableMethods`` with the
solution's extension key as the source. Whoever calls a disabled method
(the vSphere client, govc, another Cinder process) gets the fault
``MethodDisabled`` naming that source; the entity's ``disabledMethod``
property lists what is disabled. ``EnableMethods`` by the same source
enables them again.

vSphere refuses a disabled method to every caller, the source included.
The plugin's own steps on a locked VM therefore open the one method they
need for as long as they need it (:meth:`RecoveryLock.opened`): the disk
swap's reconfigurations of the backing (seconds, at the end of a restore
whose data movement took minutes). The temporary VM the data is imported
into is the plugin's own and is not locked (it is destroyed at the end).

A lock is recorded in a private file of the staging directory (an
:class:`~cinder_vmdk_backup.ownership.Record` of kind :data:`RECORD_KIND`)
before the methods are disabled, and the file is removed only once they
are enabled again: a process killed in between leaves the file, and
:func:`enable_leftovers` (run at every start) enables the methods it
names. An entity that another live process of this host locked meanwhile
is left locked.

A vCenter that does not answer at the end of a restore (or refuses
``EnableMethods``) must not leave the VMs locked until the service's next
start: the restore tries again after each of :data:`ENABLE_RETRY_DELAYS`,
then lets go of its record (its outcome stays the restore's), and a
:class:`Reenabler` of the driver runs the same janitor every
:data:`REENABLE_INTERVAL` seconds until no record waits.
"""

import contextlib
import json
import os
import threading
import time

from cinder.i18n import _
from oslo_log import log as logging
from oslo_vmware import exceptions as vexc
from oslo_vmware import vim_util

from cinder_vmdk_backup import exception
from cinder_vmdk_backup import ownership

LOG = logging.getLogger(__name__)

#: Kind of the ownership records of held locks.
RECORD_KIND = 'restore-lock'

#: The source of the lock: the extension Cinder's VMDK driver registers
#: (``cinder.volume.drivers.vmware.vmdk.EXTENSION_KEY``).
SOURCE_ID = 'org.openstack.storage'

#: Reason id given with each disabled method.
REASON_ID = 'org.openstack.storage.restore'

POWER_ON = 'PowerOnVM_Task'
SNAPSHOT = 'CreateSnapshot_Task'
RECONFIGURE = 'ReconfigVM_Task'
RELOCATE = 'RelocateVM_Task'
DESTROY = 'Destroy_Task'

#: What a restore disables on the VMs it writes the disk of.
METHODS = (POWER_ON, SNAPSHOT, RECONFIGURE, RELOCATE, DESTROY)

#: Seconds to wait before each new attempt of the restore's own
#: ``EnableMethods`` at its end (after oslo.vmware's own retries of a
#: connection error): a vCenter that went away for a moment. Bounded: the
#: restore's outcome is not held up longer; a :class:`Reenabler` goes on.
ENABLE_RETRY_DELAYS = (2.0, 5.0)

#: Seconds between two passes of a :class:`Reenabler` over the lock
#: records left behind.
REENABLE_INTERVAL = 60.0


class _LockRecord(ownership.Record):
    """A lock's record, which can be left for the janitor on failure."""

    def leave(self):
        """Close the record without removing it: the janitor retries."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _authz(session):
    return session.vim.service_content.authorizationManager


def _describe(entities):
    return ', '.join(vim_util.get_moref_value(ref) for ref in entities)


def _moref_dict(ref):
    return {'type': vim_util.get_moref_type(ref),
            'value': vim_util.get_moref_value(ref)}


class _Calls(object):
    """The two calls, for ``session.invoke_api`` (retries, re-login).

    ``invoke_api(module, method, ...)`` has a parameter named ``method``
    itself: the SOAP parameter ``method`` of DisableMethods and
    EnableMethods cannot be passed through it as a keyword.
    """

    @staticmethod
    def disable_methods(vim, manager, entities, requests, source_id):
        return vim.DisableMethods(manager, entity=entities, method=requests,
                                  sourceId=source_id)

    @staticmethod
    def enable_methods(vim, manager, entities, methods, source_id):
        return vim.EnableMethods(manager, entity=entities, method=methods,
                                 sourceId=source_id)


def disable(session, entities, methods, source_id=SOURCE_ID):
    """``AuthorizationManager.DisableMethods`` of ``methods`` on entities."""
    factory = session.vim.client.factory
    requests = []
    for name in methods:
        request = factory.create('ns0:DisabledMethodRequest')
        request.method = name
        request.reasonId = REASON_ID
        requests.append(request)
    session.invoke_api(_Calls, 'disable_methods', session.vim,
                       _authz(session), list(entities), requests, source_id)


def enable(session, entities, methods, source_id=SOURCE_ID):
    """``AuthorizationManager.EnableMethods`` of ``methods`` on entities."""
    session.invoke_api(_Calls, 'enable_methods', session.vim,
                       _authz(session), list(entities), list(methods),
                       source_id)


class RecoveryLock(object):
    """The methods of some VMs disabled, for the duration of a ``with``.

    :param session: ``oslo_vmware.api.VMwareAPISession``
    :param entities: the VMs to lock (the backing first)
    :param state_dir: where the lock's record is kept (the staging dir)
    :param what: words for the log, e.g. ``volume <id>``
    :param methods: the methods to disable (default :data:`METHODS`)

    Entering disables the methods; a vCenter that refuses
    (``DisableMethods`` not permitted to Cinder's user: the privileges
    ``Global.DisableMethods`` and ``Global.EnableMethods``, or not
    implemented) raises :class:`~cinder_vmdk_backup.exception.
    VmdkBackupError` before anything is changed. Leaving enables them on
    every path, trying again after each of :data:`ENABLE_RETRY_DELAYS`; a
    failure to enable is logged and the record left for the janitor
    (:attr:`left_behind`: the driver's :class:`Reenabler` retries), the
    restore's own outcome is kept.
    """

    def __init__(self, session, entities, state_dir, what, methods=METHODS):
        self._session = session
        self.entities = list(entities)
        self.methods = tuple(methods)
        self._state_dir = state_dir
        self._what = what
        self._record = None
        self._opened = set()
        #: The methods could not be enabled at the end: the record is
        #: left for a :class:`Reenabler` (or the next start).
        self.left_behind = False

    def __enter__(self):
        self._record = _LockRecord(self._state_dir, RECORD_KIND, {
            'entities': [_moref_dict(ref) for ref in self.entities],
            'methods': list(self.methods),
            'source': SOURCE_ID,
            'what': self._what,
        })
        try:
            disable(self._session, self.entities, self.methods)
        except Exception as exc:
            if isinstance(exc, vexc.VimException):
                # vCenter answered with a fault: nothing was disabled
                # (DisableMethods is all or nothing).
                self._record.release()
                self._record = None
            else:
                # The answer may have been lost (connection): enable all
                # the same; the record stays for the janitor if that fails.
                self._enable(self.methods, quiet=True)
            raise exception.VmdkBackupError(reason=_(
                'could not lock the VMs of %(what)s (%(vms)s) against other '
                'operations during the restore: %(err)s. Give the vCenter '
                'user of Cinder the privileges Global.DisableMethods and '
                'Global.EnableMethods, or set vmware_backup_restore_lock = '
                'False') % {'what': self._what,
                            'vms': _describe(self.entities), 'err': exc}
            ) from exc
        LOG.info('Locked %(vms)s (%(what)s) for the restore: %(methods)s '
                 'disabled by %(source)s.',
                 {'vms': _describe(self.entities), 'what': self._what,
                  'methods': ', '.join(self.methods), 'source': SOURCE_ID})
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._enable(self.methods, retry=True):
            LOG.info('Unlocked %(vms)s (%(what)s) after the restore.',
                     {'vms': _describe(self.entities), 'what': self._what})
        return False

    def _enable(self, methods, quiet=False, retry=False):
        """Enable the methods (on failure leave the record); success?

        :param retry: try again after each of :data:`ENABLE_RETRY_DELAYS`
            (a vCenter that does not answer, or answers with an error)
        """
        record, self._record = self._record, None
        delays = list(ENABLE_RETRY_DELAYS) if retry else []
        while True:
            try:
                enable(self._session, self.entities, methods)
                break
            except vexc.ManagedObjectNotFoundException:
                # A VM gone (a new backing deleted after a failure): one
                # call per VM, as the janitor does, so the others are not
                # left locked because of it.
                exc = self._enable_each(methods)
                if exc is None:
                    break
            except Exception as error:
                exc = error
            if delays:
                delay = delays.pop(0)
                LOG.warning('Could not enable the methods of %(vms)s '
                            '(%(what)s) again: %(exc)s. Trying again in '
                            '%(delay)s s.',
                            {'vms': _describe(self.entities),
                             'what': self._what, 'exc': exc,
                             'delay': delay})
                time.sleep(delay)
                continue
            if not quiet:
                LOG.error('Could not enable the methods %(methods)s of '
                          '%(vms)s (%(what)s) again: %(exc)s. This service '
                          'tries again every %(interval)d s and at its next '
                          'start; until then enable them in vCenter.',
                          {'methods': ', '.join(methods), 'what': self._what,
                           'vms': _describe(self.entities), 'exc': exc,
                           'interval': REENABLE_INTERVAL})
            if record is not None:
                record.leave()
                self.left_behind = True
            return False
        if record is not None:
            record.release()
        return True

    def _enable_each(self, methods):
        """Enable on each VM alone, skipping gone ones; the error or None."""
        for ref in self.entities:
            try:
                enable(self._session, [ref], methods)
            except vexc.ManagedObjectNotFoundException:
                continue
            except Exception as exc:
                return exc
        return None

    @contextlib.contextmanager
    def opened(self, *methods):
        """Enable ``methods`` for the plugin's own step, then disable again.

        Used around the steps the restore itself makes on a locked VM (the
        disk swap reconfigures the backing). Nested and repeated openings
        of a method open it once.
        """
        wanted = [m for m in methods if m in self.methods and
                  m not in self._opened]
        if not wanted or self._record is None:
            yield
            return
        enable(self._session, self.entities, wanted)
        self._opened.update(wanted)
        LOG.debug('Opened %(methods)s of %(vms)s for the restore\'s own '
                  'step.', {'methods': ', '.join(wanted),
                            'vms': _describe(self.entities)})
        try:
            yield
        finally:
            self._opened.difference_update(wanted)
            try:
                disable(self._session, self.entities, wanted)
            except vexc.VimException as exc:
                # The step is done; the rest of the restore is short. Not
                # a reason to fail it.
                LOG.warning('Could not disable %(methods)s of %(vms)s '
                            'again after the restore\'s own step: %(exc)s',
                            {'methods': ', '.join(wanted), 'exc': exc,
                             'vms': _describe(self.entities)})


def _live_entities(directory, stale_paths):
    """Entities locked by records of live owners (not in ``stale_paths``)."""
    prefix = '%s%s-' % (ownership.Record.PREFIX, RECORD_KIND)
    found = set()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        path = os.path.join(directory, name)
        if not name.startswith(prefix) or path in stale_paths:
            continue
        try:
            with open(path, 'rb') as f:
                data = (json.loads(f.read().decode('utf-8') or 'null') or
                        {}).get('data') or {}
        except (OSError, ValueError, AttributeError):
            continue
        for ref in data.get('entities') or []:
            found.add((ref.get('type'), ref.get('value')))
    return found


def enable_leftovers(session, directory, here=None):
    """Enable the methods that restores of gone processes left disabled.

    For each record of a lock whose owner is gone (killed during a
    restore): ``EnableMethods`` of its methods on its VMs, except on a VM
    that a live process of this host holds locked now; the record is then
    removed. A VM that no longer exists needs nothing. Failures are logged
    and the record kept for the next start.

    :returns: the ``what`` of each lock undone
    """
    stale = list(ownership.stale_records(directory, RECORD_KIND, here))
    stale_paths = {r.path for r in stale}
    undone = []
    for record in stale:
        # Read again for each record: a restore of this host may have
        # locked one of its VMs since (the window is this record's calls).
        live = _live_entities(directory, stale_paths)
        data = record.data
        what = data.get('what') or record.path
        refs = [vim_util.get_moref(e.get('value'), e.get('type'))
                for e in data.get('entities') or []
                if (e.get('type'), e.get('value')) not in live]
        methods = data.get('methods') or list(METHODS)
        source = data.get('source') or SOURCE_ID
        failed = False
        for ref in refs:
            # One call per VM: a VM deleted meanwhile fails alone.
            try:
                enable(session, [ref], methods, source)
            except vexc.ManagedObjectNotFoundException:
                continue
            except Exception as exc:
                # (Any error: the record must be let go of, not held.)
                LOG.warning('Could not enable the methods of VM %(vm)s '
                            '(%(what)s), locked by a restore whose process '
                            'ended: %(exc)s', {'what': what, 'exc': exc,
                                               'vm': ref.value})
                failed = True
        if failed:
            record.close()
            continue
        LOG.warning('Enabled %(methods)s of %(vms)s again (%(what)s): the '
                    'restore that locked them ended with its process.',
                    {'methods': ', '.join(methods), 'what': what,
                     'vms': _describe(refs) or 'no VM'})
        record.remove()
        undone.append(what)
    return undone


def pending(directory, here=None):
    """How many lock records wait for their methods to be enabled.

    Records whose owner is gone, or let go of by a live owner that could
    not enable them (:meth:`RecoveryLock._enable`); not the records of
    locks held now.
    """
    count = 0
    for record in ownership.stale_records(directory, RECORD_KIND, here):
        record.close()
        count += 1
    return count


class Reenabler(object):
    """Enables in the background what restores here could not enable.

    A restore that cannot reach vCenter at its end, even after
    :data:`ENABLE_RETRY_DELAYS`, leaves its record
    (:attr:`RecoveryLock.left_behind`) and the VMs locked. :meth:`kick`
    then starts a daemon thread that runs :func:`enable_leftovers` over
    the staging directory every :data:`REENABLE_INTERVAL` seconds and
    ends once no record waits (:func:`pending`); the service's start runs
    the same janitor. One thread per driver at most; it runs only while
    something waits, so a service that never meets the case runs none.

    :param session: a callable giving the driver's
        ``oslo_vmware.api.VMwareAPISession``
    :param directory: the staging directory (where the records are)
    :param interval: seconds between passes (default
        :data:`REENABLE_INTERVAL`)
    """

    def __init__(self, session, directory, interval=None):
        self._session = session
        self._directory = directory
        self._interval = interval
        self._guard = threading.Lock()
        self._thread = None
        self._stopping = threading.Event()

    @property
    def running(self):
        return self._thread is not None

    def kick(self):
        """Start the passes unless they run already."""
        with self._guard:
            if self._thread is not None:
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._loop, name='cvb-restore-lock-reenable',
                daemon=True)
            self._thread.start()
        LOG.info('Enabling the methods that restores left disabled again '
                 'every %s s until none is left.',
                 self._interval or REENABLE_INTERVAL)

    def stop(self, timeout=None):
        """Stop the passes (for tests and a service's end)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self):
        while not self._stopping.wait(self._interval or REENABLE_INTERVAL):
            try:
                enable_leftovers(self._session(), self._directory)
            except Exception as exc:
                LOG.warning('Could not enable the methods that restores '
                            'left disabled: %s', exc)
            with self._guard:
                try:
                    left = pending(self._directory)
                except Exception as exc:
                    LOG.warning('Could not read the lock records in %(dir)s:'
                                ' %(exc)s', {'dir': self._directory,
                                             'exc': exc})
                    left = 1
                if not left:
                    self._thread = None
                    return
        with self._guard:
            self._thread = None
