"""Argmax over a packet of logits (greedy sampling on chip).

Input: one logit per cycle, ``{"logit": signed(bits), "last"}``, packets framed by ``last``.
Output: one item per packet, ``{"index", "value"}``: the position of the largest logit in the
packet, the **first** one on ties (a later element replaces the best only when strictly
greater), and that logit. Golden model: :func:`sim.golden.argmax.argmax_packets`.

Pipeline: an input register, then the running compare (one ``bits``-wide comparison and a mux
per cycle) which also writes the result register on ``last``. The input is accepted every cycle
except when the last element of a packet arrives while the previous packet's result has not
been taken yet, so one logit per cycle flows with the output ready (no bubble between
packets). Packets longer than ``max_length`` wrap the index (not supported).
"""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
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

    def elaborate(self, platform):
        m = Module()
        # stage A: input register
        a_valid = Signal()
        a = Signal(self.in_layout, reset_less=True)
        take = Signal()                  # stage B consumes A this cycle
        m.d.comb += [
            take.eq(a_valid & (~a.last | ~self.o.valid | self.o.ready)),
            self.i.ready.eq(~a_valid | take),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [a_valid.eq(1), a.eq(self.i.payload)]
        with m.Elif(take):
            m.d.sync += a_valid.eq(0)
        # stage B: running maximum
        best = Signal(signed(self._bits), reset_less=True)
        best_idx = Signal(unsigned(self._index_bits), reset_less=True)
        count = Signal(unsigned(self._index_bits))
        first = Signal()
        m.d.comb += first.eq(count == 0)
        new = Signal()
        m.d.comb += new.eq(first | (a.logit > best))
        nb = Signal.like(best)
        ni = Signal.like(best_idx)
        m.d.comb += [nb.eq(best), ni.eq(best_idx)]
        with m.If(new):
            m.d.comb += [nb.eq(a.logit), ni.eq(count)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            m.d.sync += [best.eq(nb), best_idx.eq(ni)]
            with m.If(a.last):
                m.d.sync += [count.eq(0), self.o.valid.eq(1),
                             self.o.payload.index.eq(ni), self.o.payload.value.eq(nb)]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m


def bench_configs():
    """Argmax over stories260K's 512 logits and over a GPT-2-sized vocabulary; exact."""
    return [
        BlockBench("argmax", {"bits": 16, "max_length": 512}, lambda: Argmax(16, 512)),
        BlockBench("argmax", {"bits": 32, "max_length": 65536}, lambda: Argmax(32, 65536)),
    ]
