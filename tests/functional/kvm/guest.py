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

"""A tiny guest that keeps writing to its disks, and libvirt for it.

The guest is a 512-byte boot sector, assembled here byte by byte (no
toolchain needed): after boot it loops forever, incrementing a 32-bit
counter and writing one 512-byte record per iteration through BIOS int13h
(extended write, LBA) to the same sector of each of its disks in turn.
The sector is ``first + counter % ring`` so that the disk holds the last
``ring`` records. A record is::

    0   4  b'CVBG'
    4   4  counter (little endian)
    8   8  TSC at the write (rdtsc)
    16 ... zero

Because int13h writes are synchronous and one at a time, any point-in-time
image holds a gap-free run of counters in the ring, and across the disks
the counter of the first disk is at most one ahead of the others'.
"""

import os
import struct
import subprocess
import uuid

import fixtures

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..',
                                   '..'))
MAGIC = b'CVBG'
SECTOR = 512
_BUF = 0x8000          # the record buffer, just above the boot sector
_CODE = 0x7C00


class _Asm(object):
    """Just enough of an assembler: bytes, labels, fix-ups."""

    def __init__(self, origin):
        self.origin = origin
        self.code = bytearray()
        self.labels = {}
        self.fixups = []   # (position, label, kind)

    def emit(self, *parts):
        for part in parts:
            if isinstance(part, int):
                self.code.append(part)
            else:
                self.code += part

    def label(self, name):
        self.labels[name] = self.origin + len(self.code)

    def addr16(self, name):
        """A 16-bit absolute address of a label, fixed up later."""
        self.fixups.append((len(self.code), name, 'abs16'))
        self.code += b'\0\0'

    def rel8(self, name):
        self.fixups.append((len(self.code), name, 'rel8'))
        self.code += b'\0'

    def resolve(self):
        for pos, name, kind in self.fixups:
            target = self.labels[name]
            if kind == 'abs16':
                struct.pack_into('<H', self.code, pos, target)
            else:
                rel = target - (self.origin + pos + 1)
                assert -128 <= rel <= 127, name
                struct.pack_into('<b', self.code, pos, rel)
        return bytes(self.code)


def boot_sector(disks=1, first_lba=1, ring=2048, paced=False):
    """Return the 512-byte boot sector of the writing guest.

    :param disks: how many disks (BIOS drives 0x80...) it writes to
    :param first_lba: first sector of the ring (0 is the boot sector)
    :param ring: number of sectors in the ring
    :param paced: wait for the BIOS timer tick (18.2 Hz) before each
        record (``sti; hlt``): the guest then costs no CPU time, for tests;
        unpaced it writes as fast as it can, for measuring pauses
    """
    a = _Asm(_CODE)
    # Segments to 0, stack below the code.
    a.emit(0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0)
    a.emit(0xBC, struct.pack('<H', _CODE), 0xFB, 0xFC)
    # Zero the record buffer: mov di,BUF; mov cx,256; rep stosw.
    a.emit(0xBF, struct.pack('<H', _BUF), 0xB9, struct.pack('<H', 256),
           0xF3, 0xAB)
    # mov dword [BUF], 'CVBG'
    a.emit(0x66, 0xC7, 0x06, struct.pack('<H', _BUF), MAGIC)
    a.label('loop')
    if paced:
        a.emit(0xFB, 0xF4)                          # sti; hlt
    a.emit(0x66, 0x83, 0x06)                       # add dword [counter], 1
    a.addr16('counter')
    a.emit(0x01)
    a.emit(0x0F, 0x31)                              # rdtsc
    a.emit(0x66, 0xA3, struct.pack('<H', _BUF + 8))     # mov [BUF+8], eax
    a.emit(0x66, 0x89, 0x16, struct.pack('<H', _BUF + 12))  # [BUF+12], edx
    a.emit(0x66, 0xA1)                              # mov eax, [counter]
    a.addr16('counter')
    a.emit(0x66, 0xA3, struct.pack('<H', _BUF + 4))     # mov [BUF+4], eax
    a.emit(0x66, 0x31, 0xD2)                        # xor edx, edx
    a.emit(0x66, 0xF7, 0x36)                        # div dword [ring]
    a.addr16('ring')
    a.emit(0x66, 0x03, 0x16)                        # add edx, [first]
    a.addr16('first')
    a.emit(0x66, 0x89, 0x16)                        # mov [dap_lba], edx
    a.addr16('dap_lba')
    a.emit(0xB2, 0x80)                              # mov dl, 0x80
    a.label('drive')
    a.emit(0xBE)                                    # mov si, dap
    a.addr16('dap')
    a.emit(0xB8, 0x00, 0x43)                        # mov ax, 0x4300
    a.emit(0x52, 0xCD, 0x13, 0x5A)                  # push dx; int 13h; pop
    a.emit(0xFE, 0xC2)                              # inc dl
    a.emit(0x3A, 0x16)                              # cmp dl, [last_drive]
    a.addr16('last_drive')
    a.emit(0x76)                                    # jbe drive
    a.rel8('drive')
    a.emit(0xEB)                                    # jmp loop
    a.rel8('loop')
    # Data.
    a.label('counter')
    a.emit(struct.pack('<I', 0))
    a.label('ring')
    a.emit(struct.pack('<I', ring))
    a.label('first')
    a.emit(struct.pack('<I', first_lba))
    a.label('last_drive')
    a.emit(0x80 + disks - 1)
    a.label('dap')
    a.emit(0x10, 0x00, struct.pack('<HHH', 1, _BUF, 0))
    a.label('dap_lba')
    a.emit(struct.pack('<Q', 0))
    code = a.resolve()
    assert len(code) <= 510, len(code)
    return code + bytes(510 - len(code)) + b'\x55\xAA'


