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

"""A deployment of tools/deploy/up.sh, driven by the OpenStack client.

``Deployment(profile)`` starts one profile (``plugin``, ``stock`` or
``kvm``) of the one-machine Cinder deployment with ``tools/deploy/up.sh``
and stops it with ``tools/deploy/down.sh``; ``openstack(...)`` and
``cinder(...)`` run the real command-line clients against it (subprocess,
JSON output); ``vcsim`` is a :class:`tests.functional.vcsim.VcsimFixture`
attached to the vcsim the deployment started, so the fixture's disk
helpers and fault injection work on it (None in the kvm profile, which has
libvirtd and qcow2 files instead: ``volume_path``).
"""

import fcntl
import glob
import json
import os
import queue
import shlex
import signal
import subprocess  # nosec B404: the deployment scripts and the clients
import sys
import threading
import time
import uuid

from oslo_vmware import vim_util
import testtools

from tests.functional import vcsim as vcsim_fixture

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..',
                                   '..'))
DEPLOY = os.path.join(TOP, 'tools', 'deploy')
OSC_VENV = os.environ.get('CVB_OSC_VENV', '/opt/cvb-openstackclient')
KEYSTONE_VENV = os.environ.get('CVB_KEYSTONE_VENV', '/opt/cvb-keystone')
# Each profile's test has a deployment directory of its own (its own
# RabbitMQ, MariaDB and Keystone: the two tests may run on two workers at
# once); '%s' is the profile.
DEPLOY_DIR = os.environ.get('CVB_TEST_DEPLOY_DIR', '/var/tmp/cvb-e2e-%s')
ATTACHMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'cinder_attachments.py')
UP_TIMEOUT = 900
CLI_TIMEOUT = 180
POLL_INTERVAL = 0.5


class DeploymentError(Exception):
    pass


def missing_prerequisites():
    """Why the deployment cannot run here (empty list: it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append('root (MariaDB, RabbitMQ and privsep run as root)')
    for path, what in (
            ('/usr/lib/rabbitmq/bin/rabbitmq-server', 'rabbitmq-server'),
            ('/usr/sbin/mariadbd', 'mariadb-server'),
            (os.path.join(OSC_VENV, 'bin', 'openstack'),
             'python-openstackclient in %s' % OSC_VENV),
            (os.path.join(OSC_VENV, 'bin', 'cinder'),
             'python-cinderclient in %s' % OSC_VENV),
            (os.path.join(KEYSTONE_VENV, 'bin', 'keystone-manage'),
             'keystone in %s' % KEYSTONE_VENV)):
        if not os.path.exists(path):
            missing.append(what)
    try:
        import pymysql  # noqa: F401
    except ImportError:
        missing.append('PyMySQL in %s' % sys.prefix)
    return missing


def read_env(path):
    """KEY=VALUE lines of an env or openrc file, as a dict."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith('export '):
                line = line[len('export '):]
            if not line or line.startswith('#') or '=' not in line:
                continue
            key, value = line.split('=', 1)
            values[key] = value
    return values


