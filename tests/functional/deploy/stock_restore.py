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

"""Restore a deployment's backup with Cinder's own code into a file.

Run with Cinder's virtualenv, against a profile of tools/deploy/up.sh::

    python stock_restore.py CINDER_CONF BACKUP_ID VOLUME_ID SIZE OUTPUT

Loads the profile's cinder.conf (its database and backup store), builds
the configured backup driver (Cinder's class, e.g. SwiftBackupDriver) and
calls its ``restore()``, the chunked driver's stock restore of the whole
chain, into OUTPUT: a new sparse file (0600) of SIZE bytes. Nothing of the
plugin is imported: this is what a Cinder without it would restore.

Cinder's restore aborts unless the backup's status is 'restoring' (its
cancel check): the status is set for the restore and put back after it,
whatever happens. The volume metadata stored with the backup is written
back onto VOLUME_ID (Cinder's restore does that): pass the backed-up
volume, whose metadata it is.
"""

import os
import sys


def main(argv):
    conf_path, backup_id, volume_id, size, output = argv[1:6]
    from cinder import objects
    objects.register_all()
    from cinder.backup import manager  # noqa: F401 (backup_driver option)
    from cinder.common import config  # noqa: F401
    from cinder import context
    from oslo_config import cfg
    from oslo_utils import importutils
    cfg.CONF(['--config-file', conf_path], project='cinder')
    ctxt = context.get_admin_context()
    backup = objects.Backup.get_by_id(ctxt, backup_id)
    # As cinder-backup's request context: a user (Cinder's Swift driver
    # connects only for a context with one).
    ctxt = context.RequestContext(backup.user_id, backup.project_id,
                                  is_admin=True)
    driver = importutils.import_object(cfg.CONF.backup_driver, ctxt)
    status = backup.status
    backup.status = 'restoring'
    backup.save()
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'wb') as volume_file:
            os.ftruncate(volume_file.fileno(), int(size))
            driver.restore(backup, volume_id, volume_file, True)
    finally:
        backup.status = status
        backup.save()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
