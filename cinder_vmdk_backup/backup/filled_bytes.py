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

"""A ``bytes`` object of tens of MiB, filled in place by a decoder.

Backup drivers must get ``bytes`` from ``read(n)``: python-zstd refuses
anything else, Ceph's ``rbd.Image.write`` too. Python offers no way to
build a ``bytes`` object from a writable buffer without copying it, so a
decoder filling a ``bytearray`` costs a second buffer of the chunk's size
and a copy of it for every chunk (32 MiB and more; it showed in the peak
RSS of a backup).

:func:`filled` does what C code does with the C API: it creates a new
object (``bytes(n)``, zeros), lets the caller fill it through a writable
view of its storage (``PyBytes_AsString``), and hands the object out only
once it is full. Nothing else can see the object before that: it is not
hashed, shared or interned. Where ``ctypes.pythonapi`` is missing (not
CPython), a ``bytearray`` is filled and copied.
"""

import ctypes

try:
    _storage_of = ctypes.pythonapi.PyBytes_AsString
    _storage_of.restype = ctypes.c_void_p
    _storage_of.argtypes = (ctypes.py_object,)
except (AttributeError, OSError):  # pragma: no cover - not CPython
    _storage_of = None

#: Below this size a copy costs nothing worth the trick (and sizes 0 and
#: 1 may give CPython's shared singletons).
MIN_SIZE = 64 * 1024


def filled(size, fill):
    """Return a new ``bytes`` object of ``size`` bytes filled by ``fill``.

    :param size: length of the object
    :param fill: called with a writable memoryview (format ``B``) of
        exactly ``size`` bytes that reads as zeros; it writes what is not
        zero, or raises (the object is then dropped unseen)
    """
    if _storage_of is None or size < MIN_SIZE:
        buf = bytearray(size)
        fill(memoryview(buf))
        return bytes(buf)
    # bytes(n) is calloc'd: zeros. Served by mmap (pieces of 1 MiB and more
    # with driver_owned_backup_tune_malloc, the default; above 32 MiB with
    # glibc's defaults), they are pages the kernel maps only when written,
    # so runs of zeros cost neither time nor memory; from the heap, calloc
    # clears them, which is still correct.
    obj = bytes(size)
    storage = (ctypes.c_ubyte * size).from_address(_storage_of(obj))
    # A view that outlives this call (held by a traceback, say) keeps the
    # array, and through it the object whose memory it is, alive.
    storage.owner = obj
    with memoryview(storage) as raw, raw.cast('B') as view:
        fill(view)
    return obj
