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

import fixtures
from oslotest import base

from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import status_checks


class Reloadable(object):
    """Reloads as Cinder's persistent objects do: the whole instance dict.

    ``database`` stands for the row; ``reloads`` counts the round trips.
    """

    def __init__(self, database):
        self.database = database
        self.status = database['status']

    def refresh(self):
        database = vars(self)['database']
        database['reloads'] = database.get('reloads', 0) + 1
        if database.get('fail'):
            raise IOError('database gone')
        my_data = vars(self)
        my_data.clear()
        my_data.update({'database': database, 'status': database['status']})


class FakeClock(object):

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class ThrottledRefreshTestCase(base.BaseTestCase):

    def setUp(self):
        super(ThrottledRefreshTestCase, self).setUp()
        self.row = {'status': 'restoring'}
        self.backup = Reloadable(self.row)
        self.clock = FakeClock()

    def _throttled(self):
        return status_checks.throttled_refresh(self.backup, interval=1.0,
                                               clock=self.clock)

    def test_first_call_reloads_then_once_per_interval(self):
        with self._throttled():
            self.backup.refresh()
            self.assertEqual(1, self.row['reloads'])
            for _ in range(50):
                self.clock.now += 0.01
                self.backup.refresh()
            self.assertEqual(1, self.row['reloads'])
            self.clock.now += 0.6  # 1.1 s after the first
            self.backup.refresh()
            self.assertEqual(2, self.row['reloads'])

    def test_a_status_change_is_seen_within_the_interval(self):
        with self._throttled():
            self.backup.refresh()
            self.row['status'] = 'available'  # the restore was cancelled
            self.clock.now += 0.5
            self.backup.refresh()
            self.assertEqual('restoring', self.backup.status)
            self.clock.now += 0.5
            self.backup.refresh()
            self.assertEqual('available', self.backup.status)

    def test_the_class_method_is_back_afterwards(self):
        with self._throttled():
            self.backup.refresh()
        self.assertNotIn('refresh', vars(self.backup))
        self.backup.refresh()
        self.backup.refresh()
        self.assertEqual(3, self.row['reloads'])

    def test_a_failed_reload_raises_and_keeps_the_throttle(self):
        with self._throttled():
            self.row['fail'] = True
            self.assertRaises(IOError, self.backup.refresh)
            self.row['fail'] = False
            self.backup.refresh()  # within the interval: no reload
            self.assertEqual(1, self.row['reloads'])
            self.clock.now += 1.0
            self.backup.refresh()
            self.assertEqual(2, self.row['reloads'])

    def test_put_back_after_an_error_in_the_block(self):
        def restore():
            with self._throttled():
                raise ValueError('restore failed')

        self.assertRaises(ValueError, restore)
        self.assertNotIn('refresh', vars(self.backup))

    def test_default_interval_and_clock(self):
        self.patch(status_checks, 'STATUS_CHECK_INTERVAL', 0.0)
        with status_checks.throttled_refresh(self.backup):
            self.backup.refresh()
            self.backup.refresh()
        self.assertEqual(2, self.row['reloads'])

    def test_cinders_refresh_where_cinder_changed(self):
        """Cinder's restore no longer reloads as checked: left alone."""
        self.useFixture(fixtures.MockPatchObject(
            cinder_internals, 'usable', autospec=True, return_value=False))
        with self._throttled():
            self.assertNotIn('refresh', vars(self.backup))
            for _ in range(3):
                self.backup.refresh()
        self.assertEqual(3, self.row['reloads'])
        cinder_internals.usable.assert_called_with('refresh')
