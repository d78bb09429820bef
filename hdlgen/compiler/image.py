"""Memory image of a compiled model: the contents of the engine's memories (weight bank,
parameter memory), the scratchpad and KV-cache shapes, and the descriptors of the ROM tables.

The image is what the hardware loads (block-RAM initial contents or host writes) and what the
integer golden model (:mod:`sim.golden.engine`) executes on.
"""

from dataclasses import dataclass, field

import numpy as np

from hdlgen.blocks.bram import ecp5_tiling
from sim.golden.activation import table16, table8
from sim.golden.rope import rope_tables

__all__ = ["MemoryImage", "WeightAllocator", "ParamAllocator", "requant_word", "split_requant_word",
           "rope_table_words", "act_table_words", "ebr_count"]


def ebr_count(width_bits: int, depth: int, parity: bool = False) -> int:
    """DP16KD blocks of a ``width_bits`` x ``depth`` memory with one write and one read port, as
    :func:`hdlgen.blocks.bram.ecp5_tiling` tiles it: with ``parity`` every bit of the x9/x18/x36
    modes holds data (no byte enables); without, bytes sit in the 9-bit lanes (byte-writable,
    the ninth bits unused)."""
    if width_bits <= 0 or depth <= 0:
        return 0
    t = ecp5_tiling(width_bits, depth, granularity=None if parity else 8, ports=("w", "r"))
    return t.columns * t.rows


def requant_word(mult: int, shift: int) -> int:
    """One requantization parameter word: ``mult`` bits 0-15, ``shift`` bits 16-21."""
    return int(mult) | int(shift) << 16


def split_requant_word(word: int) -> tuple[int, int]:
    return int(word) & 0xFFFF, (int(word) >> 16) & 0x3F


def _u32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64) & 0xFFFFFFFF


def rope_table_words(context: int, head_size: int, theta: float) -> np.ndarray:
    """ROM words of the RoPE table: for each position and pair, ``C`` then ``S`` (signed 18-bit,
    two's complement in 32-bit words)."""
    c, s = rope_tables(context, head_size, theta)
    return _u32(np.stack([c, s], axis=-1).reshape(-1))


def act_table_words(func: str, in_bits: int, out_bits: int, in_scale: float,
                    out_scale: float) -> np.ndarray:
    """ROM words of an activation table: int8 input: 256 entries; int16 input: 512
    ``(base, delta)`` pairs (two words each)."""
    if in_bits == 8:
        return _u32(table8(func, out_bits, in_scale, out_scale))
    base, delta = table16(func, out_bits, in_scale, out_scale)
    return _u32(np.stack([base, delta], axis=-1).reshape(-1))


