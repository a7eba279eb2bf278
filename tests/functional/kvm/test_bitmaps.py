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

"""Persistent dirty bitmaps through freeze and merge, real qemu and libvirt.

The property every cycle must keep: each 512-byte sector whose content
differs between the image frozen at one backup and the image frozen at the
next lies inside the dirty ranges the first backup's bitmap reports at the
second (a superset is allowed, a miss is a wrong backup).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import fixtures
from oslo_utils import units
import testtools

from cinder_vmdk_backup.kvm import bitmaps
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import leftovers
from cinder_vmdk_backup.kvm import qemu_img
from tests.functional.kvm import guest

SECTOR = 512
SIZE = 64 * units.Mi
CLUSTER = bitmaps.GRANULARITY


def qemu_io(path, *commands):
    args = ['qemu-io', '-f', 'qcow2']
    for command in commands:
        args += ['-c', command]
    subprocess.run(args + [path], check=True, stdout=subprocess.DEVNULL)


def raw_copy(path, dest):
    """The guest data of ``path`` now, as bytes (small images only)."""
    subprocess.run(['qemu-img', 'convert', '-U', '-O', 'raw', path, dest],
                   check=True)
    with open(dest, 'rb') as f:
        data = f.read()
    os.unlink(dest)
    return data


def changed_sectors(before, after):
    return [at for at in range(0, len(before), SECTOR)
            if before[at:at + SECTOR] != after[at:at + SECTOR]]


def uncovered(sectors, ranges):
    return [at for at in sectors
            if not any(o <= at and at + SECTOR <= o + n for o, n in ranges)]


def clusters_of(writes):
    """The bitmap clusters ``(offset, length)`` writes touch, merged."""
    touched = set()
    for offset, length in writes:
        touched.update(range(offset // CLUSTER,
                             (offset + length - 1) // CLUSTER + 1))
    out = []
    for index in sorted(touched):
        if out and out[-1][0] + out[-1][1] == index * CLUSTER:
            out[-1] = (out[-1][0], out[-1][1] + CLUSTER)
        else:
            out.append((index * CLUSTER, CLUSTER))
    return out


def nbd_servers(directory):
    """PIDs of the running qemu-nbd processes serving files in ``directory``.

    Zombies are not counted, and neither are the servers of tests running
    beside this one in another worker: they come and go at any time.
    """
    prefix = os.fsencode(os.path.join(directory, ''))
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                cmd = f.read().split(b'\0')
        except OSError:
            continue
        if (cmd and os.path.basename(cmd[0]) == b'qemu-nbd'
                and any(a.startswith(prefix) for a in cmd[1:])
                and bitmaps._alive(int(entry))):
            pids.append(int(entry))
    return sorted(pids)


class OfflineBitmapTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.dir, 'volume')
        qemu_img.create(self.path, SIZE)
        qemu_io(self.path, 'write -P 0x11 0 4M', 'write -P 0x12 40M 1M')
        self.servers = nbd_servers(self.dir)

    def tearDown(self):
        super().tearDown()
        self.assertEqual(self.servers, nbd_servers(self.dir))

    def _scratch(self):
        return os.path.join(self.dir, 'scratch.raw')

    def test_cycle_marks_exactly_the_written_clusters(self):
        first = bitmaps.name_for('b1')
        self.assertEqual('cvb-b1', first)
        # Written while frozen (into the overlay), then between backups
        # (straight into the image), then during the next freeze (must
        # not count for the first bitmap's answer).
        in_overlay = [(4 * units.Mi - 512, 1024),
                      (10 * units.Mi, 3 * units.Mi),
                      (SIZE - 512, 512), (33 * units.Mi + 7, 1)]
        between = [(20 * units.Mi + 65536, 65536)]
        with freezer.frozen(self.path, None, bitmap=first) as frozen:
            self.assertEqual(first, frozen.bitmap)
            self.assertFalse(frozen.online)
            before = raw_copy(frozen.read_path, self._scratch())
            qemu_io(self.path, *['write -P 0x5a %d %d' % w
                                 for w in in_overlay])
        self.assertEqual([(first, ['auto'])], [
            (b['name'], b['flags']) for b in qemu_img.bitmaps(self.path)])
        qemu_io(self.path, *['write -P 0x6b %d %d' % w for w in between])

        second = bitmaps.name_for('b2')
        with freezer.frozen(self.path, None, bitmap=second) as frozen:
            qemu_io(self.path, 'write -P 0x7c 50M 64k')
            ranges = bitmaps.dirty_ranges(frozen.read_path, first, SIZE)
            after = raw_copy(frozen.read_path, self._scratch())
            self.assertEqual([], bitmaps.dirty_ranges(frozen.read_path,
                                                      second, SIZE))
        changed = changed_sectors(before, after)
        self.assertEqual(3 * units.Mi // SECTOR + 2 + 1 + 1 + 128,
                         len(changed))
        self.assertEqual([], uncovered(changed, ranges))
        self.assertEqual(clusters_of(in_overlay + between), ranges)
        # The write during the second freeze is the second bitmap's.
        self.assertEqual([(50 * units.Mi, 65536)],
                         bitmaps.dirty_ranges(self.path, second, SIZE))
        self.assertEqual(clusters_of(in_overlay + between + [
            (50 * units.Mi, 65536)]), bitmaps.dirty_ranges(
                self.path, first, SIZE))

        self.assertEqual([first, second], bitmaps.list_ours(self.path))
        self.assertEqual([first], bitmaps.prune(self.path, [second]))
        self.assertEqual([second], bitmaps.list_ours(self.path))
        self.assertEqual([], bitmaps.prune(self.path, [second]))
        subprocess.run(['qemu-img', 'check', '-q', self.path], check=True)

    def test_missing_bitmap(self):
        exc = self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                                self.path, 'cvb-nope', SIZE)
        self.assertIn('no dirty bitmap cvb-nope', exc.reason)

    def test_too_fragmented_bitmap_stops_its_readers(self):
        bitmaps.add(self.path, 'cvb-1')
        qemu_io(self.path, 'write 0 64k', 'write 1M 64k', 'write 2M 64k')
        self.useFixture(fixtures.MockPatchObject(bitmaps, 'MAX_RANGES', 2))
        exc = self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                                self.path, 'cvb-1', SIZE)
        self.assertIn('more than 2', exc.reason)
        self.assertEqual([], [n for n in os.listdir(os.path.join(
            self.dir, '.cvb-locks')) if n.startswith('cvb-nbd-')])
        # (tearDown: no qemu-nbd left running)

    def test_prune_leaves_bitmaps_of_others(self):
        subprocess.run(['qemu-img', 'bitmap', '--add', self.path, 'theirs'],
                       check=True)
        bitmaps.add(self.path, 'cvb-1')
        bitmaps.add(self.path, 'cvb-2')
        self.assertEqual(['cvb-1', 'cvb-2'], bitmaps.list_ours(self.path))
        self.assertEqual(['cvb-1', 'cvb-2'], bitmaps.prune(self.path, []))
        self.assertEqual(['theirs'], [b['name'] for b in
                                      qemu_img.bitmaps(self.path)])

    def _make_inconsistent(self, name):
        """Load the bitmap for writing in a qemu-nbd, kill it -9."""
        bitmaps.add(self.path, name)
        sock = os.path.join(self.dir, 'rw.sock')
        pidfile = os.path.join(self.dir, 'rw.pid')
        proc = subprocess.Popen(['qemu-nbd', '-f', 'qcow2', '-k', sock,
                                 '--pid-file=%s' % pidfile, self.path])
        deadline = time.monotonic() + 30
        while not os.path.exists(pidfile):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.unlink(pidfile)
        flags = [b['flags'] for b in qemu_img.bitmaps(self.path)
                 if b['name'] == name]
        self.assertEqual([['in-use', 'auto']], flags)

    def test_inconsistent_bitmap_is_unusable(self):
        self._make_inconsistent('cvb-crashed')
        exc = self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                                self.path, 'cvb-crashed', SIZE)
        self.assertIn('inconsistent', exc.reason)
        # A freeze of the image with a new bitmap still works, and the
        # inconsistent one can be pruned.
        with freezer.frozen(self.path, None, bitmap='cvb-next') as frozen:
            self.assertEqual('cvb-next', frozen.bitmap)
        self.assertEqual(['cvb-crashed'], bitmaps.prune(self.path,
                                                        ['cvb-next']))
        self.assertEqual([], bitmaps.dirty_ranges(self.path, 'cvb-next',
                                                  SIZE))

    def test_resize(self):
        bitmaps.add(self.path, 'cvb-kept')
        qemu_io(self.path, 'write 1M 64k')
        qemu_img.resize(self.path, 2 * SIZE)
        exc = self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                                self.path, 'cvb-kept', SIZE)
        self.assertIn('resized', exc.reason)
        # Still a valid bitmap of the new size (the grown area is clean,
        # which is why a size change is a doubt for the caller).
        self.assertEqual([(units.Mi, 65536)], bitmaps.dirty_ranges(
            self.path, 'cvb-kept', 2 * SIZE))

    def test_resize_with_an_inconsistent_bitmap_of_ours(self):
        self._make_inconsistent('cvb-crashed')
        qemu_img.resize(self.path, 2 * SIZE)
        self.assertEqual(2 * SIZE, qemu_img.virtual_size(self.path))
        self.assertEqual([], bitmaps.list_ours(self.path))

    def test_leftover_nbd_server_of_a_killed_process_is_stopped(self):
        bitmaps.add(self.path, 'cvb-1')
        script = textwrap.dedent('''
            import os, signal, sys
            from cinder_vmdk_backup.kvm import bitmaps
            with bitmaps._nbd_server(sys.argv[1], 'cvb-1'):
                os.kill(os.getpid(), signal.SIGKILL)
            ''')
        proc = subprocess.run([sys.executable, '-c', script, self.path])
        self.assertEqual(-signal.SIGKILL, proc.returncode)
        left = [p for p in nbd_servers(self.dir) if p not in self.servers]
        self.assertEqual(1, len(left))
        # One in use by a live process (this one) is not touched.
        with bitmaps._nbd_server(self.path, 'cvb-1') as (directory, _sock):
            done, failed = leftovers.clean(self.dir)
            self.assertEqual([], failed)
            self.assertEqual(1, len(done), done)
            self.assertIn('qemu-nbd %d' % left[0], done[0])
            self.assertTrue(os.path.isdir(directory))
            self.assertEqual(1, len([p for p in nbd_servers(self.dir)
                                     if p not in self.servers]))
        self.assertEqual(self.servers, nbd_servers(self.dir))
        self.assertEqual([], [n for n in os.listdir(os.path.join(
            self.dir, '.cvb-locks')) if n.startswith('cvb-nbd-')])


class _OnlineBase(testtools.TestCase):
    """A TCG guest writes without pause to its disks."""

    RING = 32768            # sectors: 16 MiB of records
    DISKS = 1

    def setUp(self):
        super().setUp()
        self.libvirt = self.useFixture(guest.LibvirtFixture())
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.paths = [os.path.join(self.dir, 'volume%d' % i)
                      for i in range(self.DISKS)]
        self.path = self.paths[0]
        for path in self.paths:
            qemu_img.create(path, SIZE)
            qemu_io(path, 'write -P 0x33 40M 2M')
        boot = os.path.join(self.dir, 'boot.bin')
        with open(boot, 'wb') as f:
            f.write(guest.boot_sector(disks=self.DISKS, ring=self.RING,
                                      paced=False))
        qemu_io(self.path, 'write -s %s 0 512' % boot)
        self.domain = self.libvirt.start_guest(self.paths, kvm=False)
        self.conn = self.libvirt.conn
        self._wait_for_records()

    def _wait_for_records(self, timeout=120):
        deadline = time.monotonic() + timeout
        while max(guest.records(self._head(), ring=self.RING)) < 64:
            self.assertLess(time.monotonic(), deadline,
                            'the guest wrote nothing')
            time.sleep(0.5)

    def _head(self):
        out = os.path.join(self.dir, 'head.raw')
        length = (self.RING + 1) * SECTOR
        with open(out, 'wb') as f:
            f.truncate(length)
        qemu_img.convert_window(self.path, 'qcow2', 0, length, out)
        with open(out, 'rb') as f:
            data = f.read()
        os.unlink(out)
        return data

    def _freeze(self, name):
        result = freezer.freeze_all([self.path], self.conn,
                                    commit_timeout=60,
                                    bitmaps={self.path: name})[self.path]
        if isinstance(result, Exception):
            raise result
        self.assertTrue(result.online)
        self.assertEqual(name, result.bitmap)
        return result


class OnlineBitmapTestCase(_OnlineBase):
    """Two backup cycles of one disk while the guest writes."""

    def test_cycle_keeps_every_write_after_the_point_in_time(self):
        servers = nbd_servers(self.dir)
        scratch = os.path.join(self.dir, 'scratch.raw')
        frozen = self._freeze('cvb-1')
        try:
            before = raw_copy(frozen.read_path, scratch)
            time.sleep(1.5)      # the guest writes the overlay
        finally:
            frozen.merge()
        self.assertEqual([[self.path]], [c for _t, c in domains.disk_chains(
            self.domain.XMLDesc(0))])
        time.sleep(1.5)          # the guest writes the image itself

        frozen = self._freeze('cvb-2')
        try:
            time.sleep(0.5)
            # The domain runs on an overlay; the frozen image is its
            # read-only backing file, read beside it.
            ranges = bitmaps.dirty_ranges(frozen.read_path, 'cvb-1', SIZE)
            after = raw_copy(frozen.read_path, scratch)
        finally:
            frozen.merge()
        changed = changed_sectors(before, after)
        self.assertGreater(len(changed), 2 * CLUSTER // SECTOR)
        self.assertEqual([], uncovered(changed, ranges))
        dirty = sum(n for _o, n in ranges)
        # Only the ring is written: the rest (the data at 40M) is clean.
        self.assertLessEqual(dirty, (self.RING + 1) * SECTOR + CLUSTER)
        self.assertTrue(all(o + n <= 40 * units.Mi for o, n in ranges))
        self.assertEqual(servers, nbd_servers(self.dir))

        # Online pruning goes through the monitor.
        self.assertEqual(['cvb-1', 'cvb-2'], bitmaps.list_ours(self.path))
        self.assertEqual(['cvb-1'], bitmaps.prune(self.path, ['cvb-2'],
                                                  self.conn))
        self.assertEqual(['cvb-2'], [b['name'] for b in domains.node_bitmaps(
            self.domain, self.path)])
        self.domain.destroyFlags(domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        self.assertEqual([('cvb-2', ['auto'])], [
            (b['name'], b['flags']) for b in qemu_img.bitmaps(self.path)])
        # After the guest stopped: what it wrote after the second point
        # in time is in cvb-2, offline too.
        final = raw_copy(self.path, scratch)
        self.assertEqual([], uncovered(changed_sectors(after, final),
                                       bitmaps.dirty_ranges(self.path,
                                                            'cvb-2', SIZE)))

    def test_failed_snapshot_removes_the_new_bitmap(self):
        self.useFixture(fixtures.MockPatchObject(
            domains.libvirt.virDomain, 'snapshotCreateXML', autospec=True,
            side_effect=domains.libvirt.libvirtError('injected')))
        result = freezer.freeze_all([self.path], self.conn,
                                    bitmaps={self.path: 'cvb-x'})[self.path]
        self.assertIsInstance(result, Exception)
        self.assertEqual([], domains.node_bitmaps(self.domain, self.path))

    def test_killed_qemu_leaves_an_inconsistent_bitmap(self):
        frozen = self._freeze('cvb-1')
        frozen.merge()
        self.assertEqual([('cvb-1', ['in-use', 'auto'])], [
            (b['name'], b['flags']) for b in qemu_img.bitmaps(self.path)])
        # A host crash: QEMU dies without storing the bitmap back.
        with open('/run/libvirt/qemu/%s.pid' % self.domain.name()) as f:
            os.kill(int(f.read().strip()), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.domain.UUIDString() in [
                d.UUIDString() for d in self.conn.listAllDomains(
                    domains.libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        exc = self.assertRaises(bitmaps.BitmapUnusable, bitmaps.dirty_ranges,
                                self.path, 'cvb-1', SIZE)
        self.assertIn('inconsistent', exc.reason)
        self.assertEqual(['cvb-1'], bitmaps.prune(self.path, [], self.conn))

    def test_overlay_left_by_a_killed_backup_is_merged_with_the_bitmap(self):
        script = textwrap.dedent('''
            import os, signal, sys
            from cinder_vmdk_backup.kvm import domains, freezer
            conn = domains.connect(sys.argv[1])
            frozen = freezer.freeze_all([sys.argv[2]], conn,
                                        bitmaps={sys.argv[2]: 'cvb-1'})
            assert frozen[sys.argv[2]].bitmap == 'cvb-1', frozen
            os.kill(os.getpid(), signal.SIGKILL)
            ''')
        proc = subprocess.run([sys.executable, '-c', script,
                               guest.LibvirtFixture.URI, self.path])
        self.assertEqual(-signal.SIGKILL, proc.returncode)
        scratch = os.path.join(self.dir, 'scratch.raw')
        before = raw_copy(self.path, scratch)
        time.sleep(1.5)
        done, failed = leftovers.clean(self.dir, self.conn,
                                       commit_timeout=60)
        self.assertEqual(([], 1), (failed, len(done)), done)
        time.sleep(1)
        frozen = self._freeze('cvb-2')
        try:
            ranges = bitmaps.dirty_ranges(frozen.read_path, 'cvb-1', SIZE)
            after = raw_copy(frozen.read_path, scratch)
        finally:
            frozen.merge()
        changed = changed_sectors(before, after)
        self.assertGreater(len(changed), 2 * CLUSTER // SECTOR)
        self.assertEqual([], uncovered(changed, ranges))


class OnlineGroupBitmapTestCase(_OnlineBase):
    """Two disks of one domain in one atomic snapshot, a bitmap each."""

    DISKS = 2

    def test_cycle_keeps_every_write_after_the_point_in_time(self):
        scratch = os.path.join(self.dir, 'scratch.raw')
        names = {p: 'cvb-%d' % i for i, p in enumerate(self.paths)}
        frozen = freezer.freeze_all(self.paths, self.conn, commit_timeout=60,
                                    all_or_nothing=True, bitmaps=names)
        try:
            self.assertEqual(names, {p: f.bitmap for p, f in frozen.items()})
            before = {p: raw_copy(f.read_path, scratch)
                      for p, f in frozen.items()}
            time.sleep(1.5)
        finally:
            for result in frozen.values():
                result.merge()
        time.sleep(1.5)
        frozen = freezer.freeze_all(self.paths, self.conn, commit_timeout=60,
                                    all_or_nothing=True)
        try:
            for path, result in frozen.items():
                ranges = bitmaps.dirty_ranges(result.read_path, names[path],
                                              SIZE)
                changed = changed_sectors(before[path], raw_copy(
                    result.read_path, scratch))
                self.assertGreater(len(changed), 2 * CLUSTER // SECTOR)
                self.assertEqual([], uncovered(changed, ranges))
                self.assertTrue(all(o + n <= 40 * units.Mi
                                    for o, n in ranges))
        finally:
            for result in frozen.values():
                result.merge()
