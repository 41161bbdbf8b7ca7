"""vmdsim: the Intel Volume Management Device and the Linux machinery that drives it.

The one way to get a running machine::

    import vmdsim

    s = vmdsim.boot()                       # the built-in default topology
    s = vmdsim.boot("examples/topologies/two-vmds.toml", protocol="kfree-rcu")
    s.k          # the kernel (vmdsim.kernel.core.Kernel)
    s.machine    # the hardware (vmdsim.hw.machine.Machine)

See :func:`vmdsim.sim.system.boot` for every option.
"""

from vmdsim.sim.system import System, boot

__all__ = ["System", "boot"]
