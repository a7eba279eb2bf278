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

"""``openstack volume instance group ...`` commands.

Output like python-openstackclient's volume commands: Title Case columns,
lists as formattable columns, so ``-f json`` gives lists and ``-f table``
one value a line. A group is named by ID or by name; an instance by ID.
"""

import argparse

from cliff import columns
from osc_lib.cli import format_columns
from osc_lib.command import command

from cinder_vmdk_backup.client.i18n import _


class VolumesColumn(columns.FormattableColumn):
    """Member volumes: ``<id> <mountpoint>[ boot]`` a line; dicts in JSON."""

    def human_readable(self):
        lines = []
        for vol in self._value or []:
            line = '%s %s' % (vol.get('id'), vol.get('mountpoint') or '-')
            if vol.get('boot'):
                line += ' boot'
            lines.append(line)
        return '\n'.join(lines)

    def machine_readable(self):
        return [dict(vol) for vol in self._value or []]


_GROUP_COLUMNS = (
    ('id', 'ID'), ('name', 'Name'), ('description', 'Description'),
    ('status', 'Status'), ('instance_id', 'Instance ID'),
    ('availability_zone', 'Availability Zone'),
    ('group_type_id', 'Group Type ID'), ('project_id', 'Project ID'),
    ('user_id', 'User ID'), ('created_at', 'Created At'),
    ('volumes', 'Volumes'))

# Answers of backup, restore, restore new and delete (and {"msg": ...}).
_RESULT_COLUMNS = (
    ('operation', 'Operation'), ('success', 'Success'),
    ('msg', 'Message'), ('instance_id', 'Instance ID'),
    ('group_id', 'Group ID'), ('group_snapshot_id', 'Backup Set ID'),
    ('volume_id', 'Volume IDs'),
    ('volume_snapshot_id', 'Volume Snapshot IDs'),
    ('backup_id', 'Backup IDs'), ('new_volume_id', 'New Volume IDs'),
    ('server_id', 'Server ID'))

# The --volume keys of restore new and the API's names for them.
_VOLUME_KEYS = {
    'type': 'volume_type', 'volume-type': 'volume_type',
    'volume_type': 'volume_type',
    'az': 'availability_zone', 'availability-zone': 'availability_zone',
    'availability_zone': 'availability_zone',
    'name': 'name'}


def _format(value):
    if isinstance(value, (list, tuple)):
        return format_columns.ListColumn(value)
    if isinstance(value, dict):
        return format_columns.DictColumn(value)
    return value


def _show_group(group):
    titles = tuple(title for _key, title in _GROUP_COLUMNS)
    data = tuple(VolumesColumn(group.get('volumes') or [])
                 if key == 'volumes' else group.get(key)
                 for key, _title in _GROUP_COLUMNS)
    return titles, data


def _show_result(result):
    """Columns of an operation's answer: the known keys, then any other."""
    result = dict(result or {})
    known = dict(_RESULT_COLUMNS)
    keys = [key for key, _title in _RESULT_COLUMNS if key in result]
    keys += sorted(key for key in result if key not in known)
    titles = tuple(known.get(key) or key.replace('_', ' ').title()
                   for key in keys)
    return titles, tuple(_format(result[key]) for key in keys)


def _client(cmd):
    return cmd.app.client_manager.instance_groups


def _add_group(parser):
    parser.add_argument(
        'group', metavar='<group>',
        help=_('Instance group (name or ID)'))


def _add_instance(parser):
    parser.add_argument(
        '--instance', metavar='<instance-id>', required=True,
        help=_('ID of the group\'s instance (server)'))


def _add_set_choice(parser):
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument(
        '--set', metavar='<backup-set-id>', dest='group_snapshot_id',
        help=_('Backup set (its ID)'))
    choice.add_argument(
        '--name', metavar='<name>',
        help=_('Backup set (its name, which must name exactly one set of '
               'the group)'))


def _add_async(parser, what):
    parser.add_argument(
        '--async', dest='no_wait', action='store_true',
        help=_('Answer once the %s is submitted; follow its progress with '
               '"volume instance group backup list"') % what)


