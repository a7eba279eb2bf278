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

"""The local <-> domain path map and where it is used (libvirt mocked)."""

import hashlib
import os
from unittest import mock

import fixtures
import libvirt
import testtools

from cinder_vmdk_backup.kvm import bitmaps
from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import leftovers
from cinder_vmdk_backup.kvm import naming
from cinder_vmdk_backup.kvm import offline
from cinder_vmdk_backup.kvm import paths
from cinder_vmdk_backup.kvm import qemu_img

EXPORT = '127.0.0.1:/srv/qcow2'
BASE = '/var/lib/nova/mnt'
MOUNT = os.path.join(BASE, hashlib.md5(EXPORT.encode()).hexdigest())


def _conf(kind='nfs', export=EXPORT, local='/srv/qcow2'):
    conf = mock.Mock(spec=['qcow2_volumes_dir', 'qcow2_connection_type',
                           'qcow2_nfs_export', 'qcow2_nfs_mount_point_base'])
    conf.qcow2_volumes_dir = local
    conf.qcow2_connection_type = kind
    conf.qcow2_nfs_export = export
    conf.qcow2_nfs_mount_point_base = BASE
    return conf


def _disk(dev, *chain):
    inner = ''
    for path in reversed(chain[1:]):
        inner = ("<backingStore type='file'><source file='%s'/>%s"
                 "</backingStore>" % (path, inner))
    return ("<disk type='file' device='disk'><source file='%s'/>%s"
            "<target dev='%s'/></disk>" % (chain[0], inner, dev))


def _domain(name, *disks, active=True):
    domain = mock.create_autospec(libvirt.virDomain, instance=True)
    domain.name.return_value = name
    domain.UUIDString.return_value = name + '-uuid'
    domain.isActive.return_value = int(active)
    domain.XMLDesc.return_value = ('<domain><name>%s</name><devices>%s'
                                   '</devices></domain>'
                                   % (name, ''.join(disks)))
    return domain


class PathMapTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.map = paths.PathMap.from_configuration(_conf())

    def test_mount_point_is_novas(self):
        # nova.utils.get_hash_str: md5 hex of the export, UTF-8.
        self.assertEqual(MOUNT, paths.nova_mount_point(BASE, EXPORT))
        self.assertEqual(MOUNT, self.map.mount_dir)
        self.assertEqual(32, len(os.path.basename(MOUNT)))
        self.assertFalse(self.map.identity)

    def test_to_local(self):
        self.assertEqual('/srv/qcow2/volume-1',
                         self.map.to_local(MOUNT + '/volume-1'))
        self.assertEqual('/srv/qcow2/volume-1',
                         self.map.to_local(MOUNT + '//./volume-1'))
        self.assertEqual('/srv/qcow2/volume-1',
                         self.map.to_local('/srv/qcow2/volume-1'))

    def test_another_exports_mount_point_is_not_ours(self):
        other = paths.nova_mount_point(BASE, '127.0.0.1:/srv/other')
        self.assertEqual(other + '/volume-1',
                         self.map.to_local(other + '/volume-1'))
        self.assertFalse(self.map.same(other + '/volume-1',
                                       '/srv/qcow2/volume-1'))
        # Nor a directory whose name only starts like the mount point.
        self.assertFalse(self.map.same(MOUNT + 'x/volume-1',
                                       '/srv/qcow2/volume-1'))

    def test_same_matches_either_view_never_the_name_alone(self):
        self.assertTrue(self.map.same(MOUNT + '/volume-1',
                                      '/srv/qcow2/volume-1'))
        self.assertTrue(self.map.same('/srv/qcow2/volume-1',
                                      '/srv/qcow2/volume-1'))
        self.assertFalse(self.map.same('/elsewhere/volume-1',
                                       '/srv/qcow2/volume-1'))
        self.assertFalse(self.map.same(MOUNT + '/volume-2',
                                       '/srv/qcow2/volume-1'))

    def test_seen_as_follows_the_view_of_the_disk(self):
        overlay = '/srv/qcow2/volume-1.cvb-overlay-0123456789abcdef'
        self.assertEqual(MOUNT + '/volume-1.cvb-overlay-0123456789abcdef',
                         self.map.seen_as(overlay, MOUNT + '/volume-1'))
        self.assertEqual(overlay,
                         self.map.seen_as(overlay, '/srv/qcow2/volume-1'))
        # Not below the volumes directory: never put under the mount.
        self.assertEqual('/tmp/x', self.map.seen_as('/tmp/x',
                                                    MOUNT + '/volume-1'))
        self.assertIsNone(self.map.to_mount('/tmp/x'))

    def test_symlinked_mount_base_is_followed(self):
        root = self.useFixture(fixtures.TempDir()).path
        local = os.path.join(root, 'volumes')
        real_base = os.path.join(root, 'state', 'mnt')
        os.makedirs(local)
        os.makedirs(real_base)
        os.symlink(os.path.join(root, 'state'), os.path.join(root, 'nova'))
        base = os.path.join(root, 'nova', 'mnt')
        mount = paths.nova_mount_point(base, EXPORT)
        os.makedirs(mount)
        pmap = paths.PathMap(local, mount)
        resolved = os.path.join(real_base, os.path.basename(mount), 'v')
        self.assertEqual(os.path.join(local, 'v'), pmap.to_local(resolved))
        self.assertEqual(os.path.join(local, 'v'),
                         pmap.to_local(os.path.join(mount, 'v')))

    def test_identity_for_local_and_gpfs_and_nfs_without_export(self):
        for conf in (_conf('local'), _conf('gpfs'), _conf('nfs', None)):
            pmap = paths.PathMap.from_configuration(conf)
            self.assertTrue(pmap.identity)
            self.assertEqual('/srv/qcow2/v',
                             pmap.seen_as('/srv/qcow2/v', MOUNT + '/v'))
            self.assertEqual(MOUNT + '/v', pmap.to_local(MOUNT + '/v'))
        self.assertTrue(paths.IDENTITY.identity)
        self.assertEqual('/a/b', paths.IDENTITY.to_mount('/a/b'))


class UsersTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.map = paths.PathMap('/srv/qcow2', MOUNT)
        self.conn = mock.create_autospec(libvirt.virConnect, instance=True)
        self.local = '/srv/qcow2/volume-1'

    def test_domain_on_the_mount_point_uses_the_volume(self):
        overlay = MOUNT + '/volume-1.cvb-overlay-0123456789abcdef'
        domain = _domain('instance-1', _disk('vda', overlay,
                                             MOUNT + '/volume-1'))
        self.conn.listAllDomains.return_value = [domain]
        found = domains.users(self.conn, [self.local], path_map=self.map)
        (use,) = found[self.local]
        self.assertEqual([self.map.to_local(overlay), self.local], use.chain)
        self.assertEqual([overlay, MOUNT + '/volume-1'], use.seen_chain)
        self.assertEqual(MOUNT + '/volume-1', use.seen(self.local))
        # Without the map the mount point is somebody else's file.
        self.assertEqual({}, domains.users(self.conn, [self.local]))

    def test_same_name_under_another_directory_is_not_ours(self):
        other = paths.nova_mount_point(BASE, 'elsewhere:/x')
        self.conn.listAllDomains.return_value = [
            _domain('i-2', _disk('vda', other + '/volume-1')),
            _domain('i-3', _disk('vda', '/other/volume-1'))]
        self.assertEqual({}, domains.users(self.conn, [self.local],
                                           path_map=self.map))

    def test_domain_on_the_local_path_still_matches(self):
        self.conn.listAllDomains.return_value = [
            _domain('i-1', _disk('vdb', self.local))]
        (use,) = domains.users(self.conn, [self.local],
                               path_map=self.map)[self.local]
        self.assertEqual('vdb', use.target)
        self.assertEqual(self.local + '.x', use.seen(self.local + '.x'))

    def test_inactive_domains_when_asked(self):
        self.conn.listAllDomains.return_value = []
        domains.users(self.conn, [self.local], active_only=False,
                      path_map=self.map)
        self.conn.listAllDomains.assert_called_once_with(0)


