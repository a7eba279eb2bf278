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

"""A TCP forwarder on 127.0.0.1 whose path can be cut and restored.

Put between a client and vcsim (``vmware_host_port`` pointed at
:attr:`Forwarder.port`), it makes vCenter unreachable for that client only
(:meth:`Forwarder.cut`: the listener closed, so new connections are
refused, and every open connection reset), then reachable again on the
same port (:meth:`Forwarder.restore`), while vcsim itself runs on with its
state. The bytes pass untouched (TLS end to end).

It runs on native threads and sockets, also where eventlet has patched the
test process: a green socket closed by one green thread while another
waits in it can leave that wait registered in eventlet's hub, and the next
user of the same file descriptor number (a pipe of a later test's
subprocess) then fails with "Second simultaneous read on fileno N".
"""

from eventlet import patcher
import fixtures

socket = patcher.original('socket')
threading = patcher.original('threading')


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Forwarder(fixtures.Fixture):
    """127.0.0.1:``port`` forwarded to ``host``:``target_port``."""

    def __init__(self, host, target_port):
        super(Forwarder, self).__init__()
        self.host = host
        self.target_port = target_port
        self.port = None
        self.connections = 0

    def _setUp(self):
        self._guard = threading.Lock()
        self._open = set()
        self._listener = None
        self.addCleanup(self.cut)
        self._listen()

    @property
    def reachable(self):
        return self._listener is not None

    def _listen(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(('127.0.0.1', self.port or 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        with self._guard:
            self._listener = sock
        threading.Thread(target=self._accept, args=(sock,),
                         name='netcut-accept', daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _address = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(
                    (self.host, self.target_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._guard:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._open.update((client, upstream))
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink),
                                 name='netcut-pump', daemon=True).start()

    def _pump(self, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._guard:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)

    def cut(self):
        """Refuse new connections and reset the open ones."""
        with self._guard:
            listener, self._listener = self._listener, None
            open_, self._open = list(self._open), set()
        if listener is not None:
            _close(listener)
        for sock in open_:
            _close(sock)

    def restore(self):
        """Accept connections again, on the same port."""
        if self._listener is None:
            self._listen()
