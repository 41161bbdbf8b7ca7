"""Where every completion and every interrupt of a run went, and the identities that say so.

A run's figures are differences of counters read before the load starts and
after it ends, so what boot did (admin commands, port events) is left out.
Each figure comes from the layer that owns it: the drives' and the VMDs'
hardware counters, the interrupt controller's, and the drivers' own. The
identities below tie them together; :func:`account` checks every one and
raises :class:`AccountingError` if one fails (a bug in the model, never a
property of the workload):

1. **completions**: ``posted + pending at start = consumed + lost +
   abandoned + discarded``. *posted*: I/O completion entries the drives
   wrote; *consumed*: entries the host moved the completion head past;
   *lost*: entries still unconsumed at the end on a drive that is present
   (its interrupt never got a handler to look); *abandoned*: unconsumed on a
   drive that was pulled (a surprise removal drops them by nature);
   *discarded*: entries dropped with their queue (controller reset, queue
   deleted). Each lost entry is listed with its queue and the state of that
   queue's interrupt at the end.
2. **the driver agrees**: entries the NVMe handlers consumed = *consumed*.
3. **messages**: the drives fire one message per I/O completion whose queue
   has its interrupt enabled (*signalled*) and one per admin completion (the
   commands of a probe, asynchronous events). For the drives (NVMe), the
   root ports (port services) and the VMDs' own vectors apart, ``fired =
   sent + merged + dropped + discarded + pending`` — a firing is sent (at
   once or from its Pending Bit), merged into a Pending Bit already set,
   dropped (MSI/MSI-X off), discarded by a reset, or still pending
   (``pending`` is the change in set Pending Bits over the run). A VMD
   vector fires once per child message it remaps.
4. **delivered interrupts**: interrupts the CPUs took (the interrupt
   controller's count) split into the messages the VMDs sent on their own
   vectors and the rest, which came straight from devices (functions outside
   a VMD domain, or children of a VMD in bypass); the VMD vectors' handler
   runs (the kernel's count) = the messages the VMDs sent (the hardware's).
5. **handler calls** = *real* (the handler found work) + *spurious* (it found
   none, because a shared vector calls every handler on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmdsim.drivers.nvme import nvme_queue_totals
from vmdsim.drivers.vmd.query import vmd_devices, vmd_vector_calls, vmd_vector_child_calls
from vmdsim.errors import VmdsimError
from vmdsim.hw.nvme import NvmeController
from vmdsim.sim.system import io_queues

_MSG_FIELDS = ("fired", "sent", "merged", "dropped", "discarded", "pending")


class AccountingError(VmdsimError):
    """An accounting identity failed: some counter of the model is wrong."""


def _msg(caps: list[Any]) -> dict[str, int]:
    out = dict.fromkeys(_MSG_FIELDS, 0)
    for cap in caps:
        if cap is None:
            continue
        for f in _MSG_FIELDS[:-1]:
            out[f] += getattr(cap, f)
        out["pending"] += cap.pending_count
    return out


@dataclass
class Snapshot:
    """Raw counters at one moment (object identities keep pulled drives apart)."""

    drives: dict[int, dict[str, Any]] = field(default_factory=dict)
    nvme_msgs: dict[str, int] = field(default_factory=dict)
    port_msgs: dict[str, int] = field(default_factory=dict)
    vmd_msgs: dict[str, int] = field(default_factory=dict)
    remapped: int = 0
    apic: int = 0
    vectors: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def vector_runs(self) -> int:
        """Runs of every VMD vector's handler (the kernel's count)."""
        return sum(runs for runs, _ in self.vectors.values())


def _drive_counts(n: NvmeController) -> dict[str, Any]:
    return {"completions": n.completions, "consumed": n.consumed, "discarded": n.discarded,
            "signalled": n.signalled, "admin": n.admin_posted,
            "pending": sum(n.pending(q) for q in range(1, n.nr_queues)),
            "present": n.bus is not None}


def snapshot(system: Any) -> Snapshot:
    m, k = system.machine, system.k
    s = Snapshot()
    for n in m.nvmes:
        s.drives[id(n)] = _drive_counts(n) | {"hw": n}
    s.nvme_msgs = _msg([n.msix for n in m.nvmes])
    s.port_msgs = _msg([c for rp in m.root_ports for c in (rp.msix, rp.msi)])
    s.vmd_msgs = _msg([vmd.msix for vmd in m.vmds])
    s.remapped = sum(sum(vmd.remapped) for vmd in m.vmds)
    s.apic = m.rc.apic.delivered
    for v in vmd_devices(k):
        for i, (runs, child) in enumerate(zip(vmd_vector_calls(v), vmd_vector_child_calls(v),
                                              strict=True)):
            s.vectors[(v.name, i)] = (runs, child)
    s.queues = nvme_queue_totals(k)
    return s


@dataclass
class LostCompletion:
    queue: str
    count: int
    why: str


@dataclass
class Accounting:
    posted: int = 0
    pending_at_start: int = 0
    consumed: int = 0
    lost: int = 0
    abandoned: int = 0
    discarded: int = 0
    driver_consumed: int = 0
    signalled: int = 0  # posted I/O completions whose queue has its interrupt on
    admin: int = 0  # admin completion entries (commands of probes, asynchronous events)
    lost_by_queue: list[LostCompletion] = field(default_factory=list)
    nvme_messages: dict[str, int] = field(default_factory=dict)
    port_messages: dict[str, int] = field(default_factory=dict)
    vmd_messages: dict[str, int] = field(default_factory=dict)
    remapped: int = 0  # child messages the VMDs turned into their own vectors
    delivered: int = 0
    vector_runs: int = 0
    real: int = 0
    spurious: int = 0
    calls_per_cpu: dict[str, dict[int, int]] = field(default_factory=dict)
    completions_by_queue: dict[str, int] = field(default_factory=dict)

    @property
    def handler_calls(self) -> int:
        return self.real + self.spurious

    @property
    def via_vmd(self) -> int:
        """Interrupts the CPUs took on VMD vectors: the messages the VMDs sent."""
        return self.vmd_messages.get("sent", 0)

    @property
    def direct(self) -> int:
        """Interrupts that came straight from devices: the rest of those delivered."""
        return self.delivered - self.via_vmd

    def failures(self) -> list[str]:
        """Every identity that does not hold, said in words (empty: all hold)."""
        bad = []
        if self.posted + self.pending_at_start != (self.consumed + self.lost + self.abandoned
                                                   + self.discarded):
            bad.append(f"completions: posted {self.posted} + pending at start "
                       f"{self.pending_at_start} != consumed {self.consumed} + lost {self.lost}"
                       f" + abandoned {self.abandoned} + discarded {self.discarded}")
        if self.driver_consumed != self.consumed:
            bad.append(f"the NVMe handlers consumed {self.driver_consumed} entries, the drives "
                       f"saw {self.consumed} consumed")
        if self.nvme_messages.get("fired", 0) != self.signalled + self.admin:
            bad.append(f"the drives fired {self.nvme_messages.get('fired')} messages for "
                       f"{self.signalled} I/O completions with interrupts on and "
                       f"{self.admin} admin completions")
        for name, msgs in (("NVMe", self.nvme_messages), ("port", self.port_messages),
                           ("VMD vector", self.vmd_messages)):
            rhs = sum(msgs[f] for f in _MSG_FIELDS[1:])
            if msgs["fired"] != rhs:
                bad.append(f"{name} messages: fired {msgs['fired']} != {rhs} "
                           f"({', '.join(f'{f} {msgs[f]}' for f in _MSG_FIELDS[1:])})")
        if self.vmd_messages.get("fired", 0) != self.remapped:
            bad.append(f"VMD vectors fired {self.vmd_messages.get('fired')} times for "
                       f"{self.remapped} remapped child messages")
        if self.direct < 0:
            bad.append(f"interrupts delivered {self.delivered} < VMD vector messages "
                       f"{self.via_vmd}")
        if self.vector_runs != self.via_vmd:
            bad.append(f"VMD vector handler runs {self.vector_runs} != VMD vector messages "
                       f"{self.via_vmd}")
        return bad


def _why(n: NvmeController, q: int) -> str:
    vector = n.queue_vector(q)
    if vector is None:
        return "the queue's interrupt is off (IEN clear)"
    if not n.msix.enabled:
        return "MSI-X is disabled"
    if n.msix.is_masked(vector):
        return f"MSI-X entry {vector} is masked"
    return f"MSI-X entry {vector} is unmasked: its message found no handler that looked"


def account(system: Any, before: Snapshot) -> Accounting:
    """The run since ``before``, with every identity checked."""
    after = snapshot(system)
    a = Accounting()
    names = {}
    for name, drive, qid in io_queues(system):
        names[(id(drive), qid)] = name
    for key, d in after.drives.items():
        b = before.drives.get(key, {"completions": 0, "consumed": 0, "discarded": 0,
                                    "pending": 0, "signalled": 0, "admin": 0})
        a.posted += d["completions"] - b["completions"]
        a.signalled += d["signalled"] - b["signalled"]
        a.admin += d["admin"] - b["admin"]
        a.consumed += d["consumed"] - b["consumed"]
        a.discarded += d["discarded"] - b["discarded"]
        a.pending_at_start += b["pending"]
        n: NvmeController = d["hw"]
        if not d["present"]:
            a.abandoned += d["pending"]
            continue
        a.lost += d["pending"]
        for q in range(1, n.nr_queues):
            left = n.pending(q)
            if left:
                name = names.get((key, q), f"{n.name} queue {q} (no driver queue)")
                a.lost_by_queue.append(LostCompletion(name, left, _why(n, q)))
    a.nvme_messages = {f: after.nvme_msgs[f] - before.nvme_msgs[f] for f in _MSG_FIELDS}
    a.port_messages = {f: after.port_msgs[f] - before.port_msgs[f] for f in _MSG_FIELDS}
    a.vmd_messages = {f: after.vmd_msgs[f] - before.vmd_msgs[f] for f in _MSG_FIELDS}
    a.remapped = after.remapped - before.remapped
    a.delivered = after.apic - before.apic
    a.vector_runs = after.vector_runs - before.vector_runs
    for name, c in after.queues.items():
        b = before.queues.get(name, {"real": 0, "spurious": 0, "completions": 0,
                                     "calls_per_cpu": {}})
        a.real += c["real"] - b["real"]
        a.spurious += c["spurious"] - b["spurious"]
        done = c["completions"] - b["completions"]
        if not name.endswith("q0"):
            a.driver_consumed += done
            a.completions_by_queue[name] = done
        a.calls_per_cpu[name] = {cpu: n - b["calls_per_cpu"].get(cpu, 0)
                                 for cpu, n in c["calls_per_cpu"].items()}
    bad = a.failures()
    if bad:
        raise AccountingError("the run's accounting does not add up (a model bug): "
                              + "; ".join(bad))
    return a
