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

"""ISA-L in place of Python's zlib inside Cinder's chunked backup drivers.

With ``backup_compression_algorithm = zlib`` (or ``gzip``), Cinder's chunked
drivers (posix, swift, s3, nfs, glusterfs, gcs) compress every chunk with
``zlib.compress(data)``, level 6, on one thread, one chunk after the other.
A stock VMware backup hands them a VMDK that vCenter already deflated; a
driver-owned backup hands them the raw disk, two to three times as many
bytes, most of them compressible: zlib level 6 then dominates the backup
(17 MB/s on log-like text, 39 MB/s on random data, 180 MB/s on zeros,
measured on 32 MiB chunks). ISA-L writes the same format (RFC 1950 zlib
streams, which Python's zlib and every Cinder read back) 7 to 15 times
faster; at ISA-L level 2 text comes out about a fifth larger than at zlib
level 6, random data the same. Its inflate is about twice zlib's, for any
zlib stream, so restores of every zlib backup gain too; an object that
inflates to zeros is never materialised, and inflated once per restore
(:class:`IsalZlib`).

:func:`accelerated` swaps the chunked driver's compressor for the duration
of one driver-owned backup or restore; the objects are still recorded as
``zlib`` (or ``gzip``), so nothing reading them needs to know. Other
algorithms, other backup drivers, and installations without ``isal``, are
left alone.
"""

import collections
import contextlib

from cinder import utils
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import units

try:
    from isal import isal_zlib
except ImportError:  # pragma: no cover - depends on the installation
    isal_zlib = None

from cinder_vmdk_backup.backup import cinder_internals
from cinder_vmdk_backup.backup import zero_hashing
from cinder_vmdk_backup.backup import zero_objects
from cinder_vmdk_backup import opts

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
CONF.register_opts(opts.backup_manager_opts)

#: Names Cinder's chunked drivers map to Python's zlib module.
ZLIB_ALGORITHMS = ('zlib', 'gzip')

#: Largest object body remembered as inflating to zeros. Deflate shrinks
#: zeros about 1000 times, so this covers all-zero chunks of up to about
#: 4 GiB (Cinder's default ``backup_file_size`` is 1.86 GiB).
MAX_ZERO_BODY = 4 * units.Mi

#: Bytes inflated at a time while checking whether a body is all zeros.
PROBE_PIECE = units.Mi

#: How many distinct all-zero bodies one operation remembers (one per chunk
#: length and compressor, in practice one or two).
ZERO_BODIES_KEPT = 4


class IsalZlib(object):
    """The part of the ``zlib`` module Cinder's chunked drivers call.

    A backup of a thin volume holds many objects that are all zeros, each
    stored as the same small zlib stream (the extent hand-off writes holes
    as objects of up to a GiB of zeros, :mod:`.handoff`). Inflating one
    would cost as much memory as its zeros and as much time as copying
    them. So a small body is first inflated in pieces of
    :data:`PROBE_PIECE`, kept only long enough to see that they are zeros:
    a body that inflates to nothing but zeros is answered with a fresh
    ``bytes(n)`` (zeroed memory from calloc, nothing resident until
    written: the backup manager's malloc tuning, or n above glibc's mmap
    threshold), recorded by :func:`.zero_objects.zeros` so that the
    staging file skips it whole, and remembered: the next identical body
    costs a comparison. A body with data is inflated as usual (after at
    most one wasted piece when it does not start with zeros).

    :param level: ISA-L compression level, 0 to 3
    """

    def __init__(self, level):
        self.level = level
        # (body, length of the zeros it inflates to), oldest first
        self._zero_bodies = collections.deque(maxlen=ZERO_BODIES_KEPT)

    def compress(self, data):
        return isal_zlib.compress(data, self.level)

    def decompress(self, data):
        for body, length in self._zero_bodies:
            # Lengths first: a body of another length costs nothing.
            if len(body) == len(data) and body == data:
                return zero_objects.zeros(length)
        if len(data) <= MAX_ZERO_BODY:
            length = _zeros_inflated(data)
            if length is not None:
                self._zero_bodies.append((bytes(data), length))
                return zero_objects.zeros(length)
        return isal_zlib.decompress(data)


def _zeros_inflated(data):
    """How many zeros ``data`` inflates to; None if not only zeros.

    Inflates in pieces, keeping none; a corrupt or cut stream gives None
    (the full inflate that follows raises zlib's error).
    """
    inflater = isal_zlib.decompressobj()
    total = 0
    pending = data
    while not inflater.eof:
        try:
            piece = inflater.decompress(pending, PROBE_PIECE)
        except isal_zlib.error:
            return None
        if piece and not zero_hashing.is_all_zero(memoryview(piece)):
            return None
        total += len(piece)
        left = inflater.unconsumed_tail
        if not piece and len(left) == len(pending):
            break  # no progress: the stream is cut
        pending = left
    if not inflater.eof or inflater.unused_data:
        return None
    return total


def _is_zlib(algorithm):
    return str(algorithm).lower() in ZLIB_ALGORITHMS


_told_isal_missing = False


def _wanted():
    global _told_isal_missing
    if CONF.driver_owned_backup_zlib_implementation != 'isal':
        return False
    if isal_zlib is None:
        if not _told_isal_missing:
            _told_isal_missing = True
            LOG.warning('driver_owned_backup_zlib_implementation is isal, '
                        'but python-isal cannot be imported: driver-owned '
                        'backups use Python\'s zlib, several times slower. '
                        'Install isal (a requirement of this plugin).')
        return False
    return True


@contextlib.contextmanager
def accelerated(backup_service):
    """Let ``backup_service`` compress and inflate zlib with ISA-L.

    For a Cinder chunked backup driver instance only, until the block ends:
    its ``compressor`` (used by backups) when the configured algorithm is
    zlib, and the zlib decompressor its restores look up per object
    (:func:`~.cinder_internals.compressor_replaced`). The instance is put
    back as it was afterwards.

    :param backup_service: the backup driver instance of this operation
    """
    if not _wanted():
        yield backup_service
        return
    codec = utils.tpool_wrap(
        IsalZlib(CONF.driver_owned_backup_isal_level))
    with cinder_internals.compressor_replaced(
            backup_service, codec, ZLIB_ALGORITHMS,
            compress=_is_zlib(CONF.backup_compression_algorithm)):
        yield backup_service
