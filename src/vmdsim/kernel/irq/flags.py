"""The genirq constants, spelled as ``include/linux/interrupt.h``, ``irq.h`` and
``kernel/irq/internals.h`` spell them, plus the errno values the IRQ code returns.

Bit positions follow Linux's order; nothing outside the model depends on the
exact values.
"""

from __future__ import annotations

from vmdsim.errors import VmdsimError

# -- irqreturn_t ------------------------------------------------------------------------
IRQ_NONE = 0
IRQ_HANDLED = 1
IRQ_WAKE_THREAD = 2

# -- request_irq() flags (IRQF_*) -------------------------------------------------------
IRQF_TRIGGER_NONE = 0x0
IRQF_TRIGGER_RISING = 0x1
IRQF_TRIGGER_FALLING = 0x2
IRQF_TRIGGER_HIGH = 0x4
IRQF_TRIGGER_LOW = 0x8
IRQF_TRIGGER_MASK = 0xF
IRQF_SHARED = 0x80
IRQF_PROBE_SHARED = 0x100
IRQF_PERCPU = 0x400
IRQF_NOBALANCING = 0x800
IRQF_ONESHOT = 0x2000
IRQF_NO_SUSPEND = 0x4000
IRQF_NO_THREAD = 0x10000
IRQF_NO_AUTOEN = 0x80000

# -- per-descriptor settings (desc->status_use_accessors, IRQ_* in irq.h) ---------------
IRQ_LEVEL = 1 << 8
IRQ_PER_CPU = 1 << 9
IRQ_NOPROBE = 1 << 10
IRQ_NOREQUEST = 1 << 11
IRQ_NOAUTOEN = 1 << 12
IRQ_NO_BALANCING = 1 << 13
IRQ_NOTHREAD = 1 << 16
IRQ_DISABLE_UNLAZY = 1 << 19

# -- irq_data state (irq_common_data.state_use_accessors, IRQD_*) -----------------------
IRQD_TRIGGER_MASK = 0xF
IRQD_SETAFFINITY_PENDING = 1 << 8
IRQD_ACTIVATED = 1 << 9
IRQD_NO_BALANCING = 1 << 10
IRQD_PER_CPU = 1 << 11
IRQD_AFFINITY_SET = 1 << 12
IRQD_LEVEL = 1 << 13
IRQD_WAKEUP_STATE = 1 << 14
IRQD_MOVE_PCNTXT = 1 << 15
IRQD_IRQ_DISABLED = 1 << 16
IRQD_IRQ_MASKED = 1 << 17
IRQD_IRQ_INPROGRESS = 1 << 18
IRQD_WAKEUP_ARMED = 1 << 19
IRQD_AFFINITY_MANAGED = 1 << 21
IRQD_IRQ_STARTED = 1 << 22
IRQD_MANAGED_SHUTDOWN = 1 << 23
IRQD_SINGLE_TARGET = 1 << 24
IRQD_CAN_RESERVE = 1 << 26
IRQD_HANDLE_ENFORCE_IRQCTX = 1 << 28
IRQD_AFFINITY_ON_ACTIVATE = 1 << 29

# -- descriptor-internal state (desc->istate, IRQS_* in internals.h) --------------------
IRQS_AUTODETECT = 0x1
IRQS_SPURIOUS_DISABLED = 0x2
IRQS_POLL_INPROGRESS = 0x8
IRQS_ONESHOT = 0x20
IRQS_REPLAY = 0x40
IRQS_WAITING = 0x80
IRQS_PENDING = 0x200
IRQS_SUSPENDED = 0x800

# -- irq_chip.flags (IRQCHIP_*) ---------------------------------------------------------
IRQCHIP_SET_TYPE_MASKED = 1 << 0
IRQCHIP_SKIP_SET_WAKE = 1 << 4
IRQCHIP_ONESHOT_SAFE = 1 << 5
IRQCHIP_AFFINITY_PRE_STARTUP = 1 << 10

# -- irq_set_affinity return values ------------------------------------------------------
IRQ_SET_MASK_OK = 0
IRQ_SET_MASK_OK_NOCOPY = 1
IRQ_SET_MASK_OK_DONE = 2

# irq_startup() arguments
IRQ_RESEND = True
IRQ_NORESEND = False
IRQ_START_FORCE = True
IRQ_START_COND = False


class IrqError(VmdsimError):
    """A genirq misuse Linux would ``WARN``/``BUG`` on (a kernel bug), named by IRQ."""

    kind = "irq-misuse"
