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

"""Digests of all-zero data without hashing the zeros.

Cinder's chunked backup drivers hash every byte they back up twice: SHA-256
per block of ``backup_sha_block_size_bytes`` (the map incremental backups
compare) and MD5 per chunk (recorded with each object). A driver-owned
backup hands them the raw disk, holes included, so a thin volume that is
mostly empty costs about 3 CPU-seconds per GiB of zeros in hashing
alone (3.1 measured here: SHA-256 ~0.9 GB/s with SHA-NI, MD5 ~0.55 GB/s),
more than compressing them. The digest of ``n`` zero bytes never changes,
and finding that a buffer is all zeros runs at memory speed (~10 GB/s).

:func:`zero_aware_hashing` has one chunked driver instance, the one of a
driver-owned backup, take its digests from a stand-in for the ``hashlib``
module: for all-zero data it returns a copy of the hash object of that many
zeros, computed once and kept; everything else goes to :mod:`hashlib`. The
digests are the very ones hashing would give, so backups, their
incrementals and every reader of their metadata are unchanged. How the
stand-in reaches Cinder's code for that instance only, while stock backups
in the same process keep hashing with :mod:`hashlib` itself, is
:func:`cinder_vmdk_backup.backup.cinder_internals.hashlib_replaced`.
"""

import contextlib
import functools
import hashlib

from cinder_vmdk_backup.backup import cinder_internals

__all__ = ['zero_aware_hashing', 'ZeroAwareHashlib', 'is_all_zero']

#: Smallest buffer worth checking for zeros (Cinder's SHA blocks are 32 KiB
#: by default; below this a hash costs about as much as the check).
MIN_ZERO_CHECK = 4096

#: Piece compared at a time: a slice of a memoryview compares element by
#: element (60x slower), so each piece is copied to bytes and compared with
#: memcmp.
_PIECE = 256 * 1024
_ZERO_PIECE = bytes(_PIECE)

#: Hash names the stand-in answers for zeros; others go to hashlib as is.
SHORTCUT_NAMES = ('md5', 'sha256')


def is_all_zero(view):
    """Return whether the bytes of ``view`` are all zero.

    :param view: a C-contiguous memoryview of unsigned bytes
    """
    head = min(64, view.nbytes)
    if view[:head].tobytes() != _ZERO_PIECE[:head]:
        return False  # data usually shows at once: no piece copied
    for start in range(0, view.nbytes, _PIECE):
        piece = bytes(view[start:start + _PIECE])
        if piece != _ZERO_PIECE[:len(piece)]:
            return False
    return True


@functools.lru_cache(maxsize=16)
def _hash_of_zeros(name, length, options):
    """The hash object of ``length`` zero bytes (kept: callers copy it)."""
    digest = hashlib.new(name, **dict(options))
    for start in range(0, length, _PIECE):
        digest.update(_ZERO_PIECE[:min(_PIECE, length - start)])
    return digest


def _as_byte_view(data):
    """Return ``data`` as a flat memoryview of bytes, or None."""
    try:
        view = memoryview(data)
    except TypeError:
        return None
    if not view.c_contiguous:
        return None
    return view.cast('B') if view.format != 'B' or view.ndim != 1 else view


class ZeroAwareHashlib(object):
    """Stands in for :mod:`hashlib`; zeros are answered from a cache.

    :param real: the module to delegate to
    """

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def md5(self, data=b'', **options):
        return self._hash('md5', data, options)

    def sha256(self, data=b'', **options):
        return self._hash('sha256', data, options)

    def _hash(self, name, data, options):
        view = _as_byte_view(data)
        if (view is not None and view.nbytes >= MIN_ZERO_CHECK
                and is_all_zero(view)):
            return _hash_of_zeros(
                name, view.nbytes, tuple(sorted(options.items()))).copy()
        return getattr(self._real, name)(data, **options)


#: The stand-in every driver-owned backup uses (it keeps no state but the
#: digests of zeros, shared by all).
_STANDIN = ZeroAwareHashlib(hashlib)


@contextlib.contextmanager
def zero_aware_hashing(backup_service):
    """Answer a chunked backup driver's hashes of zeros from a cache.

    Only ``backup_service``'s digests, in green or native threads, until
    the block ends (:func:`~.cinder_internals.hashlib_replaced`); other
    backup services, and a Cinder whose targets do not match, hash as
    Cinder does. Nests and overlaps.

    :param backup_service: the backup driver instance of this operation
    """
    with cinder_internals.hashlib_replaced(backup_service, _STANDIN):
        yield backup_service
