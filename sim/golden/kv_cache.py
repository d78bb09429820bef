"""Model of :class:`hdlgen.blocks.kv_cache.KVCache` (plain Python/NumPy, no simulator).

Exact at the transaction level: appends write one beat of a K or V row unless any index is
out of range (then nothing is written and the sticky append error is set); a read command
returns rows ``0..pos`` as beats ``(data, row_end, last)`` or, out of range, nothing and
the sticky read error. Memory starts at zero.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KVCacheModel"]


class KVCacheModel:
    """Parameters as :class:`hdlgen.blocks.kv_cache.KVCache`, ``context_length`` explicit."""

    def __init__(self, *, layers: int, kv_heads: int, head_dim: int, beat_bytes: int,
                 context_length: int):
        if head_dim % beat_bytes:
            raise ValueError(f"head_dim={head_dim} is not a multiple of beat_bytes={beat_bytes}")
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.beat_bytes, self.context_length = beat_bytes, context_length
        self.beats = head_dim // beat_bytes
        # [layer, head, kv, pos, beat] -> beat as an unsigned integer
        self.mem = np.zeros((layers, kv_heads, 2, context_length, self.beats), dtype=object)
        self.mem[...] = 0
        self.error_append = False
        self.error_read = False

    def in_range(self, layer, head, pos) -> bool:
        return 0 <= layer < self.layers and 0 <= head < self.kv_heads and 0 <= pos < self.context_length

    def append(self, layer: int, head: int, kv: int, pos: int, beat: int, data: int) -> bool:
        """Write one beat; returns False (and sets the sticky flag) when out of range."""
        if not (self.in_range(layer, head, pos) and 0 <= beat < self.beats):
            self.error_append = True
            return False
        self.mem[layer, head, kv, pos, beat] = int(data)
        return True

    def append_row(self, layer: int, head: int, kv: int, pos: int, row: np.ndarray) -> bool:
        """Write a whole int8 row (``head_dim`` values)."""
        raw = (np.asarray(row, dtype=np.int64) & 0xFF).astype(np.uint8).tobytes()
        ok = True
        for b in range(self.beats):
            chunk = raw[b * self.beat_bytes:(b + 1) * self.beat_bytes]
            ok &= self.append(layer, head, kv, pos, b, int.from_bytes(chunk, "little"))
        return ok

    def read(self, layer: int, head: int, kv: int, pos: int) -> list[tuple[int, int, int]]:
        """Beats ``(data, row_end, last)`` of rows ``0..pos``; ``[]`` and the sticky flag when
        out of range."""
        if not self.in_range(layer, head, pos):
            self.error_read = True
            return []
        out = []
        for p in range(pos + 1):
            for b in range(self.beats):
                end = b == self.beats - 1
                out.append((int(self.mem[layer, head, kv, p, b]), int(end), int(end and p == pos)))
        return out

    def rows(self, layer: int, head: int, kv: int, pos: int) -> np.ndarray:
        """Rows ``0..pos`` as an int8 array ``[pos + 1, head_dim]`` (float-free reference)."""
        beats = self.read(layer, head, kv, pos)
        raw = b"".join(d.to_bytes(self.beat_bytes, "little") for d, _, _ in beats)
        return np.frombuffer(raw, dtype=np.int8).reshape(pos + 1, self.head_dim)
