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

"""vcsim, the project's patched vSphere simulator, as a test fixture.

``VcsimFixture`` starts one vcsim (built by ``tools/vcsim/build.sh``) on a
free 127.0.0.1 port with its datastore ``LocalDS_0`` in a temporary
directory, and stops it by PID on cleanup. Inventory: datacenter ``DC0``,
cluster ``DC0_C0`` of three hosts sharing the VMFS datastore ``LocalDS_0``,
no VMs (``vms=N`` adds N per resource pool). Disks are stored like on VMFS:
a text descriptor ``<name>.vmdk`` and a raw, sparse ``<name>-flat.vmdk`` of
exactly the disk's capacity; NFC exports give a stream-optimized VMDK of
that, imports are converted to it.

TLS is verified as with a real vCenter: each fixture makes a private CA and
a certificate for 127.0.0.1/localhost (``tools/vcsim/tls.sh``, keys 0600 in
the fixture's private directory) that vcsim serves (``-tlscert``); clients
trust ``ca_file`` (``vmware_ca_file``), never ``insecure``. The password
reaches vcsim in a 0600 file, not on its command line, and vcsim's output
(a 0600 file) does not carry it.

Usage::

    vc = self.useFixture(vcsim.VcsimFixture())
    session = vc.session()                # oslo_vmware.api.VMwareAPISession
    options = vc.cinder_backend_options() # for Cinder's VMDK driver
    vcsim.seed_disk(vc, '[LocalDS_0] vol/vol.vmdk', data)
    data = vcsim.read_disk(vc, '[LocalDS_0] vol/vol.vmdk')

Fault injection (the patched vcsim's private ``/cvb/faults`` endpoint):

- ``vc.set_method_fault('ExportVm', 'InvalidState', count=1)``: the method
  fails with that vim25 fault (``count`` times, 0 = always);
  ``vc.set_method_delay('HttpNfcLeaseComplete', 2000)`` stalls it (ms).
- ``vc.set_nfc_fault(stall_after_bytes=N | fail_after_bytes=N |
  abort_after_bytes=N, count=1)``: the next NFC transfer(s) stall after N
  bytes until ``vc.clear_faults()``, break the connection, or put their
  lease in state ``error`` as a vSphere lease abort does.
- ``vc.kill_mid_transfer(after_bytes)``: the next NFC transfer stalls after
  ``after_bytes`` and vcsim is then killed (SIGKILL) by a helper thread.
- ``vc.kill()``: SIGKILL now; ``vc.stop()``: SIGTERM, then SIGKILL.

HotAdd (patch 0017): ``VcsimFixture(hotadd=True)`` starts vcsim with
``VCSIM_HOTADD_DIR`` set to ``vc.hotadd_dir`` (a private directory; None
when off). A disk added to any VM with an existing file and no file
operation is then attached to a loop device of this host, and
``<hotadd_dir>/wwn-0x<backing.uuid, hex, lower case>`` links to it
(read-only for an independent_nonpersistent disk, whose name as a
snapshot's configuration gives it shows the snapshot's bytes); vcsim
detaches it when the disk is removed, the VM destroyed, and on SIGTERM.
A SIGKILLed vcsim cannot: the fixture's cleanup (and
``vc.release_loop_devices()``) detaches the loop devices the links name
that are attached to a file under the fixture's directory.
``make_proxy_vm(vc, session, bios_uuid=...)`` makes a VM to play the
proxy.
"""

import glob
import json
import os
import re
import signal
import socket
import ssl
import subprocess  # nosec B404: starts the test peer
import tempfile
import threading
import time
import urllib.request

import fixtures

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TOOLS = os.path.join(TOP, 'tools', 'vcsim')

DATACENTER = 'DC0'
CLUSTER = 'DC0_C0'
DATASTORE = 'LocalDS_0'

_START_TIMEOUT = 30
_STOP_TIMEOUT = 10
_built = {}
_built_lock = threading.Lock()


def _last_line(cmd):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE,  # nosec
                         stderr=subprocess.PIPE, timeout=1800).stdout
    return out.decode().strip().splitlines()[-1]


