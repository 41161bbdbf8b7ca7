"""Small VMD machines for the simulator's tests, as topology text."""

from __future__ import annotations


def vmd_machine(*, vectors: int, drives: int, empty_slots: int = 0, queues: int = 2,
                cpus: int = 2) -> str:
    """One 201D with ``vectors`` MSI-X vectors and room for hot-plug windows; ``drives``
    root ports with a drive of ``queues`` I/O queues, then ``empty_slots`` empty ones."""
    text = (f'[machine]\ncpus = {cpus}\n\n[[vmd]]\ndevice = 0x201D\n'
            f'msix_vectors = {vectors}\nmembar2 = "32M"\n')
    for i in range(drives + empty_slots):
        text += f"\n[[vmd.root_port]]\nslot = {i}\nslot_number = {i + 1}\n"
        if i < drives:
            text += f"nvme = {{ queues = {queues} }}\n"
    return text
