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

"""The tests of cinder-vmdk-backup, and the harness tools/demo.py and
bench/ are built on.

Importing this package (the first thing every test process does) silences
one warning, before anything imports eventlet: eventlet's deprecation
banner, which every process that imports Cinder prints once (Cinder imports
eventlet in ``cinder/__init__.py``). Whoever runs the tests, the demo or a
benchmark cannot act on it. It is told apart by its text: its category,
``eventlet.EventletDeprecationWarning``, does not exist before eventlet is
imported, and ``PYTHONWARNINGS`` cannot match it (the banner begins with a
newline, which ``-W`` options lose). Every other warning stays visible.
"""

import warnings


def ignore_eventlet_banner():
    """Filter out eventlet's deprecation banner, and nothing else."""
    warnings.filterwarnings('ignore', message=r'\nEventlet is deprecated\.',
                            category=Warning)


ignore_eventlet_banner()
