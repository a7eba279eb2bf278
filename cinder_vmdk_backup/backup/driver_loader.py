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

"""Volume drivers of driver-owned backends, loaded inside cinder-backup.

:class:`BackendDrivers` answers one question for the backup manager: which
set-up volume driver, if any, backs up and restores a volume of a given
backend (``volume.host`` is ``host@backend#pool``). It builds the driver the
way cinder-volume does (the backend section's configuration, the same
constructor arguments), runs ``do_setup()`` and ``check_for_setup_error()``
once, and keeps the instance for every later request of that backend.

A backend is left to Cinder's own path, and the reason logged once, when the
section is missing from this node's configuration, its ``volume_driver``
does not implement the driver-owned backup protocol or cannot be imported,
or the driver cannot be set up. A failed set-up is retried no sooner than
``driver_owned_backup_setup_retry_interval`` seconds later, so that an
unreachable storage back end does not slow every backup down.
"""

import threading
import time

from cinder import context as cinder_context
from cinder import exception
from cinder import objects
from cinder.volume import configuration
from cinder.volume import manager as volume_manager
from cinder.volume import volume_utils
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import importutils

from cinder_vmdk_backup.backup import driver_owned

LOG = logging.getLogger(__name__)
CONF = cfg.CONF


class _Entry(object):
    """What is known about one backend."""

    def __init__(self):
        self.lock = threading.Lock()
        self.driver = None
        #: Why the backend takes Cinder's path (None while undecided).
        self.reason = None
        #: Whether the reason is final (not a set-up failure to retry).
        self.final = False
        self.failed_at = None