def records(raw, first_lba=1, ring=2048):
    """Return the counters in the ring of a raw disk image (0: unwritten).

    :param raw: the disk's bytes (at least the ring), or a file path
    """
    if isinstance(raw, str):
        with open(raw, 'rb') as f:
            raw = f.read((first_lba + ring) * SECTOR)
    out = []
    for i in range(ring):
        at = (first_lba + i) * SECTOR
        rec = raw[at:at + 16]
        out.append(struct.unpack_from('<I', rec, 4)[0]
                   if rec[:4] == MAGIC else 0)
    return out


def tscs(raw, first_lba=1, ring=2048):
    """Return ``{counter: tsc}`` of the ring's records."""
    out = {}
    for i in range(ring):
        at = (first_lba + i) * SECTOR
        rec = raw[at:at + 16]
        if rec[:4] == MAGIC:
            counter, tsc = struct.unpack_from('<IQ', rec, 4)
            out[counter] = tsc
    return out


def consistent_run(counters):
    """Return the newest counter if the ring is gap-free, else raise.

    A point-in-time image of the guest's disk holds, for its newest
    counter N, exactly the records N, N-1, ... (as far as the ring and the
    guest's age go), each at its sector.
    """
    ring = len(counters)
    newest = max(counters)
    if newest == 0:
        return 0
    for back in range(min(ring, newest)):
        want = newest - back
        got = counters[want % ring]
        if got != want:
            raise AssertionError('ring not point-in-time: sector %d holds '
                                 '%d, expected %d (newest %d)'
                                 % (want % ring, got, want, newest))
    return newest


def domain_xml(name, disks, kvm=False, memory_mib=16, bus='sata',
               domain_uuid=None, agent_channel=False):
    """XML of a domain booting from the first of ``disks``.

    :param domain_uuid: the domain's UUID (Nova's: the instance's), else
        a new one
    :param agent_channel: give it a QEMU guest agent channel; nothing in
        this guest answers on it (libvirt says ``disconnected``)
    """
    disk_xml = ''.join(
        "<disk type='file' device='disk'>"
        "<driver name='qemu' type='qcow2' cache='writeback'/>"
        "<source file='%s'/><target dev='%s%s' bus='%s'/>%s</disk>"
        % (path, 'vd' if bus == 'virtio' else 'sd' if bus == 'sata'
           else 'hd', chr(ord('a') + i), bus,
           "<boot order='%d'/>" % (i + 1))
        for i, path in enumerate(disks))
    if agent_channel:
        disk_xml += ("<channel type='unix'><source mode='bind'/>"
                     "<target type='virtio' name='org.qemu.guest_agent.0'/>"
                     "</channel>")
    return ("<domain type='%s'><name>%s</name><uuid>%s</uuid>"
            "<memory unit='MiB'>%d</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
            "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>%s"
            "<video><model type='none'/></video>"
            "<memballoon model='none'/></devices></domain>"
            % ('kvm' if kvm else 'qemu', name, domain_uuid or uuid.uuid4(),
               memory_mib, disk_xml))


def tsc_mhz():
    """The host's TSC rate (MHz), which a TCG guest's ``rdtsc`` counts.

    Under TCG QEMU answers ``rdtsc`` with the host's TSC (plus an offset)
    while the vCPUs run. The CPU's ``constant_tsc`` flag makes the
    ``cpu MHz`` line its rate; None when /proc/cpuinfo does not say.
    """
    with open('/proc/cpuinfo') as f:
        text = f.read()
    if 'constant_tsc' not in text:
        return None
    for line in text.splitlines():
        if line.startswith('cpu MHz'):
            return float(line.split(':')[1])
    return None


def kvm_usable():
    try:
        fd = os.open('/dev/kvm', os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


class LibvirtFixture(fixtures.Fixture):
    """libvirtd running (tools/libvirt/start.sh), a connection to it.

    libvirtd is left running for the other tests of the run; the CI
    script (or ``tools/libvirt/stop.sh``) stops it by its PID.
    """

    URI = 'qemu:///system'

    def _setUp(self):
        import libvirt
        subprocess.run(['bash', os.path.join(TOP, 'tools', 'libvirt',
                                             'start.sh')],
                       check=True, stdout=subprocess.DEVNULL)
        self.conn = libvirt.open(self.URI)
        self.addCleanup(self.conn.close)

    def start_guest(self, disks, kvm=None, domain_uuid=None,
                    agent_channel=False, persistent=False):
        """Start a writing guest on ``disks``; destroyed after.

        :param persistent: define it first (it stays defined when shut
            off, as Nova's domains do); undefined after
        """
        name = 'cvb-test-%s' % uuid.uuid4().hex[:8]
        use_kvm = kvm_usable() if kvm is None else kvm
        xml = domain_xml(name, disks, use_kvm, domain_uuid=domain_uuid,
                         agent_channel=agent_channel)
        if persistent:
            domain = self.conn.defineXML(xml)
            self.addCleanup(_quietly, domain.undefine)
            domain.create()
        else:
            domain = self.conn.createXML(xml, 0)
        self.addCleanup(_quietly, domain.destroy)
        return domain


def _quietly(call):
    import libvirt
    try:
        call()
    except libvirt.libvirtError:
        pass
