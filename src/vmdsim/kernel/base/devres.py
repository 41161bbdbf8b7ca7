"""Managed resources (``drivers/base/devres.c``): what a driver's probe registers to be
released when the driver lets go of the device.

``devm_*`` allocations and actions a driver registers during probe are released
in reverse order when probe fails or after the driver's ``remove``
(``devres_release_all``), as Linux does. Every devres node is allocated from
``k.mem`` (owner ``"devres"``), so registering a managed action can fail with
-ENOMEM, as ``devres_alloc`` can, and a node left behind is a visible leak.

Simplifications: no devres groups; ``devm_kzalloc`` is two allocations (the
object and its node), either of which may fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmdsim.errors import VmdsimError
from vmdsim.kernel.base.core import device
from vmdsim.kernel.errno import ENOMEM
from vmdsim.kernel.shared import KObject

if TYPE_CHECKING:
    from vmdsim.kernel.core import Kernel


class DevresError(VmdsimError):
    """A devres misuse Linux WARNs about (e.g. removing an action never added)."""


# -- devres -------------------------------------------------------------------------
class devres(KObject):
    """``struct devres``: one managed release, run when the driver lets go of the device."""

    def __init__(self, k: Kernel, release: Callable[[Any], None], data: Any, name: str) -> None:
        self.k = k
        self.release = release
        self.data = data
        self.name = name

    def __repr__(self) -> str:
        return f"<devres {self.name}>"


def devres_alloc(dev: device, release: Callable[[Any], None], data: Any = None,
                 name: str | None = None) -> devres | None:
    """A managed-release node, not yet on ``dev``'s list; None when memory runs out."""
    return dev.k.mem.kzalloc(devres, dev.k, release, data,
                             name or getattr(release, "__name__", "action"), owner="devres")


def devres_add(dev: device, dr: devres) -> None:
    dev.devres_head.append(dr)


def devres_free(dr: devres) -> None:
    """Free a node that was never added (or was taken off the list)."""
    dr.k.mem.kfree(dr)


def devm_add_action(dev: device, action: Callable[[Any], None], data: Any = None,
                    name: str | None = None) -> int:
    """Run ``action(data)`` when the driver is unbound (or its probe fails); 0 or -ENOMEM."""
    dr = devres_alloc(dev, action, data, name)
    if dr is None:
        return -ENOMEM
    devres_add(dev, dr)
    return 0


def devm_add_action_or_reset(dev: device, action: Callable[[Any], None],
                             data: Any = None) -> int:
    """``devm_add_action``; if that fails, run ``action(data)`` at once."""
    ret = devm_add_action(dev, action, data)
    if ret:
        action(data)
    return ret


def _devres_take(dev: device, action: Callable[[Any], None], data: Any, who: str) -> devres:
    for i in range(len(dev.devres_head) - 1, -1, -1):
        dr = dev.devres_head[i]
        if dr.release == action and dr.data is data:
            del dev.devres_head[i]
            return dr
    raise DevresError(f"{dev!r}: {who} of {action!r}, which was never added")


def devm_remove_action(dev: device, action: Callable[[Any], None], data: Any = None) -> None:
    """Forget a registered action without running it."""
    devres_free(_devres_take(dev, action, data, "devm_remove_action"))


def devm_release_action(dev: device, action: Callable[[Any], None], data: Any = None) -> None:
    """Forget a registered action and run it now."""
    devres_free(_devres_take(dev, action, data, "devm_release_action"))
    action(data)


def devm_kzalloc(dev: device, cls: type, *args: Any, owner: str = "driver", **kw: Any) -> Any:
    """``kzalloc`` freed automatically on unbind; None when allocation fails.

    Linux puts the object inside its devres node (one allocation); here the object
    and its node are two, and either may fail.
    """
    k = dev.k
    obj = k.mem.kzalloc(cls, *args, owner=owner, **kw)
    if obj is None:
        return None
    if devm_add_action(dev, k.mem.kfree, obj, "devm_kzalloc"):
        k.mem.kfree(obj)
        return None
    return obj


def devm_kfree(dev: device, obj: Any) -> None:
    devm_release_action(dev, dev.k.mem.kfree, obj)


def devres_release_all(dev: device) -> int:
    """Run every managed release, newest first, freeing the nodes; how many there were."""
    n = 0
    while dev.devres_head:
        dr = dev.devres_head.pop()
        dr.release(dr.data)
        devres_free(dr)
        n += 1
    return n
