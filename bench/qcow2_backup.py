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

"""Benchmark of the qcow2 driver's backup against qemu-img (the floor).

1. Throughput: the driver's offline backup stream (freeze, read the frozen
   image's data without its holes, merge) of a qcow2 image with random
   data in a quarter of it, against ``qemu-img convert -O raw`` of the same
   image (the floor), as a ratio (target: within 1.3x).
2. Guest-visible pause of an online backup: a TCG guest under libvirt
   writes a record with its TSC to its disk in a loop; the largest gap
   between consecutive writes around the snapshot and during the rest of
   the backup (retain, active commit, pivot) is compared with the largest
   gap of the same guest before the backup (target: under 100 ms).
   Host-side durations of the snapshot and of the commit are printed too.

Usage: ``python -m bench qcow2_backup [--size-mib N] [--no-online]``
(the online part needs libvirtd: tools/libvirt/install.sh and start.sh).
"""

import argparse
import ctypes
import mmap
import os
import random
import subprocess
import sys
import tempfile
import time

from oslo_utils import units

from cinder_vmdk_backup.kvm import domains
from cinder_vmdk_backup.kvm import freezer
from cinder_vmdk_backup.kvm import raw_reader

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
READ = 4 * units.Mi


def _make_image(directory, size, fill=0.25, extent=4 * units.Mi):
    raw = os.path.join(directory, 'src.raw')
    image = os.path.join(directory, 'bench.qcow2')
    rng = random.Random(42)
    slots = list(range(size // extent))
    with open(raw, 'wb') as f:
        f.truncate(size)
        for slot in sorted(rng.sample(slots, int(len(slots) * fill))):
            f.seek(slot * extent)
            f.write(os.urandom(extent))
    subprocess.run(['qemu-img', 'convert', '-O', 'qcow2', raw, image],
                   check=True)
    os.unlink(raw)
    return image


def _best(runs, func):
    times = []
    for _ in range(runs):
        start = time.monotonic()
        func()
        times.append(time.monotonic() - start)
    return min(times)


def _floor(image, directory):
    out = os.path.join(directory, 'floor.raw')

    def run():
        subprocess.run(['qemu-img', 'convert', '-O', 'raw', image, out],
                       check=True)
        os.unlink(out)
    return run


def _ours(image, directory):
    def run():
        with freezer.frozen(image) as frozen:
            reader = raw_reader.RawImageReader(frozen.read_path, directory)
            with reader:
                while reader.read(READ):
                    pass
    return run


def _stream_only(image, directory):
    def run():
        reader = raw_reader.RawImageReader(image, directory)
        with reader:
            while reader.read(READ):
                pass
    return run


def throughput(size_mib, runs):
    with tempfile.TemporaryDirectory(prefix='cvb-bench-') as directory:
        image = _make_image(directory, size_mib * units.Mi)
        floor = _best(runs, _floor(image, directory))
        ours = _best(runs, _ours(image, directory))
        stream = _best(runs, _stream_only(image, directory))
    mib = size_mib
    print('qcow2 backup throughput (%d MiB image, 25%% random data, best of '
          '%d)' % (size_mib, runs))
    print('  qemu-img convert -O raw (floor): %.3f s  %7.1f MiB/s'
          % (floor, mib / floor))
    print('  driver freeze+stream+merge:      %.3f s  %7.1f MiB/s'
          % (ours, mib / ours))
    print('  of which the raw stream:         %.3f s  %7.1f MiB/s'
          % (stream, mib / stream))
    print('  ratio ours/floor: %.2fx whole backup, %.2fx stream alone '
          '(target <= 1.3x)' % (ours / floor, stream / floor))
    return ours / floor


def _host_tsc():
    """A function returning the host's TSC (x86-64 only)."""
    code = bytes([0x0F, 0x31,                    # rdtsc
                  0x48, 0xC1, 0xE2, 0x20,        # shl rdx, 32
                  0x48, 0x09, 0xD0,              # or rax, rdx
                  0xC3])                         # ret
    page = mmap.mmap(-1, mmap.PAGESIZE,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    func = ctypes.CFUNCTYPE(ctypes.c_uint64)(address)
    func.page = page
    return func


def _tsc_hz():
    tsc = _host_tsc()
    t0, c0 = time.monotonic(), tsc()
    time.sleep(0.5)
    t1, c1 = time.monotonic(), tsc()
    return (c1 - c0) / (t1 - t0)


def online_pause(ring=65536, warmup=3.0, after=1.0):
    sys.path.insert(0, TOP)
    from tests.functional.kvm import guest
    subprocess.run(['bash', os.path.join(TOP, 'tools', 'libvirt',
                                         'start.sh')],
                   check=True, stdout=subprocess.DEVNULL)
    hz = _tsc_hz()
    conn = domains.connect(guest.LibvirtFixture.URI)
    with tempfile.TemporaryDirectory(prefix='cvb-bench-') as directory:
        disk = os.path.join(directory, 'volume')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk,
                        str(units.Gi)], check=True)
        boot = os.path.join(directory, 'boot.bin')
        with open(boot, 'wb') as f:
            f.write(guest.boot_sector(disks=1, ring=ring))
        subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                        'write -s %s 0 512' % boot, disk], check=True,
                       stdout=subprocess.DEVNULL)
        domain = conn.createXML(guest.domain_xml('cvb-bench-%d'
                                                 % os.getpid(), [disk]), 0)
        try:
            time.sleep(warmup)
            start = time.monotonic()
            frozen = freezer.freeze_all([disk], conn)[disk]
            snapshot_s = time.monotonic() - start
            reader = raw_reader.RawImageReader(frozen.read_path, directory)
            head = reader.read((ring + 1) * guest.SECTOR)
            while reader.read(READ):
                pass
            reader.close()
            start = time.monotonic()
            frozen.merge()
            commit_s = time.monotonic() - start
            time.sleep(after)
        finally:
            domain.destroyFlags(domains.libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)
        conn.close()
        frozen_at = guest.consistent_run(guest.records(head, ring=ring))
        with open(disk + '.raw', 'wb'):
            pass
        subprocess.run(['qemu-img', 'convert', '-O', 'raw', disk,
                        disk + '.raw'], check=True)
        with open(disk + '.raw', 'rb') as f:
            final = f.read((ring + 1) * guest.SECTOR)
    stamps = guest.tscs(final, ring=ring)
    counters = sorted(stamps)
    gaps = {c: (stamps[c] - stamps[c - 1]) / hz for c in counters
            if c - 1 in stamps}
    before = [g for c, g in gaps.items() if c < frozen_at - 50]
    around = [g for c, g in gaps.items() if abs(c - frozen_at) <= 50]
    later = [g for c, g in gaps.items() if c > frozen_at + 50]
    print('online backup guest-visible pause (TCG guest, %d writes, TSC '
          '%.0f MHz)' % (len(counters), hz / 1e6))
    print('  host: snapshot %.0f ms, active commit + pivot %.0f ms'
          % (snapshot_s * 1e3, commit_s * 1e3))
    print('  largest gap between guest writes: before backup %.1f ms, '
          'at snapshot %.1f ms, during retain/commit/pivot %.1f ms'
          % (max(before) * 1e3, max(around) * 1e3, max(later) * 1e3))
    pause = max(max(around), max(later))
    print('  guest-visible pause: %.1f ms (target < 100 ms); ratio to '
          'idle jitter %.1fx' % (pause * 1e3, pause / max(before)))
    return pause


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench qcow2_backup')
    parser.add_argument('--size-mib', type=int, default=1024)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--no-online', action='store_true')
    args = parser.parse_args(argv)
    throughput(args.size_mib, args.runs)
    if not args.no_online:
        online_pause()
    return 0


if __name__ == '__main__':
    sys.exit(main())
