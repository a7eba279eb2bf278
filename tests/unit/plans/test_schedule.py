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

"""Cron schedules: the clock is the ``when`` every call is given."""

import datetime
import zoneinfo

from oslotest import base

from cinder_vmdk_backup import exception
from cinder_vmdk_backup.plans import schedule

UTC = datetime.timezone.utc


def utc(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def local(zone, *args, fold=0):
    return datetime.datetime(*args, tzinfo=zoneinfo.ZoneInfo(zone),
                             fold=fold)


def firings(sched, start, count):
    found = []
    when = start
    for _i in range(count):
        when = sched.next_after(when)
        found.append(when)
    return found


class ScheduleTestCase(base.BaseTestCase):

    def test_every_minute_strictly_after(self):
        sched = schedule.Schedule('*', '*', '*', '*', '*')
        self.assertEqual(utc(2026, 1, 1, 0, 1),
                         sched.next_after(utc(2026, 1, 1, 0, 0)))
        self.assertEqual(utc(2026, 1, 1, 0, 1),
                         sched.next_after(utc(2026, 1, 1, 0, 0, 59, 999)))
        # naive means UTC; the answer is aware UTC
        got = sched.next_after(datetime.datetime(2026, 1, 1, 0, 0))
        self.assertEqual(utc(2026, 1, 1, 0, 1), got)
        self.assertEqual(UTC, got.tzinfo)
        # a time given in another zone is the same instant
        self.assertEqual(utc(2026, 1, 1, 0, 1), sched.next_after(
            local('Asia/Tokyo', 2026, 1, 1, 9, 0)))

    def test_steps_ranges_lists(self):
        sched = schedule.Schedule('*/15', '9-17/4', '*', '*', '*')
        self.assertEqual(
            [utc(2026, 1, 1, 9, 0), utc(2026, 1, 1, 9, 15),
             utc(2026, 1, 1, 9, 30), utc(2026, 1, 1, 9, 45),
             utc(2026, 1, 1, 13, 0)],
            firings(sched, utc(2026, 1, 1, 0, 0), 5))
        sched = schedule.Schedule('5,10-12,50/5', '0', '*', '*', '*')
        self.assertEqual(
            [5, 10, 11, 12, 50, 55, 5],
            [w.minute for w in firings(sched, utc(2026, 1, 1), 7)])

    def test_names_and_sunday_as_0_or_7(self):
        for dow in ('0', '7', 'sun', 'SUN'):
            with self.subTest(dow=dow):
                sched = schedule.Schedule('0', '3', '*', '*', dow)
                # 4 January 2026 is a Sunday
                self.assertEqual([utc(2026, 1, 4, 3), utc(2026, 1, 11, 3)],
                                 firings(sched, utc(2026, 1, 1), 2))
        sched = schedule.Schedule('0', '0', '1', 'mar-may,Nov', 'mon-fri')
        self.assertEqual(('0', '0', '1', 'mar-may,Nov', 'mon-fri'),
                         tuple(sched.fields[k] for k in (
                             'minute', 'hour', 'day_of_month', 'month',
                             'day_of_week')))
        got = firings(schedule.Schedule('0', '0', '1', 'mar-may,nov', '*'),
                      utc(2026, 1, 1), 5)
        self.assertEqual([3, 4, 5, 11, 3], [w.month for w in got])
        self.assertEqual(2027, got[-1].year)

    def test_month_ends(self):
        # the 31st: months without one are skipped
        sched = schedule.Schedule('0', '0', '31', '*', '*')
        self.assertEqual([utc(2026, 1, 31), utc(2026, 3, 31),
                          utc(2026, 5, 31), utc(2026, 7, 31),
                          utc(2026, 8, 31)],
                         firings(sched, utc(2026, 1, 1), 5))
        # the 29th of February: leap years only
        sched = schedule.Schedule('0', '12', '29', '2', '*')
        self.assertEqual([utc(2028, 2, 29, 12), utc(2032, 2, 29, 12)],
                         firings(sched, utc(2026, 3, 1), 2))
        # 2100 is not a leap year
        self.assertEqual(utc(2104, 2, 29, 12),
                         sched.next_after(utc(2096, 3, 1)))
        # the last days of a month, across the year's end
        sched = schedule.Schedule('59', '23', '28-31', '*', '*')
        self.assertEqual([utc(2026, 12, 28, 23, 59), utc(2026, 12, 29, 23, 59),
                          utc(2026, 12, 30, 23, 59), utc(2026, 12, 31, 23, 59),
                          utc(2027, 1, 28, 23, 59)],
                         firings(sched, utc(2026, 12, 28), 5))

    def test_day_of_month_or_day_of_week(self):
        # both restricted: either matches (Vixie cron)
        sched = schedule.Schedule('0', '0', '13', '*', 'fri')
        got = firings(sched, utc(2026, 2, 1), 4)
        # Fridays 6, 13 (also the 13th, once), 20, 27 February 2026
        self.assertEqual([6, 13, 20, 27], [w.day for w in got])
        sched = schedule.Schedule('0', '0', '1,15', '*', 'mon')
        # 1 March 2026 is a Sunday
        self.assertEqual([1, 2, 9, 15, 16, 23],
                         [w.day for w in firings(sched, utc(2026, 2, 28),
                                                 6)])

    def test_star_step_makes_days_and(self):
        # a day field starting with '*' is unrestricted for the OR rule, as
        # in Vixie cron: every other day that is also a Monday
        sched = schedule.Schedule('0', '0', '*/2', '*', 'mon')
        got = firings(sched, utc(2026, 3, 1), 3)
        for when in got:
            self.assertEqual(0, when.weekday())
            self.assertEqual(1, when.day % 2)
        self.assertEqual([9, 23, 13], [w.day for w in got])
        # day of week '*': only the day of month counts
        sched = schedule.Schedule('0', '0', '10', '*', '*')
        self.assertEqual([utc(2026, 3, 10), utc(2026, 4, 10)],
                         firings(sched, utc(2026, 3, 1), 2))

    def test_spring_forward_berlin(self):
        # 29 March 2026: 02:00 CET -> 03:00 CEST; 02:30 does not exist
        sched = schedule.Schedule('30', '2', '*', '*', '*', 'Europe/Berlin')
        got = firings(sched, utc(2026, 3, 27, 12), 4)
        self.assertEqual([local('Europe/Berlin', 2026, 3, 28, 2, 30),
                          local('Europe/Berlin', 2026, 3, 29, 3, 0),
                          local('Europe/Berlin', 2026, 3, 30, 2, 30),
                          local('Europe/Berlin', 2026, 3, 31, 2, 30)], got)
        self.assertEqual(utc(2026, 3, 29, 1, 0), got[1])
        # every minute: the gap's minutes fire once, at 03:00
        sched = schedule.Schedule('*', '*', '*', '*', '*', 'Europe/Berlin')
        self.assertEqual([utc(2026, 3, 29, 0, 59), utc(2026, 3, 29, 1, 0),
                          utc(2026, 3, 29, 1, 1)],
                         firings(sched, utc(2026, 3, 29, 0, 58), 3))

    def test_fall_back_berlin(self):
        # 25 October 2026: 03:00 CEST -> 02:00 CET; 02:30 exists twice
        sched = schedule.Schedule('30', '2', '*', '*', '*', 'Europe/Berlin')
        got = firings(sched, utc(2026, 10, 24, 12), 3)
        self.assertEqual([utc(2026, 10, 25, 0, 30),   # 02:30 CEST only
                          utc(2026, 10, 26, 1, 30),
                          utc(2026, 10, 27, 1, 30)], got)
        # asked during the repeated hour, after the first 02:30
        self.assertEqual(utc(2026, 10, 26, 1, 30), sched.next_after(
            local('Europe/Berlin', 2026, 10, 25, 2, 10, fold=1)))

    def test_spring_forward_new_york(self):
        # 8 March 2026: 02:00 EST -> 03:00 EDT
        sched = schedule.Schedule('15', '2', '*', '*', '*',
                                  'America/New_York')
        got = firings(sched, utc(2026, 3, 7, 12), 3)
        self.assertEqual([utc(2026, 3, 8, 7, 0),    # 03:00 EDT
                          utc(2026, 3, 9, 6, 15),   # 02:15 EDT
                          utc(2026, 3, 10, 6, 15)], got)

    def test_fall_back_new_york(self):
        # 1 November 2026: 02:00 EDT -> 01:00 EST; 01:00-01:59 twice
        sched = schedule.Schedule('*/20', '*', '*', '*', '*',
                                  'America/New_York')
        got = firings(sched, utc(2026, 11, 1, 4, 50), 6)
        self.assertEqual([utc(2026, 11, 1, 5, 0),    # 01:00 EDT
                          utc(2026, 11, 1, 5, 20),
                          utc(2026, 11, 1, 5, 40),
                          utc(2026, 11, 1, 7, 0),    # 02:00 EST
                          utc(2026, 11, 1, 7, 20),
                          utc(2026, 11, 1, 7, 40)], got)
        self.assertEqual(len(got), len(set(got)))

    def test_invalid_fields_named(self):
        cases = [
            (('60', '*', '*', '*', '*'), 'minute', '60 is outside 0-59'),
            (('*', '24', '*', '*', '*'), 'hour', 'outside 0-23'),
            (('*', '*', '0', '*', '*'), 'day_of_month', 'outside 1-31'),
            (('*', '*', '*', '13', '*'), 'month', 'outside 1-12'),
            (('*', '*', '*', 'foo', '*'), 'month', "'foo'"),
            (('*', '*', '*', '*', '8'), 'day_of_week', 'outside 0-7'),
            (('*', '*', '*', '*', 'sunday'), 'day_of_week', "'sunday'"),
            (('*/0', '*', '*', '*', '*'), 'minute', 'step'),
            (('*/x', '*', '*', '*', '*'), 'minute', 'step'),
            (('5-1', '*', '*', '*', '*'), 'minute', 'backwards'),
            (('1,,2', '*', '*', '*', '*'), 'minute', 'empty'),
            (('', '*', '*', '*', '*'), 'minute', 'empty'),
            (('-1', '*', '*', '*', '*'), 'minute', ''),
            (('*', '*', '31', 'feb', '*'), 'day_of_month', 'no day'),
            (('*', '*', '30,31', '2', '*'), 'day_of_month', 'no day'),
        ]
        for fields, name, why in cases:
            with self.subTest(fields=fields):
                error = self.assertRaises(exception.InvalidBackupPlan,
                                          schedule.Schedule, *fields)
                self.assertIn('schedule field %s' % name, str(error))
                self.assertIn(why, str(error))
        # but February 31st OR Mondays is fine
        schedule.Schedule('0', '0', '31', '2', 'mon')

    def test_invalid_timezone(self):
        for zone in ('Mars/Olympus', '', '../etc/passwd', None):
            with self.subTest(zone=zone):
                error = self.assertRaises(exception.InvalidBackupPlan,
                                          schedule.Schedule, '0', '0', '*',
                                          '*', '*', zone)
                self.assertIn('schedule field timezone', str(error))
