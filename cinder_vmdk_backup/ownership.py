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

"""Who owns a leftover, and when its owner is provably gone.

Every janitor of the plugin (staging files, temporary VMs, NFC leases,
qcow2 overlays) removes a thing only when its owner is **provably gone**,
never because it is old:

* its **lock is free**: the owner holds an exclusive ``flock`` on a file for
  the thing's whole life, and a killed process holds no lock (a staging
  file also names its owner, so that the instant between its creation and
  its lock is not mistaken for a free lock); or
* its **owner process is gone**: the owner is recorded as an
  :class:`Owner` (host name, boot id, pid namespace, pid and the process's
  start time in clock ticks after boot), and on the same host, in the same
  boot and pid namespace, no process with that pid and that start time
  runs. A pid reused by another process has another start time; a host
  that rebooted has another boot id.

An owner on another host, or in another pid namespace (another container),
can never be proved gone from here: its leftovers are left to it. (A
restarted container has a pid namespace of its own: the temporary VMs of
its former instance are then left for the operator; its staging files and
lease records, found by their free lock, are not.) That is
what makes the rule hold with several ``backup_workers``, several
cinder-backup and cinder-volume processes on one host, and several hosts
on one vCenter.

:class:`Record` is a private (0600) file in a state directory that holds an
owner and what it owns, locked by the owner for as long as it owns it; the
NFC lease janitor finds the leases of killed processes through them.
"""

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import socket
import uuid

__all__ = ['Owner', 'Record', 'current', 'name_part', 'named_owner_gone',
           'owner_gone', 'stale_records', 'try_lock']

PROC = '/proc'


@dataclasses.dataclass(frozen=True)
class Owner(object):
    """A process, told apart from every other one that ever ran.

    :param host: host name (``socket.gethostname()``)
    :param boot_id: the kernel's boot id: another one after each reboot
    :param pid_ns: the process's pid namespace (``/proc/<pid>/ns/pid``)
    :param pid: the process id
    :param start_time: when the process started, in clock ticks after boot
        (field 22 of ``/proc/<pid>/stat``)
    """

    host: str
    boot_id: str
    pid_ns: str
    pid: int
    start_time: int

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(host=str(data['host']), boot_id=str(data['boot_id']),
                   pid_ns=str(data['pid_ns']), pid=int(data['pid']),
                   start_time=int(data['start_time']))

    def tag(self):
        """8 hex digits standing for this owner (names in vCenter)."""
        return _digest(self.host, self.boot_id, self.pid_ns, self.pid,
                       self.start_time)

    def place_tag(self):
        """8 hex digits standing for this owner's host and pid namespace.

        The same after a reboot (the initial pid namespace keeps its
        number), so a restarted service recognises its former leftovers.
        """
        return _digest(self.host, self.pid_ns)


def _digest(*parts):
    text = '\0'.join(str(part) for part in parts)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]


def boot_id(proc=None):
    proc = proc or PROC
    with open(os.path.join(proc, 'sys', 'kernel', 'random', 'boot_id')) as f:
        return f.read().strip()


def pid_namespace(pid='self', proc=None):
    proc = proc or PROC
    return os.readlink(os.path.join(proc, str(pid), 'ns', 'pid'))


def start_time(pid, proc=None):
    """Start time of process ``pid`` in clock ticks after boot, or None.

    None when no such process runs (a zombie counts as gone: it runs no
    code and holds nothing any more).
    """
    proc = proc or PROC
    try:
        with open(os.path.join(proc, str(int(pid)), 'stat'), 'rb') as f:
            stat = f.read().decode('ascii', 'replace')
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: the
    # fields that follow start after its last ')'.
    fields = stat[stat.rindex(')') + 2:].split()
    if fields[0] in ('Z', 'X'):
        return None
    return int(fields[19])


def current(proc=None):
    """The :class:`Owner` identity of the calling process.

    Read again after a fork (``backup_workers`` start as forks of one
    parent), because a child has a pid and a start time of its own.
    """
    pid = os.getpid()
    cached = _current.get(pid)
    if cached is None:
        cached = Owner(host=socket.gethostname(), boot_id=boot_id(proc),
                       pid_ns=pid_namespace('self', proc), pid=pid,
                       start_time=start_time(pid, proc))
        _current.clear()
        _current[pid] = cached
    return cached


_current = {}


