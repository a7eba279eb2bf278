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

"""The ownership rule, against the real /proc and a fake one."""

import dataclasses
import fcntl
import json
import os
import stat
import subprocess  # nosec B404: processes that own and die
import sys
import textwrap

import ddt
import fixtures
import testtools

from cinder_vmdk_backup import ownership


def stat_line(pid, start, state='S', comm='cinder-backup'):
    """A /proc/<pid>/stat line: start time is field 22."""
    rest = [state] + ['0'] * 18 + [str(start)] + ['0'] * 10
    return '%d (%s) %s\n' % (pid, comm, ' '.join(rest))


class FakeProc(fixtures.Fixture):
    """A directory laid out like the parts of /proc the module reads."""

    def __init__(self, boot_id='boot-1', pid_ns='pid:[4026531836]'):
        super(FakeProc, self).__init__()
        self.boot_id = boot_id
        self.pid_ns = pid_ns

    def _setUp(self):
        self.path = self.useFixture(fixtures.TempDir()).path
        os.makedirs(os.path.join(self.path, 'sys', 'kernel', 'random'))
        self.set_boot_id(self.boot_id)
        self.add(os.getpid(), 500)

    def set_boot_id(self, boot_id):
        with open(os.path.join(self.path, 'sys', 'kernel', 'random',
                               'boot_id'), 'w') as f:
            f.write(boot_id + '\n')

    def add(self, pid, start, state='S', comm='cinder-backup'):
        directory = os.path.join(self.path, str(pid))
        os.makedirs(os.path.join(directory, 'ns'), exist_ok=True)
        with open(os.path.join(directory, 'stat'), 'w') as f:
            f.write(stat_line(pid, start, state, comm))
        link = os.path.join(directory, 'ns', 'pid')
        if not os.path.lexists(link):
            os.symlink(self.pid_ns, link)
        if pid == os.getpid():
            self_link = os.path.join(self.path, 'self')
            if not os.path.lexists(self_link):
                os.symlink(str(pid), self_link)

    def remove(self, pid):
        os.unlink(os.path.join(self.path, str(pid), 'stat'))


@ddt.ddt
class OwnerGoneTestCase(testtools.TestCase):

    def setUp(self):
        super(OwnerGoneTestCase, self).setUp()
        self.proc = self.useFixture(FakeProc())
        self.here = ownership.Owner('host-a', 'boot-1', 'pid:[4026531836]',
                                    os.getpid(), 500)
        self.proc.add(4242, 1000)
        self.owner = ownership.Owner('host-a', 'boot-1', 'pid:[4026531836]',
                                     4242, 1000)

    def gone(self, owner):
        return ownership.owner_gone(owner, self.here, self.proc.path)

    def test_live_owner_is_not_gone(self):
        self.assertFalse(self.gone(self.owner))

    def test_dead_pid_is_gone(self):
        self.proc.remove(4242)
        self.assertTrue(self.gone(self.owner))

    def test_zombie_is_gone(self):
        self.proc.add(4242, 1000, state='Z')
        self.assertTrue(self.gone(self.owner))

    def test_reused_pid_with_another_start_time_is_gone(self):
        self.proc.add(4242, 1001)
        self.assertTrue(self.gone(self.owner))

    def test_other_boot_is_gone(self):
        # Same pid and start time, but the host rebooted since.
        self.assertTrue(self.gone(dataclasses.replace(self.owner,
                                                      boot_id='boot-0')))

    @ddt.data({'host': 'host-b'}, {'pid_ns': 'pid:[4026532999]'})
    def test_other_host_or_namespace_is_never_gone(self, change):
        # Even with a pid that does not run here, or another boot.
        self.proc.remove(4242)
        for owner in (dataclasses.replace(self.owner, **change),
                      dataclasses.replace(self.owner, boot_id='x',
                                          **change)):
            self.assertFalse(self.gone(owner))

    def test_command_name_with_spaces_and_parentheses(self):
        self.proc.add(4243, 77, comm='a) (b c')
        self.assertEqual(77, ownership.start_time(4243, self.proc.path))

    def test_named_owner(self):
        place, pid, tag = ownership.name_part(self.owner).split('-')
        self.assertEqual(self.here.place_tag(), place)

        def gone():
            return ownership.named_owner_gone(place, int(pid), tag,
                                              self.here, self.proc.path)

        self.assertFalse(gone())
        self.proc.add(4242, 1001)  # reused pid
        self.assertTrue(gone())
        self.proc.remove(4242)     # dead pid
        self.assertTrue(gone())
        self.proc.add(4242, 1000)
        self.proc.set_boot_id('boot-2')  # rebooted: another tag
        self.here = dataclasses.replace(self.here, boot_id='boot-2')
        self.assertTrue(gone())
        other = dataclasses.replace(self.here, host='host-b').place_tag()
        self.assertFalse(ownership.named_owner_gone(
            other, 99999999, tag, self.here, self.proc.path))


