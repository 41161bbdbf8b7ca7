"""The regression corpus: merged fixes and review points, each with a property that
fails on the code before and holds on the code after.

An entry (:class:`Regression`) names the commit (or the review), its subject
and the release the fix landed in, the property that catches the bug, and the
two sides: the code before (variants of the functions the fix changed,
``vmdsim/variants.py``, and module or IRQ-core options) and after (today's
code unless said otherwise). Both sides run the interrupt-domain scheme of the
release the fix shipped in (the VMD's legacy MSI domain before v6.17).
:func:`run_regression` runs the property's probe on each side and says whether the
entry is reproduced: the probe fails before and holds after.

A fix the model cannot reproduce honestly yet is listed as :class:`Unmodelled`
with what it would take, rather than left out or faked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vmdsim.errors import VmdsimError
from vmdsim.sim.release import release_settings, settings_for
from vmdsim.variants import Variant, applied

HOLDS = ("safe", "clean")  # what a probe says when its property holds


class RegressionError(VmdsimError):
    """An unknown corpus entry; the message lists the known ones."""


@dataclass(frozen=True)
class Finding:
    """What a probe found: its verdict (``safe``/``clean`` when the property holds) and
    one line of detail (the failure's message, or what was checked)."""

    verdict: str
    detail: str = ""

    @property
    def holds(self) -> bool:
        return self.verdict in HOLDS


Probe = Callable[..., Finding]  # probe(**options) -> Finding


@dataclass(frozen=True)
class Side:
    """One side of a fix: the code (variants) and options a probe runs with."""

    label: str
    options: Mapping[str, str] = field(default_factory=dict)
    variants: tuple[Variant, ...] = ()


@dataclass(frozen=True)
class Regression:
    name: str
    commit: str  # the fix's commit id, or "review" for a point of the 2015 review
    subject: str
    fixed_in: str  # the release the fix first shipped in (or the review's date)
    catches: str  # the property, in words
    probe: Probe
    before: Side
    after: Side
    note: str = ""  # where the model simplifies what the fix is about


@dataclass(frozen=True)
class Unmodelled:
    """A fix the corpus lists but cannot reproduce yet, and why."""

    commit: str
    subject: str
    needs: str


@dataclass(frozen=True)
class Result:
    entry: Regression
    before: Finding
    after: Finding

    @property
    def reproduced(self) -> bool:
        return not self.before.holds and self.after.holds

    def as_dict(self) -> dict[str, object]:
        e = self.entry
        return {"name": e.name, "commit": e.commit, "subject": e.subject,
                "fixed_in": e.fixed_in, "catches": e.catches,
                "before": {"code": e.before.label, "verdict": self.before.verdict,
                           "detail": self.before.detail},
                "after": {"code": e.after.label, "verdict": self.after.verdict,
                          "detail": self.after.detail},
                "reproduced": self.reproduced, "note": e.note}


def run_side(entry: Regression, side: Side) -> Finding:
    """The probe on one side, on the interrupt-domain scheme of the release the fix
    shipped in (``sim/release.py``), so a fix to code a later release rewrote runs on
    the code it fixed."""
    with release_settings(**settings_for(entry.fixed_in)), applied(list(side.variants)):
        return entry.probe(**side.options)


def run_regression(entry: Regression) -> Result:
    return Result(entry, run_side(entry, entry.before), run_side(entry, entry.after))


def select(entries: list[Regression], names: tuple[str, ...]) -> list[Regression]:
    """The entries named (by name or commit id prefix, at least 7 digits), in corpus
    order; all of them when ``names`` is empty."""
    if not names:
        return list(entries)
    chosen = []
    for n in names:
        hits = [e for e in entries
                if e.name == n or (len(n) >= 7 and e.commit.startswith(n))]
        if not hits:
            known = ", ".join(e.name for e in entries)
            raise RegressionError(f"no corpus entry {n!r}; the entries: {known}")
        chosen += [e for e in hits if e not in chosen]
    return [e for e in entries if e in chosen]