def owner_gone(owner, here=None, proc=None):
    """Tell whether ``owner`` provably no longer runs.

    :param owner: an :class:`Owner`
    :param here: this process's :class:`Owner` (default: :func:`current`)
    :returns: True only when the owner ran on this host and in this pid
        namespace, and either this host rebooted since, or no process with
        its pid and start time runs now. False when it runs, and when it
        cannot be known (another host, another pid namespace).
    """
    here = here or current(proc)
    if owner.host != here.host or owner.pid_ns != here.pid_ns:
        return False
    if owner.boot_id != here.boot_id:
        return True
    return start_time(owner.pid, proc) != owner.start_time


def name_part(owner=None):
    """``<place tag>-<pid>-<tag>``: the owner, as part of a name.

    For leftovers that only have a name (temporary VMs in vCenter, staging
    files); :func:`named_owner_gone` reads it back.
    """
    owner = owner or current()
    return '%s-%d-%s' % (owner.place_tag(), owner.pid, owner.tag())


#: What :func:`name_part` writes, as a regular expression.
NAME_PART_RE = (r'(?P<place>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-'
                r'(?P<tag>[0-9a-f]{8})')


def named_owner_gone(place, pid, tag, here=None, proc=None):
    """:func:`owner_gone` for an owner known by its :func:`name_part`.

    :returns: True when the owner ran here (same host and pid namespace)
        and no process with its pid and start time runs now, in this boot;
        False when it runs or cannot be known (another place).
    """
    here = here or current(proc)
    if place != here.place_tag():
        return False
    started = start_time(pid, proc)
    if started is None:
        return True
    now = Owner(host=here.host, boot_id=here.boot_id, pid_ns=here.pid_ns,
                pid=int(pid), start_time=started)
    return now.tag() != tag


def try_lock(fd):
    """Take an exclusive ``flock`` on ``fd`` if it is free.

    :returns: whether it was taken (False: another open file holds it,
        also one of this very process)
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class Record(object):
    """A private file that says this process owns something, while it does.

    Created 0600 in ``directory`` with ``O_EXCL``, locked (``flock``) at
    once and for as long as the object lives, holding JSON: ``kind``,
    ``owner`` (:meth:`Owner.to_dict`) and ``data``. :meth:`release` removes
    it. A process killed while owning leaves the file unlocked;
    :func:`stale_records` finds it at the next start.

    :param directory: the state directory (created 0700 if missing)
    :param kind: what is owned, one word (``nfc-lease``); part of the name
    :param data: a JSON-serialisable dict describing what is owned
    """

    PREFIX = 'cvb-owner-'

    def __init__(self, directory, kind, data):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.kind = kind
        self.path = os.path.join(directory, '%s%s-%s.json' % (
            self.PREFIX, kind, uuid.uuid4().hex))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                           os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            body = json.dumps({'kind': kind, 'owner': current().to_dict(),
                               'data': data}).encode('utf-8')
            os.write(self._fd, body)
        except BaseException:
            self.release()
            raise

    def release(self):
        """Remove the record (the lock goes with the file); idempotent."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


class StaleRecord(object):
    """A record whose owner is gone, locked by the janitor that found it.

    :attr data: what the owner owned; :attr owner: the :class:`Owner`
    """

    def __init__(self, path, fd, kind, owner, data):
        self.path = path
        self._fd = fd
        self.kind = kind
        self.owner = owner
        self.data = data

    def remove(self):
        """Remove the record once what it describes is cleaned up."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.close()

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def stale_records(directory, kind, here=None, proc=None):
    """Yield a :class:`StaleRecord` for each ``kind`` record of a gone owner.

    A record is stale when its lock is free, or when its owner is provably
    gone (:func:`owner_gone`). Each one is yielded locked by the caller's
    janitor, so that two janitors never clean up the same one; the caller
    calls ``remove()`` (cleaned up) or ``close()`` (left for later).
    Unreadable records are left alone.
    """
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    prefix = '%s%s-' % (Record.PREFIX, kind)
    for name in names:
        if not (name.startswith(prefix) and name.endswith('.json')):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            free = try_lock(fd)
            with os.fdopen(os.dup(fd), 'rb') as f:
                content = json.loads(f.read().decode('utf-8') or 'null')
            owner = Owner.from_dict(content['owner'])
            if not free and not owner_gone(owner, here, proc):
                os.close(fd)
                continue
            if free and os.fstat(fd).st_nlink == 0:
                os.close(fd)  # released by its owner meanwhile
                continue
        except (ValueError, KeyError, TypeError, OSError):
            os.close(fd)
            continue
        yield StaleRecord(path, fd, kind, owner, content.get('data') or {})
