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

"""HotAdd against NBD (NFC): full backup and restore of the same volume.

One volume (default 1 GiB, realistic content: ``bench.vmdk_codec``) on a
vcsim started with HotAdd on (patch 0017: a disk added to the proxy VM is
a loop device of this host); a proxy VM stands for this host. The plugin's
driver backs the volume up through a snapshot of its (powered-on) backing
(``_read_frozen_disk``, as a group backup and, with change tracking, a
detached volume's backup read it; the snapshot itself is not timed) into
Cinder's posix backup driver, and restores the backup onto a new volume,
once with
``vmware_backup_transports = hotadd`` and once with ``nbd``, in
interleaved pairs (``--pairs``, default 3): each ratio is the median of
the pairs' ratios. The restored disks are compared with the source.

A third pair reads the whole disk through each transport into a backup
service that stores nothing (the transport alone, as the backup's read
stage sees it).

On this machine vcsim and the plugin share the same two cores and the
"network" is the loopback: NBD here costs vcsim's VMDK encoding/decoding
and an HTTP stream, not a network. The ratios say what HotAdd saves of
that, not what it saves against a real ESXi over a real network.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time

from bench import vmdk_backup
from bench import vmdk_codec

GIB = 1 << 30
MIB = 1 << 20
PROXY_UUID = '4230bbbb-0000-4000-8000-000000000001'


def _make_proxy(session, datastore_name):
    """A powered-on VM without disks: this host, the HotAdd proxy."""
    from oslo_vmware import vim_util

    def first(type_, prop):
        result = session.invoke_api(vim_util, 'get_objects', session.vim,
                                    type_, 10, properties_to_collect=[prop])
        obj = result.objects[0]
        return obj.propSet[0].val

    factory = session.vim.client.factory
    spec = factory.create('ns0:VirtualMachineConfigSpec')
    spec.name = 'bench-proxy'
    spec.uuid = PROXY_UUID
    spec.guestId = 'otherGuest64'
    spec.numCPUs = 1
    spec.memoryMB = 64
    files = factory.create('ns0:VirtualMachineFileInfo')
    files.vmPathName = '[%s]' % datastore_name
    spec.files = files
    task = session.invoke_api(session.vim, 'CreateVM_Task',
                              first('Datacenter', 'vmFolder'), config=spec,
                              pool=first('ClusterComputeResource',
                                         'resourcePool'))
    ref = session.wait_for_task(task).result
    session.wait_for_task(session.invoke_api(session.vim, 'PowerOnVM_Task',
                                             ref))
    return ref


def _digest(data, size):
    digest = hashlib.sha256(data)
    digest.update(bytes(size - len(data)))
    return digest.hexdigest()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog='python -m bench hotadd',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--size', default='1G',
                        help='data size of the volume (default 1G)')
    parser.add_argument('--pairs', type=int, default=3)
    parser.add_argument('--compression', default='zlib')
    parser.add_argument('--chunk', default='32M')
    parser.add_argument('--workdir', default=None)
    args = parser.parse_args(argv)
    args.zlib_implementation = 'isal'
    size = vmdk_codec.parse_size(args.size)
    workdir = tempfile.mkdtemp(prefix='cvb-bench-hotadd-', dir=args.workdir)
    try:
        return _bench(args, size, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(args, size, workdir):
    from tests.functional import vcsim as vcsim_fixture

    raw, counts = vmdk_backup.prepare_workdir(workdir, size)
    vcsim = vcsim_fixture.VcsimFixture(hotadd=True)
    vcsim.setUp()
    try:
        conf_path = os.path.join(workdir, 'cinder.conf')
        vmdk_backup._write_conf(conf_path, workdir, vcsim, args)
        with open(conf_path, 'a') as conf:
            conf.write('vmware_backup_proxy_vm = %s\n'
                       'vmware_backup_hotadd_device_dir = %s\n'
                       % (PROXY_UUID, vcsim.hotadd_dir))
        print('disk: %s (%s); chunk %s, compression %s'
              % (args.size, ', '.join('%s %d MiB' % (k, v // MIB)
                                      for k, v in counts.items()),
                 args.chunk, args.compression), flush=True)
        return _run(args, size, raw, vcsim, conf_path)
    finally:
        vcsim.cleanUp()


def _run(args, size, raw, vcsim, conf_path):
    conf = vmdk_backup._cinder(conf_path)
    from cinder import context
    from cinder.db import migration
    from cinder.tests.unit import utils as test_utils
    from cinder_vmdk_backup.vmware import vmsnapshot
    from tests.functional import vcsim as vcsim_fixture

    migration.db_sync()
    ctx = context.get_admin_context()
    gib = -(-size // GIB)
    volume_type = test_utils.create_volume_type(ctx, name='vmdk-bench')

    def new_volume(status):
        return test_utils.create_volume(ctx, host=vmdk_backup.VOLUME_HOST,
                                        size=gib, status=status,
                                        volume_type_id=volume_type.id)

    driver = vmdk_backup._driver()
    session = driver.session
    _make_proxy(session, vcsim.datastore_name)
    source = new_volume('available')
    backing = driver._create_backing(source)
    vmdk_path = driver.volumeops.get_vmdk_path(backing)
    with open(raw, 'rb') as f:
        vcsim_fixture.seed_disk(vcsim, vmdk_path, f.read())
    session.wait_for_task(session.invoke_api(session.vim, 'PowerOnVM_Task',
                                             backing))
    want = vmdk_backup._file_digest(raw, gib * GIB)
    service = vmdk_backup._service(ctx)

    def use(transport):
        conf.set_override('vmware_backup_transports', [transport],
                          group='vmdk')

    def backup(transport, into=service):
        use(transport)
        record = test_utils.create_backup(ctx, source.id, status='creating',
                                          size=gib)
        # The snapshot (vcsim copies the disk) and its removal are the
        # same for both transports: not timed.
        frozen = vmsnapshot.FrozenVM(session, driver._transfer_settings(),
                                     backing, 'bench').freeze()
        try:
            driver._snapshot_sources[source.id] = frozen
            start = time.perf_counter()
            driver.backup_volume(ctx, record, into)
            seconds = time.perf_counter() - start
        finally:
            driver._snapshot_sources.pop(source.id, None)
            frozen.release()
        record.status = 'available'
        record.save()
        return record, seconds

    def restore(transport, record):
        use(transport)
        target = new_volume('creating')
        # What the API and the manager set before a restore runs.
        record.status = 'restoring'
        record.restore_volume_id = target.id
        record.save()
        start = time.perf_counter()
        driver.restore_backup(ctx, record, target, service,
                              volume_is_new=True)
        seconds = time.perf_counter() - start
        record.status = 'available'
        record.save()
        path = driver.volumeops.get_vmdk_path(
            driver.volumeops.get_backing(target.name, target.id))
        data = vcsim_fixture.read_disk(vcsim, path)
        same = _digest(data, gib * GIB) == want
        del data
        driver._delete_volume(target)
        return seconds, same

    times = {('read', t): [] for t in ('hotadd', 'nbd')}
    times.update({('backup', t): [] for t in ('hotadd', 'nbd')})
    times.update({('restore', t): [] for t in ('hotadd', 'nbd')})
    all_same = True
    for index in range(args.pairs):
        order = ('hotadd', 'nbd') if index % 2 == 0 else ('nbd', 'hotadd')
        made = {}
        for transport in order:
            # The transport alone: the whole disk read, nothing stored.
            _record, seconds = backup(transport, vmdk_backup._NullService())
            times[('read', transport)].append(seconds)
            print('  read    %-6s %7.2f s' % (transport, seconds),
                  flush=True)
        for transport in order:
            made[transport], seconds = backup(transport)
            times[('backup', transport)].append(seconds)
            print('  backup  %-6s %7.2f s' % (transport, seconds),
                  flush=True)
        for transport in order:
            seconds, same = restore(transport, made[transport])
            all_same = all_same and same
            times[('restore', transport)].append(seconds)
            print('  restore %-6s %7.2f s  identical: %s'
                  % (transport, seconds, same), flush=True)
    for kind in ('read', 'backup', 'restore'):
        ratios = [n / h for n, h in zip(times[(kind, 'nbd')],
                                        times[(kind, 'hotadd')])]
        print('full %s time, NBD/HotAdd %s (HotAdd median %.2f s, NBD '
              'median %.2f s)'
              % (kind, vmdk_backup._pair_summary(ratios),
                 vmdk_backup._median(times[(kind, 'hotadd')]),
                 vmdk_backup._median(times[(kind, 'nbd')])))
    print('restored disks identical to the source: %s' % all_same)
    return 0 if all_same else 1
