"""/sys/bus/pci as Linux lays it out: devices under their bridges, the VMD domain under the
VMD, and the domain link user space follows."""

from __future__ import annotations

from click.testing import CliRunner

import vmdsim
from vmdsim.cli import main
from vmdsim.history.domain_link import vmd_enable_domain
from vmdsim.variants import applied
from vmdsim.views.sysfs import sysfs


def test_a_drive_behind_the_vmd_lives_under_its_root_port_under_the_vmd():
    out = sysfs(vmdsim.boot().k).splitlines()
    assert ("10000:01:00.0 -> ../../../devices/pci0000:00/0000:00:0e.0/pci10000:00/"
            "10000:00:00.0/10000:01:00.0") in out
    assert "0000:00:0e.0 -> ../../../devices/pci0000:00/0000:00:0e.0" in out
    vmd_dir = out.index("/sys/bus/pci/drivers/vmd:")
    assert out[vmd_dir + 1] == "0000:00:0e.0 -> ../../../../devices/pci0000:00/0000:00:0e.0"
    assert out[-1] == ("/sys/devices/pci0000:00/0000:00:0e.0/domain -> "
                       "pci10000:00/pci_bus/10000:00")


def test_the_domain_link_is_there_only_while_the_driver_is_bound():
    from vmdsim.drivers.vmd.query import vmd_devices
    from vmdsim.kernel.pci import device_release_driver

    k = vmdsim.boot().k
    device_release_driver(vmd_devices(k)[0].dev)
    text = sysfs(k)
    assert "/domain ->" not in text and "drivers/vmd" not in text and "10000:" not in text


def test_the_command_and_the_v6_10_order_of_the_link():
    r = CliRunner().invoke(main, ["sysfs"])
    assert r.exit_code == 0 and "/domain -> pci10000:00/pci_bus/10000:00" in r.output
    with applied([vmd_enable_domain]):  # the link comes last then, but it does come
        assert "/domain -> pci10000:00" in sysfs(vmdsim.boot().k)
