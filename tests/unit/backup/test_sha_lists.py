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

import functools
import hashlib
import io
import json

from cinder import exception
import ddt
from oslotest import base

from cinder_vmdk_backup.backup import sha_lists


def _header(name='backup "one"\n\\ é', description=None):
    return {'version': '1.0.0', 'backup_id': 'b1', 'volume_id': 'v1',
            'backup_name': name, 'backup_description': description,
            'created_at': '2026-12-06 11:00:00+00:00', 'chunk_size': 32768}


def _digests(count):
    return [hashlib.sha256(b'%d' % i).hexdigest() for i in range(count)]


class Unsized(object):
    """An object reader of swift, s3 or gcs: read() takes no size."""

    def __init__(self, data):
        self.data = data

    def read(self):
        return self.data


def _wrapped(func):
    """What s3 and gcs do to their reader's read().

    Any error, a TypeError too, becomes the driver's connection failure
    (gcs's wrapper without functools.wraps, s3's with it).
    """

    def wrapper(self, *args, **kwargs):
        try:
            return func(self, *args, **kwargs)
        except Exception as err:
            raise RuntimeError('connection failure: %s' % err)

    return wrapper


class WrappedUnsized(Unsized):
    """gcs's reader: the wrapper hides read()'s signature."""

    read = _wrapped(Unsized.read)


class WrappedUnsizedWithWraps(Unsized):
    """s3's reader: the wrapper keeps it (functools.wraps)."""

    read = functools.wraps(Unsized.read)(_wrapped(Unsized.read))


@ddt.ddt
class ShaFileTestCase(base.BaseTestCase):

    def _written(self, header, digests):
        out = io.BytesIO()
        writer = sha_lists.ShaFileWriter(out, header)
        for digest in digests:
            writer.add(digest)
        writer.close()
        return out.getvalue()

    @ddt.data(0, 1, 2, 5000, 40000)
    def test_bytes_are_cinders(self, count):
        header = _header()
        digests = _digests(count)
        expected = dict(header, sha256s=digests)
        self.assertEqual(
            json.dumps(expected, sort_keys=True, indent=2).encode('utf-8'),
            self._written(header, digests))

    @ddt.data((0, True), (3, True), (40000, True), (40000, False),
              (1, False))
    @ddt.unpack
    def test_read_back(self, count, sized):
        header = _header(description='x"sha256s": ["%s"]' % ('a' * 64))
        digests = _digests(count)
        data = json.dumps(dict(header, sha256s=digests), sort_keys=True,
                          indent=2).encode('utf-8')
        source = io.BytesIO(data) if sized else Unsized(data)
        reader = sha_lists.ShaFileReader(source, 'name').open()
        self.assertEqual(32768, reader.chunk_size())
        self.assertEqual(digests, list(reader.digests()))
        self.assertEqual(header, reader.header)

    @ddt.data(WrappedUnsized, WrappedUnsizedWithWraps)
    def test_wrapped_unsized_readers(self, reader_class):
        digests = _digests(5)
        data = json.dumps(dict(_header(), sha256s=digests), sort_keys=True,
                          indent=2).encode('utf-8')
        reader = sha_lists.ShaFileReader(reader_class(data), 'name').open()
        self.assertEqual(digests, list(reader.digests()))

    def test_read_in_pieces(self):
        self.useFixture(__import__('fixtures').MonkeyPatch(
            'cinder_vmdk_backup.backup.sha_lists.PIECE', 7))
        digests = _digests(50)
        data = self._written(_header(), digests)
        reader = sha_lists.ShaFileReader(io.BytesIO(data), 'n').open()
        self.assertEqual(digests, list(reader.digests()))

    def test_read_in_pieces_of_about_an_item(self):
        for piece in (71, 72, 73, 150):
            self.useFixture(__import__('fixtures').MonkeyPatch(
                'cinder_vmdk_backup.backup.sha_lists.PIECE', piece))
            digests = _digests(50)
            data = self._written(_header(), digests)
            reader = sha_lists.ShaFileReader(io.BytesIO(data), 'n').open()
            self.assertEqual(digests, list(reader.digests()))

    @ddt.data(b'G', b'"', b' ', b'A')
    def test_a_bad_digest_in_the_layout_is_refused(self, bad):
        digests = _digests(100)
        data = bytearray(self._written(_header(), digests))
        at = data.index(digests[40].encode()) + 10
        data[at:at + 1] = bad
        reader = sha_lists.ShaFileReader(io.BytesIO(bytes(data)), 'n').open()
        self.assertRaises(exception.InvalidBackup, list, reader.digests())

    def test_compact_json_is_read_too(self):
        digests = _digests(3)
        data = json.dumps(dict(_header(), sha256s=digests)).encode()
        reader = sha_lists.ShaFileReader(io.BytesIO(data), 'n').open()
        self.assertEqual(digests, list(reader.digests()))

    @ddt.data(b'{"chunk_size": 1}', b'{"sha256s": ["abc"]}',
              b'{"sha256s": ["%s", ' % (b'a' * 64), b'')
    def test_broken_files_are_invalid_backups(self, data):
        def read():
            reader = sha_lists.ShaFileReader(io.BytesIO(data), 'n').open()
            return list(reader.digests())

        self.assertRaises(exception.InvalidBackup, read)


class ShaFileWriterBatchTestCase(base.BaseTestCase):

    def test_add_many_and_repeated(self):
        digests = _digests(40000)
        out = io.BytesIO()
        writer = sha_lists.ShaFileWriter(out, _header())
        writer.add(digests[0])
        self.assertEqual(30000, writer.add_many(iter(digests[1:]), 30000))
        writer.add_repeated(digests[5], 20000)
        self.assertEqual(2, writer.add_many(iter(digests[:2])))
        writer.close()
        expected = digests[:30001] + [digests[5]] * 20000 + digests[:2]
        self.assertEqual(
            json.dumps(dict(_header(), sha256s=expected), sort_keys=True,
                       indent=2).encode('utf-8'), out.getvalue())
        self.assertEqual(len(expected), writer.count)
