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

"""The libvirt domains that run an image, and what the driver does to them.

Through libvirt-python (never behind libvirt's back, which would leave its
view of the domain stale): find which running domain has an image in its
disk chain, take one disk-only external snapshot of several of its disks
at once (``--disk-only --no-metadata --atomic``, quiesced through the
QEMU guest agent when one answers), and merge an overlay back with an
active block commit that pivots the domain onto its base.
"""

import os
import time
# Only XML from the local libvirtd is parsed, never a user's.
from xml.etree import ElementTree  # nosec B405

from oslo_log import log as logging
from oslo_serialization import jsonutils
from oslo_utils import importutils

from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import paths as kvm_paths

libvirt = importutils.try_import('libvirt')
libvirt_qemu = importutils.try_import('libvirt_qemu')

#: The virtio-serial channel name of the QEMU guest agent.
AGENT_CHANNEL = 'org.qemu.guest_agent.0'
#: Seconds the guest agent has to answer a ping before the snapshot.
AGENT_TIMEOUT = 5

LOG = logging.getLogger(__name__)


class DiskUse(object):
    """A disk of a domain whose chain holds an image.

    :ivar domain: the ``virDomain``
    :ivar target: the disk's target name (``vda``)
    :ivar top: the local path the disk's active layer is
    :ivar chain: the local paths of the disk's chain, active layer first
    :ivar seen_chain: the chain as the domain sees it (its XML's paths)
    :ivar path_map: the :class:`~.paths.PathMap` between the two
    """

    def __init__(self, domain, target, chain, seen_chain=None,
                 path_map=None):
        self.domain = domain
        self.target = target
        self.chain = chain
        self.top = chain[0]
        self.seen_chain = seen_chain or list(chain)
        self.path_map = path_map or kvm_paths.IDENTITY

    @property
    def domain_name(self):
        return self.domain.name()

    def seen(self, local_path):
        """``local_path`` as this disk's domain names it (overlays, nodes).

        In the view of the disk's active layer: the mount point's when
        the domain runs the volume from there, else the local path.
        """
        return self.path_map.seen_as(local_path, self.seen_chain[0])


