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

"""Errors of the stream-optimized VMDK codec.

Every error carries the byte offset in the VMDK stream where the offending
structure starts (``None`` where no single offset applies) and a reason
that names what is wrong, so that an operator can tell a truncated
transfer from a corrupt or foreign file.
"""


class VmdkError(ValueError):
    """A VMDK stream cannot be decoded or encoded.

    :param reason: what is wrong, in words
    :param offset: byte offset in the VMDK stream, or None
    """

    def __init__(self, reason, offset=None):
        self.reason = reason
        self.offset = offset
        if offset is None:
            message = reason
        else:
            message = '%s (at byte offset %d)' % (reason, offset)
        super().__init__(message)


class VmdkFormatError(VmdkError):
    """The stream breaks the stream-optimized VMDK format."""


class VmdkTruncatedError(VmdkError):
    """The stream ends before the structure it was in the middle of."""


class VmdkUnsupportedError(VmdkError):
    """The input is something else: another VMDK kind, raw data, ..."""
