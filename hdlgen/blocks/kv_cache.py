"""KV cache: per layer and KV head, K and V rows of ``head_dim`` int8, in block RAM.

Streams (``amaranth.lib.stream``, payloads are ``data.Struct``):

``append`` (In, :meth:`KVCache.append_layout`)
    One *beat* (``beat_bytes`` bytes) of a K or V row: ``layer``, ``head``, ``kv`` (0 = K,
    1 = V), ``pos``, ``beat`` (0 .. ``beats_per_row - 1``), ``data``. Always ready: one beat
    per cycle. A beat whose ``pos`` is at or beyond ``context_length`` (or whose ``layer``,
    ``head`` or ``beat`` is out of range) is **not written** and sets the sticky
    ``error.append`` flag; nothing ever wraps.
``read_cmd`` (In, :meth:`KVCache.read_cmd_layout`)
    ``layer``, ``head``, ``kv``, ``pos``: stream rows ``0 .. pos`` (inclusive) of that K or V.
    A command with ``pos`` at or beyond the capacity (or a bad layer/head) produces no
    output and sets the sticky ``error.read`` flag. Accepted when the previous command's
    reads are all issued.
``read_data`` (Out, :meth:`KVCache.read_data_layout`)
    ``data`` (one beat), ``row_end`` (last beat of a row) and ``last`` (last beat of the
    last row: the packet ends). Full throughput (one beat per cycle) when the consumer is
    ready; back-pressure is absorbed by a 4-entry FIFO fed under a credit count, so the
    2-cycle RAM latency never loses data.

``error`` (Out, 2 bits: ``append``, ``read``) is sticky until a one-cycle ``error_clear``.

Ordering: an append accepted in cycle *t* is visible to a read command accepted after *t*.

Storage: one :class:`~hdlgen.blocks.bram.BlockRAM` of ``beat_bytes*8`` bits by
``layers * kv_heads * 2 * context_length * beats_per_row`` words (a write port for appends,
a read port for the attention stream). Row ``pos`` of (layer, head, kv) starts at word
``(((layer * kv_heads + head) * 2 + kv) * context_length + pos) * beats_per_row``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.bram import BlockRAM
from hdlgen.config import AcceleratorConfig

__all__ = ["KVCache"]

_FIFO_DEPTH = 4


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class KVCache(wiring.Component):
    """KV-cache buffer (see the module docstring).

    Parameters
    ----------
    layers : int
    kv_heads : int
    head_dim : int
        Bytes (int8 values) per K or V row.
    beat_bytes : int
        Bytes per stream beat; divides ``head_dim``. Default: ``config.macs_per_lane``.
    config : AcceleratorConfig
        ``context_length`` gives the capacity in positions.
    """

    def __init__(self, *, layers: int, kv_heads: int, head_dim: int, beat_bytes: int | None = None,
                 config: AcceleratorConfig | None = None):
        config = (config or AcceleratorConfig()).check()
        beat_bytes = beat_bytes or config.macs_per_lane
        for name, v in (("layers", layers), ("kv_heads", kv_heads), ("head_dim", head_dim),
                        ("beat_bytes", beat_bytes)):
            if not isinstance(v, int) or v < 1:
                self._MustUse__silence = True
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if head_dim % beat_bytes:
            self._MustUse__silence = True
            raise ValueError(f"head_dim={head_dim} is not a multiple of beat_bytes={beat_bytes}; "
                             f"pick a beat size that divides the head dimension")
        self._layers, self._heads, self._head_dim = layers, kv_heads, head_dim
        self._beat_bytes = beat_bytes
        self._beats = head_dim // beat_bytes
        self._context = config.context_length
        self._depth = layers * kv_heads * 2 * self._context * self._beats
        self._pos_bits = _bits(self._context) + 1     # room to express out-of-range positions
        super().__init__({
            "append": In(stream.Signature(self.append_layout())),
            "read_cmd": In(stream.Signature(self.read_cmd_layout())),
            "read_data": Out(stream.Signature(self.read_data_layout())),
            "error": Out(data.StructLayout({"append": 1, "read": 1})),
            "error_clear": In(1),
        })

    layers = property(lambda self: self._layers)
    kv_heads = property(lambda self: self._heads)
    head_dim = property(lambda self: self._head_dim)
    beat_bytes = property(lambda self: self._beat_bytes)
    beats_per_row = property(lambda self: self._beats)
    context_length = property(lambda self: self._context)
    depth_words = property(lambda self: self._depth)

    def _sel_fields(self):
        return {"layer": _bits(self._layers) + 1, "head": _bits(self._heads) + 1, "kv": 1,
                "pos": self._pos_bits}

    def append_layout(self) -> data.StructLayout:
        f = self._sel_fields()
        f.update({"beat": _bits(self._beats) + 1, "data": self._beat_bytes * 8})
        return data.StructLayout(f)

    def read_cmd_layout(self) -> data.StructLayout:
        return data.StructLayout(self._sel_fields())

    def read_data_layout(self) -> data.StructLayout:
        return data.StructLayout({"data": self._beat_bytes * 8, "row_end": 1, "last": 1})

    def _row_base(self, layer, head, kv):
        """Word address of row 0 of (layer, head, kv)."""
        return ((layer * self._heads + head) * 2 + kv) * (self._context * self._beats)

    def elaborate(self, platform):
        m = Module()
        ram = m.submodules.ram = BlockRAM(width=self._beat_bytes * 8, depth=self._depth,
                                          ports=("w", "r"))
        aw = ram.addr_width
        err_append = Signal()
        err_read = Signal()
        m.d.comb += [self.error.append.eq(err_append), self.error.read.eq(err_read)]
        with m.If(self.error_clear):             # a new error in the same cycle wins (below)
            m.d.sync += [err_append.eq(0), err_read.eq(0)]

        # ---- append: validate and compute the address (registered), then write ----------
        ap = self.append.payload
        m.d.comb += self.append.ready.eq(1)
        ok = ((ap.layer < self._layers) & (ap.head < self._heads) & (ap.pos < self._context) &
              (ap.beat < self._beats))
        w_valid = Signal()
        w_addr = Signal(aw)
        w_data = Signal(self._beat_bytes * 8)
        m.d.sync += w_valid.eq(self.append.valid & ok)
        with m.If(self.append.valid):
            m.d.sync += [w_addr.eq(self._row_base(ap.layer, ap.head, ap.kv) + ap.pos * self._beats
                                   + ap.beat),
                         w_data.eq(ap.data)]
        m.d.comb += [ram.a.addr.eq(w_addr), ram.a.wdata.eq(w_data), ram.a.we.eq(1),
                     ram.a.en.eq(w_valid)]

        # ---- read command -> address generator -------------------------------------------
        rc = self.read_cmd.payload
        active = Signal()
        r_addr = Signal(aw)
        r_left = Signal(range(self._context * self._beats + 1))   # beats still to issue
        r_beat = Signal(range(self._beats))
        m.d.comb += self.read_cmd.ready.eq(~active)
        cmd_ok = (rc.layer < self._layers) & (rc.head < self._heads) & (rc.pos < self._context)
        with m.If(self.read_cmd.valid & ~active):
            with m.If(cmd_ok):
                m.d.sync += [active.eq(1), r_addr.eq(self._row_base(rc.layer, rc.head, rc.kv)),
                             r_left.eq((rc.pos + 1) * self._beats), r_beat.eq(0)]
            with m.Else():
                m.d.sync += err_read.eq(1)

        # ---- issue reads under a credit count; returns land in the FIFO -------------------
        q = m.submodules.q = fifo.SyncFIFO(width=self._beat_bytes * 8 + 2, depth=_FIFO_DEPTH)
        credits = Signal(range(_FIFO_DEPTH + 1), init=_FIFO_DEPTH)
        issue = Signal()
        m.d.comb += issue.eq(active & (credits != 0))
        take = Signal()
        m.d.comb += [self.read_data.valid.eq(q.r_rdy), q.r_en.eq(self.read_data.ready),
                     take.eq(q.r_rdy & self.read_data.ready)]
        m.d.comb += self.read_data.payload.eq(q.r_data)
        m.d.sync += credits.eq(credits - issue + take)
        m.d.comb += [ram.b.addr.eq(r_addr), ram.b.en.eq(issue)]
        row_end0 = Signal()
        last0 = Signal()
        m.d.comb += [row_end0.eq(r_beat == self._beats - 1), last0.eq(r_left == 1)]
        with m.If(issue):
            m.d.sync += [r_addr.eq(r_addr + 1), r_left.eq(r_left - 1),
                         r_beat.eq(r_beat + 1)]
            with m.If(row_end0):
                m.d.sync += r_beat.eq(0)
            with m.If(last0):
                m.d.sync += active.eq(0)
        # flags travel with the read: two cycles, like the RAM data
        v1, v2 = Signal(), Signal()
        f1, f2 = Signal(2), Signal(2)
        m.d.sync += [v1.eq(issue), v2.eq(v1), f1.eq(row_end0 | (last0 << 1)), f2.eq(f1)]
        rd = self.read_data_layout()
        word = Signal(rd)
        m.d.comb += [word.data.eq(ram.b.rdata), word.row_end.eq(f2[0]), word.last.eq(f2[1])]
        m.d.comb += [q.w_en.eq(v2), q.w_data.eq(word)]

        # ---- sticky errors -----------------------------------------------------------------
        with m.If(self.append.valid & ~ok):
            m.d.sync += err_append.eq(1)
        return m