class RetargetTestCase(testtools.TestCase):

    def test_the_new_path_is_given_in_the_view_of_the_old(self):
        pmap = paths.PathMap('/srv/qcow2', MOUNT)
        conn = mock.create_autospec(libvirt.virConnect, instance=True)
        overlay = '/srv/qcow2/volume-1.cvb-overlay-0123456789abcdef'
        seen = _domain('i-1', _disk('vda', MOUNT + '/' + os.path.basename(
            overlay), MOUNT + '/volume-1'), active=False)
        local = _domain('i-2', _disk('vda', overlay), active=False)
        other = _domain('i-3', _disk('vda', '/other/' + os.path.basename(
            overlay)), active=False)
        conn.listAllDomains.return_value = [seen, local, other]
        self.assertEqual(['i-1', 'i-2'], domains.retarget_inactive(
            conn, overlay, '/srv/qcow2/volume-1', path_map=pmap))
        defined = [c[0][0] for c in conn.defineXML.call_args_list]
        self.assertEqual(2, len(defined))
        self.assertIn("<source file=\"%s/volume-1\" />" % MOUNT, defined[0])
        self.assertNotIn('backingStore', defined[0])
        self.assertIn('<source file="/srv/qcow2/volume-1" />', defined[1])


class _MountPointCase(testtools.TestCase):
    """A volumes directory and the mount point the domains see it at."""

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.mount = paths.nova_mount_point('/nova/mnt', EXPORT)
        self.map = paths.PathMap(self.dir, self.mount)


class FreezeOnMountPointTestCase(_MountPointCase):
    """The online freeze names the overlay as the domain sees its disk."""

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.dir, 'volume-1')
        open(self.path, 'w').close()
        self.conn = mock.create_autospec(libvirt.virConnect, instance=True)
        self.domain = _domain('i-1', _disk('sda', self.mount + '/volume-1'))
        self.conn.listAllDomains.return_value = [self.domain]
        self.snapshot = self.useFixture(fixtures.MockPatchObject(
            domains, 'snapshot_disks', autospec=True)).mock
        self.snapshot.return_value = domains.Snapshot(False, 'x', 0.1, 1e9)
        self.add = self.useFixture(fixtures.MockPatchObject(
            domains, 'add_bitmap', autospec=True)).mock
        self.commit = self.useFixture(fixtures.MockPatchObject(
            domains, 'active_commit', autospec=True)).mock
        self.offline = self.useFixture(fixtures.MockPatchObject(
            offline, 'freeze', autospec=True)).mock

    def test_overlay_and_bitmap_node_in_the_domains_view(self):
        result = freezer.freeze_all([self.path], self.conn,
                                    bitmaps={self.path: 'cvb-1'},
                                    path_map=self.map)[self.path]
        self.assertTrue(result.online)
        self.offline.assert_not_called()
        (overlays,) = [c[0][1] for c in self.snapshot.call_args_list]
        name = os.path.basename(result.overlay_path)
        self.assertEqual({'sda': os.path.join(self.mount, name)}, overlays)
        # Read at the local path; the overlay is unlinked there too.
        self.assertEqual(self.path, result.read_path)
        self.assertEqual(self.dir, os.path.dirname(result.overlay_path))
        self.add.assert_called_once_with(self.domain, self.mount +
                                         '/volume-1', 'cvb-1', 65536)
        open(result.overlay_path, 'w').close()
        result.merge()
        self.commit.assert_called_once_with(self.domain, 'sda',
                                            result.overlay_path,
                                            timeout=600.0)
        self.assertFalse(os.path.exists(result.overlay_path))

    def test_without_the_map_the_volume_is_frozen_offline(self):
        self.offline.return_value = self.path + '.frozen'
        result = freezer.freeze_all([self.path], self.conn)[self.path]
        self.assertFalse(result.online)
        self.snapshot.assert_not_called()
        result._lock.close()


