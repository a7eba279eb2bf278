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

"""A stored backup and its chain, checked without a restore (in progress).
"""


class Cancelled(Exception):
    """The caller's ``cancelled()`` said to stop."""


class Report(object):
    """The outcome of a verification."""

    def __init__(self, backup_id):
        self.backup_id = backup_id
        self.chain = []
        self.objects_checked = 0
        self.bytes_checked = 0
        self.blocks_checked = 0
        self.problems = []
        self.regions = []
        self.elapsed = 0.0

    @property
    def ok(self):
        return not self.problems

    def summary(self):
        return ''


def verify(service, backup, deep=False, progress=None, cancelled=None):
    raise NotImplementedError()
