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

"""Every place the plugin reaches into Cinder's internals, checked.

Cinder has no API for what the plugin does (a volume driver moving a
backup's data, a faster zlib, digests of zeros from a cache, fewer status
reloads). So the plugin overrides or replaces private parts of Cinder, and
all of them are here, nowhere else:

* :class:`RewiredBackupManager` overrides ``continue_backup``,
  ``_run_restore``, ``_attach_device``, ``_detach_device`` and the
  ``service`` attribute of Cinder's ``BackupManager``;
* :func:`connector_probe_skipped` replaces
  ``volume_utils.brick_get_connector_properties``;
* :func:`compressor_replaced` swaps a chunked backup driver's
  ``compressor`` and ``_get_compressor``;
* :func:`hashlib_replaced` replaces ``chunkeddriver.hashlib`` and wraps a
  chunked driver's ``_calculate_sha`` and ``_backup_chunk``;
* :func:`refresh_replaced` replaces a Backup object's ``refresh``;
* :mod:`~cinder_vmdk_backup.backup.handoff` writes Cinder's chunked format
  through a chunked driver's private primitives (``_prepare_backup``,
  ``_backup_chunk``, ``_write_metadata``...: group ``handoff``);
* :data:`TARGETS` also names the private methods of Cinder's VMware driver
  that :mod:`cinder_vmdk_backup.volume.drivers.vmdk` calls.

**Scope.** Each replacement acts only inside a driver-owned operation: a
stock backup or restore of another backend, in the same process and at the
same time (green or native threads), runs Cinder's code and writes the same
records. Per-instance replacements (the compressor, ``refresh``, the
chunked driver's methods) touch only the objects of the operation. Module
attributes cannot be replaced per caller, so they are replaced only while
at least one driver-owned operation runs, by an object that dispatches per
call: the operation marks its own thread (a :mod:`contextvars` variable,
which is per green thread under eventlet and per native thread without it)
and every other caller gets exactly the original: the original
``hashlib`` attribute itself, or the original probe called with the same
arguments. Cinder's chunked drivers take SHA-256 on a native thread of
eventlet's pool, where the operation's mark is not visible; the driver's
own ``_calculate_sha`` (an instance attribute, so only this operation's)
sets it there for the time of the call.

**Checked at start-up.** :func:`check` verifies every target: that it
exists, its parameters (:func:`inspect.signature`), and that the Cinder
code relying on it still reads it (the names in the function's byte
code), so a Cinder that renamed one, changed its signature or stopped
using it is found before the first backup. The plugin's manager calls it
once and, on a mismatch, logs one error naming the targets and routes
every backup and restore through Cinder's own path. Each replacement
checks its own targets too (cinder-volume restores directly without that
manager) and leaves Cinder alone when they do not match.
"""

import contextlib
import contextvars
import dataclasses
import functools
import importlib
import inspect
import threading
import types

from cinder import objects
from oslo_log import log as logging

# Cinder's manager modules use the registered objects at import time.
objects.register_all()

from cinder.backup import chunkeddriver  # noqa: E402
from cinder.backup import manager  # noqa: E402
from cinder.volume import volume_utils  # noqa: E402

LOG = logging.getLogger(__name__)

#: Cinder releases this module was checked against (requirements.txt).
SUPPORTED_CINDER = '>=29.0.0,<30'


@dataclasses.dataclass(frozen=True)
class Target(object):
    """One internal of Cinder or oslo.vmware the plugin relies on.

    :param owner: dotted path of the module or class holding it
    :param name: attribute name
    :param parameters: the callable's parameter names, in order, or None
        for an attribute that is not called (checked for existence only)
    :param read_by: dotted paths of functions that must still read ``name``
        (else replacing it would change nothing, or Cinder's flow moved)
    :param set_by: dotted paths of functions that must still assign
        ``name`` (an instance attribute, absent from the class)
    :param group: what the plugin uses it for (see :data:`GROUPS`)
    """

    owner: str
    name: str
    parameters: tuple = None
    read_by: tuple = ()
    set_by: tuple = ()
    group: str = 'manager'

    def __str__(self):
        return '%s.%s' % (self.owner, self.name)


