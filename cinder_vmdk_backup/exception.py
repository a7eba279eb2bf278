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

"""Exceptions of cinder-vmdk-backup.

They subclass Cinder's so that the managers handle them the way they handle
Cinder's own: their message is what an operator or a user reads, so it
names what went wrong and where, and never carries a credential.
"""

from cinder import exception
from cinder.i18n import _


class VmdkBackupError(exception.VolumeBackendAPIException):
    message = _("VMDK backup or restore failed: %(reason)s")


class InstanceGroupNotFound(exception.NotFound):
    message = _("Instance group %(group_id)s could not be found.")


class BackupSetNotFound(exception.NotFound):
    message = _("Backup set %(name)s of instance group %(group_id)s could "
                "not be found.")


class InstanceGroupInvalid(exception.Invalid):
    message = _("Invalid instance group request: %(reason)s")


class InstanceGroupBusy(exception.CinderException):
    message = _("Instance group %(group_id)s is busy with another "
                "operation (%(status)s); try again when it has ended.")
    code = 409
    safe = True


class InstanceNotShutDown(exception.Invalid):
    message = _("Instance %(instance_id)s is not shut down (%(state)s, as "
                "%(who)s reports); stop it before restoring its volumes.")


class GroupFreezeError(exception.VolumeBackendAPIException):
    message = _("Could not take one point in time for all volumes of the "
                "set: %(reason)s")


class BackupPlanNotFound(exception.NotFound):
    message = _("Backup plan %(plan_id)s could not be found.")


class BackupPlanRunNotFound(exception.NotFound):
    message = _("Run %(run_id)s of a backup plan could not be found.")


class InvalidBackupPlan(exception.Invalid):
    message = _("Invalid backup plan: %(reason)s")


class BackupPlanBusy(exception.CinderException):
    message = _("Backup plan %(plan_id)s has a run %(status)s already "
                "(%(run_id)s); run it again when that run has ended.")
    code = 409
    safe = True


class VerificationBusy(exception.Invalid):
    message = _("Backup %(backup_id)s is being verified already "
                "(verification %(verification_id)s, %(status)s); try again "
                "when it has ended.")
    code = 409


class VerificationError(exception.CinderException):
    """A verification that could not run (not a verdict on the backup)."""
    message = _("The backup could not be verified: %(reason)s")
