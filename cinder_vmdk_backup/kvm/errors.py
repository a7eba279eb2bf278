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

"""Errors of the KVM/qcow2 helpers.

Every message names the image (path) and the operation; none carries a
credential (there are none here: everything is local files and a local
libvirt connection).
"""


class KvmError(Exception):
    """Base of the KVM/qcow2 helpers' errors."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class QemuImgError(KvmError):
    """qemu-img failed; the message carries its own error text."""


class ImageCorruptError(QemuImgError):
    """``qemu-img check`` found corruption, or qemu-img cannot parse it."""


class DomainError(KvmError):
    """A libvirt operation on a domain failed."""


class ImageInUseError(KvmError):
    """The image is attached to a running domain."""


class MergeError(KvmError):
    """Merging an overlay back failed; the chain is left usable."""


class GroupFreezeFailed(KvmError):
    """Some images of an all-or-nothing set could not be frozen.

    Every image of the set was left (or put back) as it was.

    :ivar failures: ``{path: the exception that failed it}``
    :ivar undo_failures: ``{path: MergeError}`` of images whose freeze
        could not be undone now (the leftover cleaner merges them)
    """

    def __init__(self, failures, undo_failures=None):
        self.failures = failures
        self.undo_failures = undo_failures or {}
        message = 'Could not freeze %s' % '; '.join(
            '%s: %s' % (path, exc) for path, exc in sorted(failures.items()))
        if self.undo_failures:
            message += '; undoing the freeze failed for %s' % '; '.join(
                '%s: %s' % (path, exc)
                for path, exc in sorted(self.undo_failures.items()))
        super().__init__(message)