_MANAGER = 'cinder.backup.manager.BackupManager'
_CHUNKED = 'cinder.backup.chunkeddriver.ChunkedBackupDriver'
_VMDK = 'cinder.volume.drivers.vmware.vmdk.VMwareVcVmdkDriver'

#: Everything the plugin overrides, replaces or calls that is not Cinder's
#: (or oslo.vmware's) public API.
TARGETS = (
    # The manager's data-moving steps (RewiredBackupManager).
    Target(_MANAGER, 'continue_backup',
           ('self', 'context', 'backup', 'backup_device')),
    Target(_MANAGER, '_run_restore',
           ('self', 'context', 'backup', 'volume', 'volume_is_new'),
           read_by=(_MANAGER + '.restore_backup',)),
    Target(_MANAGER, '_attach_device',
           ('self', 'ctxt', 'backup_device', 'properties', 'is_snapshot'),
           read_by=(_MANAGER + '.continue_backup',
                    _MANAGER + '._run_restore')),
    Target(_MANAGER, '_detach_device',
           ('self', 'ctxt', 'attach_info', 'device', 'properties',
            'is_snapshot', 'force', 'ignore_errors'),
           read_by=(_MANAGER + '.continue_backup',
                    _MANAGER + '._run_restore')),
    Target(_MANAGER, '_cleanup_one_backup', ('self', 'ctxt', 'backup'),
           read_by=(_MANAGER + '._cleanup_incomplete_backup_operations',)),
    Target(_MANAGER, 'service',
           set_by=(_MANAGER + '.__init__',),
           read_by=(_MANAGER + '.continue_backup',
                    _MANAGER + '._run_restore')),
    Target('cinder.volume.volume_utils', 'brick_get_connector_properties',
           ('multipath', 'enforce_multipath'),
           read_by=(_MANAGER + '.continue_backup',
                    _MANAGER + '._run_restore')),
    # ISA-L zlib (fast_zlib).
    Target(_CHUNKED, '_get_compressor', ('self', 'algorithm'),
           read_by=(_CHUNKED + '.__init__', _CHUNKED + '._restore_v1'),
           group='zlib'),
    Target(_CHUNKED, 'compressor', set_by=(_CHUNKED + '.__init__',),
           read_by=(_CHUNKED + '._prepare_output_data',), group='zlib'),
    # Digests of zeros from a cache (zero_hashing).
    Target('cinder.backup.chunkeddriver', 'hashlib',
           read_by=(_CHUNKED + '._calculate_sha',
                    _CHUNKED + '._backup_chunk'), group='hashing'),
    Target(_CHUNKED, '_calculate_sha', ('self', 'data'),
           read_by=(_CHUNKED + '.backup',), group='hashing'),
    Target(_CHUNKED, '_backup_chunk',
           ('self', 'backup', 'container', 'data', 'data_offset',
            'object_meta', 'extra_metadata'),
           read_by=(_CHUNKED + '.backup',), group='hashing'),
    # The extent hand-off (handoff): Cinder's chunked format written
    # through the driver's own primitives.
    Target(_CHUNKED, '_prepare_backup', ('self', 'backup'),
           read_by=(_CHUNKED + '.backup',), group='handoff'),
    Target(_CHUNKED, '_backup_chunk',
           ('self', 'backup', 'container', 'data', 'data_offset',
            'object_meta', 'extra_metadata'),
           read_by=(_CHUNKED + '.backup',), group='handoff'),
    Target(_CHUNKED, '_get_object_writer',
           ('self', 'container', 'object_name', 'extra_metadata'),
           read_by=(_CHUNKED + '._backup_chunk',), group='handoff'),
    Target(_CHUNKED, '_get_object_reader',
           ('self', 'container', 'object_name', 'extra_metadata'),
           read_by=(_CHUNKED + '._read_sha256file',), group='handoff'),
    Target(_CHUNKED, '_prepare_output_data', ('self', 'data'),
           read_by=(_CHUNKED + '._backup_chunk',), group='handoff'),
    Target(_CHUNKED, '_sha256_filename', ('self', 'backup'),
           read_by=(_CHUNKED + '._write_sha256file',
                    _CHUNKED + '._read_sha256file'), group='handoff'),
    Target(_CHUNKED, '_write_sha256file',
           ('self', 'backup', 'volume_id', 'container', 'sha256_list'),
           read_by=(_CHUNKED + '._finalize_backup',), group='handoff'),
    Target(_CHUNKED, '_write_metadata',
           ('self', 'backup', 'volume_id', 'container', 'object_list',
            'volume_meta', 'extra_metadata'),
           read_by=(_CHUNKED + '._finalize_backup',), group='handoff'),
    Target(_CHUNKED, '_backup_metadata', ('self', 'backup', 'object_meta'),
           read_by=(_CHUNKED + '.backup',), group='handoff'),
    Target(_CHUNKED, '_send_progress_notification',
           ('self', 'context', 'backup', 'object_meta',
            'total_block_sent_num', 'total_volume_size'),
           read_by=(_CHUNKED + '.backup',), group='handoff'),
    Target(_CHUNKED, '_send_progress_end',
           ('self', 'context', 'backup', 'object_meta'),
           read_by=(_CHUNKED + '.backup',), group='handoff'),
    Target(_CHUNKED, 'DRIVER_VERSION',
           read_by=(_CHUNKED + '._write_sha256file',
                    _CHUNKED + '._write_metadata'), group='handoff'),
    Target(_CHUNKED, 'object_count', read_by=(_CHUNKED + '._finalize_backup',),
           set_by=(_CHUNKED + '._finalize_backup',), group='handoff'),
    Target(_CHUNKED, 'compressor', set_by=(_CHUNKED + '.__init__',),
           read_by=(_CHUNKED + '._prepare_output_data',), group='handoff'),
    Target(_CHUNKED, 'sha_block_size_bytes', set_by=(_CHUNKED + '.__init__',),
           read_by=(_CHUNKED + '._write_sha256file',), group='handoff'),
    Target(_CHUNKED, 'data_block_num', set_by=(_CHUNKED + '.__init__',),
           read_by=(_CHUNKED + '.backup',), group='handoff'),
    Target(_CHUNKED, 'enable_progress_timer',
           set_by=(_CHUNKED + '.__init__',),
           read_by=(_CHUNKED + '.backup',), group='handoff'),
    Target(_CHUNKED, 'backup_timer_interval',
           set_by=(_CHUNKED + '.__init__',),
           read_by=(_CHUNKED + '.backup',), group='handoff'),
    # Status reloads of a restore (status_checks).
    Target('cinder.objects.backup.Backup', 'refresh', ('self',),
           read_by=(_CHUNKED + '._restore_v1',), group='refresh'),
    # Private helpers of Cinder's VMware driver that the plugin's VMDK
    # driver (a subclass) calls.
    Target(_VMDK, '_select_ds_for_volume',
           ('self', 'volume', 'host', 'create_params'), group='vmdk'),
    Target(_VMDK, '_get_adapter_type', ('self', 'volume'), group='vmdk'),
    Target(_VMDK, '_get_disk_type', ('volume',), group='vmdk'),
    Target(_VMDK, '_get_extra_config', ('self', 'volume'), group='vmdk'),
    Target(_VMDK, '_get_storage_profile', ('self', 'volume'), group='vmdk'),
    Target(_VMDK, '_get_storage_profile_id', ('self', 'volume'),
           group='vmdk'),
    Target(_VMDK, '_extend_if_needed', ('self', 'volume', 'backing'),
           group='vmdk'),
    Target(_VMDK, '_delete_volume', ('self', 'volume'), group='vmdk'),
    # The end of a backup as Cinder's manager writes it, for each member
    # of an instance-group backup set (group/manager.py).
    Target(_MANAGER, '_finish_backup',
           ('self', 'context', 'backup', 'volume', 'updates'),
           group='groups'),
    Target(_MANAGER, '_notify_about_backup_usage',
           ('self', 'context', 'backup', 'event_suffix',
            'extra_usage_info'), group='groups'),
)

