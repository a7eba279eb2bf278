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

"""``openstack volume backup plan ...`` commands.

A plan is named by ID or by name; its target by ``--volume`` (name or
ID), ``--instance-group`` (name or ID) or ``--volume-type`` (name or ID,
resolved by Cinder); its schedule by ``--schedule "<minute> <hour>
<day-of-month> <month> <day-of-week>"`` (cron) and ``--timezone``. The
client is the backup-plan client on the instance-group client's adapter
(the same Cinder endpoint and session).
"""

import argparse

from osc_lib.cli import format_columns
from osc_lib.command import command

from cinder_vmdk_backup.client import backup_plans as bp_client
from cinder_vmdk_backup.client.i18n import _

_PLAN_COLUMNS = (
    ('id', 'ID'), ('name', 'Name'), ('description', 'Description'),
    ('target', 'Target'), ('schedule', 'Schedule'),
    ('timezone', 'Timezone'), ('active', 'Active'), ('keep', 'Keep'),
    ('full_every', 'Full Every'), ('bandwidth_mib_s', 'Bandwidth (MiB/s)'),
    ('exclude', 'Exclude'), ('next_run_at', 'Next Run At'),
    ('runs_since_full', 'Runs Since Full'), ('project_id', 'Project ID'),
    ('user_id', 'User ID'), ('created_at', 'Created At'),
    ('updated_at', 'Updated At'), ('runs', 'Latest Runs'))

_RUN_COLUMNS = (
    ('id', 'ID'), ('plan_id', 'Plan ID'), ('kind', 'Kind'),
    ('status', 'Status'), ('scheduled_for', 'Scheduled For'),
    ('started_at', 'Started At'), ('finished_at', 'Finished At'),
    ('host', 'Host'), ('full', 'Full'), ('backup_ids', 'Backup IDs'),
    ('group_snapshot_ids', 'Backup Set IDs'),
    ('deleted_backup_ids', 'Deleted Backup IDs'), ('error', 'Error'),
    ('heartbeat_at', 'Heartbeat At'), ('project_id', 'Project ID'))

_CRON = ('minute', 'hour', 'day_of_month', 'month', 'day_of_week')


def _client(cmd):
    """The backup-plan client on the instance-group client's adapter."""
    return bp_client.BackupPlanClient(
        adapter=cmd.app.client_manager.instance_groups.adapter)


def _target_text(target):
    (key, value), = (target or {'-': None}).items()
    kind = {'volume_id': 'volume', 'instance_group_id': 'instance group',
            'volume_type': 'volume type'}.get(key, key)
    return '%s %s' % (kind, value)


def _cron_text(schedule):
    return ' '.join(str((schedule or {}).get(k, '*')) for k in _CRON)


def _runs_text(runs):
    return format_columns.ListColumn(
        ['%s %s %s %s' % (r.get('scheduled_for') or r.get('started_at'),
                          r.get('kind'), r.get('status'), r.get('id'))
         for r in runs or []])


def _plan_value(plan, key):
    if key == 'target':
        return _target_text(plan.get('target'))
    if key == 'schedule':
        return _cron_text(plan.get('schedule'))
    if key == 'timezone':
        return (plan.get('schedule') or {}).get('timezone')
    if key == 'exclude':
        return format_columns.ListColumn(plan.get('exclude') or [])
    if key == 'runs':
        return _runs_text(plan.get('runs'))
    return plan.get(key)


def _show_plan(plan):
    columns = [(k, t) for k, t in _PLAN_COLUMNS
               if k != 'runs' or 'runs' in plan]
    return (tuple(t for _k, t in columns),
            tuple(_plan_value(plan, k) for k, _t in columns))


def _run_value(run, key):
    value = run.get(key)
    if key.endswith('_ids'):
        return format_columns.ListColumn(value or [])
    return value


def _show_run(run):
    return (tuple(t for _k, t in _RUN_COLUMNS),
            tuple(_run_value(run, k) for k, _t in _RUN_COLUMNS))


def _schedule_arg(text):
    fields = text.split()
    if len(fields) != 5:
        raise argparse.ArgumentTypeError(_(
            'five cron fields expected ("<minute> <hour> <day-of-month> '
            '<month> <day-of-week>"), got %d in "%s"') % (len(fields), text))
    return dict(zip(_CRON, fields))


