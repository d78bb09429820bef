"""Model of :class:`hdlgen.blocks.dma.DMA` (plain Python, no simulator).

One descriptor at a time: validate (length 0, misalignment, source range in a readable
region, destination range in a writable region, in that order), then copy word ``k`` from
``src + 4*k*src_stride`` to ``dst + 4*k*dst_stride``; a word whose read reports an error is
skipped and the status becomes ``READ_ERROR``. Source and destination ranges of one
descriptor must not overlap (the hardware reads ahead).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Desc", "DMAModel", "OK", "LENGTH_ZERO", "MISALIGNED", "BAD_SRC", "BAD_DST",
           "READ_ERROR"]

OK, LENGTH_ZERO, MISALIGNED, BAD_SRC, BAD_DST, READ_ERROR = range(6)


@dataclass(frozen=True)
class Desc:
    src: int
    dst: int
    length: int
    src_stride: int = 1
    dst_stride: int = 1

    def src_addrs(self):
        return [self.src + 4 * k * self.src_stride for k in range(self.length)]

    def dst_addrs(self):
        return [self.dst + 4 * k * self.dst_stride for k in range(self.length)]


class DMAModel:
    """``regions``: list of ``(base, size, access)`` (or :class:`hdlgen.blocks.dma.Region`);
    ``mem``: dict byte address -> word (missing words read as 0); ``poisoned``: addresses
    whose reads return an error."""

    def __init__(self, regions, mem=None, poisoned=()):
        self.regions = [(r.base, r.size, r.access) if hasattr(r, "base") else tuple(r) for r in regions]
        self.mem = dict(mem or {})
        self.poisoned = set(poisoned)

    def _inside(self, first, last, want):
        return any(want in acc and base <= first and last < base + size
                   for base, size, acc in self.regions)

    def check(self, d: Desc) -> int:
        if d.length == 0:
            return LENGTH_ZERO
        if d.src % 4 or d.dst % 4:
            return MISALIGNED
        if not self._inside(d.src, d.src + 4 * (d.length - 1) * d.src_stride, "r"):
            return BAD_SRC
        if not self._inside(d.dst, d.dst + 4 * (d.length - 1) * d.dst_stride, "w"):
            return BAD_DST
        return OK

    def run(self, d: Desc):
        """Apply one descriptor; returns ``(writes, (code, count))`` where ``writes`` is the
        list of ``(addr, word)`` in order."""
        code = self.check(d)
        if code != OK:
            return [], (code, 0)
        words = [(a, self.mem.get(a, 0), a in self.poisoned) for a in d.src_addrs()]
        writes = []
        for (a, w, bad), dst in zip(words, d.dst_addrs()):
            if bad:
                code = READ_ERROR
                continue
            writes.append((dst, w))
            self.mem[dst] = w
        return writes, (code, len(writes))
