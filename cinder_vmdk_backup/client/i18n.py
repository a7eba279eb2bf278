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

"""Translation of the client's and the OpenStack client plugin's messages.

The client runs in the OpenStack client's virtualenv, where Cinder is not
installed: it cannot use ``cinder.i18n``, so it has a translator of its own
(oslo.i18n, which osc-lib and keystoneauth1's users have anyway).
"""

import oslo_i18n

_translators = oslo_i18n.TranslatorFactory(domain='cinder_vmdk_backup')

# The primary translation function, conventionally imported as ``_``.
_ = _translators.primary
