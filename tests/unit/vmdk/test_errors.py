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

import itertools

import ddt
from oslotest import base

from cinder_vmdk_backup import vmdk
from cinder_vmdk_backup.vmdk import errors

_KINDS = (errors.VmdkCorrupt, errors.VmdkTruncated, errors.VmdkUnsupported,
          errors.VmdkSourceChanged)


@ddt.ddt
class ErrorsTestCase(base.BaseTestCase):

    @ddt.data(*_KINDS)
    def test_offset_and_reason(self, cls):
        exc = cls('grain LBA 5 is odd', 1024)
        self.assertIsInstance(exc, errors.VmdkError)
        self.assertIsInstance(exc, ValueError)
        self.assertEqual(1024, exc.offset)
        self.assertEqual('grain LBA 5 is odd', exc.reason)
        self.assertEqual('grain LBA 5 is odd (at byte offset 1024)',
                         str(exc))

    def test_without_offset(self):
        exc = errors.VmdkError('source changed')
        self.assertIsNone(exc.offset)
        self.assertEqual('source changed', str(exc))

    def test_kinds_are_told_apart(self):
        for one, other in itertools.permutations(_KINDS, 2):
            self.assertFalse(issubclass(one, other), (one, other))

    @ddt.data(('VmdkFormatError', errors.VmdkCorrupt),
              ('VmdkTruncatedError', errors.VmdkTruncated),
              ('VmdkUnsupportedError', errors.VmdkUnsupported))
    @ddt.unpack
    def test_earlier_names_still_work(self, name, cls):
        self.assertIs(cls, getattr(errors, name))
        self.assertIs(cls, getattr(vmdk, name))
        try:
            raise cls('x')
        except getattr(errors, name) as exc:
            self.assertIsInstance(exc, cls)
