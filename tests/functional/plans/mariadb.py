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

"""A private MariaDB server for a test: its own data directory, 127.0.0.1.

Debian's mariadb-server binaries, a fresh data directory in a temporary
directory (``mariadb-install-db``, about 8 s), ``mariadbd`` on a free port
of 127.0.0.1 and a socket of its own, started and stopped by PID; one
database and one user with a random password, reached over TCP as
Cinder's services reach theirs (``mysql+pymysql://``).
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pymysql


def missing():
    """Why a private MariaDB cannot run here, or None."""
    for binary in ('mariadbd', 'mariadb-install-db'):
        if not shutil.which(binary, path=os.environ.get('PATH', '') +
                            ':/usr/sbin:/usr/bin'):
            return '%s is not installed (Debian mariadb-server)' % binary
    if os.geteuid() != 0:
        return 'mariadbd --user=root needs root'
    return None


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class MariaDB(object):

    def __init__(self, database='cvb_plans', user='cvb'):
        self.database = database
        self.user = user
        self.password = secrets.token_hex(12)
        self.dir = None
        self.process = None

    def start(self, timeout=60):
        self.dir = tempfile.mkdtemp(prefix='cvb-mariadb-')
        data = os.path.join(self.dir, 'data')
        self.socket = os.path.join(self.dir, 'mysql.sock')
        log = os.path.join(self.dir, 'mariadb.log')
        try:
            with open(log, 'wb') as out:
                subprocess.run(
                    ['mariadb-install-db', '--no-defaults',
                     '--datadir=' + data, '--user=root',
                     '--auth-root-authentication-method=socket',
                     '--skip-test-db'], stdout=out, stderr=out, check=True)
            self.port = _free_port()
            with open(log, 'ab') as out:
                self.process = subprocess.Popen(
                    ['mariadbd', '--no-defaults', '--datadir=' + data,
                     '--user=root', '--socket=' + self.socket,
                     '--port=%d' % self.port, '--bind-address=127.0.0.1',
                     '--skip-name-resolve', '--innodb-buffer-pool-size=32M',
                     '--pid-file=' + os.path.join(self.dir, 'mariadbd.pid')],
                    stdout=out, stderr=out)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    conn = pymysql.connect(unix_socket=self.socket,
                                           user='root')
                    break
                except pymysql.err.OperationalError:
                    if (self.process.poll() is not None or
                            time.monotonic() > deadline):
                        raise RuntimeError('MariaDB did not start; see %s'
                                           % log)
                    time.sleep(0.2)
            with conn.cursor() as cur:
                cur.execute('CREATE DATABASE %s CHARACTER SET utf8mb4' %
                            self.database)
                cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s",
                            (self.user, self.password))
                cur.execute("GRANT ALL ON %s.* TO %%s@'127.0.0.1'" %
                            self.database, (self.user,))
            conn.close()
        except BaseException:
            self.stop()
            raise
        return self

    def url(self, password=None):
        return 'mysql+pymysql://%s:%s@127.0.0.1:%d/%s?charset=utf8mb4' % (
            self.user, password or self.password, self.port, self.database)

    def query(self, sql):
        conn = pymysql.connect(host='127.0.0.1', port=self.port,
                               user=self.user, password=self.password,
                               database=self.database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            conn.close()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
