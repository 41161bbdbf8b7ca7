"""Drivers, written against the kernel model only: vmd (the subject), nvme, pcieport services.

They see config space, MMIO and interrupts through ``vmdsim.kernel`` APIs and
never touch a hardware object.
"""