def connect(uri):
    """Open a read-write libvirt connection.

    :raises DomainError: libvirt-python is missing or libvirt refuses
    """
    if libvirt is None:
        raise errors.DomainError('libvirt-python is not installed; it is '
                                 'needed to back up volumes of running '
                                 'domains (%s)' % uri)
    # libvirt prints every error to stderr by default, also the expected
    # ones (a pivot asked for a moment too early); they are raised anyway.
    libvirt.registerErrorHandler(_ignore_error, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise errors.DomainError('Cannot connect to libvirt at %s: %s'
                                 % (uri, exc))


def _ignore_error(_context, _error):
    pass


def _real(path):
    return os.path.realpath(path)


def seen_chains(xml_text):
    """Yield ``(target, [paths of the chain, active first])`` of file disks.

    The paths as the domain's XML has them (its view: see :mod:`.paths`).
    Libvirt's live XML lists the chain as nested ``backingStore`` elements.
    """
    # The XML comes from the local libvirtd, not from a user.
    root = ElementTree.fromstring(xml_text)  # nosec B314
    for disk in root.findall('./devices/disk'):
        target = disk.find('target')
        if target is None:
            continue
        chain = []
        node = disk
        while node is not None:
            source = node.find('source')
            if source is None or not source.get('file'):
                break
            chain.append(os.path.normpath(source.get('file')))
            node = node.find('backingStore')
        if chain:
            yield target.get('dev'), chain


def disk_chains(xml_text, path_map=None):
    """Yield ``(target, [local paths of the chain, active first])``.

    :param path_map: the :class:`~.paths.PathMap` of the domain's view;
        None: the identity (the paths are only resolved)
    """
    path_map = path_map or kvm_paths.IDENTITY
    for target, chain in seen_chains(xml_text):
        yield target, [path_map.to_local(p) for p in chain]


def users(conn, paths, active_only=True, path_map=None):
    """Return ``{path: [DiskUse, ...]}`` for each of ``paths`` in use.

    A disk uses an image when a path of its chain is the image's local
    path or, through ``path_map``, its mount-point view.

    :param paths: local paths of images
    :param active_only: only running (or paused) domains; else defined
        inactive domains too (their chain is the configured top only)
    :param path_map: the :class:`~.paths.PathMap`; None: the identity
    """
    path_map = path_map or kvm_paths.IDENTITY
    wanted = {_real(p): p for p in paths}
    found = {}
    flags = (libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if active_only else 0)
    try:
        domains = conn.listAllDomains(flags)
    except libvirt.libvirtError as exc:
        raise errors.DomainError('Cannot list libvirt domains: %s' % exc)
    for domain in domains:
        try:
            xml_text = domain.XMLDesc(0)
        except libvirt.libvirtError:
            continue  # gone meanwhile
        for target, seen in seen_chains(xml_text):
            chain = [path_map.to_local(p) for p in seen]
            for real in chain:
                if real in wanted:
                    found.setdefault(wanted[real], []).append(
                        DiskUse(domain, target, chain, seen, path_map))
    return found


class Snapshot(object):
    """What one atomic snapshot of a domain's disks was.

    :ivar quiesced: the guest's filesystems were frozen through its agent
    :ivar why_not_quiesced: why not (no agent channel, no answer...)
    :ivar seconds: how long the snapshot call took (the guest's disk
        I/O is held for at most that long, see :func:`snapshot_disks`)
    :ivar taken_at: wall-clock time (``time.time()``) when it was asked
    """

    def __init__(self, quiesced, why_not_quiesced, seconds, taken_at):
        self.quiesced = quiesced
        self.why_not_quiesced = why_not_quiesced
        self.seconds = seconds
        self.taken_at = taken_at


def agent_channel_state(xml_text):
    """The state of the domain's guest agent channel, or None without one.

    Libvirt's live XML says ``connected`` once a program in the guest
    opened the port, ``disconnected`` otherwise; an older libvirt or an
    inactive domain says nothing (``''``).
    """
    root = ElementTree.fromstring(xml_text)  # nosec B314
    for channel in root.findall('./devices/channel'):
        target = channel.find('target')
        if target is not None and target.get('name') == AGENT_CHANNEL:
            return target.get('state') or ''
    return None


def agent_answers(domain, timeout=AGENT_TIMEOUT):
    """Tell whether the domain's QEMU guest agent answers a ping.

    :returns: ``(True, None)``, or ``(False, why not)``
    """
    state = agent_channel_state(domain.XMLDesc(0))
    if state is None:
        return False, 'the domain has no guest agent channel (%s)' % (
            AGENT_CHANNEL)
    if state == 'disconnected':
        return False, 'no guest agent is connected to %s' % AGENT_CHANNEL
    if libvirt_qemu is None:
        return False, 'libvirt_qemu (libvirt-python) is missing'
    try:
        libvirt_qemu.qemuAgentCommand(domain, '{"execute": "guest-ping"}',
                                      timeout, 0)
    except libvirt.libvirtError as exc:
        return False, 'the guest agent does not answer: %s' % exc
    return True, None


def snapshot_disks(domain, overlays, quiesce=True,
                   agent_timeout=AGENT_TIMEOUT):
    """Take one atomic disk-only external snapshot of several disks.

    Disks not named in ``overlays`` are left out (``snapshot='no'``). No
    snapshot metadata is kept: the overlays are merged back afterwards.

    With ``quiesce``, when the domain's guest agent answers, the guest's
    filesystems are frozen for the snapshot and thawed after it
    (``VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE``); if that fails, or no agent
    answers, the snapshot is crash-consistent and the log says why.

    Libvirt does not stop the vCPUs for a disk-only snapshot: QEMU
    switches every disk onto its overlay in one transaction, holding the
    guest's disk requests meanwhile. The guest therefore waits for its
    disks at most as long as the call takes (:attr:`Snapshot.seconds`).

    :param overlays: ``{target: path of the new overlay}``, as the domain
        is to see it (:meth:`DiskUse.seen`): libvirt creates it there and
        QEMU records the disk's current path as its backing file
    :returns: a :class:`Snapshot`
    :raises DomainError: the snapshot failed; with ``--atomic`` no disk of
        the domain changed
    """
    root = ElementTree.Element('domainsnapshot')
    disks = ElementTree.SubElement(root, 'disks')
    for target, _chain in seen_chains(domain.XMLDesc(0)):
        disk = ElementTree.SubElement(disks, 'disk', name=target)
        if target in overlays:
            disk.set('snapshot', 'external')
            ElementTree.SubElement(disk, 'driver', type='qcow2')
            ElementTree.SubElement(disk, 'source', file=overlays[target])
        else:
            disk.set('snapshot', 'no')
    xml_text = ElementTree.tostring(root, encoding='unicode')
    flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
             | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
             | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
    name = domain.name()
    why_not = 'not asked for'
    if quiesce:
        answers, why_not = agent_answers(domain, agent_timeout)
        if answers:
            try:
                return _timed_snapshot(
                    domain, xml_text,
                    flags | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE,
                    True, None)
            except libvirt.libvirtError as exc:
                why_not = 'quiescing through the guest agent failed: %s' % (
                    exc)
        LOG.warning('The snapshot of disk(s) %(disks)s of domain %(domain)s '
                    'is crash-consistent, not quiesced: %(why)s.',
                    {'disks': ', '.join(sorted(overlays)), 'domain': name,
                     'why': why_not})
    try:
        return _timed_snapshot(domain, xml_text, flags, False, why_not)
    except libvirt.libvirtError as exc:
        raise errors.DomainError(
            'External snapshot of disk(s) %s of domain %s failed: %s'
            % (', '.join(sorted(overlays)), name, exc))


def _timed_snapshot(domain, xml_text, flags, quiesced, why_not):
    taken_at = time.time()
    start = time.monotonic()
    domain.snapshotCreateXML(xml_text, flags)
    return Snapshot(quiesced, why_not, time.monotonic() - start, taken_at)


def power_state(domain):
    """``'running'`` (QEMU runs it, even paused) or ``'shutoff'``."""
    return 'running' if domain.isActive() else 'shutoff'


def active_commit(domain, target, overlay, timeout=600.0, poll=0.02,
                  bandwidth=None):
    """Merge the disk's active overlay into its base and pivot onto it.

    The guest keeps running and writing: QEMU mirrors new writes into the
    base until the pivot, so no write is lost.

    :param bandwidth: bytes per second the commit copies at most (QEMU's
        own rate limit of the job), or None for no limit

    :raises MergeError: the commit failed or timed out; it is aborted and
        the domain keeps running on the overlay (a usable chain)
    """
    name = domain.name()
    flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
    if bandwidth:
        flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES
    try:
        domain.blockCommit(target, None, None, int(bandwidth or 0), flags)
        _wait_ready(domain, target, timeout, poll)
        _pivot(domain, target, timeout, poll)
    except (libvirt.libvirtError, errors.KvmError) as exc:
        _abort_quietly(domain, target)
        raise errors.MergeError(
            'Active block commit of %s (disk %s of domain %s) failed; the '
            'domain keeps running on that overlay and the merge is retried '
            'when the driver starts: %s' % (overlay, target, name, exc),
            path=overlay)
    LOG.debug('Committed %(overlay)s of %(domain)s/%(disk)s.',
              {'overlay': overlay, 'domain': name, 'disk': target})


def _wait_ready(domain, target, timeout, poll):
    deadline = time.monotonic() + timeout
    while True:
        info = domain.blockJobInfo(target, 0)
        if not info:
            raise errors.DomainError('the block job of %s vanished' % target)
        if info.get('end', 0) and info.get('cur') == info.get('end'):
            return
        if time.monotonic() > deadline:
            raise errors.DomainError('the block commit did not converge '
                                     'within %s s' % timeout)
        time.sleep(poll)


def _pivot(domain, target, timeout, poll):
    deadline = time.monotonic() + timeout
    while True:
        try:
            domain.blockJobAbort(target,
                                 libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
            break
        except libvirt.libvirtError as exc:
            # Not ready yet although cur == end: QEMU says so a bit later.
            if (exc.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE
                    or time.monotonic() > deadline):
                raise
            time.sleep(poll)
    while domain.blockJobInfo(target, 0):
        if time.monotonic() > deadline:
            raise errors.DomainError('the pivot did not finish within %s s'
                                     % timeout)
        time.sleep(poll)


def _abort_quietly(domain, target):
    try:
        if domain.blockJobInfo(target, 0):
            domain.blockJobAbort(target, 0)
    except libvirt.libvirtError as exc:
        LOG.warning('Could not abort the block job of %(disk)s of '
                    '%(domain)s: %(exc)s', {'disk': target,
                                            'domain': domain.name(),
                                            'exc': exc})


def retarget_inactive(conn, old_path, new_path, path_map=None):
    """Point defined, inactive domains' disks at ``new_path``.

    Used when an overlay of a stopped domain is merged offline: libvirt
    had written the overlay into the domain's persistent definition. A
    disk whose source is ``old_path`` in either view (``path_map``) gets
    ``new_path`` in the same view.

    :param old_path: local path
    :param new_path: local path
    :returns: the names of the redefined domains
    """
    path_map = path_map or kvm_paths.IDENTITY
    old = _real(old_path)
    changed = []
    for domain in conn.listAllDomains(
            libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE):
        xml_text = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        root = ElementTree.fromstring(xml_text)  # nosec B314
        touched = False
        for source in root.findall('./devices/disk/source'):
            seen = source.get('file')
            if seen and path_map.to_local(seen) == old:
                source.set('file', path_map.seen_as(new_path, seen))
                touched = True
        if touched:
            for disk in root.findall('./devices/disk'):
                for backing in disk.findall('backingStore'):
                    disk.remove(backing)
            conn.defineXML(ElementTree.tostring(root, encoding='unicode'))
            changed.append(domain.name())
    return changed


def _qmp(domain, command, **arguments):
    """Run one QMP command in the domain's QEMU through libvirt.

    Libvirt has no API for persistent dirty bitmaps outside its checkpoint
    metadata; it marks the domain tainted (``custom-monitor``) in its log,
    nothing else changes.
    """
    if libvirt_qemu is None:
        raise errors.DomainError('libvirt_qemu (libvirt-python) is missing')
    request = jsonutils.dumps({'execute': command, 'arguments': arguments})
    try:
        answer = libvirt_qemu.qemuMonitorCommand(domain, request, 0)
    except libvirt.libvirtError as exc:
        raise errors.DomainError('%s in domain %s failed: %s'
                                 % (command, domain.name(), exc))
    reply = jsonutils.loads(answer)
    if 'error' in reply:
        raise errors.DomainError('%s in domain %s failed: %s' % (
            command, domain.name(), reply['error'].get('desc', reply)))
    return reply.get('return')


def format_node(domain, path):
    """The QEMU node name of the qcow2 layer the domain opened ``path`` as.

    :param path: as the domain sees it (:meth:`DiskUse.seen`): QEMU's node
        has the path libvirt gave it

    :raises DomainError: the domain has no such node
    """
    real = _real(path)
    for node in _qmp(domain, 'query-named-block-nodes', flat=True):
        if node.get('drv') == 'qcow2' and _real(node.get('file', '')) == real:
            return node['node-name']
    raise errors.DomainError('Domain %s has no qcow2 node of %s'
                             % (domain.name(), path), path=path)


def node_bitmaps(domain, path):
    """The dirty bitmaps QEMU has loaded on ``path``'s node (QMP dicts).

    :param path: as the domain sees it (:meth:`DiskUse.seen`)
    """
    real = _real(path)
    for node in _qmp(domain, 'query-named-block-nodes', flat=True):
        if node.get('drv') == 'qcow2' and _real(node.get('file', '')) == real:
            return list(node.get('dirty-bitmaps') or [])
    raise errors.DomainError('Domain %s has no qcow2 node of %s'
                             % (domain.name(), path), path=path)


def add_bitmap(domain, path, name, granularity):
    """Add a persistent, enabled dirty bitmap to a running image.

    One of that name already there (an earlier attempt) is replaced: the
    bitmap must start now.
    """
    node = format_node(domain, path)
    if any(b.get('name') == name for b in node_bitmaps(domain, path)):
        _qmp(domain, 'block-dirty-bitmap-remove', node=node, name=name)
    _qmp(domain, 'block-dirty-bitmap-add', node=node, name=name,
         granularity=int(granularity), persistent=True)


def remove_bitmap(domain, path, name):
    """Remove a dirty bitmap from a running image (and from its file)."""
    _qmp(domain, 'block-dirty-bitmap-remove',
         node=format_node(domain, path), name=name)
