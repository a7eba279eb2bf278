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

"""Leftovers with several cinder-backup worker processes, against vcsim.

Each worker is a real process (:mod:`tests.functional.vmware.worker`)
that starts like a cinder-backup worker (``BackupManager.init_host``) and
runs one request against the test's vcsim, with a copy of the test's
database. A restore is held in the middle of its import (vcsim's NFC fault
injection stalls the upload), where it has a temporary VM, a staging file
and an open import lease:

* a second worker starts and runs its first request meanwhile: the
  restore's things are its owner's, alive; the restore completes and
  nothing is left;
* the restoring worker is killed (SIGKILL): the next start's ``init_host``
  removes all three, and tells that the volume's data is intact.
"""

import dataclasses
import glob
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess  # nosec B404: the worker processes
import sys
import threading
import uuid

from cinder.db import api as db_api
from cinder.objects import fields
from cinder.tests.unit import utils as test_utils
from oslo_utils import units
from oslo_vmware import vim_util
from testtools import content

from cinder_vmdk_backup.backup import staging_files
from cinder_vmdk_backup import ownership
from cinder_vmdk_backup.vmware import leftovers
from cinder_vmdk_backup.vmware import nfc
from tests.functional.vmware import test_backup_faults as faults
from tests.functional.vmware import test_backup_flows as flows

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..',
                                   '..'))
WORKER_TIMEOUT = 180
BACKUP_HOST = 'backup-node'


class Worker(object):
    """A worker process; its output lines read on a thread."""

    def __init__(self, test, spec):
        self.log = spec['log']
        path = spec['log'] + '.json'
        with open(path, 'w') as f:
            json.dump(spec, f)
        env = dict(os.environ, PYTHONPATH=TOP)
        self.process = subprocess.Popen(  # nosec B603
            [sys.executable, '-m', 'tests.functional.vmware.worker', path],
            cwd=TOP, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=open(spec['log'] + '.err', 'wb'))
        test.addCleanup(self._attach_log, test, os.path.basename(self.log))
        test.addCleanup(self.kill)
        self.pid = self.process.pid
        self.lines = queue.Queue()
        thread = threading.Thread(target=self._read, daemon=True)
        thread.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.decode().strip())
        self.lines.put(None)

    def next_line(self, timeout=WORKER_TIMEOUT):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError('worker %d said nothing in %d s; log: %s'
                                 % (self.pid, timeout, self.log_text()))
        if line is None:
            raise AssertionError('worker %d ended (%s); log: %s' % (
                self.pid, self.process.wait(), self.log_text()[-3000:]))
        return line

    def log_text(self):
        text = ''
        for path in (self.log, self.log + '.err'):
            try:
                with open(path) as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def _attach_log(self, test, name):
        test.addDetail(name, content.text_content(self.log_text()[-20000:]))

    def kill(self):
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()
        self.process.stdout.close()


