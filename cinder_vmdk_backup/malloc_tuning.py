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

"""glibc malloc settings for a process that moves large buffers.

A backup moves the volume through buffers of tens of MiB (the backup
driver's chunk, its compressed copy, the decoded export). glibc serves
such a buffer with ``mmap`` and gives it back when freed, but each such
free also raises its ``mmap`` threshold (up to 32 MiB), after which the
next buffers come from the heap arenas, and every native thread
(eventlet's pool, the codec's) may get an arena of its own: freed memory
then stays in the process. Measured with a 1 GiB backup through the
plugin (``bench/vmdk_backup.py``): peak RSS 530-600 MiB with glibc's
defaults, about 320 MiB with a fixed 1 MiB threshold and two arenas, of
which 186 MiB is the process before any data moves; backup times stayed
within the run-to-run noise.

:func:`apply` sets the same as the ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_ARENA_MAX`` environment variables would, from inside the process
(cinder-backup is started by the operator's service manager, which this
plugin does not control). Values the operator set in the environment
(those variables, or ``GLIBC_TUNABLES``) are left as they are.
"""

import ctypes
import os
import platform

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: mallopt() parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

#: Buffers of this size and larger are mmap()ed, and unmapped when freed.
MMAP_THRESHOLD = 1024 * 1024
#: At most this many malloc arenas, whatever the number of threads.
ARENA_MAX = 2

_SETTINGS = (
    ('MALLOC_MMAP_THRESHOLD_', 'glibc.malloc.mmap_threshold',
     M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ('MALLOC_ARENA_MAX', 'glibc.malloc.arena_max', M_ARENA_MAX, ARENA_MAX),
)


def _set_by_operator(env_name, tunable):
    """Whether the environment already sets this malloc parameter."""
    return (env_name in os.environ or
            tunable in os.environ.get('GLIBC_TUNABLES', ''))


def _mallopt():
    """glibc's ``mallopt``, or None where the C library is not glibc."""
    if platform.libc_ver()[0] != 'glibc':
        return None
    try:
        function = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


def apply():
    """Return large buffers to the system when freed; bound the arenas.

    :returns: the names of the settings applied (empty when none could be)
    """
    mallopt = _mallopt()
    if mallopt is None:
        LOG.debug('Not glibc: malloc settings left as they are.')
        return []
    applied = []
    for env_name, tunable, parameter, value in _SETTINGS:
        if _set_by_operator(env_name, tunable):
            continue
        if mallopt(parameter, value) == 1:
            applied.append(env_name)
        else:
            LOG.debug('mallopt(%(p)d, %(v)d) refused.',
                      {'p': parameter, 'v': value})
    if applied:
        LOG.info('malloc tuned for large buffers (%s).',
                 ', '.join('%s=%d' % (name, value)
                           for name, _t, _p, value in _SETTINGS
                           if name in applied))
    return applied
