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

"""``openstack volume backup verify`` and the verification commands.

A verification runs in cinder-backup: ``verify`` answers once it is
queued, or with ``--wait`` follows it (progress on stderr) and shows its
result. The client is the instance-group plugin's (its adapter, so the
same endpoint, region and interface). A backup is named by ID or name.
"""

from cliff import columns
from osc_lib.command import command

from cinder_vmdk_backup.client import backup_verifications
from cinder_vmdk_backup.client.i18n import _

_COLUMNS = (
    ('backup_id', 'Backup ID'), ('backup_name', 'Backup Name'),
    ('backup_status', 'Backup Status'), ('status', 'Status'),
    ('verification_id', 'Verification ID'), ('deep', 'Deep'),
    ('progress', 'Progress'), ('started_at', 'Started At'),
    ('finished_at', 'Finished At'), ('summary', 'Summary'),
    ('problems', 'Problems'))

#: The status of a set: its members' worst first.
_SEVERITY = ('error', 'failed', 'running', 'queued', 'unverified', 'ok')


class ProblemsColumn(columns.FormattableColumn):
    """Problems found: one a line; dicts in JSON."""

    def human_readable(self):
        lines = []
        for p in self._value or []:
            parts = ['%s: %s' % (p.get('reason'),
                                 p.get('object') or _('(no object)'))]
            if p.get('offset') is not None:
                parts.append(_('at volume offset %(offset)s, %(length)s '
                               'bytes') % {'offset': p.get('offset'),
                                           'length': p.get('length')})
            if p.get('backup_id'):
                parts.append(_('(backup %s)') % p['backup_id'])
            lines.append(' '.join(str(part) for part in parts))
        return '\n'.join(lines)

    def machine_readable(self):
        return [dict(p) for p in self._value or []]


class MembersColumn(columns.FormattableColumn):
    """The verifications of a set's backups, one a line."""

    def human_readable(self):
        return '\n'.join(
            '%s %s %s%%' % (e.get('backup_id'), e.get('status'),
                            e.get('progress') or 0)
            for e in self._value or [])

    def machine_readable(self):
        return [{k: v for k, v in e.items() if k != 'problems'}
                for e in self._value or []]


def _client(cmd):
    """A verification client on the instance-group client's adapter."""
    adapter = cmd.app.client_manager.instance_groups.adapter
    return backup_verifications.VerificationClient(adapter=adapter)


def _show(entry):
    titles = tuple(title for _key, title in _COLUMNS)
    data = tuple(ProblemsColumn(entry.get('problems') or [])
                 if key == 'problems' else entry.get(key)
                 for key, _title in _COLUMNS)
    return titles, data


def _add_wait(parser):
    parser.add_argument(
        '--deep', action='store_true', default=False,
        help=_('Also restore the backup into a scratch file in '
               'cinder-backup and check every block of it'))
    parser.add_argument(
        '--wait', action='store_true', default=False,
        help=_('Wait for the verification to end, showing its progress, '
               'and show its result'))
    parser.add_argument(
        '--timeout', metavar='<seconds>', type=int, default=3600,
        help=_('With --wait: give up waiting after this long (the '
               'verification goes on; default: 3600)'))


class _Progress(object):
    """Prints a backup's verification progress when it changes."""

    def __init__(self, stream):
        self.stream = stream
        self.last = {}

    def __call__(self, entry):
        state = (entry.get('status'), entry.get('progress'))
        if self.last.get(entry.get('backup_id')) == state:
            return
        self.last[entry.get('backup_id')] = state
        self.stream.write(_('Backup %(backup)s: %(status)s %(progress)s%%\n')
                          % {'backup': entry.get('backup_id'),
                             'status': state[0], 'progress': state[1] or 0})
        self.stream.flush()


