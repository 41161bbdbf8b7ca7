"""``/sys/kernel/debug/irq/domains/``: one file per IRQ domain (``CONFIG_GENERIC_IRQ_DEBUGFS``).

Each file is what ``irq_domain_debug_show_one`` prints: name, size (the
linear part of the reverse map), mapped (IRQs mapped through it), flags,
then the parent, indented, down to the root. Format of Linux v5.x to v6.13
(later releases add a line per set flag bit); the model has no per-domain
``debug_show`` (x86's vector domain prints its vector matrix there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel
    from vmdsim.kernel.irq.irqdomain import irq_domain

DEBUGFS_DOMAINS = "/sys/kernel/debug/irq/domains"


def irq_domain_debug_show_one(d: irq_domain, ind: int = 0) -> list[str]:
    out = [f"{'':{ind}}name:   {d.name}",
           f"{'':{ind + 1}}size:   {d.revmap_size}",
           f"{'':{ind + 1}}mapped: {d.mapcount}",
           f"{'':{ind + 1}}flags:  0x{d.flags:08x}"]
    if d.parent is not None:
        out.append(f"{'':{ind + 1}}parent: {d.parent.name}")
        out += irq_domain_debug_show_one(d.parent, ind + 4)
    return out


def irq_domains_debugfs(k: Kernel) -> dict[str, str]:
    """File name -> content, for every domain registered, in registration order."""
    return {f"{DEBUGFS_DOMAINS}/{d.name}": "\n".join(irq_domain_debug_show_one(d))
            for d in k.irq.irq_domain_list}
