"""The kernel model's hot paths, free-running."""

from __future__ import annotations

from run import register
from vmdsim.kernel.shared import KObject, shared


class _Plain:
    def __init__(self) -> None:
        self.virq = 1


class _Shared(KObject):
    virq = shared()

    def __init__(self) -> None:
        self.virq = 1


def _reads(obj):
    def make(n: int):
        def run() -> None:
            o = obj()
            for _ in range(n):
                o.virq  # noqa: B018

        return run

    return make


register("shared-field read (scheduling point, free-running)", "plain attribute read",
         _reads(_Plain), _reads(_Shared), n=200000)