def _bandwidth_arg(text):
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise argparse.ArgumentTypeError(_(
            'a rate in MiB/s above 0 expected, got "%s"') % text)
    return value


def _add_plan(parser):
    parser.add_argument('plan', metavar='<plan>',
                        help=_('Backup plan (name or ID)'))


def _add_target(parser, required):
    target = parser.add_mutually_exclusive_group(required=required)
    target.add_argument(
        '--volume', metavar='<volume>',
        help=_('Back up this volume (name or ID)'))
    target.add_argument(
        '--instance-group', metavar='<group>',
        help=_('Back up this instance group, every volume as one set '
               '(name or ID)'))
    target.add_argument(
        '--volume-type', metavar='<volume-type>',
        help=_('Back up every volume of the project with this volume type '
               '(name or ID)'))


def _add_settings(parser, create):
    parser.add_argument(
        '--schedule', metavar='"<min> <hour> <dom> <month> <dow>"',
        type=_schedule_arg, required=create,
        help=_('When to run, five cron fields, e.g. "30 2 * * *" (02:30 '
               'each day) or "0 1 * * sat,sun"'))
    parser.add_argument(
        '--timezone', metavar='<zone>',
        help=_('IANA time zone of the schedule, e.g. Europe/Berlin '
               '(default: UTC)'))
    parser.add_argument(
        '--keep', metavar='<count>', type=int, required=create,
        help=_('Backup sets to keep (at least 1); older ones are deleted '
               'after a successful run'))
    parser.add_argument(
        '--full-every', metavar='<count>', type=int,
        help=_('A full backup every <count> runs, incrementals between '
               '(default: 1, every run a full backup)'))
    parser.add_argument(
        '--name', metavar='<name>', help=_('Plan name'))
    parser.add_argument(
        '--description', metavar='<description>',
        help=_('Plan description'))
    parser.add_argument(
        '--exclude', metavar='<id>', action='append', dest='exclude',
        help=_('Leave this volume (or instance) out: for instance-group '
               'and volume-type plans (repeat for more%s)') % (
                   '' if create else _('; replaces the list')))
    active = parser.add_mutually_exclusive_group()
    active.add_argument(
        '--enable', dest='active', action='store_true', default=None,
        help=_('The plan runs on its schedule (default)' if create else
               _('The plan runs on its schedule again')))
    active.add_argument(
        '--disable', dest='active', action='store_false',
        help=_('The plan does not run on its schedule (it can still be '
               'run by hand)'))


def _add_bandwidth(parser, create):
    if create:
        parser.add_argument(
            '--bandwidth', metavar='<MiB/s>', type=_bandwidth_arg,
            help=_('Cap the rate of the data the plan\'s backups move'))
        return
    cap = parser.add_mutually_exclusive_group()
    cap.add_argument(
        '--bandwidth', metavar='<MiB/s>', type=_bandwidth_arg,
        help=_('Cap the rate of the data the plan\'s backups move'))
    cap.add_argument(
        '--no-bandwidth', action='store_true',
        help=_('Remove the rate cap'))


def _target(cmd, parsed_args):
    """The API's target object from the options, or None."""
    if parsed_args.volume:
        return {'volume_id': _client(cmd).resolve_volume_id(
            parsed_args.volume)}
    if parsed_args.instance_group:
        groups = cmd.app.client_manager.instance_groups
        return {'instance_group_id': groups.resolve_group_id(
            parsed_args.instance_group)}
    if parsed_args.volume_type:
        return {'volume_type': parsed_args.volume_type}
    return None


def _schedule(parsed_args):
    schedule = dict(parsed_args.schedule or {})
    if parsed_args.timezone:
        schedule['timezone'] = parsed_args.timezone
    return schedule or None


class CreateBackupPlan(command.ShowOne):
    _description = _('Create a backup plan: scheduled backups of a volume, '
                     'an instance group or every volume of a volume type, '
                     'with retention')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_target(parser, required=True)
        _add_settings(parser, create=True)
        _add_bandwidth(parser, create=True)
        return parser

    def take_action(self, parsed_args):
        plan = _client(self).create_plan(
            _target(self, parsed_args), _schedule(parsed_args),
            parsed_args.keep, name=parsed_args.name,
            description=parsed_args.description, active=parsed_args.active,
            full_every=parsed_args.full_every,
            bandwidth_mib_s=parsed_args.bandwidth,
            exclude=parsed_args.exclude)
        return _show_plan(plan)


