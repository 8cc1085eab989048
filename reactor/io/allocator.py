"""Keep large reads off the C allocator's slow path.

Every ``recv(read_size)`` makes a bytes object of ``read_size`` bytes and shrinks it to
what arrived. With glibc, a block at or above its mmap threshold (128 KiB at the
start of a process) is a fresh ``mmap``: each such read then costs an ``mmap``, an
``mremap`` and a ``munmap`` and two page faults, and the threshold never rises by
itself, because the block it frees has been shrunk below it first. It rises only when a
block above it is freed whole. Whether that has happened depends on what the process
did before it served (what it imported, how its dictionaries grew, whether it was
forked from a process that did): measured on this project's echo service, the same
server ran at 140k requests per CPU-second or at 42k, from one start to the next.

So the reactor frees one block of twice the largest read size once (at import, for the
default, and again for any larger ``read_size`` it is given): glibc then raises its
threshold above the reads, and they come from the heap for the rest of the process
(and of its forked children). Elsewhere this is one short-lived allocation and nothing
more. A threshold fixed by the program (``mallopt``, ``MALLOC_MMAP_THRESHOLD_``) is
not changed: that is the program's choice.

Part of the I/O layer; imports nothing of the reactor.
"""

from __future__ import annotations

from typing import Final

__all__ = ["fit_reads"]

_MAX_PRIME: Final = 31 << 20  # glibc raises its threshold to at most 32 MiB (64-bit)
_primed = 0  # the largest read size fitted so far


def fit_reads(read_size: int) -> None:
    """Make reads of up to ``read_size`` bytes come from the heap (see the module
    docstring); free of cost after the first call for a size."""
    global _primed
    if read_size <= _primed:
        return
    _primed = read_size
    block = bytearray(min(2 * read_size, _MAX_PRIME))
    del block
