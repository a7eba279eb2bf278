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

"""What the plugin's API controllers share: errors to HTTP, body checks."""

import contextlib
import functools

from cinder import exception
from cinder.i18n import _
import webob

from cinder_vmdk_backup import exception as vmdk_exception

#: Refusals because something else is running on the resource: 409.
_CONFLICTS = (vmdk_exception.InstanceGroupBusy,
              vmdk_exception.BackupPlanBusy,
              vmdk_exception.VerificationBusy)


@contextlib.contextmanager
def http_errors():
    """Turn the APIs' exceptions into HTTP answers carrying their text.

    409 for an operation already running on the resource, 503 when no
    cinder-backup service is up to run it (not the caller's fault; a later
    try may succeed), 404, 400, 403 as Cinder answers them, 413 over quota.
    """
    try:
        yield
    except _CONFLICTS as exc:
        raise webob.exc.HTTPConflict(explanation=str(exc))
    except exception.ServiceNotFound as exc:
        raise webob.exc.HTTPServiceUnavailable(explanation=str(exc))
    except exception.NotFound as exc:
        raise webob.exc.HTTPNotFound(explanation=str(exc))
    except exception.Invalid as exc:
        raise webob.exc.HTTPBadRequest(explanation=str(exc))
    except exception.NotAuthorized as exc:
        raise webob.exc.HTTPForbidden(explanation=str(exc))
    except exception.QuotaError as exc:
        raise webob.exc.HTTPRequestEntityTooLarge(
            explanation=str(exc), headers={'Retry-After': '0'})


def body_required(func):
    """400 for a request without a body (Cinder's schema check needs one)."""
    @functools.wraps(func)
    def wrapper(self, req, *args, **kwargs):
        if kwargs.get('body') is None:
            raise webob.exc.HTTPBadRequest(explanation=_(
                "The request needs a JSON object as its body."))
        return func(self, req, *args, **kwargs)
    return wrapper
