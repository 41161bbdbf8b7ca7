"""``vmdsim topology import``: a topology from a real machine's ``lspci -nn`` text.

It reads the device lines of ``lspci -nn`` (also ``-vnn``, ``-nnk``, ``-nnvvv``:
the same lines with indented details under each) and writes the TOML of the
VMD side of that machine: each VMD (class 0104, an Intel VMD device ID) at its
slot, the root ports of its domain (class 0604 on the domain's first bus) with
their device and revision IDs, and the NVMe drive behind each (class 0108) with
its vendor, device and revision IDs. With ``-v`` detail it also takes each
VMD's and drive's MSI-X table size and the VMD's region sizes (CFGBAR,
MEMBAR1, MEMBAR2), and which port leads to which bus.

What the text does not say is guessed, and what the model cannot build is
dropped; both are listed in a comment block at the top of the TOML, one line
each (the CPU count, a drive's queue count, a port's hot-plug capability, a
SATA controller behind a VMD...). What would make a wrong machine is refused
with the file, the line and the reason: a VMD not on bus 0 of domain 0000 (the
model puts VMDs there), a VMD domain whose devices the text does not show, no
numeric IDs (plain ``lspci``). ``-t`` trees carry no IDs and are not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vmdsim.errors import TopologyError
from vmdsim.hw.vmd import VMD_FEATURES

# "10000:e1:00.0 Non-Volatile memory controller [0108]: SK hynix ... [1c5c:1959] (rev 02)"
_DEVICE = re.compile(
    r"^(?:(?P<dom>[0-9a-f]{4,8}):)?(?P<bus>[0-9a-f]{2}):(?P<dev>[0-9a-f]{2})\.(?P<fn>[0-7]) "
    r"(?P<cls_name>[^\[\n]*?) \[(?P<cls>[0-9a-f]{4})\]: (?P<name>.*) "
    r"\[(?P<ven>[0-9a-f]{4}):(?P<did>[0-9a-f]{4})\](?: \(rev (?P<rev>[0-9a-f]{2})\))?")
_PLAIN = re.compile(r"^(?:[0-9a-f]{4,8}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] [^\[]+: ")
_MSIX = re.compile(r"MSI-X: Enable[+-] Count=(\d+)")
_REGION = re.compile(r"(?:Memory|Region \d+: Memory) at [0-9a-f]+ \(.*?\) \[size=(\d+)([KMG]?)\]")
_BUSES = re.compile(r"Bus: primary=[0-9a-f]{2}, secondary=([0-9a-f]{2}), subordinate=")
_SLOT_HP = re.compile(r"SltCap:.*HotPlug([+-])")

CLASS_RAID, CLASS_BRIDGE, CLASS_NVME = 0x0104, 0x0604, 0x0108
RESTRICTION_OF_FIRST_BUS = {0x00: 0, 0x80: 1, 0xE0: 2}  # VMCONFIG[9:8]


@dataclass
class _Dev:
    file: str
    line: int
    domain: int
    bus: int
    dev: int
    fn: int
    cls: int
    vendor: int
    device: int
    revision: int
    msix: int | None = None
    regions: list[int] = field(default_factory=list)
    secondary: int | None = None
    hotplug: bool | None = None

    @property
    def where(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.dev:02x}.{self.fn}"


def _size(n: str, unit: str) -> int:
    return int(n) << {"": 0, "K": 10, "M": 20, "G": 30}[unit]


def parse_lspci(text: str, file: str) -> list[_Dev]:
    """The devices of ``lspci -nn`` text, with what their ``-v`` lines say."""
    devs: list[_Dev] = []
    plain = 0
    lines = text.splitlines()
    # Text pasted into a page or a mail is often indented as a whole: take the device
    # lines' own indentation off (a detail line is indented further, by a tab).
    indents = [len(s) - len(s.lstrip(" ")) for s in lines if _DEVICE.match(s.lstrip(" "))]
    cut = min(indents, default=0)
    for n, raw in enumerate(lines, 1):
        if raw[:cut].strip(" ") == "":
            raw = raw[cut:]
        line = raw.rstrip()
        m = _DEVICE.match(line)
        if m:
            devs.append(_Dev(file, n, int(m["dom"] or "0", 16), int(m["bus"], 16),
                             int(m["dev"], 16), int(m["fn"]), int(m["cls"], 16),
                             int(m["ven"], 16), int(m["did"], 16), int(m["rev"] or "0", 16)))
            continue
        if _PLAIN.match(line):
            plain = plain or n
            continue
        if not devs or not raw[:1].isspace():
            continue
        d = devs[-1]
        if (x := _MSIX.search(line)) is not None:
            d.msix = int(x[1])
        elif (x := _REGION.search(line)) is not None:
            d.regions.append(_size(x[1], x[2]))
        elif (x := _BUSES.search(line)) is not None:
            d.secondary = int(x[1], 16)
        elif (x := _SLOT_HP.search(line)) is not None:
            d.hotplug = x[1] == "+"
    if not devs:
        if plain:
            raise TopologyError(file, plain, "lspci", "no numeric IDs: import reads "
                                "`lspci -nn` (or -vnn, -nnk, -nnvvv), not plain `lspci`")
        raise TopologyError(file, None, "lspci", "no device lines of `lspci -nn` found "
                            "(`lspci -t` trees carry no IDs and are not read)")
    return devs


def _mib(n: int) -> str:
    return f'"{n >> 20}M"' if n >= 1 << 20 and not n & ((1 << 20) - 1) else str(n)


def import_topology(sources: list[tuple[str, str]], cpus: int | None = None) -> str:
    """The TOML of the VMD side of the machine the texts (file name, text) describe."""
    devs = [d for file, text in sources for d in parse_lspci(text, file)]
    guessed: list[str] = []
    dropped: list[str] = []
    vmds = sorted((d for d in devs if d.vendor == 0x8086 and d.device in VMD_FEATURES
                   and d.cls == CLASS_RAID), key=lambda d: (d.domain, d.bus, d.dev, d.fn))
    if not vmds:
        d = devs[0]
        raise TopologyError(d.file, None, "vmd", "no VMD in the text (an Intel RAID bus "
                            "controller [0104] with a VMD device ID)")
    for v in vmds:
        if v.domain != 0 or v.bus != 0:
            raise TopologyError(v.file, v.line, "vmd", f"the VMD at {v.where} is not on bus "
                                "0 of domain 0000: the model puts every VMD there (its "
                                "root buses of other sockets are not modelled yet)")
    # Linux numbers the VMDs' domains from 10000 in probe (BDF) order.
    by_domain = {0x10000 + i: v for i, v in enumerate(vmds)}
    out = ["[machine]"]
    if cpus is None:
        guessed.append("machine.cpus = 4: lspci does not say how many CPUs the machine has "
                       "(give --cpus N)")
        cpus = 4
    out.append(f"cpus = {cpus}")
    for dom, v in by_domain.items():
        out += _vmd_block(dom, v, [d for d in devs if d.domain == dom], guessed, dropped)
    primary = sum(1 for d in devs if d.domain == 0 and d not in vmds)
    if primary:
        dropped.append(f"{primary} device(s) of domain 0000 besides the VMD(s): the model "
                       "builds its own host bridge there, nothing else")
    files = ", ".join(sorted({f for f, _ in sources}))
    head = [f"# Imported by `vmdsim topology import` from {files}.",
            "#", "# Guessed (the text does not say):"]
    head += [f"#  - {g}" for g in guessed] or ["#  - nothing"]
    head += ["#", "# Dropped (the model does not build it):"]
    head += [f"#  - {d}" for d in dropped] or ["#  - nothing"]
    return "\n".join(head + ["", *out]) + "\n"


def _vmd_block(dom: int, v: _Dev, mine: list[_Dev], guessed: list[str],
               dropped: list[str]) -> list[str]:
    """The ``[[vmd]]`` table of VMD ``v`` and its root ports, from the devices of its
    domain ``dom`` (``mine``); what is guessed or dropped is added to those lists."""
    if not mine:
        raise TopologyError(v.file, v.line, "vmd", f"the VMD at {v.where} would own "
                            f"domain {dom:04x}, of which the text shows no device")
    first = min(d.bus for d in mine)
    out = ["", "[[vmd]]", f"device = {_hex16(v.device)}",
            f'slot = "{v.dev:02x}.{v.fn}"']
    if v.msix is not None:
        out.append(f"msix_vectors = {v.msix}")
    else:
        guessed.append(f"vmd at {v.where}: msix_vectors = 32 (its MSI-X Count is in "
                       "`lspci -v`)")
    for key, size in zip(("cfgbar", "membar1", "membar2"), v.regions, strict=False):
        out.append(f"{key} = {_mib(size)}")
    if len(v.regions) < 3:
        guessed.append(f"vmd at {v.where}: the model's default sizes for the regions "
                       "`lspci -v` would show")
    if first not in RESTRICTION_OF_FIRST_BUS:
        raise TopologyError(v.file, mine[0].line, "vmd", f"domain {dom:04x} starts at "
                            f"bus {first:02x}: a VMD's bus restriction starts it at 00, "
                            "80 or e0")
    if RESTRICTION_OF_FIRST_BUS[first]:
        out.append(f"bus_restriction = {RESTRICTION_OF_FIRST_BUS[first]}")
    ports = sorted((d for d in mine if d.bus == first and d.cls == CLASS_BRIDGE),
                   key=lambda d: (d.dev, d.fn))
    next_bus = first + 1
    port_buses: set[int] = set()
    for d in mine:
        if d.bus == first and d.cls != CLASS_BRIDGE:
            dropped.append(f"{d.where} {_what(d)}: the model builds only root ports on "
                           "a VMD's first bus")
    for p in ports:
        if p.fn != 0:
            raise TopologyError(p.file, p.line, "root_port", f"{p.where} is function "
                                f"{p.fn}: the model's VMD root ports are function 0")
        bus = p.secondary
        if bus is None:
            bus = next_bus
            guessed.append(f"root port {p.where}: leads to bus {bus:02x} (the next one, "
                           "as Linux numbers them; `lspci -v` says)")
        next_bus = bus + 1
        port_buses.add(bus)
        out += ["", "[[vmd.root_port]]", f"slot = {p.dev}",
                f"device = {_hex16(p.device)}"]
        if p.revision:
            out.append(f"revision = {p.revision:#04x}")
        if p.hotplug is None:
            guessed.append(f"root port {p.where}: hotplug = false (SltCap is in "
                           "`lspci -vv`)")
        out.append(f"hotplug = {'true' if p.hotplug else 'false'}")
        behind = [d for d in mine if d.bus == bus]
        for d in behind:
            if d.cls != CLASS_NVME or d.dev or d.fn:
                dropped.append(f"{d.where} {_what(d)}: the model builds only an NVMe "
                               "drive at 00.0 behind a root port")
        drive = next((d for d in behind if d.cls == CLASS_NVME and not d.dev and
                      not d.fn), None)
        if drive is not None:
            out.append(_nvme_line(drive, guessed))
    for d in mine:
        if d.bus != first and d.bus not in port_buses:
            dropped.append(f"{d.where} {_what(d)}: behind a bridge the model does not "
                           "build (a switch, or a port the text does not show)")
    return out


def _hex16(n: int) -> str:
    """A 16-bit ID as the topology writes it: ``0x467F``."""
    return f"0x{n:04X}"


def _what(d: _Dev) -> str:
    return f"[{d.vendor:04x}:{d.device:04x}] class {d.cls:04x}"


def _nvme_line(d: _Dev, guessed: list[str]) -> str:
    fields = [f"vendor = {_hex16(d.vendor)}", f"device = {_hex16(d.device)}"]
    if d.revision:
        fields.append(f"revision = {d.revision:#04x}")
    if d.msix is not None:
        fields += [f"msix_vectors = {d.msix}", f"queues = {max(1, min(d.msix - 1, 128))}"]
        guessed.append(f"drive {d.where}: {max(1, min(d.msix - 1, 128))} I/O queues (one "
                       "per MSI-X vector after the admin queue's)")
    else:
        guessed.append(f"drive {d.where}: 8 I/O queues (its MSI-X Count is in `lspci -v`)")
    return f"nvme = {{ {', '.join(fields)} }}"