class BackendDrivers(object):
    """Set-up protocol drivers, one per backend, shared by all requests.

    :param retry_interval: seconds before a failed set-up is tried again
    :param clock: monotonic clock (for tests)
    """

    def __init__(self, retry_interval, clock=time.monotonic):
        self._retry_interval = retry_interval
        self._clock = clock
        self._entries = {}
        self._entries_lock = threading.Lock()

    def driver_for(self, volume):
        """Return the set-up protocol driver of ``volume``'s backend.

        :param volume: a Volume object (its ``host`` and ``cluster_name``
            are read)
        :returns: the driver, or None when Cinder's path must be taken
        """
        backend_host = (volume_utils.extract_host(volume.host, 'backend')
                        if volume.host else None)
        if not backend_host or '@' not in backend_host:
            LOG.debug('Volume %(id)s has host %(host)r without a backend '
                      'section name; Cinder\'s backup path is used.',
                      {'id': volume.id, 'host': volume.host})
            return None
        entry = self._entry(backend_host)
        with entry.lock:
            if entry.driver is not None:
                return entry.driver
            if entry.final or not self._may_retry(entry):
                return None
            self._load(entry, backend_host, volume)
            return entry.driver

    def load_configured(self, host, cluster_name=None):
        """Set up now the driver of every driver-owned backend configured.

        Called when the service starts: each driver's ``do_setup`` removes
        what killed processes left (temporary VMs, staging files, leases,
        overlays), so that they do not wait for the next request of their
        backend. The backends are the sections named in
        ``enabled_backends``, or, when it is not set (cinder-backup nodes
        often have no volume service), every section whose
        ``volume_driver`` implements the driver-owned backup protocol. A
        backend whose set-up fails is tried again at its next request.

        :param host: the volume service host of the backends (``[DEFAULT]
            host``, or the section's ``backend_host``)
        :returns: the ``host@backend`` names of the drivers set up
        """
        loaded = []
        for backend in self._configured_backends():
            config = configuration.Configuration(
                volume_manager.volume_backend_opts, config_group=backend)
            backend_host = '%s@%s' % (config.safe_get('backend_host') or host,
                                      backend)
            volume = _Placeholder(backend_host, cluster_name)
            if self.driver_for(volume) is not None:
                loaded.append(backend_host)
        return loaded

    def _configured_backends(self):
        enabled = getattr(CONF, 'enabled_backends', None)
        sections = enabled or [name for name in CONF.list_all_sections()
                               if name != 'DEFAULT']
        for backend in sections:
            if backend not in CONF.list_all_sections():
                continue
            try:
                config = configuration.Configuration(
                    volume_manager.volume_backend_opts,
                    config_group=backend)
                path = volume_manager.MAPPING.get(config.volume_driver,
                                                  config.volume_driver)
                if not enabled and path == _default_volume_driver():
                    continue  # a section of another service
                driver_class = importutils.import_class(path)
            except Exception:
                LOG.debug('Section [%s] names no usable volume driver.',
                          backend)
                continue
            if driver_owned.implements_protocol(driver_class):
                yield backend

    def _entry(self, backend_host):
        with self._entries_lock:
            return self._entries.setdefault(backend_host, _Entry())

    def _may_retry(self, entry):
        return (entry.failed_at is None or
                self._clock() - entry.failed_at >= self._retry_interval)

    def _load(self, entry, backend_host, volume):
        backend = backend_host.split('@', 1)[1]
        try:
            driver = self._build(backend_host, backend, volume)
        except _Unsuitable as unsuitable:
            entry.final = True
            self._decline(entry, backend_host, str(unsuitable))
            return
        except Exception as error:
            entry.failed_at = self._clock()
            reason = ('its volume driver could not be set up (%s); retried '
                      'in %d s' % (_describe(error), self._retry_interval))
            if entry.reason is None:
                LOG.exception('Driver-owned backup of backend %s disabled: '
                              '%s.', backend_host, reason)
            else:
                LOG.debug('Driver-owned backup of backend %s still '
                          'disabled: %s.', backend_host, reason)
            entry.reason = reason
            return
        entry.driver, entry.reason, entry.failed_at = driver, None, None
        LOG.info('Backend %(backend)s: backups and restores are done by its '
                 'volume driver %(driver)s.',
                 {'backend': backend_host,
                  'driver': type(driver).__name__})

    @staticmethod
    def _decline(entry, backend_host, reason):
        entry.reason = reason
        LOG.info('Backend %(backend)s: Cinder\'s backup path is used, '
                 'because %(reason)s.',
                 {'backend': backend_host, 'reason': reason})

    def _build(self, backend_host, backend, volume):
        """Import, construct and set up the backend's driver.

        :raises _Unsuitable: the backend is not one for driver-owned backup
        """
        if backend not in CONF.list_all_sections():
            raise _Unsuitable('this node\'s configuration has no [%s] '
                              'section' % backend)
        config = configuration.Configuration(
            volume_manager.volume_backend_opts, config_group=backend)
        driver_path = volume_manager.MAPPING.get(config.volume_driver,
                                                 config.volume_driver)
        try:
            driver_class = importutils.import_class(driver_path)
        except Exception as error:
            raise _Unsuitable('its volume_driver %s cannot be imported (%s)'
                              % (driver_path, _describe(error)))
        if not driver_owned.implements_protocol(driver_class):
            raise _Unsuitable('its volume_driver %s does not implement the '
                              'driver-owned backup protocol' % driver_path)
        ctxt = cinder_context.get_admin_context()
        driver = driver_class(
            configuration=config,
            host=backend_host,
            cluster_name=volume.cluster_name,
            is_vol_db_empty=False,
            active_backend_id=self._active_backend_id(ctxt, backend_host))
        LOG.info('Setting up volume driver %(driver)s of backend '
                 '%(backend)s for driver-owned backups.',
                 {'driver': driver_path, 'backend': backend_host})
        driver.do_setup(ctxt)
        driver.check_for_setup_error()
        driver.set_initialized()
        return driver

    @staticmethod
    def _active_backend_id(ctxt, backend_host):
        """The replication target the volume service runs on, if failed over.

        cinder-volume passes it to its driver; so do we, read from the
        volume service's record.
        """
        try:
            service = objects.Service.get_by_args(ctxt, backend_host,
                                                  'cinder-volume')
        except exception.ServiceNotFound:
            return None
        return service.active_backend_id


class _Placeholder(object):
    """What :meth:`BackendDrivers.driver_for` reads of a volume."""

    def __init__(self, host, cluster_name):
        self.id = '-'
        self.host = host
        self.cluster_name = cluster_name


def _default_volume_driver():
    for opt in volume_manager.volume_backend_opts:
        if opt.name == 'volume_driver':
            return opt.default
    return None


class _Unsuitable(Exception):
    """The backend is not one for driver-owned backup (final)."""


def _describe(error):
    return '%s: %s' % (type(error).__name__, error)
