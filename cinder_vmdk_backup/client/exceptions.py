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

"""Errors of the instance-group client.

A request that Cinder refuses raises a :class:`ClientException` subclass
chosen by the HTTP status, carrying the status and Cinder's own message
(taken from its fault body, e.g. ``{"badRequest": {"message": ...}}``) and
the request id, so that the user reads why, and an operator can find the
request in cinder-api's log. Nothing of the request (headers, token) goes
into an exception.
"""

from cinder_vmdk_backup.client.i18n import _

# Longest text of a non-JSON error body kept in a message.
_MAX_TEXT = 512


class ClientException(Exception):
    """A request to Cinder failed, or could not be made as asked.

    :ivar code: the HTTP status (None for an error found by the client)
    :ivar message: why, in Cinder's words where Cinder said why
    :ivar request_id: Cinder's ``x-openstack-request-id``, if any
    """

    http_status = None

    def __init__(self, message, code=None, request_id=None,
                 method=None, url=None):
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.http_status
        self.request_id = request_id
        self.method = method
        self.url = url

    def __str__(self):
        text = self.message
        if self.code is not None:
            text = '%s (HTTP %s)' % (text, self.code)
        if self.request_id:
            text = '%s (Request-ID: %s)' % (text, self.request_id)
        return text


class BadRequest(ClientException):
    http_status = 400


class Unauthorized(ClientException):
    http_status = 401


class Forbidden(ClientException):
    http_status = 403


class NotFound(ClientException):
    http_status = 404


class Conflict(ClientException):
    http_status = 409


class OverLimit(ClientException):
    http_status = 413


class NoUniqueMatch(ClientException):
    """A name given for an instance group names more than one."""


_BY_STATUS = {cls.http_status: cls for cls in
              (BadRequest, Unauthorized, Forbidden, NotFound, Conflict,
               OverLimit)}


def _message_of(response):
    """Cinder's reason for a refusal, from the body of its answer.

    Cinder's faults are ``{"<kind>": {"message": ..., "code": ...}}``; a
    body in another shape (a proxy's page, plain text) gives its text,
    shortened, and an empty one the HTTP reason.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and value.get('message'):
                return str(value['message'])
        if body.get('message'):
            return str(body['message'])
    text = (response.text or '').strip()
    if text:
        if len(text) > _MAX_TEXT:
            text = text[:_MAX_TEXT] + '...'
        return text
    return response.reason or _('HTTP error %s') % response.status_code


def from_response(response, method, url):
    """The exception for a response whose status is not a success.

    :param response: the :class:`requests.Response`
    :param method: the request's HTTP method
    :param url: the request's URL (kept on the exception; it carries no
        credential, unlike the headers, which are not kept)
    """
    status = response.status_code
    cls = _BY_STATUS.get(status, ClientException)
    return cls(_message_of(response), code=status,
               request_id=response.headers.get('x-openstack-request-id'),
               method=method, url=url)
