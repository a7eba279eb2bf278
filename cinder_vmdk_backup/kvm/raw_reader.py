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

"""Read a qcow2 image's guest data as a raw stream, holes not read.

``qemu-img map`` tells where the image's guest data is: zero or
unallocated regions (produced here without reading anything), and data
extents with the host ``offset`` in the file of the chain that holds them.
Those are read straight from that file with ``pread``: the image is frozen
(nobody writes it while it is read), and this is as fast as the disk.
Extents that have no plain host offset (compressed or encrypted clusters,
an external data file) are decoded by qemu-img in bounded windows into a
private temporary file, so memory and temporary disk stay bounded whatever
the image size.

Besides the sequential stream, a reader offers what the extent-aware
hand-off into the backup service uses: :meth:`RawImageReader.read_at`
(random access, ascending offsets skip forward in the plan),
:meth:`RawImageReader.zero_ranges` (the plan's holes and zero clusters,
never read) and :meth:`RawImageReader.changed_ranges` (the areas that may
differ from a parent backup, when the caller gave a way to know them).

Why not only qemu-img: ``qemu-img convert`` cannot write to a pipe (its
raw output driver writes with ``pwrite``), ``qemu-img dd`` likewise, and
qemu-nbd would need an NBD client library the field does not ship on PyPI.
"""

import bisect
import io
import os
import tempfile

from oslo_log import log as logging
from oslo_utils import units

from cinder_vmdk_backup.kvm import errors
from cinder_vmdk_backup.kvm import qemu_img

LOG = logging.getLogger(__name__)

_ZEROS = bytes(units.Mi)

#: Formats whose map offsets are plain offsets in the layer's own file.
_PLAIN_FORMATS = ('qcow2', 'raw')


class _Extent(object):
    __slots__ = ('start', 'length', 'kind', 'layer', 'offset')

    def __init__(self, start, length, kind, layer=None, offset=None):
        self.start = start
        self.length = length
        self.kind = kind          # 'zero', 'file' or 'decode'
        self.layer = layer
        self.offset = offset


