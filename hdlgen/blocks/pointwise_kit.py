"""Shared parts of the element-wise blocks (requant, activation, eltwise, rope, argmax).

Design rule these parts implement: the datapath of an element-wise block is a fixed-latency
pipeline that **never stalls**. A valid bit travels with every item; no clock-enable or stall
net reaches the multipliers, table memories or wide registers. Back-pressure is handled at the
edges by :class:`CreditPipe`: an output FIFO large enough for everything in flight, and an
input ``ready`` computed from a small credit counter (a register compare), so ``i.ready`` does
not depend combinationally on ``o.ready``.

Parts
-----
:func:`mult18`
    Signed 18x18 multiplier with input and output registers (latency 2): the shared
    :class:`hdlgen.blocks.dsp.DSPMultiplier`, a ``MULT18X18D`` with ``REG_INPUTA/B`` and
    ``REG_OUTPUT`` on, so the 3.9 ns multiplier path stays inside the DSP.
:class:`CreditPipe`
    Stream ports around a never-stalling core.
:func:`delay`
    A shift register of registers (``reset_less`` for data, reset for valid bits).
:func:`saturate`
    Clamp a signed value into ``signed(bits)``.
"""

from amaranth.hdl import Const, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.dsp import DSPMultiplier

__all__ = ["mult18", "CreditPipe", "delay", "saturate", "MULT_LATENCY"]

#: Cycles from ``a``/``b`` to ``p`` of :func:`mult18`.
MULT_LATENCY = 2


def mult18():
    """A signed 18 x 18 -> 36 :class:`hdlgen.blocks.dsp.DSPMultiplier` with input and output
    registers (latency :data:`MULT_LATENCY`, no enable): drive ``a``/``b`` from registers,
    read ``p``."""
    mul = DSPMultiplier(18, 18)
    assert mul.latency == MULT_LATENCY
    return mul


def delay(m, value, cycles: int, *, name: str, reset: bool = False):
    """``value`` delayed by ``cycles`` registers (``cycles == 0`` returns ``value``).

    Data delays are ``reset_less``; pass ``reset=True`` for valid bits."""
    cur = value
    for k in range(cycles):
        nxt = Signal.like(value, name=f"{name}_d{k + 1}", reset_less=not reset)
        m.d.sync += nxt.eq(cur)
        cur = nxt
    return cur


def saturate(value, bits: int):
    """``value`` (signed) clamped into ``signed(bits)``; returns a ``signed(bits)`` value.

    The range check is a reduction over the bits above ``bits - 1`` (all equal to the sign:
    in range), a LUT tree rather than two carry-chain comparisons."""
    value = Value.cast(value)
    if len(value) <= bits:
        return value.as_signed()
    top = value[bits - 1:]
    fits = ~top.any() | top.all()
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    return Mux(fits, value[:bits].as_signed(),
               Mux(value[-1], Const(lo, signed(bits)), Const(hi, signed(bits))))


class CreditPipe(wiring.Component):
    """Stream ports around a fixed-latency core that never stalls.

    The core sees ``core_valid``/``core_in`` (the input payload of each accepted item, not
    registered: register it first inside the core) and must produce ``core_out_valid``/
    ``core_out`` exactly ``latency`` cycles later. Results go into a FIFO of
    ``latency + 4`` entries; the input is accepted while fewer than that many items are in
    flight or queued, so the FIFO never overflows and, with the output always ready, one item
    per cycle flows through.

    Parameters
    ----------
    in_shape, out_shape : shape-like
        Payload layouts of ``i`` and ``o``.
    latency : int
        Core latency in cycles.
    """

    def __init__(self, in_shape, out_shape, latency: int):
        if latency < 1:
            raise ValueError(f"latency={latency!r}: a core must be at least one cycle deep")
        self._latency = latency
        self._depth = latency + 4
        super().__init__({
            "i": In(stream.Signature(in_shape)),
            "o": Out(stream.Signature(out_shape)),
            "core_valid": Out(1),
            "core_in": Out(in_shape),
            "core_out_valid": In(1),
            "core_out": In(out_shape),
        })

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self.o.payload.shape()).width
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=width, depth=self._depth)
        count = Signal(range(self._depth + 1))
        accept = Signal()
        deliver = Signal()
        m.d.comb += [
            self.i.ready.eq(count < self._depth),
            accept.eq(self.i.valid & self.i.ready),
            self.core_valid.eq(accept),
            self.core_in.eq(self.i.payload),
            fifo.w_en.eq(self.core_out_valid),
            fifo.w_data.eq(Value.cast(self.core_out)),
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
            deliver.eq(self.o.valid & self.o.ready),
        ]
        m.d.sync += count.eq(count + accept - deliver)
        return m
