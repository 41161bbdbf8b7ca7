"""The RFC v3 options on the command line: ``--vmd-param`` and ``vmdsim irq-domains``."""

from __future__ import annotations

from click.testing import CliRunner

from vmdsim.cli import main

CROWDED = "examples/topologies/modulo-crowding.toml"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_irq_domains_shows_the_vmd_msi_domain_as_a_root_by_default():
    # v6.17+: an MSI parent (flags HIERARCHY | MSI_PARENT) sized to the VMD's 5 vectors,
    # each child's device domain stacked on it
    r = invoke("irq-domains", CROWDED)
    assert r.exit_code == 0, r.output
    block = r.output.split("==> /sys/kernel/debug/irq/domains/VMD-MSI-65536 <==\n")[1]
    block = block.split("==>")[0]
    assert block.startswith("name:   VMD-MSI-65536\n size:   5\n mapped: 11\n flags:  0x00000101")
    assert "parent:" not in block and "model:" not in r.output
    assert "==> /sys/kernel/debug/irq/domains/VMD-PCI-MSIX-10000:01:00.0 <==" in r.output
    # v4.5-v6.16: the legacy PCI/MSI domain itself, no parent
    r = invoke("irq-domains", CROWDED, "--vmd-param", "msi_domain=legacy")
    block = r.output.split("==> /sys/kernel/debug/irq/domains/VMD-MSI-65536 <==\n")[1]
    assert block.startswith("name:   VMD-MSI-65536\n size:   0\n mapped: 11\n")
    assert "parent:" not in block.split("==>")[0]


def test_irq_domains_with_the_rfc_parent_shows_it_never_limits_allocation():
    r = invoke("irq-domains", CROWDED, "--vmd-param", "parent=linear")
    assert r.exit_code == 2 and "it needs msi_domain=legacy" in r.output  # a legacy part
    r = invoke("irq-domains", CROWDED, "--vmd-param", "parent=linear", "--vmd-param",
               "msi_domain=legacy")
    assert r.exit_code == 0, r.output
    assert " parent: unknown-3\n    name:   unknown-3\n     size:   5\n     mapped: 11\n" \
        in r.output
    assert "maps 11 child IRQs, 6 more than its size" in r.output


def test_run_with_the_rfc_chained_handler_loses_nothing():
    r = invoke("run", "--vmd-param", "handler=chained", "--interrupts", "200")
    assert r.exit_code == 0, r.output
    assert "lost interrupts 0" in r.output


def test_bad_vmd_params_exit_2_naming_the_option():
    r = invoke("irq-domains", "--vmd-param", "parent")
    assert r.exit_code == 2 and "--vmd-param 'parent': write NAME=VALUE" in r.output
    r = invoke("interrupts", "--vmd-param", "handler=chaind")
    assert r.exit_code == 2 and "valid handlers: request-irq, chained" in r.output
    r = invoke("run", "--vmd-param", "color=blue")
    assert r.exit_code == 2 and "the options are handler, remove, parent, msi_domain" in r.output
