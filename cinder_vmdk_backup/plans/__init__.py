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

"""Backup plans: scheduled backups of a volume, an instance group or every
volume of a project with a volume type, with retention.

Plans and their runs live in the plugin's own tables (:mod:`.db`), in the
database every cinder-api and cinder-backup node reaches, so that every
node sees the same plans and they survive restarts. Plain dicts cross the
boundaries between the modules of this package; no ORM object leaves
:mod:`.db.api`.
"""
