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

"""The verifier's pure parts (it runs for real in tests/functional)."""

from oslotest import base

from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup.verification import verifier


class _HttpError(Exception):
    def __init__(self, **kwargs):
        super(_HttpError, self).__init__('store said no')
        for key, value in kwargs.items():
            setattr(self, key, value)


class _Resp(object):
    def __init__(self, status):
        self.status = status


class VerifierPartsTestCase(base.BaseTestCase):

    def test_regions_merged_and_clipped(self):
        self.assertEqual(
            [(0, 20), (30, 5), (90, 10)],
            verifier._regions([(10, 10), (0, 12), (30, 5), (90, 50),
                               (35, 0)], 100))

    def test_not_found_of_each_store(self):
        self.assertTrue(verifier._is_not_found(FileNotFoundError()))
        self.assertTrue(verifier._is_not_found(_HttpError(http_status=404)))
        self.assertTrue(verifier._is_not_found(_HttpError(
            resp=_Resp(404))))
        self.assertTrue(verifier._is_not_found(_HttpError(
            response={'Error': {'Code': 'NoSuchKey'}})))
        # The store down or refusing: not about the backup.
        self.assertFalse(verifier._is_not_found(PermissionError()))
        self.assertFalse(verifier._is_not_found(_HttpError(http_status=401)))
        self.assertFalse(verifier._is_not_found(_HttpError(
            response={'Error': {'Code': 'AccessDenied'}})))
        self.assertFalse(verifier._is_not_found(ConnectionRefusedError()))

    def test_store_errors_are_not_the_data(self):
        self.assertTrue(verifier._is_store_error(ConnectionResetError()))
        self.assertTrue(verifier._is_store_error(TimeoutError()))
        self.assertTrue(verifier._is_store_error(_HttpError(
            http_status=503)))
        self.assertTrue(verifier._is_store_error(_HttpError(
            response={'Error': {'Code': 'AccessDenied'}})))
        self.assertFalse(verifier._is_store_error(_HttpError(
            http_status=404)))
        self.assertFalse(verifier._is_store_error(OSError(
            'Invalid data stream')))  # bz2
        self.assertFalse(verifier._is_store_error(ValueError('zlib')))

    def test_report(self):
        report = verifier.Report('b1')
        report.chain = ['b0', 'b1']
        self.assertTrue(report.ok)
        self.assertTrue(report.summary().startswith('ok: 2 backup(s)'))
        report.add('b0', verifier.MISSING, 0, 10, obj='o1')
        report.add('b0', verifier.MD5_MISMATCH, 0, 10, obj='o1',
                   region=False)
        self.assertFalse(report.ok)
        self.assertEqual([(0, 10)], report._spans)
        report.regions = verifier._regions(report._spans, 100)
        summary = report.summary()
        self.assertIn('failed: 2 problem(s) (md5_mismatch, missing)',
                      summary)
        self.assertIn('regions 0+10', summary)
        self.assertEqual({'ok', 'backup_id', 'chain', 'objects_checked',
                          'bytes_checked', 'blocks_checked', 'problems',
                          'regions', 'elapsed'}, set(report.as_dict()))


class VerifierRefusesTestCase(base.BaseTestCase):

    def test_a_service_that_is_not_chunked_is_not_verified(self):
        class Ceph(object):
            pass
        exc = self.assertRaises(cvb_exception.VerificationError,
                                verifier.verify, Ceph(), object())
        self.assertIn('Ceph is not a chunked backup driver', str(exc))
