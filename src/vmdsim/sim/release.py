"""The interrupt-domain scheme of a release: what ``boot`` builds where its caller does
not say.

Two choices changed how every MSI in a VMD machine is allocated, and each
belongs to a release rather than to a run:

``pci_msi_domains`` (the IRQ core, ``k.irq``)
    ``global`` (x86's global PCI-MSI domain, Linux v4.x-v6.1), ``per-device``
    (a device domain per PCI device on the vector domain, v6.2-v6.17) or
    ``per-device-startup`` (the same with the v6.18 templates' ``irq_startup``,
    54f45a30c0d0);
``msi_domain`` (the vmd module)
    ``legacy`` (one PCI/MSI domain for every child, v4.5-v6.16) or
    ``msi-parent`` (the VMD's domain an MSI parent, v6.17+).

Today's (the newest release the model has) is the default. ``--kernel`` and
the regression corpus switch them for a whole command or one side of an entry
with :func:`release_settings`; :func:`settings_for` says which a release ran.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from vmdsim.drivers.vmd.module import MSI_DOMAINS
from vmdsim.errors import VmdsimError
from vmdsim.kernel.irq.subsys import PCI_MSI_DOMAIN_MODES

# Each list is its owner's, newest first.
CHOICES = {"pci_msi_domains": PCI_MSI_DOMAIN_MODES, "msi_domain": MSI_DOMAINS}
TODAY = {key: values[0] for key, values in CHOICES.items()}
_current: dict[str, str] = dict(TODAY)


def current() -> dict[str, str]:
    return dict(_current)


@contextmanager
def release_settings(**settings: str) -> Iterator[None]:
    """Boot with these settings until the block ends."""
    for key, value in settings.items():
        if key not in CHOICES:
            raise VmdsimError(f"release setting {key!r}: the settings are "
                              f"{', '.join(CHOICES)}")
        if value not in CHOICES[key]:
            raise VmdsimError(f"{key} {value!r}: one of {', '.join(CHOICES[key])}")
    saved = dict(_current)
    _current.update(settings)
    try:
        yield
    finally:
        _current.clear()
        _current.update(saved)


def settings_for(release: str) -> dict[str, str]:
    """The scheme a release ran (``v4.7``, ``6.16``, ``about v4.20``); anything that names
    no version (the RFC, the 2015 review) ran the oldest."""
    m = re.search(r"(\d+)\.(\d+)", release)
    v = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if v < (6, 2):
        return {"pci_msi_domains": "global", "msi_domain": "legacy"}
    if v < (6, 17):
        return {"pci_msi_domains": "per-device", "msi_domain": "legacy"}
    if v < (6, 18):
        return {"pci_msi_domains": "per-device", "msi_domain": "msi-parent"}
    return dict(TODAY)
