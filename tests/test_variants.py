"""Variants: a run's own version of a named function, applied everywhere and undone after."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import vmdsim
from vmdsim.cli import main
from vmdsim.drivers.vmd import msi as vmd_msi
from vmdsim.drivers.vmd.demux import PROTOCOLS, SrcuTeardown
from vmdsim.drivers.vmd.query import vmd_devices
from vmdsim.kernel.irq import flow
from vmdsim.sim.release import release_settings
from vmdsim.variants import Variant, VariantError, applied, load_variant_file, variant


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))

SIMPLE_FLOW = textwrap.dedent("""\
    from vmdsim.variants import variant

    calls = []

    @variant("vmdsim.kernel.irq.flow.handle_untracked_irq")
    def handle_untracked_irq(desc):
        calls.append(desc.irq_data.irq)
        from vmdsim.kernel.irq.flow import handle_simple_irq
        handle_simple_irq(desc)
    """)


def _child_handlers(system: vmdsim.System) -> set[str]:
    k = system.k
    virqs = [c.virq for c in vmd_devices(k)[0].children]
    return {k.irq.irq_to_desc(v).handle_irq.__name__ for v in virqs}


def test_a_variant_replaces_the_function_where_other_modules_imported_it(tmp_path: Path):
    path = tmp_path / "flow.py"
    path.write_text(SIMPLE_FLOW)
    [v] = load_variant_file(str(path))
    original = flow.handle_untracked_irq
    with applied([v]):
        assert vmd_msi.handle_untracked_irq.__wrapped__ is v.func  # msi.py imported it by name
        s = vmdsim.boot()
        s.machine.nvmes[0].complete(1)
    assert vmd_msi.handle_untracked_irq is original and flow.handle_untracked_irq is original
    assert v.func.__globals__["calls"], "the variant ran for the child IRQs"


def test_an_ops_table_entry_and_a_protocol_method_can_be_replaced():
    freed = []

    @variant("vmdsim.drivers.vmd.msi.vmd_msi_domain_ops.msi_free")
    def msi_free(domain, info, virq):  # noqa: ANN001, ANN202 - a user's variant
        freed.append(virq)

    today = vmd_msi.vmd_msi_domain_ops.msi_free
    with applied([msi_free]):
        assert vmd_msi.vmd_msi_domain_ops.msi_free.__wrapped__ is msi_free.func
    assert vmd_msi.vmd_msi_domain_ops.msi_free is today

    @variant("vmdsim.drivers.vmd.demux.SrcuTeardown.wait_for_readers")
    def wait_for_readers(self, irqs):  # noqa: ANN001, ANN202
        pass

    method = SrcuTeardown.wait_for_readers
    with applied([wait_for_readers]):
        assert PROTOCOLS["srcu"].wait_for_readers.__func__.__wrapped__ is wait_for_readers.func
    assert SrcuTeardown.wait_for_readers is method


def test_vmd_msi_init_before_30ce03503813_gives_children_handle_simple_irq():
    from vmdsim.history.untracked_irq import vmd_msi_init

    # the code of v4.8, on the VMD's MSI domain of its day (legacy, before v6.17)
    with applied([vmd_msi_init]), release_settings(msi_domain="legacy"):
        assert _child_handlers(vmdsim.boot()) == {"handle_simple_irq"}
    assert _child_handlers(vmdsim.boot()) == {"handle_untracked_irq"}


def test_everything_is_restored_when_the_body_fails():
    from vmdsim.history.untracked_irq import vmd_msi_init

    today = vmd_msi.vmd_msi_init
    with pytest.raises(RuntimeError), applied([vmd_msi_init]):
        raise RuntimeError("the run failed")
    assert vmd_msi.vmd_msi_init is today
    assert vmd_msi.vmd_msi_domain_ops.msi_init is today


@pytest.mark.parametrize(("source", "message"), [
    ('@variant("vmdsim.kernel.irq.flow.no_such_flow")\ndef f(desc):\n    pass\n',
     "flow holds nothing named 'no_such_flow', not a function"),
    ('@variant("vmdsim.no_such_module.f")\ndef f():\n    pass\n', "no such function"),
    ('@variant("vmdsim.kernel.irq.flow.handle_simple_irq")\ndef f(d, extra):\n    pass\n',
     "takes (d, extra), the function it replaces takes (desc)"),
    ('@variant("vmdsim.kernel.irq.flow.IRQS_REPLAY")\ndef f():\n    pass\n', "not a function"),
    ('@variant("linux.kernel.f")\ndef f():\n    pass\n', "starting with 'vmdsim.'"),
    ("x = 1\n", "defines no @variant function"),
    ("def broken(:\n", ":2: SyntaxError"),
    ("import os\nos.no_such_thing\n", ":3: AttributeError"),
])
def test_bad_variant_files_are_refused_naming_the_file_and_line(tmp_path: Path, source: str,
                                                               message: str):
    path = tmp_path / "bad.py"
    path.write_text("from vmdsim.variants import variant\n" + source)
    with pytest.raises(VariantError) as e:
        load_variant_file(str(path))
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_the_command_line_refuses_a_bad_variant_with_status_2(tmp_path: Path):
    path = tmp_path / "bad.py"
    path.write_text("x = 1\n")
    for args in (("run", "--variant", str(path)), ("check", "seed-teardown", "--variant",
                                                   str(path)),
                 ("dmesg", "--variant", str(tmp_path / "missing.py")),
                 ("lspci", "--variant", "before:no-such-entry"),
                 ("run", "--variant", "before:lock-order")):
        r = invoke(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output


def test_run_says_which_functions_were_replaced_and_prints_kernel_errors(tmp_path: Path):
    topo = tmp_path / "shared.toml"
    topo.write_text("[machine]\ncpus = 2\n\n[[vmd]]\ndevice = 0x201D\nmsix_vectors = 2\n\n"
                    "[[vmd.root_port]]\nslot = 0\nnvme = { queues = 1 }\n")
    r = invoke("run", str(topo), "--variant", "before:untracked-irq", "--interrupts",
               "100010", "--duration", "1e9")
    assert r.exit_code == 0, r.output
    assert "variant: vmdsim.drivers.vmd.msi.vmd_msi_init replaced by" in r.output
    assert "kernel log at err and above (2 lines):" in r.output
    assert "nobody cared" in r.output


def test_a_variant_found_schedule_replays_with_the_variant(tmp_path: Path):
    path = tmp_path / "early_free.py"
    path.write_text(textwrap.dedent("""\
        from vmdsim.variants import variant
        from vmdsim.drivers.vmd.demux import _uncount

        @variant("vmdsim.drivers.vmd.demux.SrcuTeardown.msi_free")
        def msi_free(self, vmd, vmdirq):
            _uncount(vmd, vmdirq)      # no synchronize_srcu: the RFC's free
            vmd.dev.k.mem.kfree(vmdirq)
        """))
    r = invoke("check", "seed-teardown", "--variant", str(path), "--json")
    assert r.exit_code == 1, r.output
    import json

    d = json.loads(r.output[r.output.index("{"):])
    assert d["verdict"] == "use-after-free"
    assert f"variant={path}" in d["replay"]
    again = invoke("replay", d["replay"], "--json")
    assert json.loads(again.output[again.output.index("{"):])["verdict"] == "use-after-free"
    assert isinstance(load_variant_file(str(path))[0], Variant)


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "variants" / "cfg_addr_v5_3.py"


def test_the_documented_example_recreates_the_bus_offsets_entry():
    from vmdsim.history.bus_offsets import ENTRIES

    topo = str(Path(__file__).resolve().parents[1] / "examples" / "topologies" / "client.toml")
    r = invoke("run", topo, "--variant", str(EXAMPLE))
    assert r.exit_code == 1
    assert "vmd0.rp0.nvme (not enumerated) is not bound to nvme" in r.output
    assert invoke("run", topo).exit_code == 0
    [entry] = ENTRIES
    with applied(load_variant_file(str(EXAMPLE))):
        assert entry.probe().verdict == "unbound"  # the corpus's own property agrees


def test_a_module_imported_while_a_variant_is_applied_gets_the_original_back(tmp_path: Path):
    import sys

    from vmdsim.drivers.vmd import probe
    from vmdsim.history.aspm_deadlock import vmd_pm_enable_quirk

    today = probe.vmd_pm_enable_quirk
    sys.modules.pop("vmdsim.check.scenarios.aspm_walk", None)
    with applied([vmd_pm_enable_quirk]):
        import importlib

        late = importlib.import_module("vmdsim.check.scenarios.aspm_walk")
        assert late.vmd_pm_enable_quirk.__wrapped__ is vmd_pm_enable_quirk.func  # as it was
    assert late.vmd_pm_enable_quirk is today


def test_a_command_refused_after_its_variants_were_loaded_leaves_none_applied():
    today = vmd_msi.vmd_msi_init
    r = invoke("run", "--variant", "before:untracked-irq", "--rate", "nan")
    assert r.exit_code == 2
    assert vmd_msi.vmd_msi_init is today
    r = invoke("run", "--kernel", "4.5", "--interrupts", "x")
    assert r.exit_code == 2
    assert vmd_msi.vmd_msi_init is today and flow.handle_untracked_irq.__name__ == (
        "handle_untracked_irq")


NEVER_CALLED = """from vmdsim.variants import variant