class WeightAllocator:
    """Lays int8 matrices out in weight-bank rows (:func:`hdlgen.blocks.membank.weight_rows`
    layout: row ``ob * in_blocks + ib`` holds ``W[ob*lanes + l, ib*K + k]`` at byte
    ``l*K + k``)."""

    def __init__(self, lanes: int, macs_per_lane: int, bits: int = 8):
        self.lanes, self.K = lanes, macs_per_lane
        self.bits = bits
        self.blocks = []
        self.rows = 0

    def add(self, w) -> int:
        w = np.asarray(w, dtype=np.int64)
        lo, hi = -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        if w.min(initial=0) < lo or w.max(initial=0) > hi:
            raise ValueError(f"weight plane outside int{self.bits}")
        n_out, n_in = w.shape
        ob_n, ib_n = -(-n_out // self.lanes), -(-n_in // self.K)
        pad = np.zeros((ob_n * self.lanes, ib_n * self.K), dtype=self.dtype)
        pad[:n_out, :n_in] = w
        rows = pad.reshape(ob_n, self.lanes, ib_n, self.K).transpose(0, 2, 1, 3)
        rows = rows.reshape(ob_n * ib_n, self.lanes * self.K)
        addr = self.rows
        self.blocks.append(rows)
        self.rows += rows.shape[0]
        return addr

    @property
    def dtype(self):
        return np.int8 if self.bits == 8 else np.int16

    def array(self) -> np.ndarray:
        if not self.blocks:
            return np.zeros((0, self.lanes * self.K), dtype=self.dtype)
        return np.concatenate(self.blocks, axis=0)


class ParamAllocator:
    """Parameter memory: 32-bit words."""

    def __init__(self):
        self.chunks = []
        self.words = 0

    def add(self, words) -> int:
        w = _u32(np.atleast_1d(np.asarray(words, dtype=np.int64)))
        addr = self.words
        self.chunks.append(w)
        self.words += len(w)
        return addr

    def array(self) -> np.ndarray:
        if not self.chunks:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(self.chunks)


@dataclass
class MemoryImage:
    """Contents of the engine's memories for one compiled model.

    Attributes
    ----------
    lanes, macs_per_lane : int
        MAC-array shape the weight layout is for.
    weights : numpy.ndarray of int8 (int16 holding int9 with ``ext["weight_bits"] == 9``)
        Weight bank, ``(rows, lanes * macs_per_lane)``.
    params : numpy.ndarray of int64
        Parameter memory, unsigned 32-bit words.
    act_elements : int
        Scratchpad size (16-bit elements).
    kv_layers, kv_heads, head_size, context : int
        KV-cache shape.
    tables : dict of int to dict
        Descriptor of each ROM table by parameter address (``kind`` ``"rope"``, ``"act"`` or
        ``"swiglu"`` and the parameters its words were generated from).
    ext : dict
        Scheme extensions the RTL engine does not run yet (:data:`sim.golden.engine.EXTENSIONS`:
        ``norm_out_bits`` 16, ``kv_bits`` 9, ``weight_bits`` 9, ``weight_exp`` 1); empty for
        the default scheme.
        The widths of the weight bank and KV-cache rows follow from it.
    """
    lanes: int
    macs_per_lane: int
    weights: np.ndarray
    params: np.ndarray
    act_elements: int
    kv_layers: int
    kv_heads: int
    head_size: int
    context: int
    tables: dict = field(default_factory=dict)
    ext: dict = field(default_factory=dict)

    @property
    def weight_bits(self) -> int:
        """Bits of one weight-bank value (8, or 9 with the ``weight_bits`` extension)."""
        return int(self.ext.get("weight_bits", 8))

    @property
    def weight_row_bits(self) -> int:
        """Bits of one weight-bank row: ``weight_bits`` per weight, plus one shift bit per
        lane with the ``weight_exp`` extension."""
        n = self.lanes * self.macs_per_lane
        return self.weight_bits * n + (self.lanes if self.ext.get("weight_exp") else 0)

    def rope_table(self):
        """``(parameter address, descriptor)`` of the image's first RoPE table, or None: the
        one the RTL engine builds its RoPE unit for, which a ``MATVEC``'s ``rope_heads``
        uses."""
        return next(((a, d) for a, d in self.tables.items() if d["kind"] == "rope"), None)

    @property
    def kv_bits(self) -> int:
        """Bits of one KV-cache value (8, or 9 with the ``kv_bits`` extension)."""
        return int(self.ext.get("kv_bits", 8))

    def memory_bytes(self, program_words: int = 0) -> dict:
        """Bytes of each memory (data bits / 8, as the host sees them)."""
        kv_values = 2 * self.kv_layers * self.kv_heads * self.context * self.head_size
        return {"weights": int(self.weights.shape[0]) * self.weight_row_bits // 8,
                "params": 4 * (int(self.params.size) - self.table_words()),
                "tables": 4 * self.table_words(),
                "kv_cache": kv_values * self.kv_bits // 8,
                "scratch": 2 * self.act_elements, "program": 16 * program_words}

    def rom_tables(self) -> dict:
        """``{address: (kind, words)}`` of the distinct ROM tables in the parameter memory."""
        out = {}
        for addr, d in self.tables.items():
            if d["kind"] == "rope":
                out[addr] = ("rope", d["context"] * d["head_size"])
            elif d["kind"] == "act":
                out[addr] = ("act", 256 if d["in_bits"] == 8 else 1024)
            elif d["kind"] == "swiglu":
                out[d["table"]] = ("act", 256 if d["a_bits"] == 8 else 1024)
        return out

    def table_words(self) -> int:
        """Parameter words that are ROM tables of the blocks (RoPE, activation), which keep
        them in their own block RAM."""
        return sum(n for _, n in self.rom_tables().values())

    def memory_ebr(self, units=None) -> dict:
        """DP16KD blocks of the engine built for this image (:mod:`hdlgen.engine.ebr`, the RTL
        engine's sizing rules), by memory: ``weights`` (the weight bank: byte lanes, 32 data
        bits of each 36-bit block, and with a tail of at most 32 rows past a power of two in
        LUT RAM, :func:`hdlgen.engine.memories.split_depth`; the rows of the extensions wider
        than 8 bits a weight, which the RTL does not run, planned with all 36 bits used),
        ``params`` (the whole parameter memory, ROM tables included), ``tables`` (the units'
        own ROM copies: RoPE, each activation, the SwiGLU unit's SiLU), ``kv_cache``,
        ``scratch``, ``program`` (0: the program memory is LUT RAM at any length) and
        ``units``: the units' fixed blocks (softmax, score queues, norms, tile buffer) of
        ``units`` (:class:`hdlgen.engine.ebr.EngineUnits`; None: an engine with no norm unit
        and single score queue, i.e. the softmax alone), by kind in
        :meth:`~hdlgen.engine.ebr.EngineUnits.ebr`."""
        from hdlgen.engine.ebr import (EngineUnits, act_tiles, bram_tiles, kv_beat, rope_tiles)
        from hdlgen.engine.memories import split_depth
        units = units or EngineUnits()
        K, n = self.macs_per_lane, self.lanes * self.macs_per_lane
        rows = max(1, int(self.weights.shape[0]))
        row_bits = self.weight_row_bits
        if row_bits == 8 * n:           # core.py: SplitRAM / BlockRAM, granularity 8, preloaded
            main = split_depth(row_bits, rows)
            weights = bram_tiles(row_bits, main, granularity=8, init=True)
        else:
            # (an extension the RTL does not run: planned as a pseudo-dual-port bank whose x36
            # blocks hold data in all 36 bits, with the int8 bank's LUT-RAM tail; the tiling
            # of the RTL's read-write port would pick narrower blocks for some depths, e.g.
            # 174 instead of 145 for the 2,552 rows of the best-fitting scheme)
            weights = ebr_count(row_bits, split_depth(row_bits, rows, None), True)
        # tables: the engine's units (core.py: Rope for the first RoPE table, an Activation
        # per "act" table, one SwiGLU unit)
        rope = self.rope_table()
        tables = rope_tiles(rope[1]["context"], rope[1]["head_size"]) if rope else 0
        swiglu = set()
        for d in self.tables.values():
            if d["kind"] == "act":
                tables += act_tiles(d["in_bits"], d.get("out_bits", 16))
            elif d["kind"] == "swiglu":
                swiglu.add(d["a_bits"])
        tables += act_tiles(min(swiglu), 16) if swiglu else 0
        kv_rows = 2 * self.kv_layers * self.kv_heads * self.context
        if self.kv_bits == 8:           # core.py: KVCache, one beat of B bytes a word
            B = kv_beat(K, self.head_size)
            kv = bram_tiles(8 * B, kv_rows * (self.head_size // B), ports=("w", "r"))
        else:                           # (the kv_bits extension: 9-bit lanes full)
            kv = ebr_count(self.kv_bits * self.head_size, kv_rows, True)
        return {"weights": weights,
                "params": bram_tiles(32, max(1, int(self.params.size)), init=True),
                "tables": tables,
                "kv_cache": kv,
                "scratch": bram_tiles(16, max(1, self.act_elements)),
                "program": 0,
                "units": sum(units.ebr(self.context).values())}
