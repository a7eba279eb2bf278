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

"""PLACEHOLDER of helper B's module (branch i21-bitmaps), API of the issue
21 contract only, so that the qcow2 driver's side is written and unit
tested against it; the merge of i21-bitmaps replaces this file.
"""

from cinder_vmdk_backup.kvm import errors

PREFIX = 'cvb-'


class BitmapUnusable(errors.KvmError):
    """The bitmap cannot tell what changed (missing, inconsistent...)."""


def name_for(backup_id):
    return PREFIX + backup_id


def dirty_ranges(frozen_read_path, name, size):
    raise NotImplementedError()


def prune(path, keep_names, conn=None):
    """Returns the names removed."""
    raise NotImplementedError()


def list_ours(path):
    raise NotImplementedError()
