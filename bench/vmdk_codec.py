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

"""Stream-optimized VMDK codec against qemu-img, on the same disk.

Builds a sparse raw disk (default 1 GiB: half zeros, half of them holes and
half written zeros; a quarter log-like text; a quarter random bytes), then
times in one run:

* writer: ``qemu-img convert -O vmdk -o subformat=streamOptimized`` against
  :class:`StreamOptimizedWriter` (``.length`` measuring pass included, as
  an upload needs it);
* reader: ``qemu-img convert -O raw`` of qemu's VMDK against
  :class:`StreamOptimizedReader` decoding the same file into a sparse raw
  file.

Each side runs in its own process; peak RSS comes from ``os.wait4``. The
decoded disks are compared with the source. ``--backends`` also compares
the deflate bindings (zlib, ISA-L, libdeflate) on grains of the disk.
"""

import argparse
import concurrent.futures
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

GRAIN = 64 << 10
REGION = 1 << 20
_UNITS = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}


def parse_size(text):
    text = text.strip().upper().rstrip('B').rstrip('I')
    if text and text[-1] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


def text_pool(seed=1, size=8 << 20):
    """Log-like text: timestamps, modules, request ids and words."""
    rng = random.Random(seed)
    syllables = ['ka', 'to', 'ri', 'men', 'vol', 'ume', 'back', 'up', 'ser',
                 'vice', 'disk', 'grain', 'lo', 'ad', 'cin', 'der', 'nova',
                 'host', 'pool', 'snap']
    words = [''.join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
             for _ in range(3000)]
    levels = ['INFO', 'DEBUG', 'WARNING', 'ERROR']
    modules = ['cinder.volume.manager', 'cinder.backup.manager',
               'oslo_vmware.api', 'nova.compute.manager',
               'keystoneauth.session']
    lines = []
    total = 0
    while total < size:
        line = '2026-%02d-%02d %02d:%02d:%02d.%03d %d %s %s [req-%08x-%04x] ' \
               '%s\n' % (rng.randint(1, 12), rng.randint(1, 28),
                         rng.randint(0, 23), rng.randint(0, 59),
                         rng.randint(0, 59), rng.randint(0, 999),
                         rng.randint(1000, 99999), rng.choice(levels),
                         rng.choice(modules), rng.getrandbits(32),
                         rng.getrandbits(16),
                         ' '.join(rng.choices(words, k=rng.randint(4, 16))))
        lines.append(line)
        total += len(line)
    return ''.join(lines).encode()[:size]