class ListBackupPlan(command.Lister):
    _description = _('List backup plans')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            '--all-projects', action='store_true', default=False,
            help=_('Plans of every project (admin only)'))
        active = parser.add_mutually_exclusive_group()
        active.add_argument(
            '--enabled', dest='active', action='store_true', default=None,
            help=_('Only enabled plans'))
        active.add_argument(
            '--disabled', dest='active', action='store_false',
            help=_('Only disabled plans'))
        parser.add_argument(
            '--long', action='store_true', default=False,
            help=_('List additional fields in output'))
        return parser

    def take_action(self, parsed_args):
        plans = _client(self).list_plans(
            all_projects=parsed_args.all_projects, active=parsed_args.active)
        keys = ['id', 'name', 'target', 'schedule', 'timezone', 'active',
                'keep', 'next_run_at']
        if parsed_args.long:
            keys += ['full_every', 'bandwidth_mib_s', 'exclude',
                     'project_id', 'description']
        titles = dict(_PLAN_COLUMNS)
        return (tuple(titles[k] for k in keys),
                [tuple(_plan_value(p, k) for k in keys) for p in plans])


class ShowBackupPlan(command.ShowOne):
    _description = _('Show a backup plan and its latest runs')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_plan(parser)
        return parser

    def take_action(self, parsed_args):
        return _show_plan(_client(self).find_plan(parsed_args.plan))


class SetBackupPlan(command.Command):
    _description = _('Change a backup plan (what is not given stays)')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_plan(parser)
        _add_target(parser, required=False)
        _add_settings(parser, create=False)
        _add_bandwidth(parser, create=False)
        parser.add_argument(
            '--no-exclude', action='store_true',
            help=_('Remove every exclusion'))
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        plan_id = client.resolve_plan_id(parsed_args.plan)
        bandwidth = parsed_args.bandwidth
        if parsed_args.no_bandwidth:
            bandwidth = 'none'
        exclude = parsed_args.exclude
        if parsed_args.no_exclude:
            if exclude:
                raise ValueError(_('--exclude and --no-exclude together'))
            exclude = []
        client.update_plan(
            plan_id, target=_target(self, parsed_args),
            schedule=_schedule(parsed_args), name=parsed_args.name,
            description=parsed_args.description, active=parsed_args.active,
            keep=parsed_args.keep, full_every=parsed_args.full_every,
            bandwidth_mib_s=bandwidth, exclude=exclude)


class DeleteBackupPlan(command.Command):
    _description = _('Delete backup plans (their backups are kept)')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('plans', metavar='<plan>', nargs='+',
                            help=_('Backup plan(s) to delete (name or ID)'))
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        for plan in parsed_args.plans:
            client.delete_plan(client.resolve_plan_id(plan))


class RunBackupPlan(command.ShowOne):
    _description = _('Run a backup plan now (a cinder-backup service takes '
                     'the queued run; follow it with "volume backup plan '
                     'run list")')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_plan(parser)
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        return _show_run(client.run_plan(
            client.resolve_plan_id(parsed_args.plan)))


class ListBackupPlanRun(command.Lister):
    _description = _('List the runs of a backup plan, newest first')

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        _add_plan(parser)
        parser.add_argument(
            '--limit', metavar='<count>', type=int,
            help=_('At most this many runs (default: 20)'))
        parser.add_argument(
            '--long', action='store_true', default=False,
            help=_('List additional fields in output'))
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        runs = client.list_runs(client.resolve_plan_id(parsed_args.plan),
                                limit=parsed_args.limit)
        keys = ['id', 'kind', 'status', 'scheduled_for', 'started_at',
                'finished_at', 'full', 'backup_ids', 'error']
        if parsed_args.long:
            keys += ['host', 'group_snapshot_ids', 'deleted_backup_ids',
                     'heartbeat_at']
        titles = dict(_RUN_COLUMNS)
        return (tuple(titles[k] for k in keys),
                [tuple(_run_value(r, k) for k in keys) for r in runs])
