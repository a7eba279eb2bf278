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

"""A real etcd for a test: started on 127.0.0.1, stopped by its PID.

Debian's ``etcd-server`` (tools/install-peers.sh installs it). The data
directory is a temporary one; nothing is left behind. tooz reaches it
through its ``etcd3+http://`` driver (etcd3gw), the way a cinder-backup
with ``[coordination] backend_url = etcd3+http://...`` does.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import fixtures

ETCD = shutil.which('etcd') or '/usr/bin/etcd'
START_TIMEOUT = 20


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def available():
    """None if an etcd can be started here, else why not."""
    if not os.access(ETCD, os.X_OK):
        return 'etcd is not installed (Debian etcd-server)'
    try:
        import etcd3gw  # noqa: F401
    except ImportError:
        return 'etcd3gw (tooz\'s etcd3+http driver) is not installed'
    return None


class Etcd(fixtures.Fixture):
    """One etcd member; ``url`` is its tooz backend URL.

    :param lock_timeout: seconds a lock outlives the heartbeats of the
        coordinator that holds it (tooz's ``timeout`` option)
    """

    def __init__(self, lock_timeout=3):
        super().__init__()
        self.lock_timeout = lock_timeout

    def _setUp(self):
        directory = self.useFixture(fixtures.TempDir()).path
        client, peer = _free_port(), _free_port()
        self.client_url = 'http://127.0.0.1:%d' % client
        peer_url = 'http://127.0.0.1:%d' % peer
        self.log_path = os.path.join(directory, 'etcd.log')
        with open(self.log_path, 'wb') as log:
            self.process = subprocess.Popen(
                [ETCD, '--name', 'cvb-test',
                 '--data-dir', os.path.join(directory, 'data'),
                 '--listen-client-urls', self.client_url,
                 '--advertise-client-urls', self.client_url,
                 '--listen-peer-urls', peer_url,
                 '--initial-advertise-peer-urls', peer_url,
                 '--initial-cluster', 'cvb-test=' + peer_url],
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        self.addCleanup(self._stop)
        self._wait_ready()
        self.url = 'etcd3+http://127.0.0.1:%d?timeout=%d' % (
            client, self.lock_timeout)

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError('etcd ended at start (%s): %s' % (
                    self.process.returncode, self._log_tail()))
            try:
                with urllib.request.urlopen(self.client_url + '/health',
                                            timeout=1) as answer:
                    if json.load(answer).get('health') == 'true':
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError('etcd not ready after %d s: %s' % (
                    START_TIMEOUT, self._log_tail()))
            time.sleep(0.1)

    def _log_tail(self):
        with open(self.log_path, 'rb') as log:
            return log.read()[-2000:].decode(errors='replace')

    def _stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
