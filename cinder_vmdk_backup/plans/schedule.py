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

"""Cron schedules of backup plans, in the plan's time zone.

Five fields as in crontab(5): minute, hour, day of month, month, day of
week; each ``*``, a number, a name (``jan``-``dec``, ``sun``-``sat``), a
range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a`` to the
end of the field), and comma-separated lists of those. Day of week 0 and 7
are both Sunday.

Semantics are Vixie cron's (what cron on Debian and Red Hat runs):

* when both day of month and day of week are restricted (neither field
  starts with ``*``), a day matches if **either** matches
  (``0 3 1 * mon``: the 1st of each month and every Monday); when one of
  them starts with ``*`` (``*/2`` included, as in Vixie cron) both must
  match;
* the times are wall-clock times in the plan's IANA time zone. A time
  that does not exist there (the hour skipped when the clocks spring
  forward) fires at the first minute after the gap (02:30 in
  Europe/Berlin on the last Sunday of March fires at 03:00 CEST); a time
  that exists twice (the hour repeated when the clocks fall back) fires
  once, at its first occurrence.

This is the plugin's own evaluator rather than croniter: croniter is not
among Cinder's requirements (nor installed with it), and these rules
(especially the two for clock changes) are a few lines here, tested
against zoneinfo's own data.
"""

import calendar
import datetime
import zoneinfo

from cinder.i18n import _

from cinder_vmdk_backup import exception

UTC = datetime.timezone.utc

_MONTHS = ('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep',
           'oct', 'nov', 'dec')
_DAYS = ('sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat')

#: name, lowest, highest, names (their index + lowest is their value)
_FIELDS = (
    ('minute', 0, 59, ()),
    ('hour', 0, 23, ()),
    ('day_of_month', 1, 31, ()),
    ('month', 1, 12, _MONTHS),
    ('day_of_week', 0, 7, _DAYS),
)

#: Most years the next firing can be away: Feb 29 on a given weekday
#: (day of month and day of week both restricted match either, so that
#: case is at most 8 years: 2096 -> 2104).
_HORIZON_DAYS = 366 * 9

#: Longest gap a time zone's clock change leaves, in minutes.
_GAP_LIMIT = 24 * 60


def _invalid(field, reason):
    return exception.InvalidBackupPlan(
        reason=_("schedule field %(field)s: %(why)s") % {
            'field': field, 'why': reason})


def _value(field, text, low, high, names):
    text = text.strip().lower()
    if text in names:
        return names.index(text) + low
    if not text.isdigit():
        raise _invalid(field, _("%(value)r is neither a number nor one of "
                                "the names %(names)s") % {
            'value': text, 'names': ', '.join(names) or _('(none)')})
    number = int(text)
    if not low <= number <= high:
        raise _invalid(field, _("%(value)d is outside %(low)d-%(high)d") % {
            'value': number, 'low': low, 'high': high})
    return number


def _parse_field(field, text, low, high, names):
    """Return the set of values ``text`` selects.

    :raises InvalidBackupPlan: naming the field and what is wrong with it
    """
    if not isinstance(text, str) or not text.strip():
        raise _invalid(field, _("it is empty"))
    values = set()
    for item in text.split(','):
        item = item.strip()
        if not item:
            raise _invalid(field, _("%r has an empty list item") % text)
        range_text, slash, step_text = item.partition('/')
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise _invalid(field, _("the step of %r must be a whole "
                                        "number of at least 1") % item)
            step = int(step_text)
        if range_text == '*':
            first, last = low, high
        elif '-' in range_text:
            first_text, _dash, last_text = range_text.partition('-')
            first = _value(field, first_text, low, high, names)
            last = _value(field, last_text, low, high, names)
            if first > last:
                raise _invalid(field, _("the range %r runs backwards") %
                               item)
        else:
            first = _value(field, range_text, low, high, names)
            # "a/n" runs from a to the end of the field, as most crons
            # read it; a plain "a" is that one value.
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return values


