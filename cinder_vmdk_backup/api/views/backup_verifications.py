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

"""Views of the backup-verification API.

One shape for every answer: a backup's verification (its id, name, status,
volume and project, then the record of its last verification: ``status``
``queued``, ``running``, ``ok``, ``failed``, ``error`` or ``unverified``,
progress, summary, how many problems were found and the first of them,
as many as the record keeps). Keys the record lacks are answered as
null, so a client can rely on the shape.
"""

VERIFICATION_KEYS = (
    'backup_id', 'backup_name', 'backup_status', 'volume_id', 'project_id',
    'status', 'verification_id', 'deep', 'started_at', 'finished_at',
    'progress', 'summary', 'problem_count')

PROBLEM_KEYS = ('backup_id', 'object', 'offset', 'length', 'reason')

SET_KEYS = ('verification_id', 'group_id', 'group_snapshot_id')


def _pick(record, keys):
    return {key: record.get(key) for key in keys}


class ViewBuilder(object):
    """Builds the answer bodies from verification.api's plain dicts."""

    def verification(self, entry):
        view = _pick(entry, VERIFICATION_KEYS)
        view['problems'] = [_pick(p, PROBLEM_KEYS)
                            for p in entry.get('problems') or []]
        return view

    def detail(self, entry):
        return {'verification': self.verification(entry)}

    def detail_list(self, entries):
        return {'verifications': [self.verification(e) for e in entries]}

    def set_verification(self, result):
        """The answer of a backup set's verification."""
        view = _pick(result, SET_KEYS)
        view['backups'] = [self.verification(e)
                           for e in result.get('backups') or []]
        return {'verification': view}
