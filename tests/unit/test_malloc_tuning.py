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
import platform
import subprocess  # nosec B404: runs this interpreter
import sys
from unittest import mock

import fixtures
from oslotest import base

from cinder_vmdk_backup import malloc_tuning


class MallocTuningTestCase(base.BaseTestCase):

    def setUp(self):
        super(MallocTuningTestCase, self).setUp()
        for name in ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_ARENA_MAX',
                     'GLIBC_TUNABLES'):
            self.useFixture(fixtures.EnvironmentVariable(name))

    def _mallopt(self, result=1):
        calls = []

        def mallopt(parameter, value):
            calls.append((parameter, value))
            return result

        self.useFixture(fixtures.MockPatchObject(
            malloc_tuning, '_mallopt', autospec=True,
            return_value=mallopt))
        return calls

    def test_sets_threshold_and_arenas(self):
        calls = self._mallopt()
        self.assertEqual(['MALLOC_MMAP_THRESHOLD_', 'MALLOC_ARENA_MAX'],
                         malloc_tuning.apply())
        self.assertEqual([(-3, 1024 * 1024), (-8, 2)], calls)

    def test_operator_environment_wins(self):
        self.useFixture(fixtures.EnvironmentVariable('MALLOC_ARENA_MAX',
                                                     '8'))
        calls = self._mallopt()
        self.assertEqual(['MALLOC_MMAP_THRESHOLD_'], malloc_tuning.apply())
        self.assertEqual([(-3, 1024 * 1024)], calls)

    def test_operator_glibc_tunables_win(self):
        self.useFixture(fixtures.EnvironmentVariable(
            'GLIBC_TUNABLES', 'glibc.malloc.mmap_threshold=4194304'))
        calls = self._mallopt()
        self.assertEqual(['MALLOC_ARENA_MAX'], malloc_tuning.apply())
        self.assertEqual([(-8, 2)], calls)

    def test_refused_setting_is_not_reported(self):
        self._mallopt(result=0)
        self.assertEqual([], malloc_tuning.apply())

    def test_other_c_library_is_left_alone(self):
        with mock.patch.object(platform, 'libc_ver', autospec=True,
                               return_value=('musl', '1.2')):
            self.assertEqual([], malloc_tuning.apply())

    def test_real_glibc_accepts_the_settings(self):
        if platform.libc_ver()[0] != 'glibc':
            self.skipTest('needs glibc')
        # In a child: the settings are process-wide.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('MALLOC_') and k != 'GLIBC_TUNABLES'}
        out = subprocess.run(  # nosec B603
            [sys.executable, '-c',
             'from cinder_vmdk_backup import malloc_tuning\n'
             'print(",".join(malloc_tuning.apply()))'],
            env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
        self.assertEqual('MALLOC_MMAP_THRESHOLD_,MALLOC_ARENA_MAX',
                         out.strip())
