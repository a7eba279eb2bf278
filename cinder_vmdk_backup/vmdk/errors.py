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
that names what is wrong. Its class says which kind of fault it is, so that
a caller (and an operator reading the message) can tell them apart:

* :class:`VmdkTruncated`: the data ended early, what a broken transfer
  does; the same file read again in full may well be fine.
* :class:`VmdkCorrupt`: the bytes are there but the structures disagree
  (bad magic or flags, a marker or grain out of place, grain tables that do
  not match the grains, a bad footer, compressed data that does not
  inflate); reading it again will not help.
* :class:`VmdkUnsupported`: a valid file of another kind (another VMDK
  variant, qcow2, a raw image, ...).
* :class:`VmdkSourceChanged`: the writer's raw source changed between the
  pass that measured the VMDK's length and the pass that wrote it.

The names of earlier releases (``VmdkFormatError``, ``VmdkTruncatedError``,
``VmdkUnsupportedError``) remain as aliases.
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


class VmdkTruncated(VmdkError):
    """The data ends before the structure it was in the middle of.

    The reader raises it when the VMDK stream ends early; the writer when
    its raw source is shorter than the capacity it was given.
    """


class VmdkCorrupt(VmdkError):
    """The stream breaks the stream-optimized VMDK format."""


class VmdkUnsupported(VmdkError):
    """The input is something else: another VMDK kind, raw data, ..."""


class VmdkSourceChanged(VmdkError):
    """The writer's source changed while it was being encoded."""


#: names of earlier releases
VmdkFormatError = VmdkCorrupt
VmdkTruncatedError = VmdkTruncated
VmdkUnsupportedError = VmdkUnsupported
