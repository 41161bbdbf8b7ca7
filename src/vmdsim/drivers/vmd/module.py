"""The module: its parameters, its globals, and ``vmd_init``/``vmd_exit``.

Linux's ``vmd.ko`` has one instance IDA and one raw spinlock for every VMD's
lists (``vmd_instance_ida``, ``list_lock``), and registers one ``pci_driver``.
The model keeps them per kernel in a :class:`vmd_module`, created by
``vmd_init(k, protocol=..., policy=...)`` (``modprobe vmd protocol=...
policy=...``), which registers the driver — binding every VMD already
found, as a module load does.

The parameters are the model's own (Linux has none of them). ``protocol`` and
``policy`` are each one name for every VMD, or a comma-separated list (or a
sequence) of names giving ``vmd0``, ``vmd1``, ... their own values, like a
``module_param_array``; an instance beyond such a list gets the default.
Three more select the RFC v3's code (October 2015, the seed's) in place of
today's, for every VMD (``rfc_v3.py``):

``handler``  ``request-irq`` (Linux since the merged driver, v4.5:
             ``devm_request_irq`` on each vector) or ``chained`` (the RFC's
             ``vmd_flow_handler``, installed with
             ``irq_set_chained_handler_and_data``);
``remove``   ``linux`` (today's ``vmd_remove``; chained handlers, if any, are
             uninstalled by a managed action, on remove and on a failed probe
             alike: the fix Keith Busch's reply promised) or ``rfc-v3`` (the
             RFC's ``vmd_remove``: nothing uninstalls chained handlers);
``parent``   ``none`` (the MSI domain has no parent, as the review asked and
             Linux does) or ``linear`` (the RFC's linear parent domain sized
             to the VMD's vector count).

And one selects the driver's MSI domain scheme, by release (``msi_parent.py``):

``msi_domain`` ``msi-parent`` (Linux since v6.17, d7d8ab87e3e7: the VMD's domain is
             an MSI parent and each child gets a device domain on it) or
             ``legacy`` (v4.5-v6.16: one PCI/MSI domain, ``pci_msi_create_irq_domain``,
             for every child).

An unknown name raises :class:`VmdParamError` listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vmdsim.drivers.vmd.demux import DEFAULT_PROTOCOL, PROTOCOLS, TeardownProtocol
from vmdsim.drivers.vmd.features import vmd_ids
from vmdsim.drivers.vmd.pm import vmd_resume, vmd_suspend
from vmdsim.drivers.vmd.policies import DEFAULT_POLICY, POLICIES, vmd_policy
from vmdsim.drivers.vmd.probe import vmd_probe, vmd_remove, vmd_shutdown
from vmdsim.drivers.vmd.rfc_v3 import vmd_remove as rfc_v3_vmd_remove
from vmdsim.errors import VmdsimError
from vmdsim.kernel.idr import ida
from vmdsim.kernel.locking import raw_spinlock_t
from vmdsim.kernel.pci import pci_driver, pci_register_driver, pci_unregister_driver

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel

Param = str | Sequence[str] | None

HANDLERS = ("request-irq", "chained")
REMOVES = ("linux", "rfc-v3")
PARENTS = ("none", "linear")
MSI_DOMAINS = ("msi-parent", "legacy")


class VmdParamError(VmdsimError):
    """A module parameter names no protocol or policy; the message lists the valid ones."""


def _parse(what: str, value: Param, valid: dict[str, Any], default: str) -> list[str]:
    if value is None:
        names = [default]
    elif isinstance(value, str):
        names = [v.strip() for v in value.split(",")]
    else:
        names = list(value)
    plural = "policies" if what == "policy" else what + "s"
    for n in names:
        if n not in valid:
            raise VmdParamError(f"vmd: unknown {what} {n!r}; valid {plural}: "
                                f"{', '.join(valid)}")
    return names


def _choice(what: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise VmdParamError(f"vmd: unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")
    return value


def _single(value: Param) -> str | None:
    if isinstance(value, str) and "," not in value:
        return value.strip()
    return None


def _pick(names: list[str] | str, instance: int, default: str) -> str:
    if isinstance(names, str):
        return names  # one name: every VMD
    return names[instance] if instance < len(names) else default


class vmd_module:
    """One loaded ``vmd`` module: parameters, instance IDA, list lock, the pci_driver."""

    def __init__(self, k: Kernel, protocol: Param = None, policy: Param = None, *,
                 handler: str = HANDLERS[0], remove: str = REMOVES[0],
                 parent: str = PARENTS[0], msi_domain: str = MSI_DOMAINS[0]) -> None:
        self.k = k
        self.msi_domain = _choice("msi_domain", msi_domain, MSI_DOMAINS)
        if self.msi_domain == "msi-parent" and parent != PARENTS[0]:
            raise VmdParamError("parent=linear is the RFC's domain under a legacy MSI domain; "
                                "it needs msi_domain=legacy")
        self.handler = _choice("handler", handler, HANDLERS)
        self.remove = _choice("remove", remove, REMOVES)
        self.parent = _choice("parent", parent, PARENTS)
        self.protocols = _parse("protocol", protocol, PROTOCOLS, DEFAULT_PROTOCOL)
        self.policies = _parse("policy", policy, POLICIES, DEFAULT_POLICY)
        # one name (a plain string without commas) applies to every VMD
        self._protocol_for_all = _single(protocol)
        self._policy_for_all = _single(policy)
        self.instance_ida = ida()
        self.list_lock = raw_spinlock_t("vmd.list_lock")
        self.devices: list[Any] = []  # bound vmd_devs, in probe order
        remove_fn = rfc_v3_vmd_remove if self.remove == "rfc-v3" else vmd_remove
        self.driver = pci_driver("vmd", vmd_ids, probe=vmd_probe, remove=remove_fn,
                                 shutdown=vmd_shutdown, suspend=vmd_suspend,
                                 resume=vmd_resume)
        self.driver.owner = self

    def protocol_for(self, instance: int) -> TeardownProtocol:
        return PROTOCOLS[_pick(self._protocol_for_all or self.protocols, instance,
                               DEFAULT_PROTOCOL)]

    def policy_for(self, instance: int) -> vmd_policy:
        return POLICIES[_pick(self._policy_for_all or self.policies, instance,
                              DEFAULT_POLICY)]

    def __repr__(self) -> str:
        rfc = "".join(f" {name}={value}" for name, value, today in (
            ("handler", self.handler, HANDLERS[0]), ("remove", self.remove, REMOVES[0]),
            ("parent", self.parent, PARENTS[0]),
            ("msi_domain", self.msi_domain, MSI_DOMAINS[0])) if value != today)
        return (f"<vmd module protocol={','.join(self.protocols)} "
                f"policy={','.join(self.policies)}{rfc}>")


def vmd_module_of(k: Kernel) -> vmd_module | None:
    """The loaded vmd module of kernel ``k``, or None."""
    for drv in k.pci.drivers:
        if isinstance(drv.owner, vmd_module):
            return drv.owner
    return None


def vmd_init(k: Kernel, protocol: Param = None, policy: Param = None, *,
             handler: str = HANDLERS[0], remove: str = REMOVES[0],
             parent: str = PARENTS[0], msi_domain: str = MSI_DOMAINS[0]) -> vmd_module:
    """Load the driver into kernel ``k`` (before or after boot) and bind every VMD.

    ``protocol``: ``srcu`` (default), ``rfc-v3``, ``kfree-rcu`` or ``spinlock``;
    ``policy``: ``least-loaded`` (default), ``modulo``, ``affinity`` or ``rebalance``;
    ``handler``, ``remove``, ``parent``: today's code or the RFC v3's; ``msi_domain``: the
    MSI domain scheme of v6.17+ or of v4.5-v6.16 (above)."""
    if vmd_module_of(k) is not None:
        raise VmdParamError("vmd: module already loaded in this kernel (vmd_exit first)")
    module = vmd_module(k, protocol, policy, handler=handler, remove=remove, parent=parent,
                        msi_domain=msi_domain)
    err = pci_register_driver(k, module.driver)
    if err:
        raise VmdsimError(f"vmd: pci_register_driver failed ({err})")
    return module


def vmd_exit(k: Kernel) -> None:
    """Unload: unbind every VMD (children first) and unregister the driver."""
    module = vmd_module_of(k)
    if module is None:
        raise VmdParamError("vmd: module not loaded in this kernel")
    pci_unregister_driver(k, module.driver)