class RawImageReader(io.RawIOBase):
    """A sequential raw reader of the image at ``path``.

    :param path: a qcow2 (or raw) image nobody writes while it is read
    :param temp_dir: directory for the bounded decode windows
    :param length: bytes to produce; zeros pad an image smaller than this
    :param window_bytes: size of one decode window
    :param changes: ``changes(parent_backup)`` returns ``(ranges, None)``
        or ``(None, reason)`` (see :meth:`changed_ranges`); None when the
        image's changes are not tracked
    :raises ImageCorruptError: qemu-img refuses the image
    """

    def __init__(self, path, temp_dir, length=None,
                 window_bytes=64 * units.Mi, changes=None):
        super().__init__()
        self.path = path
        self._temp_dir = temp_dir
        self._window = max(int(window_bytes), units.Mi)
        chain = qemu_img.info(path, backing_chain=True)
        if isinstance(chain, dict):
            chain = [chain]
        self.virtual_size = int(chain[0]['virtual-size'])
        self.length = self.virtual_size if length is None else int(length)
        if self.length < self.virtual_size:
            raise errors.QemuImgError(
                'Image %s holds %d bytes, more than the %d expected'
                % (path, self.virtual_size, self.length), path=path)
        self._chain = chain
        self._fds = {}
        self._extents = self._plan(qemu_img.map_extents(path))
        self._starts = [ext.start for ext in self._extents]
        self._changes = changes
        self._index = 0
        self._pos = 0
        self._window_fd = None
        self._window_range = (0, 0)
        self.bytes_read_from_disk = 0
        self._zero_cache = b''

    # -- planning ---------------------------------------------------------

    def _layer_is_plain(self, depth):
        layer = self._chain[depth]
        specific = (layer.get('format-specific') or {}).get('data') or {}
        return (layer.get('format') in _PLAIN_FORMATS
                and not layer.get('encrypted')
                and 'data-file' not in specific)

    def _plan(self, extents):
        plan = []
        expected = 0
        for ext in extents:
            start, length = int(ext['start']), int(ext['length'])
            if start != expected:
                raise errors.ImageCorruptError(
                    'qemu-img map of %s skips from %d to %d'
                    % (self.path, expected, start), path=self.path)
            expected = start + length
            depth = int(ext.get('depth', 0))
            if not ext.get('data') or ext.get('zero'):
                kind, offset = 'zero', None
            elif 'offset' in ext and self._layer_is_plain(depth):
                kind, offset = 'file', int(ext['offset'])
            else:
                kind, offset = 'decode', None
            if (plan and plan[-1].kind == kind == 'zero'):
                plan[-1].length += length
                continue
            plan.append(_Extent(start, length, kind, depth, offset))
        if expected != self.virtual_size:
            raise errors.ImageCorruptError(
                'qemu-img map of %s covers %d of %d bytes'
                % (self.path, expected, self.virtual_size), path=self.path)
        if self.length > expected:
            plan.append(_Extent(expected, self.length - expected, 'zero'))
        return plan

    @property
    def data_bytes(self):
        """Bytes of the image that hold data (the rest is zero)."""
        return sum(e.length for e in self._extents if e.kind != 'zero')

    # -- extents ----------------------------------------------------------

    def zero_ranges(self):
        """Yield ``(offset, length)`` of the areas that read as zeros.

        Holes and zero clusters of the image as ``qemu-img map`` reported
        them when the reader was made (the image is frozen), and the
        padding beyond the image's end; ascending, never adjacent to each
        other. Nothing there needs reading.
        """
        for ext in self._extents:
            if ext.kind == 'zero':
                yield ext.start, ext.length

    def changed_ranges(self, parent_backup):
        """The areas that may differ from ``parent_backup``'s data.

        :returns: ``(ranges, None)``, ranges ascending ``(offset,
            length)``; or ``(None, reason)`` when that is not known for
            sure (then everything must be read)
        """
        if self._changes is None:
            return None, 'the image\'s changes are not tracked'
        return self._changes(parent_backup)

    def read_at(self, offset, view):
        """Fill all of ``view`` with the guest data at ``offset``.

        Meant for ascending offsets (the plan is walked forward from the
        previous position, skipping what lies between); an earlier offset
        works too (the plan is searched again). Zero areas are written as
        zeros. Moves the sequential position to the end of the view.

        :raises ValueError: the range goes beyond the reader's length
        """
        view = memoryview(view).cast('B')
        if offset < 0 or offset + len(view) > self.length:
            raise ValueError('Range %d+%d is outside the %d bytes of %s'
                             % (offset, len(view), self.length, self.path))
        self._seek(offset)
        filled = self._copy_into(view, write_zeros=True)
        if filled < len(view):  # the plan covers self.length: a bug
            raise errors.ImageCorruptError(
                'Image %s ends at guest offset %d, before %d bytes'
                % (self.path, self._pos, offset + len(view)),
                path=self.path)

    def _seek(self, offset):
        """Move the position (and the plan's index) to ``offset``."""
        index = self._index
        if index < len(self._extents):
            ext = self._extents[index]
            inside = ext.start <= offset < ext.start + ext.length
        else:
            inside = False
        if not inside:
            if offset >= self.length:
                index = len(self._extents)
            else:
                index = bisect.bisect_right(self._starts, offset) - 1
        self._index, self._pos = index, offset

    # -- io.RawIOBase -----------------------------------------------------

    def readable(self):
        return True

    def seekable(self):
        return False

    def tell(self):
        return self._pos

    def readinto(self, buf):
        return self._copy_into(memoryview(buf).cast('B'), write_zeros=True)

    def fill(self, view):
        """Fill all of ``view``, which reads as zeros, from the position.

        The transfer pipeline's way in: zero regions are left unwritten, so
        the fresh buffer's pages behind them are never touched.

        :raises ImageCorruptError: the image ends before the view is full
        """
        view = memoryview(view).cast('B')
        filled = self._copy_into(view, write_zeros=False)
        if filled < len(view):
            raise errors.ImageCorruptError(
                'Image %s ends at guest offset %d, before %d bytes'
                % (self.path, self._pos, self._pos + len(view) - filled),
                path=self.path)

    def _copy_into(self, view, write_zeros):
        """Copy guest data into ``view`` from the position; return bytes."""
        filled = 0
        while filled < len(view) and self._index < len(self._extents):
            ext = self._extents[self._index]
            inside = self._pos - ext.start
            count = min(len(view) - filled, ext.length - inside)
            target = view[filled:filled + count]
            if ext.kind == 'zero':
                if write_zeros:
                    self._fill_zeros(target)
            elif ext.kind == 'file':
                self._pread_exact(self._layer_fd(ext.layer), target,
                                  ext.offset + inside)
            else:
                self._decode_into(target, self._pos, ext)
            filled += count
            self._pos += count
            if self._pos == ext.start + ext.length:
                self._index += 1
        return filled

    def read(self, size=-1):
        """Return up to ``size`` bytes (all that is left when negative).

        Faster than :meth:`readinto` for the backup service's big reads:
        a zero region is a shared, cached zero buffer, a data region one
        ``pread`` straight into a new bytes object; only a read spanning
        several regions is joined (one copy).
        """
        left = self.length - self._pos
        size = left if size is None or size < 0 else min(size, left)
        parts = []
        while size > 0 and self._index < len(self._extents):
            ext = self._extents[self._index]
            inside = self._pos - ext.start
            count = min(size, ext.length - inside)
            if ext.kind == 'zero':
                parts.append(self._zeros(count))
            elif ext.kind == 'file':
                parts.append(self._pread(self._layer_fd(ext.layer), count,
                                         ext.offset + inside))
            else:
                buf = bytearray(count)
                self._decode_into(memoryview(buf), self._pos, ext)
                parts.append(buf)
            size -= count
            self._pos += count
            if self._pos == ext.start + ext.length:
                self._index += 1
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b''.join(parts)

    def _zeros(self, count):
        if len(self._zero_cache) < count:
            self._zero_cache = bytes(count)
        if len(self._zero_cache) == count:
            return self._zero_cache
        return memoryview(self._zero_cache)[:count]

    def _pread(self, fd, count, offset):
        data = os.pread(fd, count, offset)
        if len(data) == count:
            self.bytes_read_from_disk += count
            return data
        buf = bytearray(count)
        buf[:len(data)] = data
        self._pread_exact(fd, memoryview(buf)[len(data):],
                          offset + len(data))
        self.bytes_read_from_disk += len(data)
        return bytes(buf)

    def close(self):
        if not self.closed:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._drop_window()
        super().close()

    # -- sources ------------------------------------------------------------

    @staticmethod
    def _fill_zeros(target):
        for at in range(0, len(target), len(_ZEROS)):
            piece = target[at:at + len(_ZEROS)]
            piece[:] = _ZEROS[:len(piece)]

    def _layer_fd(self, depth):
        fd = self._fds.get(depth)
        if fd is None:
            name = self._chain[depth]['filename']
            if not os.path.isabs(name):
                name = os.path.join(os.path.dirname(self.path), name)
            fd = os.open(name, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
            self._fds[depth] = fd
        return fd

    def _pread_exact(self, fd, target, offset):
        done = 0
        while done < len(target):
            got = os.preadv(fd, [target[done:]], offset + done)
            if got == 0:
                raise errors.ImageCorruptError(
                    'Image %s ends before guest offset %d (host offset %d)'
                    % (self.path, self._pos + done, offset + done),
                    path=self.path)
            done += got
        self.bytes_read_from_disk += done

    def _decode_into(self, target, pos, ext):
        lo, hi = self._window_range
        if not (lo <= pos and pos + len(target) <= hi):
            self._drop_window()
            # Windows are aligned within the extent: qemu's raw driver
            # wants sector multiples, and map extents are cluster-aligned.
            lo = ext.start + (pos - ext.start) // self._window * self._window
            hi = min(ext.start + ext.length, lo + self._window)
            fd, tmp = tempfile.mkstemp(prefix='cvb-window-',
                                       dir=self._temp_dir)
            try:
                os.unlink(tmp)  # private: gone with the descriptor
            except OSError:
                os.close(fd)
                raise
            os.ftruncate(fd, hi - lo)
            self._window_fd, self._window_range = fd, (lo, hi)
            qemu_img.convert_window(self.path, self._chain[0]['format'],
                                    lo, hi - lo,
                                    '/proc/%d/fd/%d' % (os.getpid(), fd))
        end = min(len(target), hi - pos)
        self._pread_exact(self._window_fd, target[:end], pos - lo)
        if end < len(target):
            self._decode_into(target[end:], pos + end, ext)

    def _drop_window(self):
        if self._window_fd is not None:
            os.close(self._window_fd)
            self._window_fd, self._window_range = None, (0, 0)
