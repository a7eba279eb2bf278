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

"""Dispatch ``python -m bench [NAME [args...]]`` to a benchmark module."""

import importlib
import pkgutil
import sys

import bench

#: Benchmarks run only when named: they start a whole test deployment
#: (tools/deploy: Keystone, MariaDB, RabbitMQ, Cinder's services) and take
#: minutes before the first figure.
ONLY_WHEN_NAMED = ('deployment_table',)


def _modules():
    return sorted(info.name for info in pkgutil.iter_modules(bench.__path__)
                  if not info.name.startswith('_'))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ('-h', '--help'):
        print('usage: python -m bench [NAME [ARGS...]]\nbenchmarks: %s\n'
              '(without NAME: all but %s)'
              % (', '.join(_modules()), ', '.join(ONLY_WHEN_NAMED)))
        return 0
    if argv:
        names, rest = [argv[0]], argv[1:]
    else:
        names = [n for n in _modules() if n not in ONLY_WHEN_NAMED]
        rest = []
    status = 0
    for name in names:
        if name not in _modules():
            print('no benchmark named %r; known: %s'
                  % (name, ', '.join(_modules())), file=sys.stderr)
            return 2
        module = importlib.import_module('bench.' + name)
        status = module.main(rest) or status
    return status


if __name__ == '__main__':
    sys.exit(main())
