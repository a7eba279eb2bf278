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

"""Which transport moves a disk's data: HotAdd or NBD (NFC), per operation.

The transports of ``vmware_backup_transports`` are tried in their order.
``hotadd`` serves an operation when the proxy VM is found
(:func:`~.hotadd.find_proxy`), the disk's datastore is mounted on the
proxy's host (:func:`~.hotadd.datastore_reachable`), and the hot-added
disk's device appears on this host in time; ``nbd`` (an NFC lease) serves
every operation. The log says which transport ran and, when HotAdd was
passed over, why. A HotAdd that fails once its data moves is an error of
the operation, not a reason to start again over NBD; so is a set-up error
that NBD would meet as well (an exception whose ``fallback`` is False: a
device shorter than the volume, :class:`~.hotadd.DeviceTooSmall`).
"""

import contextlib

from oslo_log import log as logging
from oslo_vmware import exceptions as vexc

from cinder_vmdk_backup.vmware import errors
from cinder_vmdk_backup.vmware import hotadd

LOG = logging.getLogger(__name__)

HOTADD = 'hotadd'
NBD = 'nbd'

#: Errors of setting a HotAdd up that pass the operation on to NBD.
_SETUP_ERRORS = (errors.TransferError, vexc.VimException, OSError)


class Choice(object):
    """The transports an operation may use, best first.

    :attr order: ``[(name, proxy VM or None)]`` of the usable transports
    :attr passed_over: reasons HotAdd was not usable (empty if it was)
    """

    def __init__(self, order, passed_over):
        self.order = order
        self.passed_over = passed_over


def _proxy_for(session, conf, datastore, proxies):
    """``(proxy, None)`` when HotAdd can serve, else ``(None, reason)``.

    A proxy from ``proxies`` (a :class:`~.hotadd.ProxyCache`) that fails
    here (``ManagedObjectNotFound``: deleted; or passed over, e.g. moved
    to another host) is forgotten and looked up once more.
    """
    wanted = conf.vmware_backup_proxy_vm
    for _attempt in range(2):
        if proxies is not None:
            proxy, why, cached = proxies.find(session, wanted)
        else:
            (proxy, why), cached = hotadd.find_proxy(session, wanted), False
        if proxy is None:
            return None, why
        if datastore is None:
            return None, 'the disk\'s datastore is unknown'
        try:
            why = hotadd.datastore_reachable(session, proxy, datastore)
        except vexc.ManagedObjectNotFoundException as exc:
            if proxies is not None:
                proxies.forget(proxy)
            if cached:
                continue
            return None, 'the proxy VM is gone: %s' % exc
        if why is None:
            return proxy, None
        if not cached:
            return None, why
        proxies.forget(proxy)
    return None, why


def choose(session, conf, datastore, proxies=None):
    """The usable transports for a disk on ``datastore``, in option order.

    :param conf: the backend's configuration
    :param datastore: the datastore of the disk (a moref), or None when
        it is not known (HotAdd is then passed over)
    :param proxies: a :class:`~.hotadd.ProxyCache` (None: looked up)
    """
    order, passed_over = [], []
    for name in conf.vmware_backup_transports or [NBD]:
        if name == NBD:
            order.append((NBD, None))
            continue
        if name != HOTADD or any(n == HOTADD for n, _p in order):
            continue
        try:
            proxy, why = _proxy_for(session, conf, datastore, proxies)
        except vexc.VimException as exc:
            proxy, why = None, 'looking for the proxy VM failed: %s' % exc
        if why is None:
            order.append((HOTADD, proxy))
        else:
            passed_over.append(why)
    return Choice(order, passed_over)


@contextlib.contextmanager
def run(session, conf, datastore, what, hotadd_open, nbd_open,
        proxies=None):
    """Open the operation's data through the first transport that serves.

    :param what: words naming the operation in the log (``backup of
        volume ...``)
    :param hotadd_open: ``hotadd_open(proxy)``, a context manager giving
        the data over HotAdd
    :param nbd_open: ``nbd_open()``, the same over NBD
    :param proxies: the driver's :class:`~.hotadd.ProxyCache` (None: the
        proxy is looked up for this operation)
    :raises: :class:`~.errors.TransferError` when no transport serves
    """
    choice = choose(session, conf, datastore, proxies)
    reasons = list(choice.passed_over)
    with contextlib.ExitStack() as stack:
        for index, (name, proxy) in enumerate(choice.order):
            if name == NBD:
                if reasons:
                    LOG.info('%(what)s: transport NBD; HotAdd passed over: '
                             '%(why)s', {'what': what,
                                         'why': '; '.join(reasons)})
                else:
                    LOG.info('%s: transport NBD.', what)
                data = stack.enter_context(nbd_open())
                break
            try:
                data = stack.enter_context(hotadd_open(proxy))
            except _SETUP_ERRORS as exc:
                if proxies is not None and isinstance(
                        exc, vexc.ManagedObjectNotFoundException):
                    proxies.forget(proxy)
                if getattr(exc, 'fallback', True) is False or not any(
                        n == NBD for n, _p in choice.order[index + 1:]):
                    raise
                reasons.append(str(getattr(exc, 'msg', None) or exc))
                continue
            LOG.info('%s: transport HotAdd.', what)
            break
        else:
            raise errors.TransferError(
                reason='%s: no transport of vmware_backup_transports can '
                       'serve it (%s)' % (what, '; '.join(reasons) or
                                          'none configured'))
        yield data
