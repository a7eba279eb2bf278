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

"""Streaming stream-optimized VMDK codec: no vSphere, no Cinder.

:class:`StreamOptimizedReader` decodes a VMDK arriving on a forward-only
stream into raw disk data; :class:`StreamOptimizedWriter` encodes raw data
into a VMDK written sequentially, with its exact length known up front.
Both raise :class:`VmdkError` subclasses naming what is wrong and where:
:class:`VmdkTruncated` (the data ended early), :class:`VmdkCorrupt` (the
structures disagree), :class:`VmdkUnsupported` (another kind of file),
:class:`VmdkSourceChanged` (the writer's source changed under it).

The codec is plain synchronous code: it starts no threads and logs
nothing. Where inflating or deflating gains from several cores, the caller
hands it a :class:`concurrent.futures.Executor`.
"""

from cinder_vmdk_backup.vmdk.errors import VmdkCorrupt  # noqa: F401
from cinder_vmdk_backup.vmdk.errors import VmdkError  # noqa: F401
from cinder_vmdk_backup.vmdk.errors import VmdkFormatError  # noqa: F401
from cinder_vmdk_backup.vmdk.errors import VmdkSourceChanged  # noqa: F401
from cinder_vmdk_backup.vmdk.errors import VmdkTruncated  # noqa: F401
from cinder_vmdk_backup.vmdk.errors import VmdkTruncatedError  # noqa: F401
from cinder_vmdk_backup.vmdk.errors import VmdkUnsupported  # noqa: F401
from cinder_vmdk_backup.vmdk.errors import VmdkUnsupportedError  # noqa: F401
from cinder_vmdk_backup.vmdk.reader import StreamOptimizedReader  # noqa: F401
from cinder_vmdk_backup.vmdk.writer import StreamOptimizedWriter  # noqa: F401
