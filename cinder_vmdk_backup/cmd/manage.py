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

"""``cinder-vmdk-backup-manage``: the plugin's database, like cinder-manage.

::

    cinder-vmdk-backup-manage [--config-file /etc/cinder/cinder.conf] \\
        db sync [VERSION]
    cinder-vmdk-backup-manage db version

It reads Cinder's configuration (``/etc/cinder/cinder.conf`` by default):
the plan tables are in ``[backup_plans] connection``, or else in Cinder's
``[database] connection``. Run ``db sync`` after Cinder's own
``cinder-manage db sync`` on installation and on every upgrade of the
plugin; it is idempotent.
"""

import sys

from oslo_config import cfg
from oslo_log import log as logging

from cinder.i18n import _

CONF = cfg.CONF


def _db_sync(conf):
    from cinder_vmdk_backup.plans.db import migration
    migration.db_sync(conf.category.version)
    print(_("Backup plan tables at revision %s.") % migration.db_version())


def _db_version(conf):
    from cinder_vmdk_backup.plans.db import migration
    print(migration.db_version() or _("None (run db sync)"))


def _add_parsers(subparsers):
    db = subparsers.add_parser('db', help=_('Backup plan tables.'))
    actions = db.add_subparsers(title=_('db actions'), dest='action')
    actions.required = True
    sync = actions.add_parser(
        'sync', help=_('Create or upgrade the tables (to VERSION, default '
                       'the newest).'))
    sync.add_argument('version', nargs='?', default=None)
    sync.set_defaults(action_fn=_db_sync)
    version = actions.add_parser(
        'version', help=_('Print the revision the tables are at.'))
    version.set_defaults(action_fn=_db_version)


_category = cfg.SubCommandOpt('category', title=_('Command categories'),
                              handler=_add_parsers)


def main(argv=None, conf=None):
    """Run the command; return its exit status.

    :param argv: the arguments (default ``sys.argv[1:]``)
    :param conf: the ConfigOpts to parse them into (default oslo.config's
        global one, which the database API reads)
    """
    argv = sys.argv[1:] if argv is None else argv
    conf = CONF if conf is None else conf
    conf.register_cli_opt(_category)
    logging.register_options(conf)
    from cinder.common import config  # noqa: F401 ([DEFAULT] state_path)
    from cinder_vmdk_backup.plans.db import api  # noqa: F401 (options)
    conf(argv, project='cinder')
    logging.setup(conf, 'cinder-vmdk-backup-manage')
    try:
        conf.category.action_fn(conf)
    except Exception as error:
        # The error's text, never the configuration (the connection URL
        # carries a password).
        print(_("%(command)s failed: %(error)s") % {
            'command': ' '.join(('db', conf.category.action)),
            'error': error}, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
