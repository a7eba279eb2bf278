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

"""Benchmarks of cinder-vmdk-backup against their peers, run in one go.

``python -m bench NAME [args]`` runs ``bench.NAME.main(args)``;
``python -m bench`` runs every benchmark module with its defaults.
"""

# Every benchmark process (workers included: ``python -m bench.NAME``)
# imports this package first: eventlet's deprecation banner is silenced
# there before Cinder imports eventlet (see tests/__init__.py).
import warnings

from tests import ignore_eventlet_banner  # noqa: E402

ignore_eventlet_banner()
# Each step builds its own Cinder database with Cinder's migrations; alembic
# warns of every unnamed CHECK constraint it recreates (Cinder's schema,
# nothing a benchmark's reader can act on).
warnings.filterwarnings('ignore', message='Unnamed CHECK constraint',
                        category=UserWarning, module='alembic')
