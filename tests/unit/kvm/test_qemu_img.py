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

import logging
from unittest import mock

from oslo_concurrency import processutils
from oslotest import base

from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import qemu_img


class QemuImgTestCase(base.BaseTestCase):

    @mock.patch.object(processutils, 'execute', autospec=True)
    def test_corrupt_image_error_names_path(self, execute):
        execute.side_effect = processutils.ProcessExecutionError(
            stderr="qemu-img: Could not open '/v/x': qcow2: Image is "
                   "corrupt; cannot be opened read/write", exit_code=1)
        exc = self.assertRaises(errors.ImageCorruptError, qemu_img.info,
                                '/v/x')
        self.assertIn('/v/x', str(exc))
        self.assertIn('corrupt', str(exc))

    @mock.patch.object(processutils, 'execute', autospec=True)
    def test_check_exit_code_2_is_corruption(self, execute):
        execute.side_effect = processutils.ProcessExecutionError(
            stdout='{"corruptions": 3}', exit_code=2)
        exc = self.assertRaises(errors.ImageCorruptError, qemu_img.check,
                                '/v/x')
        self.assertIn('3 corrupt cluster', str(exc))

    @mock.patch.object(processutils, 'execute', autospec=True)
    def test_other_failure_is_plain_error(self, execute):
        execute.side_effect = processutils.ProcessExecutionError(
            stderr='No space left on device', exit_code=1)
        exc = self.assertRaises(errors.QemuImgError, qemu_img.commit, '/v/x')
        self.assertNotIsInstance(exc, errors.ImageCorruptError)

    @mock.patch.object(processutils, 'execute', autospec=True)
    def test_overlay_stores_backing_name(self, execute):
        execute.return_value = ('', '')
        qemu_img.create('/v/o', backing='b')
        self.assertEqual(('qemu-img', 'create', '-q', '-f', 'qcow2', '-b',
                          'b', '-F', 'qcow2', '/v/o'),
                         execute.call_args[0])

    @mock.patch.object(processutils, 'execute', autospec=True)
    def test_convert_sets_the_cluster_size_when_given(self, execute):
        execute.return_value = ('', '')
        qemu_img.convert('/s/raw', '/v/new', 'raw')
        self.assertNotIn('-o', execute.call_args[0])
        qemu_img.convert('/s/raw', '/v/new', 'raw', cluster_size=16384)
        args = execute.call_args[0]
        self.assertEqual('cluster_size=16384', args[args.index('-o') + 1])
        self.assertEqual(('/s/raw', '/v/new'), args[-2:])

    @mock.patch.object(qemu_img, '_PRLIMIT', '/usr/bin/prlimit')
    @mock.patch.object(processutils, 'execute', autospec=True)
    def test_header_parsing_runs_under_limits(self, execute):
        execute.return_value = ('{"virtual-size": 512}', '')
        self.assertEqual(512, qemu_img.virtual_size('/v/x'))
        cmd = execute.call_args[0]
        self.assertEqual(('/usr/bin/prlimit', '--as=%d' % (2 * 1024 ** 3),
                          '--cpu=60', 'qemu-img', 'info'), cmd[:5])
        self.assertIsNone(execute.call_args[1]['prlimit'])

    @mock.patch.object(processutils, 'execute', autospec=True,
                       return_value=('', ''))
    def test_window_conversion_logs_nothing(self, execute):
        # It runs on the transfer pipeline's producer thread.
        qemu_img.convert_window('/v/img', 'qcow2', 0, 4096, '/dev/fd/9')
        self.assertLess(execute.call_args.kwargs['loglevel'],
                        logging.DEBUG)
        qemu_img.resize('/v/img', 4096)
        self.assertNotIn('loglevel', execute.call_args.kwargs)
