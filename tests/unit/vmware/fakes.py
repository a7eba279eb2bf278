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

"""Fakes for the vSphere data movement tests: a session and an NFC server.

``FakeSession`` answers ``invoke_api`` like oslo.vmware's VMwareAPISession
does, from a table of properties and per-method handlers, and records every
call. ``NfcServer`` is a real HTTP server on 127.0.0.1 standing in for an
NFC disk URL: it serves a body for GET, takes a body for POST, and can stall
or cut the connection, so sockets, timeouts and headers are real.
"""

import importlib
import select
import threading
import time
import types

# The standard library's http.server, whatever imported it before: once
# eventlet.wsgi is imported (Cinder's test modules do), the attribute
# ``server`` of the ``http`` package is eventlet's green copy of the module
# (eventlet puts back only ``sys.modules['http.server']``), so ``import
# http.server`` would hand over servers that wait in eventlet's hub, which
# nothing runs when the tests use native threads.
http_server = importlib.import_module('http.server')


def moref(value, type_='VirtualMachine'):
    return types.SimpleNamespace(value=value, _type=type_)


def vobj(type_name, **attrs):
    """An object whose class name is a vSphere type name."""
    obj = type(type_name, (object,), {})()
    for key, value in attrs.items():
        setattr(obj, key, value)
    return obj


class _Factory(object):
    def create(self, name):
        return vobj(name.split(':')[-1])


class FakeSession(object):
    """Just enough of VMwareAPISession for the code under test."""

    def __init__(self, properties=None, handlers=None):
        self.properties = dict(properties or {})
        self.handlers = dict(handlers or {})
        self.calls = []
        cookie = types.SimpleNamespace(name='vmware_soap_session',
                                       value='"secret-cookie"')
        self.vim = types.SimpleNamespace(
            client=types.SimpleNamespace(cookiejar=[cookie],
                                         factory=_Factory()),
            service_content=types.SimpleNamespace(
                virtualDiskManager=moref('vdm', 'VirtualDiskManager'),
                searchIndex=moref('si', 'SearchIndex')))

    def invoke_api(self, module, method, *args, **kwargs):
        if method == 'get_object_property':
            _vim, ref, prop = args[:3]
            self.calls.append((method, ref.value, prop))
            value = self.properties.get((ref.value, prop))
            if isinstance(value, list) and prop == 'state':
                # a sequence of states, one per poll
                return value.pop(0) if len(value) > 1 else value[0]
            if isinstance(value, Exception):
                raise value
            return value
        ref = args[0] if args else None
        self.calls.append((method, getattr(ref, 'value', ref), kwargs))
        handler = self.handlers.get(method)
        if isinstance(handler, Exception):
            raise handler
        if handler is not None:
            return handler(*args, **kwargs)
        return moref('task-%d' % len(self.calls), 'Task')

    def wait_for_task(self, task):
        self.calls.append(('wait_for_task', task.value, {}))
        handler = self.handlers.get('wait_for_task')
        if handler is not None:
            return handler(task)
        return types.SimpleNamespace(result=None)

    def methods(self):
        return [call[0] for call in self.calls
                if call[0] not in ('get_object_property', 'wait_for_task')]


class _QuietServer(http_server.ThreadingHTTPServer):
    """A threading HTTP server that also serves under eventlet.

    ``socketserver`` binds its selector class when it is imported; where
    that happens before eventlet's monkey patching (the test runner imports
    it first), ``serve_forever`` blocks the only OS thread in a native poll
    and the green threads of the test never run again. This loop looks
    ``select.select`` up at call time instead, which is the green one once
    patched, and the plain one otherwise.
    """

    def __init__(self, *args, **kwargs):
        super(_QuietServer, self).__init__(*args, **kwargs)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    def serve_forever(self, poll_interval=0.05):
        self._stopped.clear()
        try:
            while not self._stopping.is_set():
                ready, _w, _x = select.select([self], [], [], poll_interval)
                if ready:
                    self._handle_request_noblock()
        finally:
            self._stopped.set()

    def shutdown(self):
        self._stopping.set()
        self._stopped.wait()

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout tests) is expected


class NfcServer(object):
    """A local HTTP server standing in for an NFC disk URL.

    :param get_body: bytes served to GET
    :param status: HTTP status of every answer
    :param stall_after: bytes sent (GET) or read (POST) before stalling
    :param stall_seconds: how long to stall
    :param cut_after: bytes sent before closing the connection (GET)
    :param keep_alive: answer as HTTP/1.1, keeping the connection (as
        vSphere does): the client's connection then owns the response
    """

    def __init__(self, get_body=b'', status=200, stall_after=None,
                 stall_seconds=0, cut_after=None, keep_alive=False):
        self.get_body = get_body
        self.status = status
        self.stall_after = stall_after
        self.stall_seconds = stall_seconds
        self.cut_after = cut_after
        self.requests = []
        self.posted = b''
        server = self

        class Handler(http_server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1' if keep_alive else 'HTTP/1.0'

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(('GET', self.path,
                                        dict(self.headers)))
                body = server.get_body
                self.send_response(server.status)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                limit = len(body)
                if server.cut_after is not None:
                    limit = server.cut_after
                if server.stall_after is not None:
                    self.wfile.write(body[:server.stall_after])
                    self.wfile.flush()
                    time.sleep(server.stall_seconds)
                    self.wfile.write(body[server.stall_after:limit])
                else:
                    self.wfile.write(body[:limit])
                self.wfile.flush()
                if limit < len(body):
                    self.close_connection = True

            def do_POST(self):
                server.requests.append(('POST', self.path,
                                        dict(self.headers)))
                length = int(self.headers.get('Content-Length', 0))
                got = b''
                if server.stall_after is not None:
                    got = self.rfile.read(server.stall_after)
                    time.sleep(server.stall_seconds)
                    return
                while len(got) < length:
                    chunk = self.rfile.read(length - len(got))
                    if not chunk:
                        break
                    got += chunk
                server.posted = got
                answer = b'done' if server.status < 300 else b'refused'
                self.send_response(server.status)
                self.send_header('Content-Length', str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = _QuietServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = 'http://127.0.0.1:%d/nfc/52ab/disk-0.vmdk' % self.port
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        args=(0.05,), daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