class CreateInstanceGroup(command.ShowOne):
    _description = _('Create the instance group of an instance from the '
                     'volumes attached to it')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            'instance', metavar='<instance-id>',
            help=_('Instance (server) whose volumes form the group'))
        parser.add_argument(
            '--name', metavar='<name>',
            help=_('Group name (default: instance-<instance-id>)'))
        parser.add_argument(
            '--description', metavar='<description>',
            help=_('Group description'))
        return parser

    def take_action(self, parsed_args):
        group = _client(self).create_group(
            parsed_args.instance, name=parsed_args.name,
            description=parsed_args.description)
        return _show_group(group)


class ListInstanceGroup(command.Lister):
    _description = _('List instance groups')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            '--instance', metavar='<instance-id>',
            help=_('Only the group of this instance (server)'))
        parser.add_argument(
            '--long', action='store_true', default=False,
            help=_('List additional fields in output'))
        return parser

    def take_action(self, parsed_args):
        groups = _client(self).list_groups(instance_id=parsed_args.instance)
        fields = ['id', 'name', 'status', 'instance_id',
                  'availability_zone']
        if parsed_args.long:
            fields += ['description', 'volumes', 'created_at']
        titles = dict(_GROUP_COLUMNS)
        rows = [tuple(VolumesColumn(g.get('volumes') or [])
                      if f == 'volumes' else g.get(f) for f in fields)
                for g in groups]
        return tuple(titles[f] for f in fields), rows


class ShowInstanceGroup(command.ShowOne):
    _description = _('Show an instance group and its member volumes')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_group(parser)
        return parser

    def take_action(self, parsed_args):
        return _show_group(_client(self).find_group(parsed_args.group))


class DeleteInstanceGroup(command.Command):
    _description = _('Delete an instance group (no volume or instance is '
                     'deleted; refused while it has backup sets)')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_group(parser)
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        client.delete_group(client.resolve_group_id(parsed_args.group))


class SetInstanceGroup(command.Command):
    _description = _('Change the member volumes of an instance group; '
                     'without --add-volume or --remove-volume, take the '
                     'volumes attached to the instance now')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_group(parser)
        _add_instance(parser)
        parser.add_argument(
            '--add-volume', metavar='<volume-id>', action='append',
            dest='add_volumes', default=[],
            help=_('Add this attached volume (repeat for more)'))
        parser.add_argument(
            '--remove-volume', metavar='<volume-id>', action='append',
            dest='remove_volumes', default=[],
            help=_('Remove this volume (repeat for more)'))
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        client.update_members(
            client.resolve_group_id(parsed_args.group), parsed_args.instance,
            add_volumes=parsed_args.add_volumes,
            remove_volumes=parsed_args.remove_volumes)


class CreateBackupSet(command.ShowOne):
    _description = _('Back up every volume of an instance as one set')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_group(parser)
        _add_instance(parser)
        parser.add_argument(
            '--name', metavar='<name>', required=True,
            help=_('Name of the backup set'))
        parser.add_argument(
            '--description', metavar='<description>',
            help=_('Description of the backup set'))
        _add_async(parser, _('backup'))
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        return _show_result(client.backup(
            client.resolve_group_id(parsed_args.group), parsed_args.instance,
            parsed_args.name, description=parsed_args.description,
            wait=not parsed_args.no_wait))


class ListBackupSet(command.Lister):
    _description = _('List the backup sets of an instance group')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_group(parser)
        parser.add_argument(
            '--long', action='store_true', default=False,
            help=_('List additional fields in output'))
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        sets = client.list_backup_sets(
            client.resolve_group_id(parsed_args.group))
        titles = ('ID', 'Name', 'Status', 'Created At', 'Backups')
        if parsed_args.long:
            titles += ('Description', 'Backup IDs', 'Volume IDs',
                       'Mountpoints')
        rows = []
        for backup_set in sets:
            backups = backup_set.get('backups') or []
            row = (backup_set.get('id'), backup_set.get('name'),
                   backup_set.get('status'), backup_set.get('created_at'),
                   len(backups))
            if parsed_args.long:
                row += (
                    backup_set.get('description'),
                    format_columns.ListColumn([b.get('id') for b in backups]),
                    format_columns.ListColumn(
                        [b.get('volume_id') for b in backups]),
                    format_columns.ListColumn(
                        [(b.get('metadata') or {}).get('mountpoint')
                         for b in backups]))
            rows.append(row)
        return titles, rows


