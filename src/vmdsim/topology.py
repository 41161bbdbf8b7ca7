"""Machine topologies: a TOML file (or the built-in default) -> a checked description.

The format, every key optional unless marked::

    [machine]
    cpus = 4                  # 1..64
    ram = "2G"                # below the 32-bit PCI hole at 0xC0000000

    [[vmd]]                   # any number of VMDs, each on bus 0 of domain 0
    device = 0x201D           # required: selects the part's features (VMD-FACTS.md)
    slot = "0e.0"             # device.function on bus 0
    msix_vectors = 32
    cfgbar = "32M"            # BAR0 size: 1 MiB per bus of the hidden domain
    membar1 = "32M"
    membar2 = "1M"
    bus_restriction = 0       # firmware-set VMCONFIG[9:8]: 0 -> bus 0, 1 -> 128, 2 -> 224
    vmlock = 0                # firmware-set VMLOCK; bit 1 enables the MEMBAR2 shadow registers
    host_phys = { membar1 = 0x..., membar2 = 0x... }   # guest pass-through only

    [[vmd.root_port]]         # root ports in this VMD's hidden domain
    slot = 0                  # required: device number on the hidden root bus
    slot_number = 1           # physical slot number (Slot Capabilities)
    hotplug = true            # hot-plug capable slot
    irq = "msi"               # the port's own interrupts: "msi" (1 message) or "msix" (2)
    device = 0x2030           # PCI device ID of the port
    revision = 0              # its Revision ID (lspci prints a nonzero one: "(rev 02)")
    nvme = { queues = 8 }     # the drive in the slot; leave it out for an empty slot

    [[root_port]]             # root ports in the primary domain (no VMD in the way)
    slot = "1c.0"             # required: "dev.fn" on bus 0
    nvme = { queues = 4, msix_vectors = 5, device = 0x0A54, vendor = 0x8086,
             ltr_max_snoop = 0 }

An ``nvme`` table takes ``name``, ``queues`` (I/O queues, 1..128; the admin
queue comes on top), ``msix_vectors`` (default queues + 1: queue q uses
vector q), ``vendor``, ``device``, ``revision`` and ``ltr_max_snoop`` (the LTR Max Snoop
Latency firmware left in the drive; 0 = never programmed).

Names default to ``vmd0``, ``vmd0.rp0``, ``vmd0.rp0.nvme`` and ``rp0`` for
primary-domain root ports. Errors name the file, the line and the field:
unknown keys, wrong types, out-of-range values, unknown VMD device IDs
(the message lists the known ones), features a part does not have, taken
slots and names.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vmdsim.errors import TopologyError
from vmdsim.hw.vmd import VMD_FEATURES, VMLOCK_MB2_SHADOW_EN, VmdFeatures

DEFAULT_TOPOLOGY = "default.toml"


@dataclass
class NvmeSpec:
    name: str
    queues: int = 8
    msix_vectors: int | None = None
    vendor: int = 0x8086
    device: int = 0x0A54
    ltr_max_snoop: int = 0
    revision: int = 0


@dataclass
class RootPortSpec:
    name: str
    slot: int  # device number (hidden domain) or devfn (primary domain)
    slot_number: int = 0
    hotplug: bool = True
    irq: str = "msi"
    device: int = 0x2030
    revision: int = 0
    nvme: NvmeSpec | None = None


@dataclass
class VmdSpec:
    name: str
    device: int
    devfn: int = 0x70  # 00:0e.0
    msix_vectors: int = 32
    cfgbar: int = 32 << 20
    membar1: int = 32 << 20
    membar2: int = 1 << 20
    bus_restriction: int = 0
    vmlock: int = 0
    host_phys: tuple[int, int] | None = None
    root_ports: list[RootPortSpec] = field(default_factory=list)


@dataclass
class Topology:
    source: str
    cpus: int = 4
    ram: int = 2 << 30
    vmds: list[VmdSpec] = field(default_factory=list)
    root_ports: list[RootPortSpec] = field(default_factory=list)
    # Where each field was in the source (by its key path), for errors found after parsing.
    _lines: dict[tuple, int] | None = field(default=None, repr=False, compare=False)

    def line_of(self, *path: object) -> int | None:
        """The source line of a field, for errors found after parsing."""
        return _locate(self._lines, path) if self._lines is not None else None


# -- loading ------------------------------------------------------------------
MAX_TOPOLOGY_BYTES = 1 << 20


def load(path: str | Path | None = None) -> Topology:
    """Read and check a topology file; None means the built-in default."""
    if path is None:
        text = resources.files("vmdsim.topologies").joinpath(DEFAULT_TOPOLOGY).read_text()
        return parse(text, f"<built-in {DEFAULT_TOPOLOGY}>")
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_TOPOLOGY_BYTES + 1)
    except OSError as e:
        raise TopologyError(str(p), None, "file", e.strerror or str(e)) from None
    if len(data) > MAX_TOPOLOGY_BYTES:
        raise TopologyError(str(p), None, "file", f"larger than {MAX_TOPOLOGY_BYTES >> 10} KiB:"
                            " not a topology")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TopologyError(str(p), line, "file", f"not UTF-8 text (byte {data[e.start]:#04x} "
                            f"at column {col})") from None
    return parse(text, str(p))


def _first_line(text: str, pattern: str) -> int | None:
    m = re.search(pattern, text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def parse(text: str, source: str = "<string>") -> Topology:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise TopologyError(source, line, "syntax", msg) from None
    except RecursionError:
        raise TopologyError(source, _first_line(text, r"[\[{](\s*[\[{]){50}"), "syntax",
                            "arrays or tables nested too deeply") from None
    except ValueError:  # Python's limit on the digits of one integer (4300)
        raise TopologyError(source, _first_line(text, r"\d{4300}"), "syntax",
                            "an integer of more than 4300 digits") from None
    lines = _index_lines(text)
    ctx = _Ctx(source, lines)
    topo = Topology(source)
    topo._lines = lines
    ctx.keys(doc, (), {"machine", "vmd", "root_port"})
    machine = ctx.table(doc, ("machine",), optional=True)
    ctx.keys(machine, ("machine",), {"cpus", "ram"})
    topo.cpus = ctx.integer(machine, ("machine", "cpus"), 4, 1, 64)
    topo.ram = ctx.size(machine, ("machine", "ram"), 2 << 30, 16 << 20, 0xC0000000)
    for i, v in enumerate(ctx.array(doc, ("vmd",))):
        topo.vmds.append(_vmd(ctx, v, ("vmd", i), i))
    for i, r in enumerate(ctx.array(doc, ("root_port",))):
        topo.root_ports.append(_root_port(ctx, r, ("root_port", i), f"rp{i}", primary=True))
    _check_unique(ctx, topo)
    return topo


def _vmd(ctx: _Ctx, v: dict, path: tuple, i: int) -> VmdSpec:

    ctx.keys(v, path, {"name", "device", "slot", "msix_vectors", "cfgbar", "membar1", "membar2",
                       "bus_restriction", "vmlock", "host_phys", "root_port"})
    if "device" not in v:
        raise ctx.error(path, "device", "is required (the VMD's PCI device ID, e.g. 0x201D)")
    device = ctx.integer(v, path + ("device",), 0, 0, 0xFFFF)
    if device not in VMD_FEATURES:
        known = ", ".join(f"{d:#06x}" for d in sorted(VMD_FEATURES))
        raise ctx.error(path, "device", f"unknown VMD device ID {device:#06x} (known: {known})")
    spec = VmdSpec(name=ctx.name(v, path + ("name",), f"vmd{i}"), device=device)
    spec.devfn = ctx.devfn(v, path + ("slot",), 0x70)
    spec.msix_vectors = ctx.integer(v, path + ("msix_vectors",), 32, 1, 256)
    spec.cfgbar = ctx.size(v, path + ("cfgbar",), 32 << 20, 1 << 20, 256 << 20, pow2=True)
    spec.membar1 = ctx.size(v, path + ("membar1",), 32 << 20, 1 << 20, 1 << 30, pow2=True)
    spec.membar2 = ctx.size(v, path + ("membar2",), 1 << 20, 1 << 20, 1 << 30, pow2=True)
    spec.bus_restriction = ctx.integer(v, path + ("bus_restriction",), 0, 0, 3)
    feats = VMD_FEATURES[device]
    if spec.bus_restriction and not feats & VmdFeatures.HAS_BUS_RESTRICTIONS:
        raise ctx.error(path, "bus_restriction",
                        f"device {device:#06x} has no bus restriction (VMCAP bit 0 is 0); "
                        "only 0 is possible")
    spec.vmlock = ctx.integer(v, path + ("vmlock",), 0, 0, 0xFFFFFFFF)
    if spec.vmlock & VMLOCK_MB2_SHADOW_EN and not feats & VmdFeatures.HAS_MEMBAR_SHADOW:
        raise ctx.error(path, "vmlock", f"bit 1 enables MEMBAR2 shadow registers, which "
                        f"device {device:#06x} does not have")
    if "host_phys" in v:
        hp = ctx.table(v, path + ("host_phys",))
        ctx.keys(hp, path + ("host_phys",), {"membar1", "membar2"})
        bases = []
        for key, size in (("membar1", spec.membar1), ("membar2", spec.membar2)):
            base = ctx.integer(hp, path + ("host_phys", key), None, 0, (1 << 52) - 1)
            if base % size:
                raise ctx.error(path + ("host_phys",), key, f"{base:#x} is not aligned to the "
                                f"BAR size {size:#x}")
            bases.append(base)
        spec.host_phys = (bases[0], bases[1])
    for j, r in enumerate(ctx.array(v, path + ("root_port",))):
        spec.root_ports.append(_root_port(ctx, r, path + ("root_port", j), f"{spec.name}.rp{j}",
                                          primary=False))
    return spec


def _root_port(ctx: _Ctx, r: dict, path: tuple, name: str, *, primary: bool) -> RootPortSpec:
    ctx.keys(r, path, {"name", "slot", "slot_number", "hotplug", "irq", "device", "revision",
                       "nvme"})
    name = ctx.name(r, path + ("name",), name)
    if primary:
        slot = ctx.devfn(r, path + ("slot",), None)
    else:
        slot = ctx.integer(r, path + ("slot",), None, 0, 31)
    spec = RootPortSpec(name=name, slot=slot)
    spec.slot_number = ctx.integer(r, path + ("slot_number",), 0, 0, 0x1FFF)
    spec.hotplug = ctx.boolean(r, path + ("hotplug",), True)
    spec.irq = ctx.choice(r, path + ("irq",), "msi", ("msi", "msix"))
    spec.device = ctx.integer(r, path + ("device",), 0x2030, 0, 0xFFFF)
    spec.revision = ctx.integer(r, path + ("revision",), 0, 0, 0xFF)
    if "nvme" in r:
        n = ctx.table(r, path + ("nvme",))
        np = path + ("nvme",)
        ctx.keys(n, np, {"name", "queues", "msix_vectors", "vendor", "device", "ltr_max_snoop",
                         "revision"})
        nv = NvmeSpec(name=ctx.name(n, np + ("name",), f"{name}.nvme"))
        nv.queues = ctx.integer(n, np + ("queues",), 8, 1, 128)
        if "msix_vectors" in n:
            nv.msix_vectors = ctx.integer(n, np + ("msix_vectors",), 0, 1, 2048)
        nv.vendor = ctx.integer(n, np + ("vendor",), 0x8086, 1, 0xFFFE)
        nv.device = ctx.integer(n, np + ("device",), 0x0A54, 0, 0xFFFF)
        # LTR Max Snoop Latency: value 9:0, scale 12:10; 15:13 reserved
        nv.ltr_max_snoop = ctx.integer(n, np + ("ltr_max_snoop",), 0, 0, 0x1FFF, hex_=True)
        nv.revision = ctx.integer(n, np + ("revision",), 0, 0, 0xFF)
        spec.nvme = nv
    return spec


def _check_unique(ctx: _Ctx, topo: Topology) -> None:
    names: dict[str, tuple] = {}
    slots: dict[int, tuple] = {0: ("machine",)}  # 00:00.0 is the host bridge

    def claim(name: str, path: tuple) -> None:
        if name in names:
            raise ctx.error(path, "name", f"{name!r} is already used")
        names[name] = path

    for i, v in enumerate(topo.vmds):
        claim(v.name, ("vmd", i))
        if v.devfn in slots:
            raise ctx.error(("vmd", i), "slot", f"{_fmt_devfn(v.devfn)} is already taken")
        slots[v.devfn] = ("vmd", i)
        seen: set[int] = set()
        nbuses = v.cfgbar >> 20
        for j, r in enumerate(v.root_ports):
            p = ("vmd", i, "root_port", j)
            claim(r.name, p)
            if r.slot in seen:
                raise ctx.error(p, "slot", f"device {r.slot} is already taken on {v.name}'s bus")
            seen.add(r.slot)
            if r.nvme:
                claim(r.nvme.name, p + ("nvme",))
        if len(v.root_ports) + 1 > nbuses:
            raise ctx.error(("vmd", i), "cfgbar",
                            f"{nbuses} bus(es) cannot hold the root bus and a bus below each "
                            f"of the {len(v.root_ports)} root port(s)")
    host: list[tuple[int, int, tuple]] = []  # host physical ranges behind guests' VMDs
    for i, v in enumerate(topo.vmds):
        if v.host_phys is None:
            continue
        for key, base, size in (("membar1", v.host_phys[0], v.membar1),
                                ("membar2", v.host_phys[1], v.membar2)):
            for lo, hi, other in host:
                if base < hi and lo < base + size:
                    raise ctx.error(("vmd", i, "host_phys"), key,
                                    f"{base:#x}-{base + size - 1:#x} overlaps "
                                    f"vmd[{other[1]}].host_phys.{other[3]} "
                                    f"({lo:#x}-{hi - 1:#x}): two BARs cannot decode the same "
                                    "host addresses")
            host.append((base, base + size, ("vmd", i, "host_phys", key)))
    for i, r in enumerate(topo.root_ports):
        claim(r.name, ("root_port", i))
        if r.slot in slots:
            raise ctx.error(("root_port", i), "slot", f"{_fmt_devfn(r.slot)} is already taken")
        slots[r.slot] = ("root_port", i)
        if r.nvme:
            claim(r.nvme.name, ("root_port", i, "nvme"))


def _fmt_devfn(devfn: int) -> str:
    return f"{devfn >> 3:02x}.{devfn & 7}"


# -- field checking -----------------------------------------------------------
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_SLOT_RE = re.compile(r"^([0-9a-fA-F]{1,2})\.([0-7])$")


class _Ctx:
    def __init__(self, source: str, lines: dict[tuple, int]) -> None:
        self.source, self.lines = source, lines

    def error(self, path: tuple, key: str | None, msg: str) -> TopologyError:
        full = path + ((key,) if key else ())
        dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in full)
        dotted = dotted.replace(".[", "[")
        return TopologyError(self.source, _locate(self.lines, full), dotted or "(top)", msg)

    def _err(self, path: tuple, msg: str) -> TopologyError:
        return self.error(path[:-1], path[-1], msg)

    def keys(self, d: dict, path: tuple, allowed: set[str]) -> None:
        for k in d:
            if k not in allowed:
                raise self.error(path, k, f"unknown field (valid: {', '.join(sorted(allowed))})")

    def table(self, d: dict, path: tuple, optional: bool = False) -> dict:
        v = d.get(path[-1], {} if optional else None)
        if not isinstance(v, dict):
            raise self._err(path, "must be a table")
        return v

    def array(self, d: dict, path: tuple) -> list[dict]:
        v = d.get(path[-1], [])
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise self._err(path, f"must be an array of tables ([[{'.'.join(map(str, path))}]])")
        return v

    def integer(self, d: dict, path: tuple, default: Any, lo: int, hi: int,
                hex_: bool | None = None) -> Any:
        if path[-1] not in d:
            if default is None:
                raise self._err(path, "is required")
            return default
        v = d[path[-1]]
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._err(path, f"must be an integer, not {_kind(v)}")
        if not lo <= v <= hi:
            if hex_ is None:
                hex_ = hi > 0x2000  # counts in decimal, IDs, addresses and registers in hex
            fmt = "#x" if hex_ else "d"
            raise self._err(path, f"{v:{fmt}} is outside {lo:{fmt}}..{hi:{fmt}}")
        return v

    def boolean(self, d: dict, path: tuple, default: bool) -> bool:
        v = d.get(path[-1], default)
        if not isinstance(v, bool):
            raise self._err(path, f"must be true or false, not {_kind(v)}")
        return v

    def choice(self, d: dict, path: tuple, default: str, choices: tuple[str, ...]) -> str:
        v = d.get(path[-1], default)
        if v not in choices:
            raise self._err(path, f"{v!r} is not one of {', '.join(map(repr, choices))}")
        return v

    def name(self, d: dict, path: tuple, default: str) -> str:
        v = d.get(path[-1], default)
        if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", v):
            raise self._err(path, "must be a name of letters, digits, '_', '-' or '.'")
        return v

    def size(self, d: dict, path: tuple, default: int, lo: int, hi: int,
             pow2: bool = False) -> int:
        v = d.get(path[-1], default)
        if isinstance(v, str):
            m = _SIZE_RE.match(v)
            if not m:
                raise self._err(path, f"{v!r} is not a size (e.g. 4096, \"32M\", \"2G\")")
            v = int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]
        elif isinstance(v, bool) or not isinstance(v, int):
            raise self._err(path, f"must be a size, not {_kind(v)}")
        if not lo <= v <= hi:
            raise self._err(path, f"{v:#x} bytes is outside {lo:#x}..{hi:#x}")
        if pow2 and v & (v - 1):
            raise self._err(path, f"{v:#x} bytes is not a power of two (a BAR size)")
        return v

    def devfn(self, d: dict, path: tuple, default: int | None) -> int:
        if path[-1] not in d:
            if default is None:
                raise self._err(path, "is required (\"dev.fn\" on bus 0, e.g. \"1c.0\")")
            return default
        v = d[path[-1]]
        m = _SLOT_RE.match(v) if isinstance(v, str) else None
        if not m or int(m.group(1), 16) > 31:
            raise self._err(path, f"{v!r} is not a \"dev.fn\" slot (dev 00-1f, fn 0-7)")
        return (int(m.group(1), 16) << 3) | int(m.group(2))


def _kind(v: object) -> str:
    return {bool: "a boolean", str: "a string", float: "a float", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


# -- where each field stands in the source ------------------------------------
_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\- \"]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-.\"]+)\s*=")


def _index_lines(text: str) -> dict[tuple, int]:
    """Map each table and key path, array indices included, to its line number."""
    lines: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}  # array path (with parent indices) -> elements seen
    current: tuple = ()
    for n, raw in enumerate(text.splitlines(), start=1):
        h = _HEADER_RE.match(raw)
        if h:
            names = [p.strip().strip('"') for p in h.group(2).split(".")]
            path: tuple = ()
            for k, name in enumerate(names):
                path += (name,)
                last = k == len(names) - 1
                if last and h.group(1) == "[[":
                    counts[path] = counts.get(path, 0) + 1
                    path += (counts[path] - 1,)
                elif path in counts:
                    path += (counts[path] - 1,)
            current = path
            lines.setdefault(current, n)
            continue
        m = _KEY_RE.match(raw)
        if m:
            key = tuple(p.strip('"') for p in m.group(1).split("."))
            lines.setdefault(current + key, n)
    return lines


def _locate(lines: dict[tuple, int], path: tuple) -> int | None:
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return None