class LeftoverOnMountPointTestCase(_MountPointCase):
    """A killed online freeze's overlay, backed by the mount-point path."""

    def setUp(self):
        super().setUp()
        self.image = os.path.join(self.dir, 'volume-1')
        self.overlay = naming.transient_path(self.image, naming.OVERLAY,
                                             '0123456789abcdef')
        for path in (self.image, self.overlay):
            open(path, 'w').close()
        self.conn = mock.create_autospec(libvirt.virConnect, instance=True)
        self.backing = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'backing_file', autospec=True,
            return_value=self.mount + '/volume-1')).mock
        self.rebase = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'rebase_unsafe', autospec=True)).mock
        self.qemu_commit = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'commit', autospec=True)).mock
        self.active_commit = self.useFixture(fixtures.MockPatchObject(
            domains, 'active_commit', autospec=True)).mock
        self.useFixture(fixtures.MockPatchObject(
            leftovers.bitmaps, 'stop_leftover_servers', autospec=True,
            return_value=[]))
        self.seen_overlay = os.path.join(self.mount,
                                         os.path.basename(self.overlay))

    def test_running_domain_commits_it(self):
        domain = _domain('i-1', _disk('vda', self.seen_overlay,
                                      self.mount + '/volume-1'))
        self.conn.listAllDomains.return_value = [domain]
        done, failed = leftovers.clean(self.dir, self.conn,
                                       path_map=self.map)
        self.assertEqual([], failed)
        self.active_commit.assert_called_once_with(
            domain, 'vda', self.overlay, timeout=600.0)
        self.rebase.assert_not_called()
        self.qemu_commit.assert_not_called()
        self.assertIn('committed by domain i-1', done[0])
        self.assertFalse(os.path.exists(self.overlay))

    def test_stopped_domain_offline_commit_and_pointed_back(self):
        stopped = _domain('i-1', _disk('vda', self.seen_overlay),
                          active=False)

        def listed(flags):
            if flags == libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE:
                return [stopped]
            return []
        self.conn.listAllDomains.side_effect = listed
        done, failed = leftovers.clean(self.dir, self.conn,
                                       path_map=self.map)
        self.assertEqual([], failed)
        # The mount may be gone: the local name, relative, first.
        self.rebase.assert_called_once_with(self.overlay, 'volume-1')
        self.qemu_commit.assert_called_once_with(self.overlay)
        (xml_text,) = [c[0][0] for c in self.conn.defineXML.call_args_list]
        self.assertIn('<source file="%s/volume-1" />' % self.mount, xml_text)
        self.assertIn('pointed back', done[0])
        self.assertFalse(os.path.exists(self.overlay))

    def test_without_the_map_it_is_left_alone(self):
        self.conn.listAllDomains.return_value = []
        done, failed = leftovers.clean(self.dir, self.conn)
        self.assertEqual([], done)
        self.assertIn('is not an overlay of', failed[0])
        self.assertTrue(os.path.exists(self.overlay))
        self.qemu_commit.assert_not_called()

    def test_failed_commit_keeps_the_overlay(self):
        self.conn.listAllDomains.return_value = []
        self.qemu_commit.side_effect = errors.QemuImgError('no space')
        done, failed = leftovers.clean(self.dir, self.conn,
                                       path_map=self.map)
        self.assertIn('Merging', failed[0])
        self.assertTrue(os.path.exists(self.overlay))
        self.conn.defineXML.assert_not_called()


class BitmapsOnMountPointTestCase(_MountPointCase):
    """Bitmaps of a running image go to the node of the path QEMU has."""

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.dir, 'volume-1')
        self.conn = mock.create_autospec(libvirt.virConnect, instance=True)
        self.domain = _domain('i-1', _disk('vda', self.mount + '/volume-1'))
        self.conn.listAllDomains.return_value = [self.domain]
        self.node_bitmaps = self.useFixture(fixtures.MockPatchObject(
            domains, 'node_bitmaps', autospec=True,
            return_value=[{'name': 'cvb-1'}, {'name': 'cvb-2'}])).mock
        self.qmp_remove = self.useFixture(fixtures.MockPatchObject(
            domains, 'remove_bitmap', autospec=True)).mock
        self.qmp_add = self.useFixture(fixtures.MockPatchObject(
            domains, 'add_bitmap', autospec=True)).mock
        self.qemu_remove = self.useFixture(fixtures.MockPatchObject(
            qemu_img, 'bitmap_remove', autospec=True)).mock

    def test_prune_through_the_monitor_at_the_mount_point(self):
        self.assertEqual(['cvb-1'], bitmaps.prune(
            self.path, ['cvb-2'], self.conn, path_map=self.map))
        seen = self.mount + '/volume-1'
        self.node_bitmaps.assert_called_once_with(self.domain, seen)
        self.qmp_remove.assert_called_once_with(self.domain, seen, 'cvb-1')
        self.qemu_remove.assert_not_called()

    def test_add_through_the_monitor_at_the_mount_point(self):
        bitmaps.add(self.path, 'cvb-3', self.conn, path_map=self.map)
        self.qmp_add.assert_called_once_with(
            self.domain, self.mount + '/volume-1', 'cvb-3', 65536)
