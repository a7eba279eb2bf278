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

"""Objects of zeros for the extent hand-off, built without the zeros.

A hole of a GiB is stored as one object that inflates to a GiB of zeros
(see :mod:`.handoff` for why holes are stored at all). Compressing and
MD5-hashing a GiB of zeros would cost seconds for every hole; neither
needs the zeros:

* a zlib stream of ``n`` zeros (:func:`zlib_zeros`) is built from pieces:
  deflate output after a full flush does not depend on what came before,
  so every 1 MiB piece of zeros compresses to the same bytes; the stream
  is the header with the first piece, that piece repeated, the last piece
  finished, and the Adler-32 of ``n`` zeros (``a = 1``, ``b = n mod
  65521``). Any zlib inflates it to exactly ``n`` zeros.
* the MD5 of ``n`` zeros (:func:`md5_of_zeros`) starts from a kept hash
  state of a multiple of 1 MiB zeros (MD5 states copy), so any length
  costs at most 1 MiB of hashing once the states exist (hashing up to the
  longest object once per process), and a length seen recently nothing.
"""

import collections
import functools
import hashlib
import struct
import threading
import zlib

#: Zeros fed to zlib at a time; each piece compresses to the same bytes.
ZLIB_PIECE = 1024 * 1024

#: Distance between the kept MD5 states of zeros (1024 states per GiB, a
#: few hundred KiB): a run of whole 1 MiB hash blocks hashes nothing once
#: the states up to its length exist.
MD5_STEP = 1024 * 1024

_ZERO_PIECE = bytes(ZLIB_PIECE)
_ADLER_BASE = 65521


@functools.lru_cache(maxsize=4)
def _zlib_parts(level):
    """(first piece with header, any later piece), each full-flushed."""
    compressor = zlib.compressobj(level)
    first = compressor.compress(_ZERO_PIECE) + compressor.flush(
        zlib.Z_FULL_FLUSH)
    later = compressor.compress(_ZERO_PIECE) + compressor.flush(
        zlib.Z_FULL_FLUSH)
    return first, later


@functools.lru_cache(maxsize=8)
def zlib_zeros(length, level=6):
    """A zlib stream (RFC 1950) that inflates to ``length`` zero bytes.

    :param length: at least one byte
    """
    if length <= ZLIB_PIECE:
        return zlib.compress(bytes(length), level)
    first, later = _zlib_parts(level)
    pieces, tail = divmod(length, ZLIB_PIECE)
    if not tail:
        pieces, tail = pieces - 1, ZLIB_PIECE
    adler = ((length % _ADLER_BASE) << 16) | 1
    return b''.join((first, later * (pieces - 1), _zlib_end(tail, level),
                     struct.pack('>I', adler)))


@functools.lru_cache(maxsize=16)
def _zlib_end(tail, level):
    """Deflate output of the last ``tail`` zeros, without the Adler-32.

    The compressor saw ZLIB_PIECE zeros before them: its deflate output
    is right, its Adler-32 is not (the caller writes the stream's own).
    Runs of whole hash blocks all end in the same tail: it is compressed
    once.
    """
    compressor = zlib.compressobj(level)
    compressor.compress(_ZERO_PIECE)
    compressor.flush(zlib.Z_FULL_FLUSH)
    return (compressor.compress(bytes(tail)) + compressor.flush())[:-4]


_md5_lock = threading.Lock()
_md5_states = [hashlib.md5(usedforsecurity=False)]  # at k * MD5_STEP


@functools.lru_cache(maxsize=64)
def md5_of_zeros(length):
    """Hex MD5 of ``length`` zero bytes (cheap after the first calls)."""
    steps, rest = divmod(length, MD5_STEP)
    with _md5_lock:
        while len(_md5_states) <= steps:
            state = _md5_states[-1].copy()
            for _ in range(MD5_STEP // ZLIB_PIECE):
                state.update(_ZERO_PIECE)
            _md5_states.append(state)
        state = _md5_states[steps].copy()
    while rest:
        piece = min(rest, ZLIB_PIECE)
        state.update(_ZERO_PIECE[:piece] if piece < ZLIB_PIECE
                     else _ZERO_PIECE)
        rest -= piece
    return state.hexdigest()


@functools.lru_cache(maxsize=8)
def sha256_of_zeros(length):
    """Hex SHA-256 of ``length`` zero bytes (a hash block's, at most)."""
    return hashlib.sha256(bytes(length)).hexdigest()


#: The zero objects :func:`zeros` handed out last (kept alive, so that
#: identity tells them: calloc'd memory, nothing resident).
_handed_out = collections.deque(maxlen=4)


def zeros(length):
    """A new ``bytes`` of ``length`` zeros, recognisable by :func:`known`.

    A restore's inflater hands it out for an object of zeros; the staging
    file then skips it without reading it (:mod:`.staging`).
    """
    obj = bytes(length)
    _handed_out.append(obj)
    return obj


def known(data):
    """Whether ``data`` is one of the last objects :func:`zeros` made."""
    return any(obj is data for obj in tuple(_handed_out))