class Schedule(object):
    """A cron schedule in a time zone.

    :param minute: cron field, e.g. ``"0"``, ``"*/15"``
    :param hour: cron field
    :param day_of_month: cron field
    :param month: cron field (numbers or ``jan``-``dec``)
    :param day_of_week: cron field (0-7 or ``sun``-``sat``; 0 and 7 are
        Sunday)
    :param timezone: IANA time zone name the times are wall-clock times
        of (``"UTC"``, ``"Europe/Berlin"``)
    :raises InvalidBackupPlan: a field or the time zone is invalid, or the
        day and month fields select no date that exists (``31 feb``)
    """

    def __init__(self, minute='0', hour='0', day_of_month='*', month='*',
                 day_of_week='*', timezone='UTC'):
        texts = (minute, hour, day_of_month, month, day_of_week)
        parsed = [_parse_field(name, text, low, high, names)
                  for (name, low, high, names), text in zip(_FIELDS, texts)]
        (self._minutes, self._hours, self._days, self._months,
         week_days) = parsed
        # 7 is Sunday too; Python's weekday() counts Monday as 0.
        self._week_days = {(day % 7 + 6) % 7 for day in week_days}
        self._minutes = sorted(self._minutes)
        self._hours = sorted(self._hours)
        self._dom_star = day_of_month.strip().startswith('*')
        self._dow_star = day_of_week.strip().startswith('*')
        self.fields = dict(zip((f[0] for f in _FIELDS),
                               (t.strip() for t in texts)))
        if not isinstance(timezone, str) or not timezone:
            raise _invalid('timezone', _("it is empty"))
        try:
            self.zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise _invalid('timezone', _("%r is not a known IANA time "
                                         "zone") % timezone)
        self.timezone = timezone
        if self._dom_star or not self._dow_star:
            return
        # Only the day of month restricts the days: it must exist in one
        # of the months (February has a 29th in leap years).
        if not any(day <= calendar.monthrange(2000, month)[1]
                   for month in self._months for day in self._days):
            raise _invalid('day_of_month', _("no day selected exists in "
                                             "the months selected"))

    def __repr__(self):
        return ('Schedule(%(minute)r, %(hour)r, %(day_of_month)r, '
                '%(month)r, %(day_of_week)r, ' % self.fields +
                '%r)' % self.timezone)

    def _day_matches(self, day):
        if day.month not in self._months:
            return False
        dom = day.day in self._days
        dow = day.weekday() in self._week_days
        if self._dom_star or self._dow_star:
            return dom and dow
        return dom or dow

    def _instant(self, wall):
        """The instant the naive local wall-clock time ``wall`` fires at.

        A time that exists twice is its first occurrence (``fold=0``); a
        time in a gap is the first minute after the gap.
        """
        local = wall.replace(tzinfo=self.zone)
        instant = local.astimezone(UTC)
        if instant.astimezone(self.zone).replace(tzinfo=None) == wall:
            return instant
        for minutes in range(1, _GAP_LIMIT + 1):
            later = wall + datetime.timedelta(minutes=minutes)
            instant = later.replace(tzinfo=self.zone).astimezone(UTC)
            if instant.astimezone(self.zone).replace(tzinfo=None) == later:
                return instant
        raise exception.InvalidBackupPlan(
            reason=_("time zone %s has a gap of more than a day") %
            self.timezone)

    def next_after(self, when):
        """Return the first firing strictly after ``when``.

        :param when: a datetime; naive means UTC
        :returns: an aware UTC datetime, on a whole minute
        """
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        start = when.astimezone(self.zone).replace(
            tzinfo=None, second=0, microsecond=0, fold=0)
        day = start.date()
        for _day in range(_HORIZON_DAYS):
            if self._day_matches(day):
                for hour in self._hours:
                    for minute in self._minutes:
                        wall = datetime.datetime.combine(
                            day, datetime.time(hour, minute))
                        if wall < start:
                            continue
                        instant = self._instant(wall)
                        if instant > when:
                            return instant
            day += datetime.timedelta(days=1)
        raise exception.InvalidBackupPlan(
            reason=_("schedule %s never fires") % self)
