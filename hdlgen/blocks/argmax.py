"""Argmax over a packet of logits (greedy sampling on chip).

Input: one logit per cycle, ``{"logit": signed(bits), "last"}``, packets framed by ``last``.
Output: one item per packet, ``{"index", "value"}``: the position of the largest logit in the
packet, the **first** one on ties, and that logit. Golden model:
:func:`sim.golden.argmax.argmax_packets`.

Timing: a running maximum is a loop (compare, then select) that cannot be pipelined as such, so
the elements are dealt alternately to **two lanes**, each a running maximum whose loop may take
two cycles (cycle 1: compare with the lane's best into a flag register; cycle 2: update the
lane's best under that flag; the lane's next element comes two cycles later at the earliest).
A lane replaces its best only when strictly greater, so it keeps its first maximum. When the
last element of a packet has passed, the two lanes' results are snapshotted and combined by a
feed-forward pipeline (larger value, or the smaller index on equal values; the three compares
are registered before the choice) into an output FIFO.
The input is accepted every cycle; only the last element of a packet waits for a free output
slot (a credit counter: ``i.ready`` depends on registers only). Packets may be one element
long and follow each other back to back. Packets longer than ``max_length`` wrap the index
(not supported).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hdlgen.bench.registry import BlockBench

__all__ = ["Argmax", "bench_configs"]


class Argmax(wiring.Component):
    """Index of the largest logit in each packet.

    Parameters
    ----------
    bits : int
        Logit width, 16..32 (the issue asks for >= 16).
    max_length : int
        Longest packet (vocabulary size); sets the index width.

    Attributes
    ----------
    i : In(stream.Signature({"logit": signed(bits), "last": 1}))
    o : Out(stream.Signature({"index": unsigned(ceil(log2(max_length))), "value": signed(bits)}))
    """

    def __init__(self, bits=16, max_length=65536):
        if not (isinstance(bits, int) and 16 <= bits <= 32):
            raise ValueError(f"bits={bits!r}: use 16..32 (logits are at least 16 bits wide)")
        if not (isinstance(max_length, int) and 1 <= max_length <= 1 << 24):
            raise ValueError(f"max_length={max_length!r}: use 1..16777216 (the vocabulary size)")
        self._bits, self._max_length = bits, max_length
        self._index_bits = max(1, (max_length - 1).bit_length())
        self.in_layout = data.StructLayout({"logit": signed(bits), "last": unsigned(1)})
        self.out_layout = data.StructLayout({"index": unsigned(self._index_bits),
                                             "value": signed(bits)})
        super().__init__({"i": In(stream.Signature(self.in_layout)),
                          "o": Out(stream.Signature(self.out_layout))})

    bits = property(lambda self: self._bits)
    max_length = property(lambda self: self._max_length)
    index_bits = property(lambda self: self._index_bits)

    DEPTH = 8           # output FIFO entries (packets in flight after their last element)

    def elaborate(self, platform):
        m = Module()
        bits, ib = self._bits, self._index_bits
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=ib + bits, depth=self.DEPTH)
        credits = Signal(range(self.DEPTH + 1))          # packets past A, not yet delivered
        deliver = Signal()
        m.d.comb += [self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready), deliver.eq(self.o.valid & self.o.ready)]

        # stage A: input register; the lane compare
        a_valid = Signal()
        a = Signal(self.in_layout, reset_less=True)
        take = Signal()
        m.d.comb += [take.eq(a_valid & (~a.last | (credits < self.DEPTH))),
                     self.i.ready.eq(~a_valid | take)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [a_valid.eq(1), a.eq(self.i.payload)]
        with m.Elif(take):
            m.d.sync += a_valid.eq(0)
        m.d.sync += credits.eq(credits + (take & a.last) - deliver)

        # values are kept as unsigned keys (sign bit flipped): same order as the signed logits,
        # and an unsigned compare maps to one carry chain
        sign = 1 << (bits - 1)
        a_key = Signal(bits)
        m.d.comb += a_key.eq(a.logit.as_unsigned() ^ sign)
        best = [Signal(bits, name=f"best{k}", reset_less=True) for k in range(2)]
        best_idx = [Signal(ib, name=f"best_idx{k}", reset_less=True) for k in range(2)]
        have = [Signal(name=f"have{k}") for k in range(2)]   # lane has an element this packet
        lane = Signal()                                      # lane of the element in A
        count = Signal(ib)                                   # index of the element in A
        with m.If(take):
            m.d.sync += lane.eq(~lane)
            with m.If(a.last):
                m.d.sync += [count.eq(0), have[0].eq(0), have[1].eq(0)]
            with m.Else():
                m.d.sync += [count.eq(count + 1), have[0].eq(have[0] | ~lane),
                             have[1].eq(have[1] | lane)]

        # stage B: update the lane's best
        # (A's compares go straight from the carry chains into registers)
        b_valid, b_lane, b_last = Signal(), Signal(), Signal()
        b_cmp = Signal(2, reset_less=True)
        b_had = Signal(reset_less=True)          # the lane had an element before this one
        b_x = Signal(bits, reset_less=True)
        b_idx = Signal(ib, reset_less=True)
        b_have = Signal(2, reset_less=True)
        m.d.sync += [b_valid.eq(take), b_lane.eq(lane), b_last.eq(a.last),
                     b_cmp.eq(Cat(a_key > best[0], a_key > best[1])),
                     b_had.eq(Mux(lane, have[1], have[0])), b_x.eq(a_key), b_idx.eq(count),
                     b_have.eq(Cat(have[0] | ~lane, have[1] | lane))]
        for k in range(2):
            with m.If(b_valid & (b_lane == k) & (~b_had | b_cmp[k])):
                m.d.sync += [best[k].eq(b_x), best_idx[k].eq(b_idx)]

        # stage C: the packet's lanes are final; snapshot them
        c_valid = Signal()
        c_have = Signal(2, reset_less=True)
        m.d.sync += [c_valid.eq(b_valid & b_last), c_have.eq(b_have)]
        d_valid = Signal()
        d_have = Signal(2, reset_less=True)
        d_v = [Signal(bits, name=f"d_v{k}", reset_less=True) for k in range(2)]
        d_i = [Signal(ib, name=f"d_i{k}", reset_less=True) for k in range(2)]
        m.d.sync += [d_valid.eq(c_valid), d_have.eq(c_have)]
        m.d.sync += [d_v[k].eq(best[k]) for k in range(2)]
        m.d.sync += [d_i[k].eq(best_idx[k]) for k in range(2)]

        # stage D: the three compares, each from registers through one carry chain into a
        # register; stage E: choose a lane from them; stage F: select
        e_valid = Signal()
        e_have = Signal(2, reset_less=True)
        e_gt, e_eq, e_ilt = (Signal(name=n, reset_less=True) for n in ("e_gt", "e_eq", "e_ilt"))
        e_v = [Signal(bits, name=f"e_v{k}", reset_less=True) for k in range(2)]
        e_i = [Signal(ib, name=f"e_i{k}", reset_less=True) for k in range(2)]
        m.d.sync += [e_valid.eq(d_valid), e_have.eq(d_have), e_gt.eq(d_v[1] > d_v[0]),
                     e_eq.eq(d_v[1] == d_v[0]), e_ilt.eq(d_i[1] < d_i[0])]
        m.d.sync += [e_v[k].eq(d_v[k]) for k in range(2)] + [e_i[k].eq(d_i[k]) for k in range(2)]
        f_valid, f_sel1 = Signal(), Signal(reset_less=True)
        f_v = [Signal(bits, name=f"f_v{k}", reset_less=True) for k in range(2)]
        f_i = [Signal(ib, name=f"f_i{k}", reset_less=True) for k in range(2)]
        m.d.sync += [f_valid.eq(e_valid),
                     f_sel1.eq(~e_have[0] | (e_have[1] & (e_gt | (e_eq & e_ilt))))]
        m.d.sync += [f_v[k].eq(e_v[k]) for k in range(2)] + [f_i[k].eq(e_i[k]) for k in range(2)]
        g_valid = Signal()
        g = Signal(self.out_layout, reset_less=True)
        m.d.sync += [g_valid.eq(f_valid), g.index.eq(Mux(f_sel1, f_i[1], f_i[0])),
                     g.value.eq(Mux(f_sel1, f_v[1], f_v[0]) ^ sign)]
        m.d.comb += [fifo.w_en.eq(g_valid), fifo.w_data.eq(g.as_value())]
        return m


def bench_configs():
    """Argmax over stories260K's 512 int16 logits and over a GPT-2-sized vocabulary with
    24-bit logits; exact. (Measured OOC on the 85F, ``python -m hdlgen bench blocks --only
    argmax``: seed 1, 16 bits 173.7 MHz, 24 bits 163.0 MHz; seed 2, 174.6 and 160.7 MHz. A
    32-bit logit's compare in the lane loop misses 150 MHz.)"""
    return [
        BlockBench("argmax", {"bits": 16, "max_length": 512}, lambda: Argmax(16, 512)),
        BlockBench("argmax", {"bits": 24, "max_length": 65536}, lambda: Argmax(24, 65536)),
    ]