def vcsim_binary():
    """Path of the patched vcsim binary (built once, then cached).

    ``CVB_VCSIM_BINARY`` overrides it (a development build).
    """
    with _built_lock:
        if os.environ.get('CVB_VCSIM_BINARY'):
            return os.environ['CVB_VCSIM_BINARY']
        if 'binary' not in _built:
            _built['binary'] = _last_line(
                ['bash', os.path.join(TOOLS, 'build.sh')])
        return _built['binary']


def wsdl_path():
    """Path of the generated vimService.wsdl for oslo.vmware."""
    import sys
    with _built_lock:
        if 'wsdl' not in _built:
            _built['wsdl'] = _last_line(
                ['bash', os.path.join(TOOLS, 'wsdl.sh'), sys.executable])
        return _built['wsdl']


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class VcsimError(Exception):
    pass


def _private_file(path, text):
    """Write text into a new file only its owner can read; its path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, 'w') as f:
        f.write(text)
    return path


def make_tls(directory):
    """A private CA and vcsim's certificate, made by tools/vcsim/tls.sh.

    :returns: dict of ``ca_file``, ``cert_file`` and ``key_file`` paths
    """
    subprocess.run(['bash', os.path.join(TOOLS, 'tls.sh'),  # nosec
                    directory], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)
    return {'ca_file': os.path.join(directory, 'ca.pem'),
            'cert_file': os.path.join(directory, 'vcsim.pem'),
            'key_file': os.path.join(directory, 'vcsim-key.pem')}


class VcsimFixture(fixtures.Fixture):
    """One patched vcsim on 127.0.0.1, stopped by PID on cleanUp.

    Attributes: ``host``, ``port``, ``username``, ``password``,
    ``wsdl_url``, ``pid``, ``datastore_name``, ``datastore_path`` (the
    datastore's directory), ``datacenter_name``, ``cluster_name``,
    ``log_path`` (vcsim's output), ``ca_file`` (the CA that signed vcsim's
    certificate).
    """

    def __init__(self, vms=0, extra_args=(), hotadd=False):
        super(VcsimFixture, self).__init__()
        self.vms = vms
        self.extra_args = tuple(extra_args)
        self.hotadd = hotadd
        #: The directory of the HotAdd device links (None: HotAdd off).
        self.hotadd_dir = None
        self.host = '127.0.0.1'
        self.port = None
        self.username = 'cvb-admin'
        self.password = None
        self.datastore_name = DATASTORE
        self.datacenter_name = DATACENTER
        self.cluster_name = CLUSTER
        self.datastore_path = None
        self.ca_file = None
        self.process = None
        self._sessions = []

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def _setUp(self):
        binary = vcsim_binary()
        self.wsdl_url = 'file://' + wsdl_path()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.password = 'pw-' + os.urandom(8).hex()
        self._password_file = _private_file(
            os.path.join(self.tmp, 'password'), self.password)
        tls = make_tls(os.path.join(self.tmp, 'tls'))
        self.ca_file = tls['ca_file']
        self._tls = tls
        self.log_path = os.path.join(self.tmp, 'vcsim.log')
        if self.hotadd:
            self.hotadd_dir = os.path.join(self.tmp, 'by-id')
            os.mkdir(self.hotadd_dir, 0o700)
            # After stop(): what a killed vcsim left attached.
            self.addCleanup(self.release_loop_devices)
        self.addCleanup(self.stop)
        for _attempt in range(3):
            self.port = _free_port()
            if self._start(binary):
                break
        else:
            raise VcsimError('vcsim did not start; see %s: %s' % (
                self.log_path, self._log_tail()))
        found = glob.glob(os.path.join(
            self.tmp, 'govcsim-%s-%s-*' % (DATACENTER, DATASTORE)))
        if len(found) != 1:
            raise VcsimError('vcsim datastore directory not found in %s'
                             % self.tmp)
        self.datastore_path = found[0]

    def _start(self, binary):
        # vcsim serves the WSDL under /sdk, as vCenter does (for clients
        # without a WSDL location of their own, e.g. os-brick).
        env = dict(os.environ, TMPDIR=self.tmp,
                   VCSIM_WSDL_DIR=os.path.dirname(self.wsdl_url[7:]))
        env.pop('VCSIM_HOTADD_DIR', None)
        if self.hotadd_dir:
            env['VCSIM_HOTADD_DIR'] = self.hotadd_dir
        # -password names a file (vcsim reads a secret from a file of that
        # name): not in the command line every user can read. -E: vcsim's
        # "export GOVC_URL=..." line holds the password; it is not logged.
        cmd = [binary, '-l', '%s:%d' % (self.host, self.port),
               '-username', self.username, '-password', self._password_file,
               '-tlscert', self._tls['cert_file'],
               '-tlskey', self._tls['key_file'], '-E', os.devnull,
               '-vm', str(self.vms)] + list(self.extra_args)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        with open(fd, 'ab') as log:
            self.process = subprocess.Popen(  # nosec B603
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                stdin=subprocess.DEVNULL, cwd=self.tmp)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                with socket.create_connection((self.host, self.port), 0.5):
                    pass
                if glob.glob(os.path.join(self.tmp, 'govcsim-*')):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        return False

    def _log_tail(self):
        try:
            with open(self.log_path, 'rb') as log:
                return log.read()[-2000:].decode(errors='replace')
        except OSError:
            return ''

    def log(self):
        """vcsim's output so far."""
        with open(self.log_path, 'rb') as log:
            return log.read().decode(errors='replace')

    # -- life cycle ---------------------------------------------------------

    def kill(self):
        """SIGKILL vcsim now (its datastore directory stays)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self):
        """Stop vcsim: SIGTERM, SIGKILL if it does not exit in time."""
        for session in self._sessions:
            try:
                session.logout()
            except Exception:  # nosec B110: vcsim may be gone already
                pass
        self._sessions = []
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                self.clear_faults()  # releases stalled transfers
            except OSError:
                pass
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self.process = None

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    # -- HotAdd -------------------------------------------------------------

    def hotadd_links(self):
        """{link name: loop device} of the HotAdd directory now."""
        links = {}
        if not self.hotadd_dir:
            return links
        for name in sorted(os.listdir(self.hotadd_dir)):
            path = os.path.join(self.hotadd_dir, name)
            if name.startswith('wwn-0x') and os.path.islink(path):
                links[name] = os.readlink(path)
        return links

    def release_loop_devices(self):
        """Detach what a vcsim that could not clean up left attached.

        Only loop devices that a link in ``hotadd_dir`` names and that
        are attached to a file under this fixture's directory (another
        user may have the device by now); the links go too. Returns the
        devices detached. A running vcsim is stopped first.
        """
        if self.running:
            self.stop()
        released = []
        for name, device in self.hotadd_links().items():
            backing = loop_backing_file(device)
            if backing and backing.startswith(self.tmp + os.sep):
                subprocess.run(['losetup', '-d', device],  # nosec B603 B607
                               check=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
                released.append(device)
            os.unlink(os.path.join(self.hotadd_dir, name))
        return released

    # -- clients ------------------------------------------------------------

    def session(self, **kwargs):
        """A new oslo.vmware session (logged out on cleanUp).

        ``wsdl_loc=None`` fetches the WSDL from vcsim, as os-brick does.
        """
        from oslo_vmware import api
        args = dict(api_retry_count=1, task_poll_interval=0.1,
                    port=self.port, wsdl_loc=self.wsdl_url,
                    cacert=self.ca_file, insecure=False)
        args.update(kwargs)
        session = api.VMwareAPISession(self.host, self.username,
                                       self.password, **args)
        self._sessions.append(session)
        return session

    def cinder_backend_options(self):
        """Options of Cinder's VMDK driver for this vcsim."""
        return {
            'vmware_host_ip': self.host,
            'vmware_host_port': self.port,
            'vmware_host_username': self.username,
            'vmware_host_password': self.password,
            'vmware_ca_file': self.ca_file,
            'vmware_insecure': False,
            'vmware_cluster_name': [self.cluster_name],
            'vmware_wsdl_location': self.wsdl_url,
            'vmware_api_retry_count': 1,
            'vmware_task_poll_interval': 0.1,
            'vmware_tmp_dir': self.tmp,
        }

    def ssl_context(self):
        """A client TLS context that verifies vcsim against its CA."""
        return ssl.create_default_context(cafile=self.ca_file)

    def datastore_file(self, ds_path):
        """Local path of a datastore path such as '[LocalDS_0] a/b.vmdk'."""
        match = re.match(r'^\[([^\]]+)\]\s*(.*)$', ds_path)
        if not match or match.group(1) != self.datastore_name:
            raise ValueError('not a path on %s: %r'
                             % (self.datastore_name, ds_path))
        relative = os.path.normpath(match.group(2))
        if relative.startswith('..') or os.path.isabs(relative):
            raise ValueError('path leaves the datastore: %r' % ds_path)
        return os.path.join(self.datastore_path, relative)

    # -- fault injection ----------------------------------------------------

    def _faults(self, method, body=None):
        context = self.ssl_context()
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            'https://%s:%d/cvb/faults' % (self.host, self.port),
            data=data, method=method,
            headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, context=context,  # nosec
                                    timeout=10) as response:
            return json.loads(response.read().decode())

    def faults(self):
        """The fault settings in force, with hit counters."""
        return self._faults('GET')

    def set_method_fault(self, method, fault='RuntimeFault', message='',
                         count=1, delay_ms=0):
        """Make the SOAP method fail with the vim25 fault type ``fault``."""
        return self._faults('PUT', {'methods': {method: {
            'fault': fault, 'message': message, 'count': count,
            'delayMs': delay_ms}}})

    def set_method_delay(self, method, delay_ms, count=0):
        """Make the SOAP method answer ``delay_ms`` milliseconds late."""
        return self._faults('PUT', {'methods': {method: {
            'fault': '', 'count': count, 'delayMs': delay_ms}}})

    def set_nfc_fault(self, stall_after_bytes=None, fail_after_bytes=None,
                      abort_after_bytes=None, count=1):
        """Break the next ``count`` NFC transfers (0: all)."""
        nfc = {'count': count}
        for key, value in (('stallAfterBytes', stall_after_bytes),
                           ('failAfterBytes', fail_after_bytes),
                           ('abortAfterBytes', abort_after_bytes)):
            if value is not None:
                nfc[key] = int(value)
        return self._faults('PUT', {'nfc': nfc})

    def clear_faults(self):
        """Clear all fault settings; stalled transfers go on."""
        return self._faults('DELETE')

    def wait_for_log(self, pattern, timeout=60):
        """Wait until vcsim's output matches the regular expression."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            try:
                if regex.search(self.log()):
                    return True
            except OSError:
                break  # the fixture is gone
            time.sleep(0.05)
        raise VcsimError('vcsim log did not show %r in %ss'
                         % (pattern, timeout))

    def kill_mid_transfer(self, after_bytes=1 << 20, timeout=120):
        """Kill vcsim once the next NFC transfer has moved after_bytes.

        Returns the helper thread (join it to be sure the kill happened).
        """
        self.set_nfc_fault(stall_after_bytes=after_bytes, count=1)

        def killer():
            try:
                self.wait_for_log('NFC transfer stalls', timeout)
            except VcsimError:
                return
            self.kill()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        return thread


def loop_backing_file(device):
    """The file a loop device (``/dev/loopN``) is attached to, or None.

    A deleted file reads ``<path> (deleted)``.
    """
    name = os.path.basename(device)
    if not re.match(r'^loop[0-9]+$', name):
        return None
    try:
        with open('/sys/block/%s/loop/backing_file' % name) as f:
            return f.read().strip() or None
    except OSError:
        return None


def make_proxy_vm(fixture, session, name='cvb-proxy', bios_uuid=None,
                  instance_uuid=None):
    """Create a powered-off VM to play the HotAdd proxy; its moref.

    In the cluster's resource pool, its files on the datastore, with one
    paravirtual SCSI controller (bus 0) and no disk; ``bios_uuid`` and
    ``instance_uuid`` become its ``config.uuid`` and
    ``config.instanceUuid`` when given (vcsim makes them up otherwise).
    """
    from oslo_vmware import vim_util

    factory = session.vim.client.factory
    datacenter = _first(session, 'Datacenter', ['vmFolder'])
    cluster = _first(session, 'ClusterComputeResource', ['resourcePool'])
    controller = factory.create('ns0:ParaVirtualSCSIController')
    controller.key = -100
    controller.busNumber = 0
    controller.sharedBus = 'noSharing'
    device_spec = factory.create('ns0:VirtualDeviceConfigSpec')
    device_spec.operation = 'add'
    device_spec.device = controller
    files = factory.create('ns0:VirtualMachineFileInfo')
    files.vmPathName = '[%s]' % fixture.datastore_name
    spec = factory.create('ns0:VirtualMachineConfigSpec')
    spec.name = name
    spec.guestId = 'otherLinux64Guest'
    spec.numCPUs = 1
    spec.memoryMB = 128
    spec.files = files
    spec.deviceChange = [device_spec]
    if bios_uuid:
        spec.uuid = bios_uuid
    if instance_uuid:
        spec.instanceUuid = instance_uuid
    task = session.invoke_api(
        session.vim, 'CreateVM_Task', datacenter['vmFolder'], config=spec,
        pool=cluster['resourcePool'])
    vm = session.wait_for_task(task).result
    state = session.invoke_api(vim_util, 'get_object_property', session.vim,
                               vm, 'runtime.powerState')
    if state == 'poweredOn':
        session.wait_for_task(session.invoke_api(
            session.vim, 'PowerOffVM_Task', vm))
    return vm


def _first(session, kind, properties):
    from oslo_vmware import vim_util

    result = session.invoke_api(vim_util, 'get_objects', session.vim, kind,
                                1, properties)
    obj = result.objects[0]
    found = dict((p.name, p.val) for p in getattr(obj, 'propSet', []))
    found['obj'] = obj.obj
    return found


# -- disk helpers (through the datastore directory and through NFC) --------

def _flat_file(fixture, vmdk_ds_path):
    descriptor = fixture.datastore_file(vmdk_ds_path)
    if not descriptor.endswith('.vmdk'):
        raise ValueError('not a disk path: %r' % vmdk_ds_path)
    return descriptor[:-len('.vmdk')] + '-flat.vmdk'


def read_disk(fixture, vmdk_ds_path):
    """The disk's raw content (its full capacity), from the datastore."""
    with open(_flat_file(fixture, vmdk_ds_path), 'rb') as flat:
        return flat.read()


