"""Small stream parts shared by the blocks (a kit instead of ad hoc handshakes)."""

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "StreamQueue"]


class SkidBuffer(wiring.Component):
    """Register slice for a stream: full throughput, and both ``o.valid``/``o.payload`` and
    ``i.ready`` come from flip-flops, which cuts combinational paths between blocks.

    Parameters
    ----------
    shape : shape-like
        Payload shape.
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.i.payload, name="skid")
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            m.d.sync += self.o.valid.eq(self.i.valid | skid_valid)
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += self.o.payload.eq(self.i.payload)
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class StreamQueue(wiring.Component):
    """A small first-word-fall-through queue between two streams, for a consumer whose
    ``ready`` is late in the cycle (an OR of several units' readies, say).

    Unlike :class:`SkidBuffer`, whose ``o.ready`` enables every payload flip-flop, here
    ``o.ready`` only moves the read pointer and the fill level (a few flip-flops); the
    payload is written from the input side and read through a ``depth``-entry mux (LUT RAM).
    ``i.ready`` comes from the level register. Depth 2 keeps one item per cycle.

    Parameters
    ----------
    shape : shape-like
        Payload shape.
    depth : int
        Entries (at least 2).
    """

    def __init__(self, shape, depth: int = 2):
        self._MustUse__silence = True       # not "unused" if the arguments are rejected
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"StreamQueue depth must be an integer >= 2 (one item per cycle), "
                             f"not {depth!r}")
        self._shape, self._depth = shape, depth
        self._MustUse__silence = False
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        i_data, o_data = Value.cast(self.i.payload), Value.cast(self.o.payload)
        m.submodules.fifo = fifo = SyncFIFO(width=len(i_data), depth=self._depth)
        m.d.comb += [fifo.w_en.eq(self.i.valid), fifo.w_data.eq(i_data),
                     self.i.ready.eq(fifo.w_rdy),
                     self.o.valid.eq(fifo.r_rdy), o_data.eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready)]
        return m