def make_disk(path, size, seed=7):
    """Write the benchmark disk; return the byte counts per kind."""
    rng = random.Random(seed)
    pool = text_pool()
    regions = -(-size // REGION)
    kinds = (['hole', 'zero'] * regions)[:regions // 2]
    kinds += ['text'] * (regions // 4)
    kinds += ['random'] * (regions - len(kinds))
    rng.shuffle(kinds)
    counts = dict.fromkeys(('hole', 'zero', 'text', 'random'), 0)
    with open(path, 'wb') as out:
        out.truncate(size)
        for index, kind in enumerate(kinds):
            start = index * REGION
            length = min(REGION, size - start)
            counts[kind] += length
            if kind == 'hole':
                continue
            if kind == 'zero':
                data = bytes(length)
            elif kind == 'text':
                parts = []
                for _ in range(0, length, 4096):
                    pos = rng.randrange(len(pool) - 4096)
                    parts.append(pool[pos:pos + 4096])
                data = b''.join(parts)[:length]
            else:
                data = rng.randbytes(length)
            out.seek(start)
            out.write(data)
    return counts


#: a small launcher whose child's peak RSS is not inflated by this
#: process: Linux carries the pre-exec memory of a forked child into its
#: ru_maxrss, so the child must be forked from a small process.
_LAUNCHER = (
    'import os, sys\n'
    'pid = os.fork()\n'
    'if pid == 0:\n'
    '    os.execv(sys.argv[1], sys.argv[1:])\n'
    '_, status, usage = os.wait4(pid, 0)\n'
    'sys.stdout.flush()\n'
    'print("\\n%d %d %f" % (usage.ru_maxrss, '
    'os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime))\n')


def _run(argv):
    """Run a command; return (wall seconds, peak RSS bytes, stdout, CPU)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, '-S', '-c', _LAUNCHER] + argv,
                         stdout=subprocess.PIPE, check=True).stdout
    wall = time.perf_counter() - start
    out, _, report = out.rstrip(b'\n').rpartition(b'\n')
    maxrss, status, cpu = report.split()
    if int(status):
        raise RuntimeError('%s failed with %s' % (argv[0], status))
    return wall, int(maxrss) * 1024, out, float(cpu)


def _worker(argv):
    """Our side, in its own process: prints seconds as JSON."""
    from cinder_vmdk_backup.vmdk import reader
    from cinder_vmdk_backup.vmdk import writer

    mode, src, dst, threads, level = argv
    threads = int(threads) or os.cpu_count() or 1
    # the caller's pool, as the service hands one in; 1: inline
    pool = (concurrent.futures.ThreadPoolExecutor(threads) if threads > 1
            else None)
    start = time.perf_counter()
    measured = 0.0
    if mode == 'start-up':
        pass
    elif mode == 'write':
        with open(src, 'rb') as source, open(dst, 'wb') as sink:
            vmdk = writer.StreamOptimizedWriter(
                source, os.path.getsize(src), executor=pool,
                compression_level=int(level))
            measured = time.perf_counter()
            length = vmdk.length
            measured = time.perf_counter() - measured
            written = vmdk.write_to(sink)
            assert written == length, (written, length)
    else:
        with open(src, 'rb') as source, open(dst, 'wb') as sink:
            disk = reader.StreamOptimizedReader(source, executor=pool)
            for offset, length, data in disk.iter_extents():
                if data is not None:
                    os.pwrite(sink.fileno(), data, offset)
            sink.truncate(disk.capacity)
    print(json.dumps({'seconds': time.perf_counter() - start,
                      'measure_seconds': measured}))
    if pool is not None:
        pool.shutdown()
    return 0


def _ours(mode, src, dst, args):
    """Run our side; the time is measured inside, after the imports."""
    wall, rss, out, cpu = _run([sys.executable, '-m', 'bench.vmdk_codec',
                                '--worker', mode, src, dst,
                                str(args.threads), str(args.level)])
    inner = json.loads(out)
    return inner['seconds'], rss, inner, cpu


def _same(path_a, path_b):
    with open(path_a, 'rb') as a, open(path_b, 'rb') as b:
        while True:
            x = a.read(REGION)
            if x != b.read(REGION):
                return False
            if not x:
                return True


def compare_backends(path, size, grains=96):
    """Print MB/s and size ratio of each deflate binding on disk grains."""
    import zlib

    candidates = [('zlib', 6, zlib.compress), ('zlib', 1, zlib.compress)]
    try:
        from isal import isal_zlib
        candidates += [('isal', lvl, isal_zlib.compress) for lvl in (1, 2, 3)]
    except ImportError:
        print('isal: not installed')
    try:
        import deflate
        candidates += [('libdeflate', lvl, deflate.zlib_compress)
                       for lvl in (1, 4, 6)]
    except ImportError:
        print('deflate (libdeflate): not installed')
    sample = []
    with open(path, 'rb') as disk:
        fd = disk.fileno()
        offset = 0
        while len(sample) < grains and offset < size:
            data = os.pread(fd, GRAIN, offset)
            if data.strip(b'\0'):
                sample.append(data)
            offset += GRAIN * 7
    raw = sum(map(len, sample))
    print('deflate bindings on %d non-zero grains (%.1f MiB):'
          % (len(sample), raw / 2 ** 20))
    for name, level, func in candidates:
        start = time.perf_counter()
        packed = sum(len(func(g, level)) for g in sample)
        seconds = time.perf_counter() - start
        print('  %-10s level %d: %7.1f MB/s, output %.3f of input'
              % (name, level, raw / seconds / 1e6, packed / raw))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == '--worker':
        return _worker(argv[1:])
    parser = argparse.ArgumentParser(prog='python -m bench vmdk_codec',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', default='1G',
                        help='disk size, e.g. 1G, 256M (default 1G)')
    parser.add_argument('--threads', type=int, default=0,
                        help='threads of the pool handed to the writer '
                             'and reader (0: one per CPU, 1: inline)')
    parser.add_argument('--level', type=int, default=1,
                        help='writer compression level (default 1)')
    parser.add_argument('--workdir', default=None,
                        help='directory for the files (default: a temp dir)')
    parser.add_argument('--repeat', type=int, default=1,
                        help='run each side N times, keep the fastest '
                             '(steadier figures on a busy machine)')
    parser.add_argument('--backends', action='store_true',
                        help='also compare the deflate bindings')
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    qemu_img = shutil.which('qemu-img')
    if not qemu_img:
        print('qemu-img not found: install qemu-utils', file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix='bench-vmdk-', dir=args.workdir)
    try:
        return _bench(args, size, qemu_img, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(args, size, qemu_img, workdir):
    def path(name):
        return os.path.join(workdir, name)

    counts = make_disk(path('disk.raw'), size)
    print('disk: %.0f MiB: %s' % (size / 2 ** 20, ', '.join(
        '%s %.0f MiB' % (k, v / 2 ** 20) for k, v in counts.items())))
    if args.backends:
        compare_backends(path('disk.raw'), size)
    mb = size / 1e6

    def best(run, *run_args):
        results = []
        for _ in range(max(1, args.repeat)):
            for name in ('qemu.raw', 'ours.raw'):
                if os.path.exists(path(name)):
                    os.unlink(path(name))
            results.append(run(*run_args))
        return min(results, key=lambda result: result[0])

    _, base_rss, _, base_cpu = best(_ours, 'start-up', '-', '-', args)
    load_before = os.getloadavg()[0]
    q_write, q_write_rss, _, q_write_cpu = best(
        _run, [qemu_img, 'convert', '-f', 'raw', '-O', 'vmdk', '-o',
               'subformat=streamOptimized', path('disk.raw'),
               path('qemu.vmdk')])
    o_write, o_write_rss, inner, o_write_cpu = best(
        _ours, 'write', path('disk.raw'), path('ours.vmdk'), args)
    q_read, q_read_rss, _, q_read_cpu = best(
        _run, [qemu_img, 'convert', '-f', 'vmdk', '-O', 'raw',
               path('qemu.vmdk'), path('qemu.raw')])
    o_read, o_read_rss, _, o_read_cpu = best(
        _ours, 'read', path('qemu.vmdk'), path('ours.raw'), args)
    load_after = os.getloadavg()[0]
    check = subprocess.run(
        [qemu_img, 'compare', '-f', 'raw', '-F', 'vmdk', path('disk.raw'),
         path('ours.vmdk')], capture_output=True, text=True)
    decoded_ok = _same(path('disk.raw'), path('ours.raw'))
    q_size = os.path.getsize(path('qemu.vmdk'))
    o_size = os.path.getsize(path('ours.vmdk'))
    rows = [
        ('writer', q_write, o_write, q_write_rss, o_write_rss, q_write_cpu,
         o_write_cpu),
        ('reader', q_read, o_read, q_read_rss, o_read_rss, q_read_cpu,
         o_read_cpu),
    ]
    print('throughput of the disk size per wall-clock second; CPU: user + '
          'sys seconds of the whole process (ours includes Python start-up)')
    print('%-7s %12s %12s %7s %9s %9s %9s %9s' % (
        '', 'qemu-img', 'ours', 'ratio', 'CPU qemu', 'CPU ours',
        'qemu RSS', 'our RSS'))
    for name, theirs, ours, t_rss, o_rss, t_cpu, o_cpu in rows:
        print('%-7s %7.1f MB/s %7.1f MB/s %6.2fx %8.2fs %8.2fs %6.1f MB '
              '%6.1f MB' % (name, mb / theirs, mb / ours, theirs / ours,
                            t_cpu, o_cpu, t_rss / 1e6, o_rss / 1e6))
    print('our start-up alone (Python, oslo.log, imports): %.2f s CPU, '
          '%.1f MB RSS' % (base_cpu, base_rss / 1e6))
    print('CPU-time ratio: writer %.2fx, reader %.2fx (net of our start-up: '
          '%.2fx, %.2fx); load average %.1f before, %.1f after (%d CPUs)' % (
              q_write_cpu / o_write_cpu, q_read_cpu / o_read_cpu,
              q_write_cpu / max(o_write_cpu - base_cpu, 1e-3),
              q_read_cpu / max(o_read_cpu - base_cpu, 1e-3),
              load_before, load_after, os.cpu_count()))
    print('writer: .length measuring pass %.2f s of %.2f s; %s threads, '
          'level %d' % (inner['measure_seconds'], o_write,
                        args.threads or os.cpu_count(), args.level))
    print('VMDK size: qemu-img %d bytes, ours %d bytes, ratio %.3f' % (
        q_size, o_size, o_size / q_size))
    print('our VMDK vs source (qemu-img compare): %s'
          % (check.stdout.strip() or check.stderr.strip()))
    print('our decoding of qemu-img\'s VMDK equals the source: %s'
          % decoded_ok)
    print('peak RSS of this process: %.1f MB' % (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3))
    return 0 if check.returncode == 0 and decoded_ok else 1


if __name__ == '__main__':
    sys.exit(main())
