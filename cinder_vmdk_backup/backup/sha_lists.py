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

"""A chunked backup's sha256 file, read and written in pieces.

Cinder's chunked drivers keep one hex SHA-256 per hash block in a JSON
object (``json.dumps(sha256file, sort_keys=True, indent=2)``) and read it
back whole with ``json.loads``: at 32 KiB blocks that is 2.3 GB of text and
about 35 million Python strings per TiB. Here the file is written as it is
produced (:class:`ShaFileWriter`, byte for byte what ``json.dumps`` gives)
and read as it is parsed (:class:`ShaFileReader`): the digests go by one
at a time, never a list of them.
"""

import inspect
import itertools
import json
import re
import uuid

from cinder import exception
from cinder.i18n import _

#: Bytes read from (and written to) an object at a time.
PIECE = 1024 * 1024

#: The key of the digest list; every other key is a scalar.
LIST_KEY = 'sha256s'

_LIST_START = re.compile(rb'"sha256s"\s*:\s*\[')
#: Complete items followed by their comma.
_ITEMS = re.compile(rb'(?:\s*"[0-9a-f]{64}"\s*,)*')
#: The last item and the end of the list.
_LAST = re.compile(rb'\s*"([0-9a-f]{64})"\s*\]')
_LIST_END = re.compile(rb'\s*\]')
_HEX = re.compile(r'[0-9a-f]{64}')
#: One item of json.dumps(indent=2) at depth 1: '\n    "<hex>",'.
_STRIDE = 72
_LAYOUT = tuple((offset, bytes([char]))
                for offset, char in enumerate(b'\n    "')) + (
    (70, b'"'), (71, b','))
_HEX_DIGITS = b'0123456789abcdef'


class ShaFileWriter(object):
    """Write a sha256 file exactly as ``json.dumps(..., indent=2)`` would.

    :param writer: an object writer of the backup driver (``write``)
    :param header: the file's fields except the digests
    """

    #: Digests gathered before a write.
    BATCH = 16384

    def __init__(self, writer, header):
        self._writer = writer
        marker = uuid.uuid4().hex
        fields = dict(header)
        fields[LIST_KEY] = []
        # json.dumps writes an empty list as "[]": kept for no digests.
        self._empty = json.dumps(fields, sort_keys=True,
                                 indent=2).encode('utf-8')
        fields[LIST_KEY] = [marker]
        text = json.dumps(fields, sort_keys=True, indent=2).encode('utf-8')
        item = b'    "%s"' % marker.encode('ascii')
        self._head, self._tail = text.split(item)
        self._pending = []
        self._written = 0

    @property
    def count(self):
        return self._written + len(self._pending)

    def add(self, digest):
        """Append one hex digest (str)."""
        self._pending.append(digest)
        if len(self._pending) >= self.BATCH:
            self._flush()

    def add_many(self, digests, count=None):
        """Append digests from an iterable (at most ``count`` of them).

        :returns: how many were appended
        """
        if count is not None:
            digests = itertools.islice(digests, count)
        before = self.count
        for batch in iter(lambda: list(itertools.islice(digests,
                                                        self.BATCH)), []):
            self._pending.extend(batch)
            if len(self._pending) >= self.BATCH:
                self._flush()
        return self.count - before

    def add_repeated(self, digest, count):
        """Append ``count`` times the same digest."""
        while count > 0:
            step = min(count, self.BATCH)
            self._pending.extend(itertools.repeat(digest, step))
            count -= step
            if len(self._pending) >= self.BATCH:
                self._flush()

    def close(self):
        """Write the end of the file."""
        if not self.count:
            self._writer.write(self._empty)
            return
        self._flush()
        self._writer.write(self._tail)

    def _flush(self):
        if not self._pending:
            return
        start = self._head if not self._written else b',\n'
        text = '",\n    "'.join(self._pending).encode('ascii')
        self._writer.write(b'%s    "%s"' % (start, text))
        self._written += len(self._pending)
        self._pending = []


def _invalid(name, why):
    return exception.InvalidBackup(reason=_(
        'the sha256 file %(name)s cannot be read: %(why)s') % {
            'name': name, 'why': why})


