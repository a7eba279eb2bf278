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

import os
import sys

import ddt
from oslotest import base

from cinder_vmdk_backup.backup import filled_bytes


@ddt.ddt
class FilledTestCase(base.BaseTestCase):

    @ddt.data(0, 1, 100, filled_bytes.MIN_SIZE - 1, filled_bytes.MIN_SIZE,
              3 * filled_bytes.MIN_SIZE + 7)
    def test_filled_bytes(self, size):
        data = os.urandom(size)
        views = []

        def fill(view):
            views.append((len(view), view.format, view.readonly,
                          view == bytes(size)))
            view[:] = data

        obj = filled_bytes.filled(size, fill)
        self.assertIs(bytes, type(obj))
        self.assertEqual(data, obj)
        self.assertEqual(hash(data), hash(obj))
        # The view reads as zeros: a filler may skip runs of zeros.
        self.assertEqual([(size, 'B', False, True)], views)

    def test_each_object_is_new(self):
        size = filled_bytes.MIN_SIZE

        def fill(view):
            view[:] = bytes(size)

        first = filled_bytes.filled(size, fill)
        second = filled_bytes.filled(size, fill)
        self.assertIsNot(first, second)
        self.assertEqual(bytes(size), first)
        # Nobody else holds it: the caller's reference (and getrefcount's).
        self.assertEqual(2, sys.getrefcount(first))

    def test_a_view_kept_by_the_filler_keeps_the_memory_alive(self):
        size = filled_bytes.MIN_SIZE
        kept = []

        def fill(view):
            kept.append(view[:10])
            view[:] = b'y' * size
            raise IOError('stream broke')

        self.assertRaises(IOError, filled_bytes.filled, size, fill)
        # The view's array holds the object (freed memory could still read
        # the same, so the content alone proves nothing).
        self.assertEqual(b'y' * size, kept[0].obj.owner)
        self.assertEqual(b'y' * 10, bytes(kept[0]))

    def test_no_object_when_filling_fails(self):
        def fill(view):
            view[:10] = b'x' * 10
            raise IOError('stream broke')

        self.assertRaises(IOError, filled_bytes.filled,
                          filled_bytes.MIN_SIZE, fill)
