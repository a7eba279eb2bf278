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

"""tools/lib/venv.sh, as the README's two commands source it.

``ensure_venv`` runs under ``set -eu -o pipefail`` in tools/demo.sh and
behind ``||`` in tools/run-tests.sh. A stand-in ``python3`` and ``pip``
(scripts on PATH and in the venv's bin/) let the function run in a second
without installing anything.
"""

import os
import stat
import subprocess  # nosec B404: runs bash on the project's own script

import ddt
import fixtures
from oslotest import base

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
VENV_SH = os.path.join(TOP, 'tools', 'lib', 'venv.sh')


# How tools/demo.sh and tools/run-tests.sh call it.
DEMO = 'set -eu -o pipefail; source "%s"; ensure_venv; echo READY'
RUN_TESTS = ('set -u -o pipefail; source "%s"; '
             'ensure_venv || exit 3; echo READY')


def _script(path, body):
    with open(path, 'w') as f:
        f.write('#!/bin/bash\n' + body + '\n')
    os.chmod(path, stat.S_IRWXU)


@ddt.ddt
class EnsureVenvTestCase(base.BaseTestCase):

    def setUp(self):
        super(EnsureVenvTestCase, self).setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.venv = os.path.join(self.tmp, 'venv')
        bin_dir = os.path.join(self.tmp, 'bin')
        os.makedirs(bin_dir)
        # python3 -m venv DIR: only makes DIR/bin; the "installed"
        # interpreter imports nothing and does what the test says.
        _script(os.path.join(bin_dir, 'python3'),
                'mkdir -p "$3/bin"\n'
                'cp "$CVB_TEST_PYTHON" "$3/bin/python"\n'
                'cp "$CVB_TEST_PIP" "$3/bin/pip"')
        self.pip = os.path.join(self.tmp, 'pip')
        self.python = os.path.join(self.tmp, 'python')
        _script(self.python, 'exit 0')
        self.path = bin_dir + os.pathsep + os.environ['PATH']

    def _ensure_venv(self, pip_body, caller=DEMO):
        _script(self.pip, pip_body)
        env = dict(os.environ, PATH=self.path, CVB_VENV=self.venv,
                   CVB_TEST_PIP=self.pip, CVB_TEST_PYTHON=self.python)
        env.pop('PYTHONWARNINGS', None)
        return subprocess.run(  # nosec B603 B607: fixed arguments
            ['bash', '-c', caller % VENV_SH],
            env=env, capture_output=True, text=True, timeout=60)

    def _stamp_written(self):
        return os.path.exists(os.path.join(self.venv, '.cvb-requirements'))

    @ddt.data(DEMO, RUN_TESTS)
    def test_silent_pip_succeeds(self, caller):
        # pip -q prints nothing when all goes well.
        result = self._ensure_venv('exit 0', caller)

        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('READY\n', result.stdout)
        self.assertTrue(self._stamp_written())

    def test_location_warnings_are_left_out(self):
        result = self._ensure_venv(
            'echo "WARNING: Location x is ignored"; echo "kept"')

        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('kept\nkept\nREADY\n', result.stdout)

    def test_only_the_editable_install_warning_is_silenced(self):
        # The requirements' install gets no filter; the editable install
        # of the tree only setuptools' "Editable installation" warning's.
        result = self._ensure_venv('echo "$* PW=${PYTHONWARNINGS:-none}"')

        self.assertEqual(0, result.returncode, result.stderr)
        lines = result.stdout.splitlines()
        self.assertIn('-r', lines[0])
        self.assertTrue(lines[0].endswith(' PW=none'), lines[0])
        self.assertIn(' -e ', lines[1])
        self.assertTrue(lines[1].endswith(
            ' PW=ignore:Editable installation::'
            'setuptools.command.editable_wheel'), lines[1])

    @ddt.data(0, 1)
    def test_import_check_output_shown_only_when_it_fails(self, status):
        # Cinder's import prints eventlet's deprecation banner: noise when
        # the check passes, the story when it fails.
        _script(self.python, 'echo "banner or traceback" >&2; exit %d'
                % status)
        result = self._ensure_venv('exit 0')

        self.assertEqual(status, result.returncode)
        self.assertEqual(bool(status),
                         'banner or traceback' in result.stderr)
        self.assertEqual(not status, self._stamp_written())

    @ddt.data(DEMO, RUN_TESTS)
    def test_failing_pip_fails_and_writes_no_stamp(self, caller):
        result = self._ensure_venv('echo "no such package" >&2; exit 1',
                                   caller)

        self.assertNotEqual(0, result.returncode)
        self.assertNotIn('READY', result.stdout)
        self.assertIn('no such package', result.stdout)
        self.assertFalse(self._stamp_written())

    def test_up_to_date_venv_is_not_touched(self):
        self.assertEqual(0, self._ensure_venv('exit 0').returncode)
        result = self._ensure_venv('echo "pip ran" >&2; exit 1')

        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual('READY\n', result.stdout)