def _takes_size(reader):
    """Whether an object reader's ``read`` takes a size.

    Asked of its signature, not by calling it: the s3 and gcs drivers wrap
    their reader's methods so that any exception, the TypeError of a
    ``read(n)`` too, becomes their connection failure. A wrapper that
    hides the signature (``*args, **kwargs``, gcs's) leaves the question
    to what the reader is: a file (posix, nfs) takes a size.
    """
    try:
        params = list(inspect.signature(reader.read).parameters.values())
    except (TypeError, ValueError):
        return True  # a built-in (a file's read): it does
    if params and all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                      for p in params):
        return hasattr(reader, 'seek')
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                          p.VAR_POSITIONAL) for p in params)


class ShaFileReader(object):
    """Read a sha256 file as it is parsed.

    :attr:`header` (every field but the digests, ``chunk_size`` included)
    is known once :meth:`open` returned; :meth:`digests` then yields the
    digests in order, reading the object in pieces. Readers that take no
    size (``read()`` of swift, s3, gcs) give the whole object at once; it
    is still parsed in place, never turned into a list.

    :param reader: an object reader of the backup driver (``read``)
    :param name: the object's name, for errors
    """

    def __init__(self, reader, name):
        self._reader = reader
        self._name = name
        self._buf = b''
        self._pos = 0
        self._eof = False
        self._sized = _takes_size(reader)
        self.header = None
        self._head = None

    def _more(self):
        """Read another piece; False at the end of the object."""
        if self._eof:
            return False
        piece = None
        if self._sized:
            try:
                piece = self._reader.read(PIECE)
            except TypeError:
                self._sized = False
        if not self._sized:
            piece = self._reader.read()
            self._eof = True
        if not piece:
            self._eof = True
            return False
        self._buf = self._buf[self._pos:] + piece
        self._pos = 0
        return True

    def open(self):
        """Read up to the digest list and parse every other field."""
        while True:
            match = _LIST_START.search(self._buf)
            if match:
                break
            if not self._more():
                raise _invalid(self._name, 'no list of digests')
        self._head = self._buf[:match.start()]
        self._pos = match.end()
        return self

    def digests(self):
        """Iterate over the digests (str) in order, then parse the header."""
        return itertools.chain.from_iterable(self._batches())

    def _batches(self):
        """Lists of digests as they are parsed (a piece's worth each)."""
        count = 0
        while True:
            batch = self._canonical_items()
            if batch:
                count += len(batch)
                yield batch
                continue
            match = _ITEMS.match(self._buf, self._pos)
            if match.end() > self._pos:
                items = self._buf[self._pos:match.end()].decode('ascii')
                self._pos = match.end()
                batch = _HEX.findall(items)
                count += len(batch)
                yield batch
                continue
            match = _LAST.match(self._buf, self._pos)
            if match is None and not count:
                match = _LIST_END.match(self._buf, self._pos)
            if match is not None:
                self._pos = match.end()
                if match.lastindex:
                    yield [match.group(1).decode('ascii')]
                break
            if not self._more():
                raise _invalid(self._name, 'the list of digests is cut')
        while self._more():
            pass
        tail = self._buf[self._pos:]
        try:
            fields = json.loads(self._head + b'"sha256s": []' + tail)
        except ValueError as exc:
            raise _invalid(self._name, exc)
        fields.pop(LIST_KEY)
        self.header = fields

    def _canonical_items(self):
        """The items at the position laid out as ``json.dumps`` lays them.

        Each is ``\\n    "<64 hex>",``: checked by strided comparisons and
        taken by slicing, ten times faster than a regular expression.
        The list's last item (no comma) is left to the general parser.
        """
        count = (len(self._buf) - self._pos) // _STRIDE
        if not count:
            return None
        chunk = self._buf[self._pos:self._pos + count * _STRIDE]
        for offset, byte in _LAYOUT:
            if chunk[offset::_STRIDE] != byte * count:
                return None
        # What is left without the hex digits is the layout alone.
        if len(chunk.translate(None, _HEX_DIGITS)) != len(_LAYOUT) * count:
            return None
        self._pos += len(chunk)
        text = chunk.decode('ascii')
        return [text[at:at + 64] for at in range(6, len(text), _STRIDE)]

    def read_header(self):
        """The fields other than the digests, read without keeping these."""
        for _digest in self.digests():
            pass
        return self.header

    def chunk_size(self):
        """``chunk_size``, from the fields before the list (sorted keys)."""
        try:
            fields = json.loads(self._head + b'"sha256s": []}')
            return int(fields['chunk_size'])
        except (ValueError, KeyError, TypeError) as exc:
            raise _invalid(self._name, 'no chunk_size before the digests '
                           '(%s)' % exc)