class DeployedVcsim(vcsim_fixture.VcsimFixture):
    """The fixture's helpers on the vcsim that up.sh started.

    Nothing is started here; kill() ends that vcsim by its PID file.
    """

    def __init__(self, profile_dir):
        super(DeployedVcsim, self).__init__()
        env = read_env(os.path.join(profile_dir, 'vcsim.env'))
        self.port = int(env['VCSIM_PORT'])
        self.username = env['VCSIM_USER']
        self.password = env['VCSIM_PASSWORD']
        self.wsdl_url = env['VCSIM_WSDL']
        self.cluster_name = env['VCSIM_CLUSTER']
        self.ca_file = env['VCSIM_CA_FILE']
        self.pid_file = os.path.join(profile_dir, 'vcsim.pid')
        self.log_path = os.path.join(profile_dir, 'vcsim.log')
        found = glob.glob(os.path.join(profile_dir, 'vcsim', 'govcsim-%s-%s-*'
                                       % (vcsim_fixture.DATACENTER,
                                          vcsim_fixture.DATASTORE)))
        if len(found) != 1:
            raise DeploymentError('no vcsim datastore directory in %s'
                                  % profile_dir)
        self.datastore_path = found[0]
        self._session = None

    def _setUp(self):
        pass

    def session(self, **kwargs):
        """One oslo.vmware session, made once and used for every call.

        A new session costs seconds here (suds parses the WSDL for each);
        the scenario looks disks up dozens of times.
        """
        if kwargs or self._session is None:
            session = super(DeployedVcsim, self).session(**kwargs)
            if kwargs:
                return session
            self._session = session
        return self._session

    @property
    def pid(self):
        with open(self.pid_file) as f:
            return int(f.read().strip())

    @property
    def running(self):
        try:
            os.kill(self.pid, 0)
        except (OSError, ValueError):
            return False
        with open('/proc/%d/status' % self.pid) as status:
            return 'State:\tZ' not in status.read()

    def kill(self):
        if not self.running:
            return
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self):
        self._session = None
        # After the scenario killed vcsim there is nobody to log out from
        # (oslo.vmware would log the failed Logout with its traceback).
        sessions, self._sessions = self._sessions, []
        if not self.running:
            return
        for session in sessions:
            try:
                session.logout()
            except Exception:  # nosec B110: vcsim may be gone already
                pass

    def disk_path(self, volume_id):
        """Datastore path of the disk of volume ``volume_id``'s backing."""
        session = self.session()
        name = 'volume-%s' % volume_id
        result = session.invoke_api(vim_util, 'get_objects', session.vim,
                                    'VirtualMachine', 100,
                                    ['name', 'config.hardware.device'])
        while result:
            for obj in result.objects:
                props = {p.name: p.val for p in obj.propSet}
                if props.get('name') != name:
                    continue
                devices = props.get('config.hardware.device')
                for device in getattr(devices, 'VirtualDevice', []):
                    if device.__class__.__name__ == 'VirtualDisk':
                        session.invoke_api(vim_util, 'cancel_retrieval',
                                           session.vim, result)
                        return device.backing.fileName
            result = session.invoke_api(vim_util, 'continue_retrieval',
                                        session.vim, result)
        raise DeploymentError('no backing VM %s with a disk in vcsim' % name)