class RestoreBackupSet(command.ShowOne):
    _description = _('Restore a backup set onto the volumes of its instance '
                     '(the instance must be shut down)')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_group(parser)
        _add_instance(parser)
        _add_set_choice(parser)
        _add_async(parser, _('restore'))
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        return _show_result(client.restore(
            client.resolve_group_id(parsed_args.group), parsed_args.instance,
            group_snapshot_id=parsed_args.group_snapshot_id,
            name=parsed_args.name, wait=not parsed_args.no_wait))


class _VolumeSpecAction(argparse.Action):
    """``--volume ORIG:type=T,az=Z,name=N``, repeatable, one per volume."""

    def __call__(self, parser, namespace, value, option_string=None):
        specs = getattr(namespace, self.dest, None) or {}
        orig, sep, text = value.partition(':')
        orig = orig.strip()
        if not sep or not orig or not text.strip():
            raise argparse.ArgumentError(
                self, _('expected <volume-id>:<key>=<value>[,...], got '
                        '"%s"') % value)
        if orig in specs:
            raise argparse.ArgumentError(
                self, _('volume %s given more than once') % orig)
        spec = {}
        for item in text.split(','):
            key, sep, val = item.partition('=')
            key = key.strip().lower()
            if not sep or key not in _VOLUME_KEYS or not val.strip():
                raise argparse.ArgumentError(
                    self, _('"%(item)s" in "%(value)s": keys are type, az '
                            'and name, each with a value')
                    % {'item': item, 'value': value})
            spec[_VOLUME_KEYS[key]] = val.strip()
        specs[orig] = spec
        setattr(namespace, self.dest, specs)


class RestoreNewBackupSet(command.ShowOne):
    _description = _('Restore a backup set onto new volumes, and boot a new '
                     'server from them when --server-name or --flavor is '
                     'given')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_group(parser)
        _add_instance(parser)
        _add_set_choice(parser)
        parser.add_argument(
            '--volume-type', metavar='<volume-type>',
            help=_('Volume type of the new volumes (default: the '
                   'originals\')'))
        parser.add_argument(
            '--availability-zone', metavar='<availability-zone>',
            help=_('Availability zone of the new volumes and server'))
        parser.add_argument(
            '--volume', metavar='<volume-id>:type=<t>,az=<z>,name=<n>',
            dest='volumes', action=_VolumeSpecAction, default=None,
            help=_('Choices for the new volume of one original volume, '
                   'any of type, az and name (repeat for more volumes)'))
        parser.add_argument(
            '--server-name', metavar='<name>',
            help=_('Boot a new server of this name from the new volumes'))
        parser.add_argument(
            '--flavor', metavar='<flavor>',
            help=_('Flavor of the new server (default: the instance\'s)'))
        _add_async(parser, _('restore'))
        return parser

    def take_action(self, parsed_args):
        server = {}
        if parsed_args.server_name:
            server['name'] = parsed_args.server_name
        if parsed_args.flavor:
            server['flavor'] = parsed_args.flavor
        client = _client(self)
        return _show_result(client.restore_new(
            client.resolve_group_id(parsed_args.group), parsed_args.instance,
            group_snapshot_id=parsed_args.group_snapshot_id,
            name=parsed_args.name, volume_type=parsed_args.volume_type,
            availability_zone=parsed_args.availability_zone,
            volumes=parsed_args.volumes, server=server or None,
            wait=not parsed_args.no_wait))


class DeleteBackupSet(command.ShowOne):
    _description = _('Delete a backup set of an instance group (backups '
                     'that newer sets still need are kept until then)')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_group(parser)
        _add_instance(parser)
        _add_set_choice(parser)
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        return _show_result(client.delete_backup(
            client.resolve_group_id(parsed_args.group), parsed_args.instance,
            group_snapshot_id=parsed_args.group_snapshot_id,
            name=parsed_args.name))