class CurrentTestCase(testtools.TestCase):

    def test_current_is_this_process_on_the_real_proc(self):
        me = ownership.current()
        self.assertEqual(os.getpid(), me.pid)
        self.assertFalse(ownership.owner_gone(me))
        with open('/proc/sys/kernel/random/boot_id') as f:
            self.assertEqual(f.read().strip(), me.boot_id)

    def test_a_finished_child_is_gone_on_the_real_proc(self):
        child = subprocess.Popen([sys.executable, '-c', 'input()'],
                                 stdin=subprocess.PIPE)
        me = ownership.current()
        owner = dataclasses.replace(
            me, pid=child.pid, start_time=ownership.start_time(child.pid))
        self.assertFalse(ownership.owner_gone(owner))
        child.communicate(b'\n')
        self.assertTrue(ownership.owner_gone(owner))

    def test_a_fork_has_an_identity_of_its_own(self):
        me = ownership.current()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            os.close(read)
            os.write(write, json.dumps(
                ownership.current().to_dict()).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            child = ownership.Owner.from_dict(json.loads(f.read()))
        os.waitpid(pid, 0)
        self.assertEqual(pid, child.pid)
        self.assertNotEqual(me.tag(), child.tag())
        self.assertEqual(me.place_tag(), child.place_tag())


_HOLDER = textwrap.dedent('''
    import sys
    from cinder_vmdk_backup import ownership
    record = ownership.Record(sys.argv[1], 'thing', {'name': sys.argv[2]})
    print(record.path, flush=True)
    sys.stdin.readline()
    if sys.argv[3] == 'release':
        record.release()
''')


class RecordTestCase(testtools.TestCase):

    def setUp(self):
        super(RecordTestCase, self).setUp()
        self.dir = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                'state')

    def holder(self, name, end='release'):
        process = subprocess.Popen(
            [sys.executable, '-c', _HOLDER, self.dir, name, end],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__)))))
        self.addCleanup(process.wait)
        self.addCleanup(process.stdin.close)
        path = process.stdout.readline().decode().strip()
        return process, path

    def stale(self, here=None, proc=ownership.PROC):
        return list(ownership.stale_records(self.dir, 'thing', here, proc))

    def test_record_is_private_and_says_who_owns_what(self):
        record = ownership.Record(self.dir, 'thing', {'name': 'x'})
        self.addCleanup(record.release)
        self.assertEqual(0o600, stat.S_IMODE(os.stat(record.path).st_mode))
        self.assertEqual(0o700, stat.S_IMODE(os.stat(self.dir).st_mode))
        with open(record.path) as f:
            content = json.load(f)
        self.assertEqual({'name': 'x'}, content['data'])
        self.assertEqual(ownership.current().to_dict(), content['owner'])
        record.release()
        self.assertFalse(os.path.exists(record.path))
        record.release()  # idempotent

    def test_own_live_record_is_not_stale(self):
        record = ownership.Record(self.dir, 'thing', {'name': 'x'})
        self.addCleanup(record.release)
        self.assertEqual([], self.stale())

    def test_lock_held_by_a_live_process(self):
        process, path = self.holder('held')
        self.assertTrue(os.path.exists(path))
        self.assertEqual([], self.stale())
        process.stdin.write(b'\n')
        process.stdin.flush()
        process.wait()
        self.assertFalse(os.path.exists(path))
        self.assertEqual([], self.stale())

    def test_lock_freed_by_a_killed_process(self):
        process, path = self.holder('killed', end='keep')
        process.kill()
        process.wait()
        self.assertTrue(os.path.exists(path))
        stale = self.stale()
        self.assertEqual([path], [r.path for r in stale])
        self.assertEqual({'name': 'killed'}, stale[0].data)
        self.assertEqual(process.pid, stale[0].owner.pid)
        # A second janitor (another worker starting) finds it too, through
        # the owner's death: cleaning up twice is harmless.
        again = self.stale()
        self.assertEqual([path], [r.path for r in again])
        stale[0].remove()
        again[0].remove()
        self.assertFalse(os.path.exists(path))

    def test_lock_held_but_owner_gone(self):
        # The lock is held (say an inherited descriptor), the owner it
        # names no longer runs: the owner's death proves it.
        record = ownership.Record(self.dir, 'thing', {'name': 'x'})
        self.addCleanup(record.release)
        proc = self.useFixture(FakeProc())
        here = ownership.Owner(ownership.current().host,
                               ownership.current().boot_id,
                               ownership.current().pid_ns, os.getpid(), 1)
        proc.add(os.getpid(), 999)  # "our" pid now started at another time
        stale = self.stale(here, proc.path)
        self.assertEqual([record.path], [r.path for r in stale])
        stale[0].close()

    def test_unreadable_or_foreign_files_are_left(self):
        os.makedirs(self.dir)
        for name, body in (('cvb-owner-thing-a.json', b'not json'),
                           ('cvb-owner-thing-b.json', b''),
                           ('cvb-owner-other-c.json', b'{}'),
                           ('unrelated.json', b'{}')):
            with open(os.path.join(self.dir, name), 'wb') as f:
                f.write(body)
        self.assertEqual([], self.stale())
        self.assertEqual(4, len(os.listdir(self.dir)))

    def test_missing_directory(self):
        self.assertEqual([], self.stale())

    def test_try_lock(self):
        os.makedirs(self.dir)
        path = os.path.join(self.dir, 'f')
        open(path, 'w').close()
        first = os.open(path, os.O_RDONLY)
        second = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, first)
        self.addCleanup(os.close, second)
        self.assertTrue(ownership.try_lock(first))
        self.assertFalse(ownership.try_lock(second))
        fcntl.flock(first, fcntl.LOCK_UN)
        self.assertTrue(ownership.try_lock(second))