def seed_disk(fixture, vmdk_ds_path, data, offset=0):
    """Write data into the disk at offset, through the datastore.

    Zero blocks are skipped, so the flat file stays sparse; the file never
    shrinks (its size is the disk's capacity).
    """
    block = 1 << 20
    view = memoryview(data)
    with open(_flat_file(fixture, vmdk_ds_path), 'r+b') as flat:
        for start in range(0, len(view), block):
            chunk = view[start:start + block]
            if chunk.tobytes().count(0) != len(chunk):
                flat.seek(offset + start)
                flat.write(chunk)


def export_vmdk(fixture, session, vm_ref, sink):
    """Export the VM's first disk through NFC (ExportVm, HTTPS GET).

    Writes the stream-optimized VMDK vcsim serves to ``sink`` (a file
    object) and completes the lease; returns the number of bytes.
    """
    from oslo_utils import excutils
    from oslo_vmware import exceptions as vexc
    from oslo_vmware import vim_util

    lease = session.invoke_api(session.vim, 'ExportVm', vm_ref)
    session.wait_for_lease_ready(lease)
    info = session.invoke_api(vim_util, 'get_object_property', session.vim,
                              lease, 'info')
    url = next(d.url for d in info.deviceUrl if d.disk)
    url = url.replace('*', '%s:%d' % (fixture.host, fixture.port))
    context = fixture.ssl_context()
    total = 0
    try:
        with urllib.request.urlopen(url, context=context,  # nosec B310
                                    timeout=60) as response:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                sink.write(chunk)
                total += len(chunk)
    except Exception:
        with excutils.save_and_reraise_exception():
            try:
                session.invoke_api(session.vim, 'HttpNfcLeaseAbort', lease)
            except vexc.VMwareDriverException:
                pass  # vcsim may be gone: the transfer's error matters
    session.invoke_api(session.vim, 'HttpNfcLeaseComplete', lease)
    return total


def read_disk_nfc(fixture, session, vm_ref):
    """The VM's first disk as raw bytes.

    Exported through NFC, decoded with qemu-img.
    """
    with tempfile.TemporaryDirectory(dir=fixture.tmp) as tmp:
        vmdk = os.path.join(tmp, 'export.vmdk')
        raw = os.path.join(tmp, 'export.raw')
        with open(vmdk, 'wb') as sink:
            export_vmdk(fixture, session, vm_ref, sink)
        subprocess.run(['qemu-img', 'convert', '-f', 'vmdk', '-O', 'raw',
                        vmdk, raw], check=True,  # nosec B603 B607
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with open(raw, 'rb') as f:
            return f.read()