class VerifyBackup(command.ShowOne):
    _description = _('Verify a backup: read it and the backups it depends '
                     'on back from the store and check every object and '
                     'block against what was recorded when it was made')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            'backup', metavar='<backup>',
            help=_('Backup to verify (name or ID)'))
        _add_wait(parser)
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        entry = client.verify(client.resolve_backup_id(parsed_args.backup),
                              deep=parsed_args.deep)
        if parsed_args.wait:
            (entry,) = client.wait(
                [entry['backup_id']], entry['verification_id'],
                timeout=parsed_args.timeout,
                progress=_Progress(self.app.stderr))
        return _show(entry)


class ShowBackupVerification(command.ShowOne):
    _description = _('Show the last verification of a backup')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            'backup', metavar='<backup>',
            help=_('Backup (name or ID)'))
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        return _show(client.get(client.resolve_backup_id(
            parsed_args.backup)))


class ListBackupVerification(command.Lister):
    _description = _('List backups with their last verification')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            '--status', metavar='<status>',
            choices=('unverified', 'queued', 'running', 'ok', 'failed',
                     'error'),
            help=_('Only backups whose last verification has this status '
                   '(unverified: never verified)'))
        parser.add_argument(
            '--volume', metavar='<volume-id>',
            help=_('Only the backups of this volume'))
        parser.add_argument(
            '--all-projects', action='store_true', default=False,
            help=_('Backups of every project (admin only)'))
        parser.add_argument(
            '--long', action='store_true', default=False,
            help=_('List additional fields in output'))
        return parser

    def take_action(self, parsed_args):
        entries = _client(self).list(status=parsed_args.status,
                                     volume_id=parsed_args.volume,
                                     all_projects=parsed_args.all_projects)
        fields = ['backup_id', 'backup_name', 'status', 'finished_at',
                  'summary']
        if parsed_args.long:
            fields += ['backup_status', 'verification_id', 'deep',
                       'progress', 'started_at', 'problems']
        titles = dict(_COLUMNS)
        rows = [tuple(ProblemsColumn(e.get('problems') or [])
                      if f == 'problems' else e.get(f) for f in fields)
                for e in entries]
        return tuple(titles[f] for f in fields), rows


class VerifyBackupSet(command.ShowOne):
    _description = _('Verify every backup of a backup set of an instance '
                     'group')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            'group', metavar='<group>',
            help=_('Instance group (name or ID)'))
        parser.add_argument(
            '--instance-id', '--instance', metavar='<instance-id>',
            dest='instance', required=True,
            help=_('ID of the group\'s instance (server)'))
        choice = parser.add_mutually_exclusive_group(required=True)
        choice.add_argument(
            '--set-id', '--set', metavar='<backup-set-id>',
            dest='group_snapshot_id', help=_('Backup set (its ID)'))
        choice.add_argument(
            '--name', metavar='<name>',
            help=_('Backup set (its name, which must name exactly one set '
                   'of the group)'))
        _add_wait(parser)
        return parser

    def take_action(self, parsed_args):
        groups = self.app.client_manager.instance_groups
        client = _client(self)
        result = client.verify_set(
            groups.resolve_group_id(parsed_args.group), parsed_args.instance,
            group_snapshot_id=parsed_args.group_snapshot_id,
            name=parsed_args.name, deep=parsed_args.deep)
        members = result.get('backups') or []
        if parsed_args.wait:
            members = client.wait(
                [e['backup_id'] for e in members], result['verification_id'],
                timeout=parsed_args.timeout,
                progress=_Progress(self.app.stderr))
        statuses = {e.get('status') for e in members}
        status = next((s for s in _SEVERITY if s in statuses), None)
        problems = [p for e in members for p in e.get('problems') or []]
        titles = ('Verification ID', 'Group ID', 'Backup Set ID', 'Status',
                  'Backups', 'Problems')
        return titles, (result.get('verification_id'),
                        result.get('group_id'),
                        result.get('group_snapshot_id'), status,
                        MembersColumn(members), ProblemsColumn(problems))
