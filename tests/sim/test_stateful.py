"""Random sequences of what happens to a machine — completions, surprise removal and insertion,
unbind and rebind of the NVMe driver, system suspend and resume, an allocation failing during
any of them — with the run's identities checked after every step:

- the accounting adds up (:func:`vmdsim.sim.accounting.account` raises otherwise);
- a completion posted on a queue of a bound drive is consumed at once (nothing is lost);
- when every drive is unbound, the NVMe driver holds no memory.

The fast set runs a few dozen sequences; the slow set many more."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from simrig import vmd_machine

import vmdsim
from vmdsim.drivers.nvme import NVMEQ_ENABLED, nvme_core_of
from vmdsim.hw.nvme import NvmeController
from vmdsim.kernel.pci import device_attach, device_release_driver, dpm_resume, dpm_suspend
from vmdsim.sim.accounting import account, snapshot
from vmdsim.sim.system import drive_of
from vmdsim.topology import parse

MACHINE = vmd_machine(vectors=3, drives=2)
SLOTS = ["vmd0.rp0", "vmd0.rp1"]


class Machine_(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = vmdsim.boot(parse(MACHINE, "stateful.toml"))
        self.k = self.s.k
        self.before = snapshot(self.s)
        self.spares: dict[str, NvmeController] = {}
        self.suspended = False

    def _armed(self, fail: int | None):
        self.k.mem.fail_nth(fail)

    def _disarm(self) -> None:
        self.k.mem.fail_nth(None)

    def _nvme_pdevs(self):
        return [d for d in self.k.pci.devices if d.class_ == 0x010802]

    @precondition(lambda self: not self.suspended)
    @rule(data=st.data())
    def complete(self, data):
        live = [(q, dev) for dev in nvme_core_of(self.k).devices for q in dev.queues[1:]
                if q is not None and q.flags & NVMEQ_ENABLED]
        if not live:
            return
        q, dev = data.draw(st.sampled_from(live))
        hw = drive_of(self.s, dev.pdev)
        if hw.complete(q.qid):
            assert hw.pending(q.qid) == 0, f"{q.name}: a completion was not consumed"

    @precondition(lambda self: not self.suspended)
    @rule(slot=st.sampled_from(SLOTS), fail=st.none() | st.integers(1, 40))
    def hot_remove_or_insert(self, slot, fail):
        port = self.s.slot(slot)
        self._armed(fail)
        try:
            if port.card is not None:
                self.spares[slot] = port.unpopulate()
            else:
                old = self.spares.pop(slot, None)
                card = NvmeController(old.name if old else f"{slot}.nvme", nr_io_queues=2)
                port.populate(card)
                self.s.machine.nvmes.append(card)
        finally:
            self._disarm()

    @precondition(lambda self: not self.suspended)
    @rule(data=st.data(), fail=st.none() | st.integers(1, 60))
    def unbind_or_rebind(self, data, fail):
        pdevs = self._nvme_pdevs()
        if not pdevs:
            return
        pdev = data.draw(st.sampled_from(pdevs))
        self._armed(fail)
        try:
            if pdev.driver is not None:
                self.k.run_on(0, device_release_driver, pdev)
            else:
                self.k.run_on(0, device_attach, pdev)
        finally:
            self._disarm()

    @precondition(lambda self: not self.suspended)
    @rule()
    def suspend(self):
        assert self.k.run_on(0, dpm_suspend, self.k) == 0
        self.suspended = True

    @precondition(lambda self: self.suspended)
    @rule()
    def resume(self):
        assert self.k.run_on(0, dpm_resume, self.k) == 0
        self.suspended = False

    @invariant()
    def the_books_balance(self):
        account(self.s, self.before)  # raises AccountingError if an identity fails

    @invariant()
    def unbound_drives_hold_no_memory(self):
        if not nvme_core_of(self.k).devices:
            assert self.k.mem.leaks("nvme") == []


FAST = settings(max_examples=25, stateful_step_count=20, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=400, stateful_step_count=30, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def test_random_sequences_keep_every_invariant():
    Machine_.TestCase.settings = FAST
    Machine_.TestCase().runTest()


@pytest.mark.slow
def test_many_random_sequences_keep_every_invariant():
    Machine_.TestCase.settings = SLOW
    Machine_.TestCase().runTest()
