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
failed or when no test ran at all.
"""

import argparse
import csv
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('csv_files', nargs='*')
    parser.add_argument('--extra-passed', type=int, default=0)
    parser.add_argument('--extra-failed', type=int, default=0)
    args = parser.parse_args()
    passed, failed, skipped = args.extra_passed, args.extra_failed, 0
    for name in args.csv_files:
        with open(name, newline='') as f:
            for row in csv.DictReader(f):
                status = row.get('status')
                if status in ('success', 'xfail'):
                    passed += 1
                elif status == 'skip':
                    skipped += 1
                elif status:
                    failed += 1
                    print('FAILED: %s (%s)' % (row.get('test'), status))
    print('%d passed, %d failed, %d skipped' % (passed, failed, skipped))
    return 1 if failed or not passed else 0


if __name__ == '__main__':
    sys.exit(main())
