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

"""Cancellation checks of a restore at most once per interval.

Cinder's chunked backup drivers reload the backup from the database before
every object they restore, to stop when its status changes (a cancelled
or reset restore). An incremental backup is many small objects (one per
changed extent): a restore of a full backup and one incremental of 1 % of
a 1 GiB disk reloads the backup about 190 times, a fifth of the time the
cinder-backup thread spends in the restore (py-spy samples), and each
reload is a database round trip on a real deployment.

:func:`throttled_refresh` lets the restore's ``refresh()`` of the backup
reach the database on its first call and then at most once per interval:
a status change still stops the restore, at most one interval (plus one
object) later.
"""

import contextlib
import time

from cinder_vmdk_backup.backup import cinder_internals

__all__ = ['throttled_refresh', 'STATUS_CHECK_INTERVAL']

#: Seconds between two reloads of the backup during a restore.
STATUS_CHECK_INTERVAL = 1.0


@contextlib.contextmanager
def throttled_refresh(versioned_object, interval=None, clock=None):
    """Make ``versioned_object.refresh()`` reload at most once per interval.

    Calls in between return at once and leave the object as it was last
    loaded. Only this instance is affected, and only inside the block
    (:func:`~.cinder_internals.refresh_replaced`, which leaves Cinder's
    ``refresh`` alone where it does not match what it was checked against).

    :param versioned_object: a Cinder persistent object
    :param interval: seconds (default :data:`STATUS_CHECK_INTERVAL`)
    :param clock: monotonic clock (default :func:`time.monotonic`)
    """
    if interval is None:
        interval = STATUS_CHECK_INTERVAL
    clock = clock or time.monotonic
    last_reload = None

    def refresh(reload_):
        nonlocal last_reload
        now = clock()
        if last_reload is not None and now - last_reload < interval:
            return
        last_reload = now
        reload_()

    with cinder_internals.refresh_replaced(versioned_object, refresh):
        yield versioned_object
