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

"""Where a raw source holds data: SEEK_DATA/SEEK_HOLE on sparse files.

A restore stages the backup in a sparse file; its holes are zeros that need
neither reading nor compressing. The kernel reports them through
``lseek(SEEK_DATA/SEEK_HOLE)``; file systems without support report the
whole file as data, which is correct, only slower.
"""

import errno
import os
import stat

_NO_SUPPORT = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ESPIPE)


def regular_fd(fileobj):
    """Return the descriptor of a regular file or block device, else None.

    Such a source is read with ``os.pread`` and may be read twice.
    """
    try:
        fd = fileobj.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return fd
    return None


def data_ranges(fd, end):
    """Yield ``(start, stop)`` byte ranges below end that may hold data.

    Moves the descriptor's file position.
    """
    pos = 0
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            if exc.errno in _NO_SUPPORT:
                yield pos, end
                return
            raise
        if start >= end:
            return
        try:
            stop = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno not in _NO_SUPPORT + (errno.ENXIO,):
                raise
            stop = end
        stop = min(stop, end)
        if stop <= start:
            stop = end
        yield start, stop
        pos = stop


def grains_with_data(fd, end, grain_bytes):
    """Yield, in order and once each, the grain indexes that hold data."""
    last = -1
    for start, stop in data_ranges(fd, end):
        first = max(start // grain_bytes, last + 1)
        for grain in range(first, (stop - 1) // grain_bytes + 1):
            yield grain
            last = grain