class OpenStackShell(object):
    """One ``openstack`` process in its interactive mode.

    Every ``openstack`` command line spends about two seconds starting
    (imports, plugin discovery, authentication) before its one request;
    a new process per command (and per status poll) made the scenario
    several minutes longer. This runs the same client once, reading
    commands from a pipe, as ``openstack`` with no command does (cliff's
    interactive mode), for every ``openstack`` command of the scenario.

    After each command a ``shell echo <marker>`` ends its output. Errors
    go to stderr (a log file here, read after each command): a command
    with ``-f json`` whose output is not JSON failed, a command without
    output that wrote to stderr failed.

    :param env: the environment (openrc) of the client
    :param log_path: where the client's stderr goes
    """

    def __init__(self, env, log_path):
        self.env = env
        self.log_path = log_path
        self._proc = None
        self._lines = None
        self._count = 0

    def _start(self):
        # Private, as everything in the deployment's directory.
        self._log = open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT |
                                 os.O_APPEND, 0o600), 'ab')
        self._proc = subprocess.Popen(  # nosec B603
            [os.path.join(OSC_VENV, 'bin', 'openstack')], env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True)
        self._lines = queue.Queue()
        reader = threading.Thread(target=self._read,
                                  args=(self._proc.stdout, self._lines),
                                  daemon=True)
        reader.start()

    @staticmethod
    def _read(stream, lines):
        for line in iter(stream.readline, b''):
            lines.put(line.decode(errors='replace'))
        lines.put(None)

    def _error_text(self, offset):
        with open(self.log_path, 'rb') as f:
            f.seek(offset)
            return f.read().decode(errors='replace').strip()[-2000:]

    def _exchange(self, command):
        """Send a command line (or none), then the marker; its output.

        :returns: (stdout text, stderr text) of the command
        """
        self._count += 1
        marker = '@@cvb-%d-%s@@' % (self._count, uuid.uuid4().hex)
        offset = os.path.getsize(self.log_path)
        lines = ('%s\n' % command if command else '') + \
            'shell echo %s\n' % marker
        self._proc.stdin.write(lines.encode())
        self._proc.stdin.flush()
        out = []
        deadline = time.monotonic() + CLI_TIMEOUT
        while True:
            try:
                line = self._lines.get(
                    timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise DeploymentError('openstack %s: no answer in %ss'
                                      % (command, CLI_TIMEOUT))
            if line is None:
                self.close()
                raise DeploymentError('openstack %s: the client ended: %s'
                                      % (command, self._error_text(offset)))
            if line.strip() == marker:
                break
            out.append(line)
        # The command wrote its errors before the marker's shell ran.
        return ''.join(out).strip(), self._error_text(offset)

    def run(self, *args, **kwargs):
        """``openstack ARGS`` in the shell.

        :param json: add ``-f json`` and return the parsed output (a
            command that prints no JSON failed); otherwise return the text
            output (a command that wrote to stderr failed)
        :raises DeploymentError: when the command fails or the client
            does not answer in time (the shell is then ended)
        """
        fmt = kwargs.pop('json', True)
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._start()
            # Whatever the client writes while it starts (warnings) is
            # nobody's error.
            self._exchange(None)
        command = shlex.join(list(args) + (['-f', 'json'] if fmt else []))
        text, errors = self._exchange(command)
        if not fmt:
            if errors:
                raise DeploymentError('openstack %s failed: %s'
                                      % (command, errors))
            return text
        try:
            return json.loads(text)
        except ValueError:
            raise DeploymentError('openstack %s failed: %s' % (
                command, errors or text[-2000:]))

    def query(self, *args):
        """``openstack ARGS -f json`` in the shell; the parsed output."""
        return self.run(*args)

    def close(self):
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
            self._proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None
        self._log.close()


def missing_kvm_prerequisites():
    """What the kvm profile needs besides the others' prerequisites."""
    missing = []
    for path, what in (('/usr/bin/qemu-img', 'qemu-utils'),
                       ('/usr/bin/qemu-io', 'qemu-utils'),
                       ('/usr/bin/qemu-system-x86_64', 'qemu-system-x86'),
                       ('/usr/sbin/libvirtd', 'libvirt-daemon'),
                       ('/usr/bin/virsh', 'libvirt-clients')):
        if not os.path.exists(path):
            missing.append('%s (tools/libvirt/install.sh)' % what)
    try:
        import libvirt  # noqa: F401
    except ImportError:
        missing.append('libvirt-python in %s' % sys.prefix)
    return missing


def start_for_test(test, dep, missing, what):
    """Start ``dep`` for ``test``, stopped and released at the test's end.

    The test is skipped when something is ``missing`` or another test
    run on this machine holds the profile's directory. ``test.figures``
    gets the start-up time (``up_seconds``); the test adds its own, and
    all are attached to the result and printed at its end.

    :param what: the deployment's name in messages, e.g. "kvm profile"
    """
    if missing:
        test.skipTest('the %s needs %s (tools/deploy/install.sh, '
                      'tools/libvirt/install.sh)' % (what, ', '.join(missing)))
    if not dep.claim():
        test.skipTest('another test run on this machine is using the %s '
                      'in %s' % (what, dep.deploy_dir))
    test.addCleanup(dep.release)
    test.figures = {}

    def report():
        text = json.dumps(test.figures, indent=2, sort_keys=True)
        test.addDetail('figures', testtools.content.text_content(text))
        print('\n%s figures: %s' % (what, text))

    test.addCleanup(report)
    test.addCleanup(dep.stop)
    dep.start()
    test.figures['up_seconds'] = round(dep.timings['up'], 1)


class Deployment(object):
    """One profile of tools/deploy/up.sh, started and stopped by PID."""

    def __init__(self, profile, env=None):
        self.profile = profile
        # Extra environment of up.sh / down.sh (e.g. CVB_DEPLOY_PLANS=1).
        self.extra_env = dict(env or {})
        self._commands = {}
        self.deploy_dir = DEPLOY_DIR % profile
        self.dir = os.path.join(self.deploy_dir, profile)
        self._lock = None
        self.env = None
        self.vcsim = None
        self.shell = None
        self.timings = {}

    def _script_env(self):
        env = dict(os.environ, CVB_DEPLOY_DIR=self.deploy_dir,
                   CVB_VENV=sys.prefix, CVB_OSC_VENV=OSC_VENV,
                   CVB_KEYSTONE_VENV=KEYSTONE_VENV)
        env.update(self.extra_env)
        return env

    def _script(self, name, timeout):
        cmd = ['bash', os.path.join(DEPLOY, name), self.profile]
        # A session of its own: on a time-out the script and everything it
        # started are killed together (down.sh then finds them gone).
        proc = subprocess.Popen(  # nosec B603
            cmd, env=self._script_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            output, _err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _err = proc.communicate()
            raise DeploymentError('%s %s did not finish in %ss:\n%s' % (
                name, self.profile, timeout,
                output.decode(errors='replace')[-4000:]))
        output = output.decode(errors='replace')
        if proc.returncode:
            raise DeploymentError('%s %s failed (%d):\n%s' % (
                name, self.profile, proc.returncode, output[-4000:]))
        return output

    def claim(self):
        """Hold this profile's deployment directory for this test run.

        :returns: False when another test run on this machine holds it
            (its deployment is in use; this one must not touch it)
        """
        os.makedirs(self.deploy_dir, exist_ok=True)
        self._lock = open(self.deploy_dir + '.test-lock', 'w')
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            return False
        return True

    def release(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def start(self):
        started = time.monotonic()
        # A profile left running by an interrupted run is stopped first:
        # up.sh would otherwise keep it as it is.
        self._script('down.sh', 600)
        output = self._script('up.sh', UP_TIMEOUT)
        self.timings['up'] = time.monotonic() - started
        openrc = output.strip().splitlines()[-1]
        self.env = dict(os.environ)
        self.env.update(read_env(openrc))
        self.env['PATH'] = os.path.join(OSC_VENV, 'bin') + ':' + \
            os.environ.get('PATH', '')
        if self.profile != 'kvm':
            self.vcsim = DeployedVcsim(self.dir)
        self.shell = OpenStackShell(
            self.env, os.path.join(self.dir, 'log', 'openstack-shell.log'))

    def stop(self):
        if self.shell is not None:
            self.shell.close()
        if self.vcsim is not None:
            self.vcsim.stop()
        self._script('down.sh', 600)

    # -- services, by the PID files of up.sh -----------------------------

    def _pid_file(self, service):
        return os.path.join(self.dir, '%s.pid' % service)

    def service_pid(self, service):
        """The PID of a running service of the profile, else None."""
        try:
            with open(self._pid_file(service)) as f:
                pid = int(f.read().strip())
            with open('/proc/%d/status' % pid) as status:
                if 'State:\tZ' in status.read():
                    return None
        except (OSError, ValueError):
            return None
        return pid

    def _remember(self, service, pid):
        # How to start it again: its command line, as up.sh started it.
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            self._commands[service] = [
                a.decode() for a in f.read().split(b'\0') if a]

    def _wait_ended(self, pid, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open('/proc/%d/status' % pid) as status:
                    if 'State:\tZ' in status.read():
                        return True
            except OSError:
                return True
            time.sleep(0.05)
        return False

    def kill_service(self, service):
        """SIGKILL a service by its PID, as a node that dies."""
        pid = self.service_pid(service)
        if pid is None:
            raise DeploymentError('%s is not running' % service)
        self._remember(service, pid)
        os.kill(pid, signal.SIGKILL)
        if not self._wait_ended(pid, 10):
            raise DeploymentError('%s (%d) did not end' % (service, pid))

    def stop_services(self, *services, **kwargs):
        """SIGTERM services by their PIDs; wait for them to end."""
        timeout = kwargs.get('timeout', 30)
        pids = {}
        for service in services:
            pid = self.service_pid(service)
            if pid is not None:
                self._remember(service, pid)
                os.kill(pid, signal.SIGTERM)
                pids[service] = pid
        for service, pid in pids.items():
            if not self._wait_ended(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                self._wait_ended(pid, 10)

    def start_service(self, service):
        """Start a service stopped by this object again (same command)."""
        command = self._commands[service]
        out = os.open(os.path.join(self.dir, 'log', '%s.out' % service),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(  # nosec B603: up.sh's own command
                command, env=self._script_env(), stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, start_new_session=True)
        finally:
            os.close(out)
        # (down.sh stops it by this file, as the one up.sh wrote.)
        with open(self._pid_file(service), 'w') as f:
            f.write('%d\n' % proc.pid)
        return proc

    def db_rows(self, sql, args=()):
        """Rows of a query on the profile's database (MariaDB)."""
        import pymysql
        infra = read_env(os.path.join(self.deploy_dir, 'infra', 'env'))
        conn = pymysql.connect(
            host='127.0.0.1', port=int(infra['DB_PORT']),
            user=infra['DB_USER'], password=infra['DB_PASSWORD'],
            database='cvb_%s' % self.profile)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()
        finally:
            conn.close()

    def log(self, service):
        path = os.path.join(self.dir, 'log', '%s.log' % service)
        with open(path, 'rb') as f:
            return f.read().decode(errors='replace')

    # -- the clients ------------------------------------------------------

    def _run(self, cmd, check=True, env=None):
        proc = subprocess.run(  # nosec B603
            cmd, env=env or self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=CLI_TIMEOUT, check=False)
        out = proc.stdout.decode(errors='replace')
        if check and proc.returncode:
            raise DeploymentError('%s failed (%d): %s' % (
                ' '.join(shlex.quote(c) for c in cmd), proc.returncode,
                proc.stderr.decode(errors='replace')[-2000:]))
        return proc.returncode, out

    def openstack(self, *args, **kwargs):
        """``openstack ARGS -f json``; the parsed output (or None).

        In the interactive client (OpenStackShell); a process of its own
        when ARGS begin with global options (``--os-...``).
        """
        fmt = kwargs.pop('json', True)
        if not args[0].startswith('-'):
            out = self.shell.run(*args, json=fmt)
            return out if fmt or out else None
        cmd = [os.path.join(OSC_VENV, 'bin', 'openstack')] + list(args)
        if fmt:
            cmd += ['-f', 'json']
        _rc, out = self._run(cmd, **kwargs)
        return json.loads(out) if fmt and out.strip() else out

    def cinder(self, *args):
        """Run the ``cinder`` client; its text output."""
        cmd = [os.path.join(OSC_VENV, 'bin', 'cinder')] + list(args)
        return self._run(cmd)[1]

    def attachments(self, *args):
        """Nova's attachment calls (cinder_attachments.py); its JSON."""
        cmd = [os.path.join(OSC_VENV, 'bin', 'python'), ATTACHMENTS]
        infra = read_env(os.path.join(self.deploy_dir, 'infra', 'env'))
        env = dict(self.env, CVB_NOVA_USERNAME='nova',
                   CVB_NOVA_PASSWORD=infra['NOVA_SERVICE_PASSWORD'])
        _rc, out = self._run(cmd + list(args), env=env)
        return json.loads(out) if out.strip() else None

    def wait(self, kind, resource_id, statuses, timeout=300,
             failures=('error',)):
        """Poll ``openstack KIND show`` until its status is in statuses.

        :param kind: 'volume', 'volume backup' or 'volume snapshot'
        :returns: the resource as ``show`` printed it last
        :raises DeploymentError: on a status in failures, or a timeout
        """
        deadline = time.monotonic() + timeout
        while True:
            shown = self.shell.query(*(kind.split() + ['show', resource_id]))
            status = shown.get('status')
            if status in statuses:
                return shown
            if status in failures:
                raise DeploymentError('%s %s is %s: %s' % (
                    kind, resource_id, status, shown))
            if time.monotonic() > deadline:
                raise DeploymentError('%s %s still %s after %ss' % (
                    kind, resource_id, status, timeout))
            time.sleep(POLL_INTERVAL)

    def wait_gone(self, kind, resource_id, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.shell.query(*(kind.split() + ['list']))
            if resource_id not in [item['ID'] for item in listed]:
                return
            time.sleep(POLL_INTERVAL)
        raise DeploymentError('%s %s not deleted after %ss' % (
            kind, resource_id, timeout))

    # -- data ----------------------------------------------------------------

    def volume_path(self, volume_id):
        """The qcow2 file of a volume of the kvm profile."""
        return os.path.join(self.dir, 'qcow2', 'volume-%s' % volume_id)

    def backup_files(self, backup_id):
        """The posix backup driver's files of one backup."""
        pattern = os.path.join(self.dir, 'backups', '**',
                               '*backup_%s*' % backup_id)
        return [p for p in glob.glob(pattern, recursive=True)
                if os.path.isfile(p)]

    @property
    def backup_store(self):
        """'posix' or 'swift': where up.sh sent this profile's backups."""
        try:
            with open(os.path.join(self.dir, 'backup-store')) as f:
                return f.read().strip() or 'posix'
        except FileNotFoundError:
            return 'posix'

    def swift(self):
        """A Swift connection as cinder-backup's own (single_user) login."""
        from swiftclient import client
        infra = read_env(os.path.join(self.deploy_dir, 'infra', 'env'))
        return client.Connection(
            authurl='http://127.0.0.1:%s/v3' % infra['KEYSTONE_PORT'],
            auth_version='3', user='cinder',
            key=infra['CINDER_SERVICE_PASSWORD'], retries=1,
            os_options={'project_name': 'service',
                        'user_domain_name': 'Default',
                        'project_domain_name': 'Default'})

    def swift_objects(self, backup_id):
        """{name: bytes} of a backup's objects in the profile's container."""
        _headers, listing = self.swift().get_container(
            'cvb-%s' % self.profile, full_listing=True)
        return {o['name']: o['bytes'] for o in listing
                if '_backup_%s' % backup_id in o['name']}

    def stored_bytes(self, backup_id):
        """Bytes the backup's data objects take in the backup store."""
        if self.backup_store == 'swift':
            sizes = self.swift_objects(backup_id)
        else:
            sizes = {p: os.path.getsize(p)
                     for p in self.backup_files(backup_id)}
        return sum(size for name, size in sizes.items()
                   if not name.endswith(('_metadata', '_sha256file')))
