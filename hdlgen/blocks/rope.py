"""Rotary position embedding: rotates the pairs ``(x[2i], x[2i+1])`` within each head.

Stream protocol: one **pair** per item, ``{"x": [x0, x1], "pos", "last"}``, the pairs of a
vector (``n_heads * head_size`` elements, any number of heads) in order, ``last`` on the final
pair of the vector. The pair index ``i`` within the head is counted here (it wraps every
``head_size // 2`` pairs and restarts after ``last``); ``pos`` travels with every pair, so q and
k rows of different positions may follow each other freely.

Numbers (golden model :mod:`sim.golden.rope`): ``cos``/``sin`` as signed 18-bit numbers with 16
fractional bits, ``floor(v * 65536 + 0.5)``, in one 36-bit table word per ``(pos, i)``
(address ``pos * head_size / 2 + i``) in block RAM; ``y0 = sat((x0 C - x1 S + 2**15) >> 16)``,
``y1 = sat((x0 S + x1 C + 2**15) >> 16)``. Error against the exact rotation <= 1 output LSB.
Table size: ``2**ceil(log2(max_positions)) * head_size / 2`` words (stories260K, 512
positions, head size 8: 2048 x 36 bits, 4 DP16KD).

Datapath: four ``MULT18X18D`` with input and output registers, fabric register after them,
sums, rounding and saturation one register each: latency 9, one pair per cycle, no stall
net (see :mod:`hdlgen.blocks.pointwise_kit`).
"""

import math

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.bench.registry import BlockBench
from hdlgen.blocks.bram import READ_LATENCY, BlockRAM
from hdlgen.blocks.pointwise_kit import MULT_LATENCY, CreditPipe, delay, mult18, saturate
from sim.golden.rope import FRAC_BITS, max_lsb_error, rope_tables

__all__ = ["Rope", "bench_configs"]