class JanitorTestCase(flows.VmdkBackupTestBase):

    def setUp(self):
        super(JanitorTestCase, self).setUp()
        self.override_config('backup_file_size', 32 * units.Mi)
        self.lock_path = self._dir('locks')
        self.disk = flows.Disk(regions=faults.BIG_REGIONS, random=True)
        source = self._vmdk_volume(disk=self.disk)
        self.backup = self._backup(source)
        self.backup.host = BACKUP_HOST
        self.backup.save()
        self.changed = flows.Disk(seed=b'changed')
        self.target = self._vmdk_volume(disk=self.changed)
        self.target_path = self._vmdk_path(self.target)

    # -- the workers' world --------------------------------------------------

    def _db_copy(self, name):
        """A file copy of the test's (in-memory) database."""
        path = os.path.join(self.tmp, name + '.sqlite')
        engine = db_api.get_engine()
        with engine.connect() as conn:
            script = '\n'.join(conn.connection.iterdump())
        with sqlite3.connect(path) as copy:
            copy.executescript(script)
        return path

    def _query(self, db, sql, *args):
        with sqlite3.connect(db) as conn:
            return conn.execute(sql, args).fetchall()

    def _worker_conf(self, name, db, streaming=True):
        options = dict(self.vcsim.cinder_backend_options())
        options.update({
            'volume_driver': 'cinder_vmdk_backup.volume.drivers.vmdk.'
                             'VMwareVcVmdkBackupDriver',
            'vmware_tmp_dir': self.staging_dir,
            'vmware_backup_transfer_idle_timeout': 120,
            'vmware_backup_lease_ready_timeout': 20,
            'vmware_backup_restore_streaming': streaming,
        })
        lines = ['[DEFAULT]', 'host = %s' % BACKUP_HOST,
                 'backup_driver = cinder.backup.drivers.posix.'
                 'PosixBackupDriver',
                 'backup_posix_path = %s' % self.posix_dir,
                 'backup_compression_algorithm = zstd',
                 'backup_enable_progress_timer = False',
                 'backup_file_size = %d' % (32 * units.Mi),
                 '[database]', 'connection = sqlite:///%s' % db,
                 '[oslo_concurrency]', 'lock_path = %s' % self.lock_path,
                 '[vmdk]']
        for key, value in options.items():
            if isinstance(value, (list, tuple)):
                value = ','.join(value)
            lines.append('%s = %s' % (key, value))
        path = os.path.join(self.tmp, name + '.conf')
        with open(path, 'w') as conf:
            conf.write('\n'.join(lines) + '\n')
        return path

    def _worker(self, name, role, db, process_number=1, streaming=True,
                **ids):
        spec = dict(role=role, conf=self._worker_conf(name, db, streaming),
                    lock_path=self.lock_path, host=BACKUP_HOST,
                    process_number=process_number,
                    user_id=self.ctxt.user_id,
                    project_id=self.ctxt.project_id,
                    log=os.path.join(self.tmp, name + '.log'), **ids)
        worker = Worker(self, spec)
        self.assertEqual('started', worker.next_line())
        return worker

    def _start_stalled_restore(self, db, streaming=True):
        """Worker 1 restores; its upload stalls after 4 MiB.

        :param streaming: the restore streams from the backup's objects
            (no staging file), else stages the data first
        """
        self.vcsim.set_nfc_fault(stall_after_bytes=4 * units.Mi, count=1)
        self.addCleanup(self.vcsim.clear_faults)
        restoring = self._worker('restorer', 'restore', db,
                                 streaming=streaming,
                                 backup_id=self.backup.id,
                                 volume_id=self.target.id)
        self.vcsim.wait_for_log('NFC transfer stalls', timeout=120)
        return restoring

    def _staging(self, pattern):
        return sorted(glob.glob(os.path.join(self.staging_dir, pattern)))

    def _assert_things_of(self, worker, staging_files_expected=0):
        """The temp VM, staging file and lease record of a stalled restore.

        :param staging_files_expected: 1 for a restore that stages its
            data, 0 for a streaming one
        :returns: the lease's moref value
        """
        temp_vms = self._temp_vms()
        self.assertEqual(1, len(temp_vms), temp_vms)
        parsed = leftovers.parse_temp_vm_name(temp_vms[0])
        self.assertEqual((worker.pid, self.target.id),
                         (parsed[1], parsed[3]))
        self.assertEqual(staging_files_expected,
                         len(self._staging(staging_files.PREFIX + '*')))
        records = self._staging('cvb-owner-%s-*' % nfc.LEASE_RECORD_KIND)
        self.assertEqual(1, len(records))
        with open(records[0]) as f:
            record = json.load(f)
        self.assertEqual(worker.pid, record['owner']['pid'])
        self.assertEqual('import of %s' % temp_vms[0],
                         record['data']['what'])
        # vcsim keeps a lease in the session that opened it: another
        # session (this test's) cannot read it. vCenter's leases are
        # managed objects of their own.
        return record['data']['value']

    def _foreign_temp_vm(self):
        """A temporary VM of a restore of another host (a dead pid here)."""
        owner = dataclasses.replace(ownership.current(),
                                    host='other-host.example.org',
                                    pid=4194000, start_time=1)
        name = leftovers.temp_vm_name(str(uuid.uuid4()), owner)
        vops = self.driver.volumeops
        backing = self._backing(self.target)
        resource_pool = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, backing,
            'resourcePool')
        folder = self.session.invoke_api(
            vim_util, 'get_object_property', self.session.vim, backing,
            'parent')
        ds_name = vops.get_summary(vops.get_datastore(backing)).name
        vops.create_backing(name, units.Mi // units.Ki, 'thin', folder,
                            resource_pool, vops.get_host(backing), ds_name)
        return name

    # -- the tests -----------------------------------------------------------

    def test_second_worker_starts_and_backs_up_during_a_restore(self):
        other = self._vmdk_volume(disk=flows.Disk(seed=b'other'))
        other.status = 'backing-up'
        other.previous_status = 'available'
        other.save()
        other_backup = test_utils.create_backup(
            self.ctxt, other.id, status=fields.BackupStatus.CREATING,
            size=other.size)
        restoring = self._start_stalled_restore(self._db_copy('restorer'))
        self._assert_things_of(restoring)
        temp_vms = self._temp_vms()

        # Worker 2 of the same host starts (init_host sets the backend up,
        # its janitor runs) and runs its first request, a backup.
        second_db = self._db_copy('second')
        second = self._worker('second', 'backup', second_db,
                              process_number=2, backup_id=other_backup.id,
                              volume_id=other.id)
        self.assertEqual('done', second.next_line(), second.log_text())
        self.assertEqual([(fields.BackupStatus.AVAILABLE,)], self._query(
            second_db, 'SELECT status FROM backups WHERE id = ?',
            other_backup.id))
        self.assertIn('Driver-owned backends set up at start',
                      second.log_text())
        # The restore's things are untouched: their owner runs.
        self.assertEqual(temp_vms, self._temp_vms())
        self.assertIsNone(restoring.process.poll())

        self.vcsim.clear_faults()
        self.assertEqual('done', restoring.next_line(),
                         restoring.log_text()[-3000:])
        self.assertEqual(0, restoring.process.wait())
        self.assertEqual([('available',)], self._query(
            self._db_copy_path('restorer'),
            'SELECT status FROM volumes WHERE id = ?', self.target.id))
        self._assert_data(self.disk, self.target)
        self.assertEqual([], self._temp_vms())
        self.assertEqual([], os.listdir(self.staging_dir))
        for worker in (restoring, second):
            self.assertNotIn('Removed temporary VM', worker.log_text())
            self.assertNotIn(self.vcsim.password, worker.log_text())

    def _db_copy_path(self, name):
        return os.path.join(self.tmp, name + '.sqlite')

    def test_killed_worker_leftovers_removed_at_next_start(self):
        # The staging restore: it leaves a staging file too.
        db = self._db_copy('shared')
        restoring = self._start_stalled_restore(db, streaming=False)
        self._assert_things_of(restoring, staging_files_expected=1)
        temp_vm = self._temp_vms()[0]
        os.kill(restoring.pid, signal.SIGKILL)
        restoring.process.wait()
        # What a killed worker leaves, until a start cleans it up.
        self.assertEqual([temp_vm], self._temp_vms())
        # The staging file, the lease's record and the restore lock's.
        self.assertEqual(3, len(os.listdir(self.staging_dir)))

        # Another host's restore, in the same vCenter: never this host's to
        # remove, whatever its pid means here.
        foreign = self._foreign_temp_vm()

        start = self._worker('next-start', 'start', db)
        self.assertEqual('done', start.next_line())
        log = start.log_text()
        self.assertEqual([foreign], self._temp_vms(), log[-3000:])
        self.assertEqual([], os.listdir(self.staging_dir))
        # The lease was ended (vCenter) or is unreachable from a new
        # session (vcsim): either way its record is gone.
        self.assertIsNotNone(re.search(
            r'(Aborted the NFC lease|The NFC lease) of the import of %s'
            % temp_vm, log), log[-3000:])
        self.assertIn('Removed temporary VM %s' % temp_vm, log, log[-3000:])
        # Cinder's clean-up, and the word that the data is intact.
        self.assertEqual([('error_restoring',)], self._query(
            db, 'SELECT status FROM volumes WHERE id = ?', self.target.id))
        self.assertEqual([('available',)], self._query(
            db, 'SELECT status FROM backups WHERE id = ?', self.backup.id))
        self.assertIn("The volume's data is intact", log)
        self.assertEqual([('026',)], self._query(
            db, 'SELECT detail_id FROM messages WHERE resource_uuid = ?',
            self.target.id))
        self._assert_data(self.changed, self.target, self.target_path)
        self.assertNotIn(self.vcsim.password, log)
