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

"""Synthetic fulls against Cinder's real posix driver, DB and managers.

See :mod:`.chains` for the set-up; every backup left after a pruning is
restored with Cinder's stock ``restore()`` and compared byte for byte with
the disk as it was when that backup was taken.
"""

import os

from oslo_utils import units

from cinder import exception
from cinder import objects
from cinder.objects import fields

from cinder_vmdk_backup.plans import retention
from cinder_vmdk_backup.plans import synthetic
from tests.functional.plans import chains


class SyntheticFullTestCase(chains.ChainTestCase):

    def test_prune_keeps_every_later_backup_restorable(self):
        f0, i1, i2, i3 = self._chain()
        i1_metadata = self.service._read_metadata(i1)
        result = synthetic.prune(
            self.ctxt, self.service, i1.id,
            lambda ids: retention.delete_backups(
                self.ctxt, ids, backup_api=self.backup_api))
        self.assertEqual([f0.id, i1.id], result['chain'])
        self.assertEqual([i2.id], result['reparented'])
        self.assertEqual([i1.id, f0.id], result['deleted'])
        new = objects.Backup.get_by_id(self.ctxt, result['id'])
        self.assertEqual(fields.BackupStatus.AVAILABLE, new.status)
        self.assertIsNone(new.parent_id)
        self.assertEqual(1, new.num_dependent_backups)
        self.assertEqual(i1.data_timestamp, new.data_timestamp)
        self.assertEqual(i1.id, new.metadata[synthetic.SYNTHETIC_OF_KEY])
        # The chain's volume metadata and digest block size go with it.
        new_metadata = self.service._read_metadata(new)
        self.assertIsNotNone(i1_metadata['volume_meta'])
        self.assertEqual(i1_metadata['volume_meta'],
                         new_metadata['volume_meta'])
        self.assertIsNone(new_metadata['parent_id'])
        self.assertEqual(32 * units.Ki, self.service._read_sha256file(
            new)['chunk_size'])
        i2 = objects.Backup.get_by_id(self.ctxt, i2.id)
        self.assertEqual(new.id, i2.parent_id)
        for gone in (f0, i1):
            self.assertRaises(exception.BackupNotFound,
                              objects.Backup.get_by_id, self.ctxt, gone.id)
        # Their objects are gone from the store too.
        left = os.listdir(os.path.join(self.posix_dir, 'plans'))
        self.assertEqual([], [n for n in left if f0.id in n or i1.id in n])
        # Every backup left restores byte for byte through stock restore,
        # to a new volume and over an existing one.
        self.assertEqual(self.expected[i1.id],
                         self._restore(new.id, existing=True))
        self.assertEqual(self.expected[i2.id], self._restore(i2.id))
        self.assertEqual(self.expected[i3.id],
                         self._restore(i3.id, existing=True))
        # Cinder's own incremental builds on the newest backup (I3, not the
        # synthetic full of the same data_timestamp as I1), and restores.
        self._write(900 * units.Mi, chains.pattern(b'h', units.Mi))
        i4 = self._backup(i3, stock=True)
        self.assertEqual(i3.id, i4.parent_id)
        self.assertEqual(self.expected[i4.id], self._restore(i4.id))

    def test_corrupt_chain_leaves_nothing_behind(self):
        f0, i1, i2, _i3 = self._chain()
        # Four bytes flipped in an object of I1: the md5 check stops it.
        container = os.path.join(self.posix_dir, 'plans')
        name = sorted(n for n in os.listdir(container)
                      if i1.id in n and n[-5:].isdigit())[0]
        path = os.path.join(container, name)
        with open(path, 'r+b') as f:
            f.seek(os.path.getsize(path) // 2)
            data = f.read(4)
            f.seek(-4, os.SEEK_CUR)
            f.write(bytes(b ^ 0xFF for b in data))
        before = {n: os.path.getmtime(os.path.join(container, n))
                  for n in os.listdir(container)}
        count = len(objects.BackupList.get_all(self.ctxt))
        self.assertRaises(exception.InvalidBackup, synthetic.synthesize,
                          self.ctxt, self.service, i1.id)
        after = {n: os.path.getmtime(os.path.join(container, n))
                 for n in os.listdir(container)}
        self.assertEqual(before, after)
        self.assertEqual(count, len(objects.BackupList.get_all(self.ctxt)))
        self.assertEqual(i1.id, objects.Backup.get_by_id(
            self.ctxt, i2.id).parent_id)

    def test_refusals(self):
        f0 = self._backup()
        e = self.assertRaises(exception.InvalidBackup, synthetic.synthesize,
                              self.ctxt, self.service, f0.id)
        self.assertIn('full backup already', str(e))
        self._write(0, chains.pattern(b'x', units.Mi))
        i1 = self._backup(f0)
        self._write(0, chains.pattern(b'y', units.Mi))
        i2 = self._backup(i1)
        i2.status = fields.BackupStatus.RESTORING
        i2.save()
        e = self.assertRaises(exception.InvalidBackup, synthetic.synthesize,
                              self.ctxt, self.service, i1.id)
        self.assertIn('restoring', str(e))
