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

"""Count test results from subunit2csv files into one closing line.

Prints ``N passed, N failed, N skipped`` and exits non-zero when a test
failed or when no test ran at all. With ``--subunit`` streams, the end of
each failed test's traceback is printed first, so the tail of a CI log says
why a test failed, not only which.
"""

import argparse
import csv
import os
import sys

TRACEBACK_TAIL_LINES = 25


def print_failure_tracebacks(subunit_files):
    # Imported here: the plain count works without the test venv.
    import subunit
    import testtools

    def show(test):
        if test['status'] not in ('fail', 'failure', 'error'):
            return
        details = test['details']
        text = details.get('traceback')
        if text is None:
            return
        lines = text.as_text().rstrip().splitlines()
        print('--- %s (last %d lines of its traceback)' % (
            test['id'], TRACEBACK_TAIL_LINES))
        print('\n'.join(lines[-TRACEBACK_TAIL_LINES:]))

    for name in subunit_files:
        with open(name, 'rb') as f:
            result = testtools.StreamToDict(show)
            result.startTestRun()
            try:
                subunit.ByteStreamToStreamResult(f).run(result)
            finally:
                result.stopTestRun()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('csv_files', nargs='*')
    parser.add_argument('--extra-passed', type=int, default=0)
    parser.add_argument('--extra-failed', type=int, default=0)
    parser.add_argument('--subunit', action='append', default=[],
                        help='subunit v2 stream whose failures to show')
    args = parser.parse_args()
    if args.subunit:
        print_failure_tracebacks(args.subunit)
    passed, failed, skipped = args.extra_passed, args.extra_failed, 0
    for name in args.csv_files:
        suite = os.path.splitext(os.path.basename(name))[0]
        with open(name, newline='') as f:
            for row in csv.DictReader(f):
                status = row.get('status')
                if status in ('success', 'xfail'):
                    passed += 1
                elif status == 'skip':
                    skipped += 1
                elif status:
                    failed += 1
                    print('FAILED [%s]: %s (%s)' % (suite, row.get('test'),
                                                    status))
    print('%d passed, %d failed, %d skipped' % (passed, failed, skipped))
    return 1 if failed or not passed else 0


if __name__ == '__main__':
    sys.exit(main())
