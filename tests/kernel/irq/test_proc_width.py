"""The width of /proc/interrupts' IRQ column: x86's nr_irqs, not the IRQs in use."""

from __future__ import annotations

from vmdsim.kernel.core import Kernel
from vmdsim.kernel.irq.proc import _prec
from vmdsim.kernel.irq.subsys import arch_probe_nr_irqs as x86_nr_irqs


def test_nr_irqs_is_sized_as_arch_probe_nr_irqs_sizes_it():
    # 24 GSIs + 16 legacy + 8 per CPU + 16 per GSI, capped at 256 vectors per CPU
    assert x86_nr_irqs(1) == 256
    assert x86_nr_irqs(4) == 24 + 16 + 32 + 384
    assert x86_nr_irqs(112) == 24 + 16 + 896 + 384


def test_the_irq_column_grows_a_digit_at_each_power_of_ten():
    assert [_prec(n) for n in (999, 1000, 9999, 10000)] == [3, 4, 4, 5]
    k = Kernel(ncpus=112)  # a two-socket server: nr_irqs 1320, four digits
    header, spu = k.irq.show_interrupts().splitlines()
    assert header.startswith(" " * 12 + "CPU0") and spu.startswith(" SPU:")
