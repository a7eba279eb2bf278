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

"""A process that holds a disk hot-added to the proxy VM until it is killed.

``python -m tests.functional.vmware.hotadd_worker SPEC.json`` loads the
configuration file as cinder-backup does, builds the plugin's VMDK driver
for the ``vmdk`` backend (``do_setup``: the janitor runs), snapshots the
instance VM named in the spec (``FrozenVM``), opens the volume's disk of
the snapshot through the driver's ``_read_frozen_disk`` (HotAdd), reads
its first MiB, prints ``attached <source class>`` and waits to be killed.
"""

import sys

from cinder import monkey_patch

monkey_patch.patch()

import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    from cinder.common import config  # noqa: F401 (options)
    from cinder import context
    from cinder import objects
    from cinder.volume import configuration
    from cinder.volume.drivers.vmware import vmdk as stock_vmdk
    from oslo_config import cfg
    from oslo_vmware import vim_util

    from cinder_vmdk_backup.vmware import vmsnapshot
    from cinder_vmdk_backup.volume.drivers import vmdk

    objects.register_all()
    cfg.CONF([], project='cinder', default_config_files=[spec['conf']])
    logging.basicConfig(filename=spec['log'], level=logging.DEBUG,
                        format='%(asctime)s %(process)d %(name)s '
                               '%(levelname)s %(message)s', force=True)
    for name in ('suds', 'oslo_vmware.service', 'urllib3',
                 'oslo_vmware.api'):
        logging.getLogger(name).setLevel(logging.INFO)
    conf = configuration.Configuration(stock_vmdk.vmdk_opts,
                                       config_group='vmdk')
    driver = vmdk.VMwareVcVmdkBackupDriver(configuration=conf,
                                           host='node1@vmdk')
    driver.do_setup(context.get_admin_context())
    vm_ref = vim_util.get_moref(spec['vm'], 'VirtualMachine')
    frozen = vmsnapshot.FrozenVM(driver.session,
                                 driver._transfer_settings(), vm_ref,
                                 'instance %s' % spec['vm'])
    frozen.freeze()
    disk = frozen.disk_of(spec['volume_id'], spec['vmdk_path'])
    with driver._read_frozen_disk(frozen, disk, spec['size']) as source:
        source.read_at(0, bytearray(1 << 20))
        print('attached %s' % type(source).__name__, flush=True)
        while True:
            time.sleep(1)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
