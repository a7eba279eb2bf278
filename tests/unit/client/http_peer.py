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

"""A scripted HTTP server on 127.0.0.1 answering the client's requests.

The client's tests run the real keystoneauth1 session and requests stack
against it: each test queues the answers, then reads what arrived (method,
path, query, headers, JSON body). Requests beyond the queued answers get a
500, so a test never hangs, and the server stops at the test's cleanup.
"""

import collections
import importlib
import json
import threading
import urllib.parse

import fixtures

# Not ``import http.server``: once ``cinder.tests.unit`` is imported (other
# test modules of the run do), the ``http`` package's attribute ``server``
# is eventlet's injected copy of the module, whose ``socket`` is eventlet's
# green one, while ``sys.modules['http.server']`` is still the standard one.
# With native threads (OS_CINDER_DISABLE_EVENTLET_PATCHING=1) the green copy's
# HTTPServer.server_bind (socket.getfqdn) waits in an eventlet hub that
# nothing runs, and the test hangs; import_module answers sys.modules' copy,
# whose socket is the process's own (patched in place under eventlet).
http_server = importlib.import_module('http.server')

Request = collections.namedtuple(
    'Request', ['method', 'path', 'query', 'headers', 'body'])


class _Handler(http_server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        pass

    def _handle(self):
        peer = self.server.peer
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        url = urllib.parse.urlsplit(self.path)
        body = json.loads(raw) if raw else None
        peer.requests.append(Request(
            self.command, url.path, urllib.parse.parse_qs(url.query),
            dict(self.headers), body))
        if peer.answers:
            status, payload, headers = peer.answers.popleft()
        else:
            status, payload, headers = 500, {'computeFault': {
                'message': 'no answer queued', 'code': 500}}, {}
        if payload is None:
            data, ctype = b'', None
        elif isinstance(payload, (bytes, str)):
            data = payload if isinstance(payload, bytes) else payload.encode()
            ctype = 'text/plain'
        else:
            data, ctype = json.dumps(payload).encode(), 'application/json'
        self.send_response(status)
        if ctype:
            self.send_header('Content-Type', ctype)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class HttpPeer(fixtures.Fixture):
    """The server; ``url`` is its root, ``requests`` what it received."""

    def _setUp(self):
        self.requests = []
        self.answers = collections.deque()
        server = http_server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        server.daemon_threads = True
        server.peer = self
        thread = threading.Thread(target=server.serve_forever,
                                  kwargs={'poll_interval': 0.05},
                                  daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        self.url = 'http://127.0.0.1:%d' % server.server_address[1]

    def answer(self, status, payload=None, headers=None):
        """Queue one answer: a JSON-able payload, text, or None (empty)."""
        self.answers.append((status, payload, headers or {}))
