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

"""Errors of the vSphere data movement code.

They subclass oslo.vmware's base exception, so that code catching
``VMwareDriverException`` (Cinder's VMDK driver does) sees them. Their
messages name the operation and the object and never carry a cookie, a
ticket or a password.
"""

from oslo_vmware import exceptions


class TransferError(exceptions.VMwareDriverException):
    """A disk export or import did not complete."""

    msg_fmt = 'Disk transfer failed: %(reason)s'


class TransferStalled(TransferError):
    """No byte moved for longer than the idle timeout."""

    msg_fmt = ('Disk transfer %(what)s moved no data for %(seconds)s s; '
               'abandoned.')


class LeaseNotReady(TransferError):
    """vCenter did not make an NFC lease ready in time, or failed it."""

    msg_fmt = 'NFC lease for %(what)s not ready: %(reason)s'


class DiskSwapError(exceptions.VMwareDriverException):
    """The restored disk could not be put into the volume's backing."""

    msg_fmt = 'Disk swap into %(backing)s failed: %(reason)s'
