"""Host view of the engine: the address windows of its Wishbone port, defined once here and used
by the gateware (:class:`hdlgen.engine.core.Engine`), the host (:meth:`EngineMap.image_writes`)
and the benches.

The bus is 32 bits wide; addresses below are **byte** addresses relative to the engine's base
(word address = byte address / 4). The top three bits of the word address select a window, the
rest is the offset inside it (``window_bits`` word-address bits per window):

====== =========== ===========================================================================
window name        contents (one 32-bit bus word per ...)
====== =========== ===========================================================================
0      ``regs``    registers: 0 ``RESULT``, 1 ``RESULT_VALUE``, 2 ``STATUS`` (bit 0 busy, bit 1
                   done, bit 2 error, bits 8-11 error code, bits 16-31 program counter),
                   3 ``OUT_LEN`` (elements the last ``OUTPUT`` exposed), 4 ``OUT_ADDR``,
                   5 ``CYCLES`` (cycles of the last job), 6 ``TOKEN``, 7 ``POS`` (read/write),
                   8 ``START`` (write 1: run a decode step with ``TOKEN`` and ``POS``; the
                   ``start`` port does the same with the ``token``/``pos`` ports)
1      ``program`` instruction ``n`` is words ``4n .. 4n+3`` (bits 0-31 first)
2      ``scratch`` activation scratchpad element ``e`` is word ``e`` (low 16 bits; reads
                   sign-extend)
3      ``weights`` weight-bank row ``r`` is words ``r * row_stride_words + k`` for
                   ``k < row_words`` (little-endian bytes, the :mod:`hdlgen.blocks.membank`
                   byte order)
4      ``params``  parameter word ``p`` is word ``p``
5      ``output``  element ``i`` of the last ``OUTPUT`` (the logits): word ``i``, sign-extended
====== =========== ===========================================================================

The memory windows answer ``err`` while the engine runs a job (``busy``); the registers are
always readable.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["EngineMap", "WINDOWS"]

#: Window index of each name.
WINDOWS = {"regs": 0, "program": 1, "scratch": 2, "weights": 3, "params": 4, "output": 5}


def _bits(n: int) -> int:
    return max(1, (max(1, n) - 1).bit_length())


@dataclass(frozen=True)
class EngineMap:
    """Address windows for memories of the given sizes.

    Attributes
    ----------
    program_words, act_elements, weight_rows, row_bytes, param_words : int
        Memory sizes (instructions, scratch elements, weight rows, bytes per weight row,
        parameter words).
    """
    program_words: int
    act_elements: int
    weight_rows: int
    row_bytes: int
    param_words: int

    @property
    def row_words(self) -> int:
        return -(-self.row_bytes // 4)

    @property
    def row_stride_words(self) -> int:
        return 1 << _bits(self.row_words) if self.row_words > 1 else 1

    @property
    def window_bits(self) -> int:
        """Word-address bits of one window."""
        return max(_bits(4 * self.program_words), _bits(self.act_elements),
                   _bits(self.weight_rows * self.row_stride_words), _bits(self.param_words), 3)

    @property
    def addr_width(self) -> int:
        """Word-address width of the bus."""
        return self.window_bits + 3

    def base(self, window: str) -> int:
        """Byte address of a window."""
        return WINDOWS[window] << (self.window_bits + 2)

    def word(self, window: str, offset: int) -> int:
        """Byte address of word ``offset`` of a window."""
        return self.base(window) + 4 * offset

    def image_writes(self, words, image):
        """``[(byte_address, value)]`` loading a program (128-bit words) and a
        :class:`~hdlgen.compiler.image.MemoryImage` (weights and parameters)."""
        out = []
        for n, w in enumerate(words):
            for k in range(4):
                out.append((self.word("program", 4 * n + k), (int(w) >> (32 * k)) & 0xFFFFFFFF))
        wb = np.asarray(image.weights, dtype=np.int64) & 0xFF
        pad = (-wb.shape[1]) % 4
        if pad:
            wb = np.concatenate([wb, np.zeros((wb.shape[0], pad), dtype=np.int64)], axis=1)
        wwords = (wb[:, 0::4] | wb[:, 1::4] << 8 | wb[:, 2::4] << 16 | wb[:, 3::4] << 24)
        for r in range(wwords.shape[0]):
            for k in range(wwords.shape[1]):
                out.append((self.word("weights", r * self.row_stride_words + k), int(wwords[r, k])))
        for p, v in enumerate(np.asarray(image.params, dtype=np.int64)):
            out.append((self.word("params", p), int(v) & 0xFFFFFFFF))
        return out
