"""Fixtures every test directory shares. A booted machine comes from ``vmdsim.boot``, the one
way the commands, the scenarios and the docs build one too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import vmdsim
from vmdsim.topology import parse


@pytest.fixture
def default_system() -> vmdsim.System:
    """The built-in default machine, booted with every driver."""
    return vmdsim.boot()


@pytest.fixture
def boot_toml() -> Callable[..., vmdsim.System]:
    """``boot_toml(text, name="<test>", **options)``: a topology written in the test,
    booted with ``vmdsim.boot(**options)``."""

    def boot(text: str, name: str = "<test>", **options: Any) -> vmdsim.System:
        return vmdsim.boot(parse(text, name), **options)

    return boot
