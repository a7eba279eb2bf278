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

"""One "node" racing for a plan's slots: run in a process of its own.

``python -m tests.functional.plans.claim_worker URL PLAN_ID FIRST_SLOT
SLOTS HOST THREADS`` connects, prints ``ready``, waits for a line on its
standard input (the test starts every node at once that way), then its
THREADS threads each try to claim every slot (one minute apart
from FIRST_SLOT, an ISO time) with ``plan_claim_slot``, the threads meeting
at a barrier before each slot. Prints a JSON list of ``[slot, run id]``
for the slots it won.
"""

import datetime
import json
import sys
import threading

from oslo_config import cfg

from cinder_vmdk_backup.plans.db import api


def main(url, plan_id, first, slots, host, threads):
    cfg.CONF([], project='cinder', default_config_files=[])
    cfg.CONF.set_override('connection', url, 'backup_plans')
    first = datetime.datetime.fromisoformat(first)
    slots, threads = int(slots), int(threads)
    api.get_engine()  # connect before the race starts
    barrier = threading.Barrier(threads)
    won = []
    errors = []

    def race():
        try:
            for slot in range(slots):
                expected = first + datetime.timedelta(minutes=slot)
                barrier.wait()
                run = api.plan_claim_slot(
                    plan_id, expected,
                    expected + datetime.timedelta(minutes=1),
                    {'host': host, 'status': 'running', 'full': False})
                if run is not None:
                    won.append([slot, run['id']])
        except Exception as error:
            errors.append(repr(error))
            barrier.abort()

    print('ready', flush=True)
    sys.stdin.readline()
    workers = [threading.Thread(target=race) for _i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        print(json.dumps({'errors': errors}))
        return 1
    print(json.dumps(sorted(won)))
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