#: What each group of targets is for, for the error message.
GROUPS = {
    'manager': 'routing backups to volume drivers',
    'zlib': 'ISA-L zlib in chunked backup drivers',
    'hashing': 'digests of zeros from a cache',
    'refresh': 'throttled status checks of restores',
    'handoff': 'the extent hand-off into chunked backup drivers',
    'vmdk': 'the VMDK driver-owned backup',
    'groups': 'instance-group backup sets',
}


def _resolve(path):
    """Import ``a.b.C.d``: the longest importable module, then attributes."""
    parts = path.split('.')
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module('.'.join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = inspect.getattr_static(found, name)
        return found
    raise ImportError('no module in %s' % path)


def _function(obj):
    """The plain function of a method, static or class method, or None."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    obj = inspect.unwrap(obj)
    return obj if isinstance(obj, types.FunctionType) else None


def _names_in(code):
    """Global and attribute names ``code`` and its nested functions use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_in(const)
    return names


def _check_one(target):
    """Return what is wrong with ``target`` (a string), or None."""
    try:
        owner = _resolve(target.owner)
    except (ImportError, AttributeError) as exc:
        return '%s: %s is missing (%s)' % (target, target.owner, exc)
    if not target.set_by:
        try:
            value = inspect.getattr_static(owner, target.name)
        except AttributeError:
            return '%s is missing' % target
        if target.parameters is not None:
            function = _function(value)
            if function is None:
                return '%s is not a function' % target
            found = tuple(inspect.signature(function).parameters)
            if found != target.parameters:
                return '%s has parameters (%s), expected (%s)' % (
                    target, ', '.join(found), ', '.join(target.parameters))
    for role, paths in (('assigned', target.set_by),
                        ('read', target.read_by)):
        for path in paths:
            try:
                function = _function(_resolve(path))
            except (ImportError, AttributeError):
                function = None
            if function is None:
                return '%s: %s is missing' % (target, path)
            if target.name not in _names_in(function.__code__):
                return '%s is no longer %s by %s' % (target, role, path)
    return None


_checked = None
_reported = False
_check_lock = threading.Lock()


def check(targets=None):
    """Verify the targets against the installed Cinder and oslo.vmware.

    :param targets: the targets to verify (default :data:`TARGETS`)
    :returns: one line per target that does not match, empty if all do;
        the result is also what the replacements below consult
    """
    global _checked
    problems = {}
    for target in TARGETS if targets is None else targets:
        problem = _check_one(target)
        if problem:
            problems[target] = problem
    _checked = problems
    return list(problems.values())


#: What the plugin does when targets do not match, by who checked.
MANAGER_FALLBACK = ('Driver-owned backup is disabled: every backup and '
                    'restore takes Cinder\'s own path')
PARTS_LEFT_ALONE = ('Driver-owned operations leave the mismatched parts of '
                    'Cinder alone (slower, same data)')


def error_message(problems, consequence=MANAGER_FALLBACK):
    """The one error logged when targets do not match."""
    return ('%s until cinder-vmdk-backup is updated: this Cinder does not '
            'match what the plugin hooks into (it supports Cinder %s). '
            'Mismatched: %s.'
            % (consequence, SUPPORTED_CINDER, '; '.join(problems)))


def check_and_report(consequence=MANAGER_FALLBACK):
    """Run :func:`check` and log its error once per process.

    :param consequence: what the caller does about a mismatch, for the
        message
    :returns: True when every target matches
    """
    global _reported
    problems = check()
    with _check_lock:
        if problems and not _reported:
            _reported = True
            LOG.error(error_message(problems, consequence))
    return not problems


def usable(group):
    """Whether every target of ``group`` matched (checked once if needed).

    Where no manager checked them (cinder-volume restores directly), the
    first call checks and logs the error.
    """
    if _checked is None:
        check_and_report(PARTS_LEFT_ALONE)
    return not any(target.group == group for target in _checked or ())


# -- the operation marker ----------------------------------------------


class DriverOwnedOperation(object):
    """A backup or restore whose data a volume driver moves.

    The plugin's manager makes one per operation (see
    :meth:`RewiredBackupManager.driver_owned_backup`).
    """

    def __init__(self):
        #: Set once the volume driver has been handed the operation: from
        #: then on the connector probe is Cinder's again, should the driver
        #: use it.
        self.driver_called = False

    def backup_service(self, service):
        """The backup service Cinder's code gets during the operation.

        :param service: the configured backup service, just built
        """
        raise NotImplementedError()


#: The driver-owned operation the current thread runs, if any.
_operation = contextvars.ContextVar('cinder_vmdk_backup_operation',
                                    default=None)


def current_operation():
    """The driver-owned operation of the calling thread, or None."""
    return _operation.get()


class _ModuleAttribute(object):
    """A module attribute replaced while at least one operation needs it.

    :param module: the module
    :param name: the attribute
    :param make: called with the original, returns the replacement; it must
        behave exactly as the original for every caller the current
        operation does not mark
    """

    def __init__(self, module, name, make):
        self._module = module
        self._name = name
        self._make = make
        self._users = 0
        self._original = None
        self._replacement = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def replaced(self):
        with self._lock:
            if self._users == 0:
                self._original = getattr(self._module, self._name)
                self._replacement = self._make(self._original)
                setattr(self._module, self._name, self._replacement)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    # Somebody else may have replaced it meanwhile (a test's
                    # mock): theirs stays.
                    if (getattr(self._module, self._name)
                            is self._replacement):
                        setattr(self._module, self._name, self._original)
                    self._original = self._replacement = None


@contextlib.contextmanager
def _instance_attributes(obj, replacements):
    """Set attributes of ``obj`` itself, put back as they were afterwards.

    :param replacements: name -> value
    """
    own = vars(obj)
    saved = {name: own[name] for name in replacements if name in own}
    own.update(replacements)
    try:
        yield obj
    finally:
        for name in replacements:
            if name in saved:
                own[name] = saved[name]
            else:
                own.pop(name, None)


# -- the connector probe -----------------------------------------------


def _probe_dispatcher(probe):
    """Cinder's probe, answered ``{}`` inside a driver-owned operation."""

    @functools.wraps(probe)
    def brick_get_connector_properties(*args, **kwargs):
        operation = _operation.get()
        if operation is not None and not operation.driver_called:
            return {}
        return probe(*args, **kwargs)

    return brick_get_connector_properties


_probe = _ModuleAttribute(volume_utils, 'brick_get_connector_properties',
                          _probe_dispatcher)


@contextlib.contextmanager
def connector_probe_skipped(operation):
    """Run Cinder's manager code for ``operation`` in this thread.

    ``volume_utils.brick_get_connector_properties``, os-brick's privileged
    probe of this host's initiators whose result only the attach and detach
    steps use, answers ``{}`` in this thread until the driver is called.
    """
    token = _operation.set(operation)
    try:
        with _probe.replaced():
            yield
    finally:
        _operation.reset(token)


# -- the backup manager ------------------------------------------------


class DriverOwnedDevice(object):
    """Placeholder for the device Cinder would have attached.

    Cinder's code hands it to the (wrapped) backup service, which ignores
    it; nothing may read or write it.

    :param device: the volume or snapshot object Cinder chose
    """

    def __init__(self, device):
        self.device = device

    def _refuse(self, *args, **kwargs):
        raise IOError('the device of a driver-owned backup is moved by its '
                      'volume driver and cannot be read or written directly')

    read = write = seek = tell = fileno = _refuse


class RewiredBackupManager(manager.BackupManager):
    """Cinder's BackupManager with its data-moving steps handed over.

    Cinder's ``continue_backup`` and ``_run_restore`` move data in three
    steps: ``_attach_device`` (an RPC to the volume service and an os-brick
    connector), ``backup_service.backup(backup, device_file)`` or
    ``backup_service.restore(backup, volume_id, device_file,
    volume_is_new)``, and ``_detach_device``. For an operation that a
    subclass's :meth:`driver_owned_backup` or :meth:`driver_owned_restore`
    claims, ``_attach_device`` returns a :class:`DriverOwnedDevice` without
    calling anybody, ``_detach_device`` does nothing, and the backup service
    Cinder builds (``self.service(context)``) is the one the operation
    gives. Everything else (status changes, user messages, notifications,
    clean-up) stays Cinder's code.

    Nothing changes until :meth:`hook_into_cinder` is called (after
    :func:`check` found every target); every override passes its arguments
    through untouched when no operation is claimed, so a Cinder whose
    signatures changed still works on its own path.
    """

    _hooked = False

    def hook_into_cinder(self):
        """Take over ``self.service``; call only when :func:`check` passed."""
        self._backup_service_class = self.service
        self.service = self._service_of_operation
        self._hooked = True

    # -- for subclasses --------------------------------------------------

    def driver_owned_backup(self, context, backup, backup_device):
        """A :class:`DriverOwnedOperation` for this backup, or None."""
        return None

    def driver_owned_restore(self, context, backup, volume, volume_is_new):
        """A :class:`DriverOwnedOperation` for this restore, or None."""
        return None

    def interrupted_restore_cleaned_up(self, context, backup, volume_id):
        """Hook: Cinder's start-up clean-up ended an interrupted restore.

        The end of a previous cinder-backup interrupted the restore of
        ``backup`` into ``volume_id``, which Cinder's clean-up just set to
        ``error_restoring``.
        """

    # -- Cinder's methods ----------------------------------------------------

    def _cleanup_one_backup(self, *args, **kwargs):
        """Cinder's clean-up of one interrupted operation, at start."""
        if not self._hooked:
            return super(RewiredBackupManager, self)._cleanup_one_backup(
                *args, **kwargs)
        return self._cleanup_and_report(*args, **kwargs)

    def _cleanup_and_report(self, ctxt, backup):
        volume_id = (backup.restore_volume_id
                     if backup.status == 'restoring' else None)
        super(RewiredBackupManager, self)._cleanup_one_backup(ctxt, backup)
        if volume_id:
            self.interrupted_restore_cleaned_up(ctxt, backup, volume_id)

    def _service_of_operation(self, *args, **kwargs):
        service = self._backup_service_class(*args, **kwargs)
        operation = _operation.get()
        if operation is None:
            return service
        return operation.backup_service(service)

    def continue_backup(self, *args, **kwargs):
        """Cinder's; a claimed backup's data moved by its driver.

        Not decorated with ``utils.limit_operations`` again: Cinder's method
        takes the semaphore.
        """
        if not self._hooked:
            return super(RewiredBackupManager, self).continue_backup(
                *args, **kwargs)
        return self._continue_backup(*args, **kwargs)

    def _continue_backup(self, context, backup, backup_device):
        operation = self.driver_owned_backup(context, backup, backup_device)
        if operation is None:
            return super(RewiredBackupManager, self).continue_backup(
                context, backup, backup_device)
        with connector_probe_skipped(operation):
            return super(RewiredBackupManager, self).continue_backup(
                context, backup, backup_device)

    def _run_restore(self, *args, **kwargs):
        if not self._hooked:
            return super(RewiredBackupManager, self)._run_restore(
                *args, **kwargs)
        return self._claimed_restore(*args, **kwargs)

    def _claimed_restore(self, context, backup, volume, volume_is_new):
        operation = self.driver_owned_restore(context, backup, volume,
                                              volume_is_new)
        if operation is None:
            return super(RewiredBackupManager, self)._run_restore(
                context, backup, volume, volume_is_new)
        with connector_probe_skipped(operation):
            return super(RewiredBackupManager, self)._run_restore(
                context, backup, volume, volume_is_new)

    def _attach_device(self, *args, **kwargs):
        if _operation.get() is None:
            return super(RewiredBackupManager, self)._attach_device(
                *args, **kwargs)
        return self._driver_owned_attach(*args, **kwargs)

    @staticmethod
    def _driver_owned_attach(ctxt, backup_device, properties,
                             is_snapshot=False):
        return {'conn': None, 'connector': None, 'driver_owned': True,
                'device': {'path': DriverOwnedDevice(backup_device)}}

    def _detach_device(self, *args, **kwargs):
        if _operation.get() is None:
            return super(RewiredBackupManager, self)._detach_device(
                *args, **kwargs)
        return self._driver_owned_detach(*args, **kwargs)

    def _driver_owned_detach(self, ctxt, attach_info, device, properties,
                             is_snapshot=False, force=False,
                             ignore_errors=False):
        if attach_info.get('driver_owned') is True:
            return None
        return super(RewiredBackupManager, self)._detach_device(
            ctxt, attach_info, device, properties, is_snapshot=is_snapshot,
            force=force, ignore_errors=ignore_errors)


# -- chunked backup drivers --------------------------------------------


def is_chunked(backup_service):
    """Whether ``backup_service`` is one of Cinder's chunked drivers."""
    return isinstance(backup_service, chunkeddriver.ChunkedBackupDriver)


_is_chunked = is_chunked


@contextlib.contextmanager
def compressor_replaced(backup_service, codec, algorithms,
                        compress=True):
    """Let a chunked backup driver use ``codec`` for some algorithms.

    Only this instance, until the block ends: the zlib-like ``codec``
    (``compress``/``decompress``) becomes its ``compressor`` (what backups
    compress with) when ``compress`` is true, and what its
    ``_get_compressor`` returns for ``algorithms`` (what restores inflate
    each object with). Other backup services, and a Cinder whose targets do
    not match, are left alone.

    :param algorithms: lower-case algorithm names, e.g. ``('zlib', 'gzip')``
    :returns: (context manager) whether the codec is in use
    """
    if not (_is_chunked(backup_service) and usable('zlib')):
        yield False
        return
    cinders = backup_service._get_compressor

    def _get_compressor(algorithm):
        if str(algorithm).lower() in algorithms:
            return codec
        return cinders(algorithm)

    replacements = {'_get_compressor': _get_compressor}
    if compress:
        replacements['compressor'] = codec
    with _instance_attributes(backup_service, replacements):
        yield True


#: The stand-in for ``hashlib`` in this thread, set while one of a
#: driver-owned chunked driver's methods runs.
_hashlib_standin = contextvars.ContextVar('cinder_vmdk_backup_hashlib',
                                          default=None)


class _HashlibDispatcher(object):
    """What ``chunkeddriver.hashlib`` is while a driver-owned backup runs.

    An attribute looked up in a thread the operation marked is the
    stand-in's; anywhere else it is the real module's own attribute (the
    very object: ``hashlib.md5`` is ``hashlib.md5``).
    """

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        standin = _hashlib_standin.get()
        return getattr(self._real if standin is None else standin, name)


_hashlib = _ModuleAttribute(chunkeddriver, 'hashlib', _HashlibDispatcher)

#: The chunked driver's methods that hash (SHA-256 per block on a native
#: thread, MD5 per object).
_HASHING_METHODS = ('_calculate_sha', '_backup_chunk')


def _marking(method, standin):
    """``method``, run with ``standin`` as hashlib in whichever thread."""

    @functools.wraps(method)
    def marked(*args, **kwargs):
        token = _hashlib_standin.set(standin)
        try:
            return method(*args, **kwargs)
        finally:
            _hashlib_standin.reset(token)

    return marked


@contextlib.contextmanager
def hashlib_replaced(backup_service, standin):
    """Let one chunked backup driver take its digests from ``standin``.

    ``standin`` is used in place of :mod:`hashlib` by this instance's
    ``_calculate_sha`` and ``_backup_chunk`` only, in whatever thread they
    run, until the block ends; every other caller of
    ``chunkeddriver.hashlib`` gets :mod:`hashlib`'s own functions.

    :param standin: an object with the hashlib functions Cinder calls
    :returns: (context manager) whether the stand-in is in use
    """
    if not (_is_chunked(backup_service) and usable('hashing')):
        yield False
        return
    replacements = {name: _marking(getattr(backup_service, name), standin)
                    for name in _HASHING_METHODS}
    with _hashlib.replaced(), \
            _instance_attributes(backup_service, replacements):
        yield True


@contextlib.contextmanager
def refresh_replaced(versioned_object, refresh):
    """Make ``versioned_object.refresh()`` call ``refresh`` instead.

    Only this instance, until the block ends. Cinder's ``refresh()``
    replaces the object's instance dictionary with the reloaded object's, so
    the replacement is put back after each call.

    :param refresh: called with the object's class ``refresh`` (a bound
        method: the real reload)
    :returns: (context manager) whether ``refresh`` is in use
    """
    if not usable('refresh'):
        yield False
        return
    reload_ = type(versioned_object).refresh.__get__(versioned_object)

    def replaced():
        try:
            return refresh(reload_)
        finally:
            vars(versioned_object)['refresh'] = replaced

    with _instance_attributes(versioned_object, {'refresh': replaced}):
        yield True
