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

"""One backup object read front to back, decompressed, its md5 checked.

Cinder's chunked drivers read an object whole (``reader.read()``) and
decompress it in one call: memory grows with ``backup_file_size``. The
plugin's readers of stored backups (the streaming restore's
:mod:`~.chain_reader`, verification) read an object in pieces of
:data:`READ_BYTES` and decompress it as a stream (zlib, bz2, none); only a
codec without a streaming decoder (``zstd``) or a driver whose object
reader cannot read part of an object (Swift's) needs the whole object.
A missing, short, long, undecodable or corrupt object raises
:class:`~cinder.exception.InvalidBackup` naming the backup and the object.
"""

import bz2
import collections
import hashlib

from cinder import exception
from cinder.i18n import _
from oslo_utils import units

from cinder_vmdk_backup.vmdk import compression as vmdk_compression

#: Largest piece of data returned (and read from an object at a time).
PIECE_BYTES = units.Mi
#: Bytes of an object read from the store at a time.
READ_BYTES = units.Mi
#: Pieces of an object that may wait for its md5 (see ObjectStream).
MD5_PENDING = 2


class ObjectStream(object):
    """One object, decompressed front to back, its md5 checked at the end.

    The md5 is taken on the ``hasher``'s thread (one worker: updates in
    order), beside the decompression and the caller's encoding; at most
    :data:`MD5_PENDING` pieces wait for it. With ``hasher`` None the md5 is
    not checked (the caller checks the data otherwise: the restore's
    SHA-256 checks, :mod:`.restore_checks`).
    """

    def __init__(self, service, obj, hasher):
        self._obj = obj
        self.position = obj.offset
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._hasher = hasher
        self._hashing = collections.deque()
        self._pending = b''
        self._manager = None
        try:
            self._manager = service.get_object_reader(
                obj.backup.container, obj.name,
                extra_metadata=obj.extra_metadata)
            reader = self._manager.__enter__()
        except Exception as exc:
            self._manager = None
            raise self._error(_('it cannot be opened: %s') % exc) from exc
        self._decoder = decoder_for(obj.compression, reader)

    def _error(self, what):
        obj = self._obj
        return exception.InvalidBackup(reason=_(
            'object %(name)s of backup %(backup)s is damaged or missing: '
            '%(what)s') % {'name': obj.name, 'backup': obj.backup.id,
                           'what': what})

    def _produce(self, limit):
        try:
            data = self._decoder.read(limit)
        except exception.InvalidBackup:
            raise
        except Exception as exc:
            raise self._error(_('%(kind)s: %(err)s') % {
                'kind': type(exc).__name__, 'err': exc}) from exc
        if not data:
            raise self._error(_(
                'its data ends at byte %(got)d of %(want)d') % {
                    'got': self.position - self._obj.offset,
                    'want': self._obj.length})
        if self._hasher is not None:
            self._hashing.append(self._hasher.submit(self._md5.update,
                                                     data))
            while len(self._hashing) > MD5_PENDING:
                self._hashing.popleft().result()
        return data

    def read(self, n):
        """Up to ``n`` bytes (at least one) at :attr:`position`."""
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
        else:
            data = self._produce(min(n, self._obj.end - self.position))
            if len(data) > n:
                data, self._pending = data[:n], data[n:]
        self.position += len(data)
        return data

    def skip_to(self, offset):
        while self.position < offset:
            self.read(min(PIECE_BYTES, offset - self.position))

    def finish(self):
        """Read the rest, check length and md5, close."""
        try:
            self.skip_to(self._obj.end)
            try:
                extra = self._decoder.read(1)
            except Exception:
                extra = b''
            if extra or not self._decoder.at_end():
                raise self._error(_('it holds more data than its recorded '
                                    'length of %d bytes, or a damaged '
                                    'end') % self._obj.length)
            while self._hashing:
                self._hashing.popleft().result()
            digest = self._md5.hexdigest()
            if (self._hasher is not None and self._obj.md5 and
                    digest != self._obj.md5):
                raise self._error(_(
                    'its md5 is %(got)s, the metadata records %(want)s') % {
                        'got': digest, 'want': self._obj.md5})
        finally:
            self.close()

    def close(self):
        manager, self._manager = self._manager, None
        if manager is not None:
            try:
                manager.__exit__(None, None, None)
            # A read-only stream: nothing is lost when closing it fails.
            except Exception:  # nosec B110
                pass


def read_pieces(reader):
    """The reader's bytes in pieces (whole where it cannot do pieces)."""
    try:
        data = reader.read(READ_BYTES)
    except TypeError:
        # Readers of some drivers (Swift's) read whole objects only.
        data = reader.read()
        if data:
            yield data
        return
    while data:
        yield data
        data = reader.read(READ_BYTES)


class _Decoder(object):
    """``read(n)``: up to n decompressed bytes, b'' at the end."""

    def __init__(self, reader):
        self._input = read_pieces(reader)

    def _next_input(self):
        return next(self._input, b'')

    def at_end(self):
        return True


class _Plain(_Decoder):

    def __init__(self, reader):
        super(_Plain, self).__init__(reader)
        self._buffer = b''

    def read(self, n):
        if not self._buffer:
            self._buffer = self._next_input()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


class _Zlib(_Decoder):

    def __init__(self, reader):
        super(_Zlib, self).__init__(reader)
        self._d = vmdk_compression.decompressobj()

    def read(self, n):
        d = self._d
        while True:
            if d.eof:
                return b''
            tail = d.unconsumed_tail
            if tail:
                data = d.decompress(tail, n)
            else:
                chunk = self._next_input()
                if not chunk:
                    return d.flush()[:n] if not d.eof else b''
                data = d.decompress(chunk, n)
            if data:
                return data

    def at_end(self):
        return self._d.eof and not self._d.unused_data


class _Bz2(_Decoder):

    def __init__(self, reader):
        super(_Bz2, self).__init__(reader)
        self._d = bz2.BZ2Decompressor()

    def read(self, n):
        d = self._d
        while True:
            if d.eof:
                return b''
            if d.needs_input:
                chunk = self._next_input()
                if not chunk:
                    return b''
                data = d.decompress(chunk, n)
            else:
                data = d.decompress(b'', n)
            if data:
                return data

    def at_end(self):
        return self._d.eof and not self._d.unused_data


class _Whole(_Plain):
    """A codec without a streaming decoder: the object at once."""

    def __init__(self, reader, decompress):
        super(_Whole, self).__init__(reader)
        self._buffer = memoryview(decompress(b''.join(self._input)))

    def read(self, n):
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return bytes(data)


def decoder_for(algorithm, reader):
    """A decoder (``read(n)``, ``at_end()``) of the named compression."""
    if algorithm in ('none', 'off', 'no'):
        return _Plain(reader)
    if algorithm in ('zlib', 'gzip'):
        return _Zlib(reader)
    if algorithm in ('bz2', 'bzip2'):
        return _Bz2(reader)
    import zstd
    return _Whole(reader, zstd.decompress)