@variant("vmdsim.drivers.vmd.msi.vmd_msi_init")
def vmd_msi_init(domain, info, virq, hwirq, arg):
    return 0
"""


def test_a_variant_the_run_never_calls_is_reported(tmp_path: Path):
    # v6.17+ allocates through vmd_msi_alloc: the legacy domain's msi_init is not reached
    path = tmp_path / "legacy.py"
    path.write_text(NEVER_CALLED)
    r = invoke("run", "--variant", str(path), "--interrupts", "10")
    assert r.exit_code == 0, r.output
    assert "vmdsim: warning: variant vmdsim.drivers.vmd.msi.vmd_msi_init" in r.output
    assert "was never called: this run does not reach the code it replaces" in r.output
    r = invoke("run", "--variant", "before:untracked-irq", "--interrupts", "10")
    assert "never called" not in r.output  # on its own release's scheme it is reached


def test_a_variant_that_breaks_the_model_is_one_error_line(tmp_path: Path):
    path = tmp_path / "legacy.py"
    path.write_text(NEVER_CALLED)  # installs no vmd_irq: the legacy free then follows None
    r = invoke("run", "--variant", str(path), "--kernel", "6.16", "--interrupts", "10")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "with the functions of --variant replaced, the run failed: AttributeError" in \
        r.output


def test_a_kernel_bug_at_boot_is_a_finding_not_an_input_error():
    r = invoke("run", "--variant", "before:vmd-irq-startup")
    assert r.exit_code == 1, r.output
    assert "the kernel failed while booting (use-after-free):" in r.output
    assert "BUG: KASAN: use-after-free in vmd_irq" in r.output