class Rope(wiring.Component):
    """RoPE on a stream of pairs.

    Parameters
    ----------
    head_size : int
        Elements per head, a power of two (8 for stories260K).
    theta : float
        Frequency base (10000 for LLaMA).
    bits : int
        Width of the elements in and out (8 or 16); the scale is unchanged.
    max_positions : int
        Positions the table covers (rounded up to a power of two); ``pos`` must be below it.

    Attributes
    ----------
    i : In(stream.Signature({"x": ArrayLayout(signed(bits), 2), "pos": unsigned(P), "last": 1}))
    o : Out(stream.Signature({"y": ArrayLayout(signed(bits), 2), "last": 1}))
    """

    LATENCY = 1 + READ_LATENCY + MULT_LATENCY + 4

    def __init__(self, head_size=8, theta=10000.0, bits=8, max_positions=512):
        if not (isinstance(head_size, int) and head_size >= 2 and head_size & (head_size - 1) == 0):
            raise ValueError(f"head_size={head_size!r}: use a power of two >= 2 (pairs are "
                             f"addressed by concatenating position and pair index)")
        if not (isinstance(theta, (int, float)) and theta > 1 and math.isfinite(theta)):
            raise ValueError(f"theta={theta!r}: use a finite base > 1 (LLaMA uses 10000)")
        if bits not in (8, 16):
            raise ValueError(f"bits={bits!r}: use 8 or 16")
        if not (isinstance(max_positions, int) and 1 <= max_positions <= 1 << 16):
            raise ValueError(f"max_positions={max_positions!r}: use 1..65536 (the context length)")
        self._head_size, self._theta, self._bits = head_size, float(theta), bits
        self._pos_bits = max(1, (max_positions - 1).bit_length())
        self.in_layout = data.StructLayout({"x": data.ArrayLayout(signed(bits), 2),
                                            "pos": unsigned(self._pos_bits), "last": unsigned(1)})
        self.out_layout = data.StructLayout({"y": data.ArrayLayout(signed(bits), 2),
                                             "last": unsigned(1)})
        super().__init__({"i": In(stream.Signature(self.in_layout)),
                          "o": Out(stream.Signature(self.out_layout))})

    head_size = property(lambda self: self._head_size)
    theta = property(lambda self: self._theta)
    bits = property(lambda self: self._bits)

    @property
    def positions(self) -> int:
        """Positions in the table (a power of two)."""
        return 1 << self._pos_bits

    def table_words(self) -> list[int]:
        """Table contents, address ``pos * head_size / 2 + i``: ``C | S << 18``."""
        c, s = rope_tables(self.positions, self._head_size, self._theta)
        return [(int(a) & 0x3FFFF) | ((int(b) & 0x3FFFF) << 18) for a, b in zip(c.flat, s.flat)]

    def elaborate(self, platform):
        m = Module()
        hp = self._head_size // 2
        m.submodules.pipe = pipe = CreditPipe(self.in_layout, self.out_layout, self.LATENCY)
        wiring.connect(m, wiring.flipped(self.i), pipe.i)
        wiring.connect(m, pipe.o, wiring.flipped(self.o))

        # pair index within the head, counted over accepted items
        idx = Signal(range(hp))
        with m.If(pipe.core_valid):
            with m.If(pipe.core_in.last | (idx == hp - 1)):
                m.d.sync += idx.eq(0)
            with m.Else():
                m.d.sync += idx.eq(idx + 1)
        # c0: register the item and the table address
        v0 = Signal()
        r0 = Signal(self.in_layout, reset_less=True)
        addr = Signal(self._pos_bits + (hp - 1).bit_length(), reset_less=True)
        m.d.sync += [v0.eq(pipe.core_valid), r0.eq(pipe.core_in),
                     addr.eq(Cat(idx, pipe.core_in.pos) if hp > 1 else pipe.core_in.pos)]
        m.submodules.rom = rom = BlockRAM(width=36, depth=self.positions * hp, ports=("w", "r"),
                                          init=self.table_words())
        m.d.comb += [rom.a.en.eq(0), rom.b.en.eq(1), rom.b.addr.eq(addr)]
        cos = rom.b.rdata[:18].as_signed()
        sin = rom.b.rdata[18:].as_signed()
        x0 = delay(m, r0.x[0], READ_LATENCY, name="x0")
        x1 = delay(m, r0.x[1], READ_LATENCY, name="x1")
        prods = {}
        for name, a, b in (("x0c", x0, cos), ("x1s", x1, sin), ("x0s", x0, sin), ("x1c", x1, cos)):
            m.submodules[name] = mul = mult18()
            m.d.comb += [mul.a.eq(a), mul.b.eq(b)]
            p = Signal(signed(36), name=f"{name}_r", reset_less=True)
            m.d.sync += p.eq(mul.p)                            # fabric register after the DSP
            prods[name] = p
        bits = self._bits
        sw = bits + 18 + 1
        s0 = Signal(signed(sw), reset_less=True)
        s1 = Signal(signed(sw), reset_less=True)
        m.d.sync += [s0.eq(prods["x0c"] - prods["x1s"]), s1.eq(prods["x0s"] + prods["x1c"])]
        half = 1 << (FRAC_BITS - 1)
        r0_, r1_ = (Signal(signed(sw - FRAC_BITS + 1), name=f"round{k}", reset_less=True)
                    for k in range(2))
        m.d.sync += [r0_.eq((s0 + half) >> FRAC_BITS), r1_.eq((s1 + half) >> FRAC_BITS)]
        y = Signal(data.ArrayLayout(signed(bits), 2), reset_less=True)
        m.d.sync += [y[0].eq(saturate(r0_, bits)), y[1].eq(saturate(r1_, bits))]
        m.d.comb += [
            pipe.core_out_valid.eq(delay(m, v0, self.LATENCY - 1, name="valid", reset=True)),
            pipe.core_out.y.eq(y),
            pipe.core_out.last.eq(delay(m, r0.last, self.LATENCY - 1, name="last")),
        ]
        return m


def _bench(bits):
    params = {"head_size": 8, "theta": 10000.0, "bits": bits, "max_positions": 512}

    def error():
        # in output LSBs
        return {"metric": "max_abs", "bound": 1.0,
                "value": max_lsb_error(512, 8, 10000.0, bits)}
    return BlockBench("rope", params, lambda: Rope(**params), error)


def bench_configs():
    """RoPE as stories260K uses it (head size 8, theta 10000, 512 positions), int8 and int16."""
    return [_bench(8), _bench(16)]
