"""Fixed-point parts shared by the softmax and the norm blocks.

Design rule: the arithmetic pipelines of these blocks never stall. A valid bit travels with
every item; no enable net reaches the multipliers or the wide registers. Back-pressure is
handled where results leave, by :class:`CreditFIFO`: a FIFO deep enough for every item in
flight plus a credit counter that tells the issuing logic whether it may start another item.

Parts
-----
:class:`Mul18`
    Signed 18 x 18 multiplier: :class:`hdlgen.blocks.dsp.DSPMultiplier` (inputs and output
    registered inside the DSP) plus one fabric register after it (latency 3).
:class:`WideMul`
    Exact signed ``a`` (any width) x ``b`` (<= 18 bits) product from ``ceil(width(a) / 17)``
    :class:`Mul18` and a registered adder tree.
:class:`CreditFIFO`
    Output FIFO with an issue credit.
:func:`delay`
    A chain of registers (:func:`hdlgen.blocks.pointwise_kit.delay`).

Sequential units (restoring division, digit-by-digit square root) are written inline in the
blocks' state machines; their integer definitions are Python's ``//`` and ``math.isqrt``.
"""

from amaranth.hdl import Elaboratable, Module, Signal, signed
from amaranth.lib.fifo import SyncFIFOBuffered

from hdlgen.blocks.dsp import DSPMultiplier
from hdlgen.blocks.pointwise_kit import delay

__all__ = ["Mul18", "WideMul", "CreditFIFO", "delay", "MUL18_LATENCY"]

#: Cycles from :class:`Mul18` operands to its product (DSP input reg, DSP output reg, fabric reg).
MUL18_LATENCY = 3


class Mul18(Elaboratable):
    """Signed 18 x 18 -> 36 multiplier with latency 3 and no enable.

    Attributes
    ----------
    a, b : Signal(signed(18))
        Operands, sampled at every clock edge (drive them from registers: the path into the
        DSP input register crosses to the DSP row).
    p : Signal(signed(36))
        ``a * b`` of three cycles earlier, from a fabric register.
    """

    def __init__(self, name: str = "mul"):
        self.name = name
        self.a = Signal(signed(18), name=f"{name}_a")
        self.b = Signal(signed(18), name=f"{name}_b")
        self.p = Signal(signed(36), name=f"{name}_p")

    def elaborate(self, platform):
        m = Module()
        m.submodules.dsp = dsp = DSPMultiplier(18, 18)   # DSP input + output registers
        assert dsp.latency + 1 == MUL18_LATENCY
        m.d.comb += [dsp.a.eq(self.a), dsp.b.eq(self.b)]
        m.d.sync += self.p.eq(dsp.p)                      # fabric register after the DSP
        return m


class WideMul(Elaboratable):
    """Exact product of signed ``a`` (``a_width`` bits) and ``b`` (signed, <= 18 bits).

    ``a`` is cut into 17-bit unsigned chunks (the top chunk signed, at most 18 bits); each
    chunk times ``b`` is one :class:`Mul18`; the shifted partial products are summed in a
    tree with one register per level. ``latency = 3 + ceil(log2(chunks))``.

    Parameters
    ----------
    a_width : int
        Width of ``a`` (signed).
    b_width : int
        Width of ``b`` (signed, <= 18; pass an unsigned value zero-extended by one bit).
    """

    def __init__(self, a_width: int, b_width: int, name: str = "wmul"):
        if not 2 <= b_width <= 18:
            raise ValueError(f"b_width={b_width!r}: the narrow operand must fit a DSP (2..18 bits)")
        if a_width < 2:
            raise ValueError(f"a_width={a_width!r} must be >= 2")
        self.name = name
        self.a_width, self.b_width = a_width, b_width
        self.chunks = max(1, -(-(a_width - 1) // 17))
        self.a = Signal(signed(a_width), name=f"{name}_a")
        self.b = Signal(signed(b_width), name=f"{name}_b")
        self.p = Signal(signed(a_width + b_width), name=f"{name}_p")
        self.latency = MUL18_LATENCY + (self.chunks - 1).bit_length()

    def elaborate(self, platform):
        m = Module()
        parts = []
        for c in range(self.chunks):
            mul = Mul18(f"{self.name}_{c}")
            m.submodules[f"mul{c}"] = mul
            lo = 17 * c
            if c == self.chunks - 1:
                chunk = self.a[lo:].as_signed()
            else:
                chunk = self.a[lo:lo + 17].as_unsigned()
            m.d.comb += [mul.a.eq(chunk), mul.b.eq(self.b)]
            parts.append((mul.p, lo))
        # Registered adder tree over (value, shift) pairs; the shifts stay exact.
        level = 0
        while len(parts) > 1:
            nxt = []
            for i in range(0, len(parts), 2):
                if i + 1 == len(parts):
                    v = Signal(signed(len(parts[i][0])), name=f"{self.name}_t{level}_{i}",
                               reset_less=True)
                    m.d.sync += v.eq(parts[i][0])
                    nxt.append((v, parts[i][1]))
                    continue
                (x, sx), (y, sy) = parts[i], parts[i + 1]
                width = max(len(x) + sx, len(y) + sy) - sx + 1
                v = Signal(signed(width), name=f"{self.name}_t{level}_{i}", reset_less=True)
                m.d.sync += v.eq(x + (y << (sy - sx)))
                nxt.append((v, sx))
            parts = nxt
            level += 1
        value, _ = parts[0]
        m.d.comb += self.p.eq(value)
        return m


class CreditFIFO(Elaboratable):
    """Output FIFO for a never-stalling pipeline, with an issue credit.

    The issuing logic starts an item only when ``can_issue`` is high and pulses ``issue``
    for it; ``latency`` cycles (at most) later the pipeline writes the result with
    ``w_en``/``w_data``. The FIFO holds ``depth`` items and ``can_issue`` is a register, so
    nothing combinational runs from the output's ``ready`` to the issuing logic.

    Attributes
    ----------
    issue : Signal, in
    can_issue : Signal, out
    w_en, w_data : in
    r_valid, r_data, r_ready : the output side (stream-like)
    """

    def __init__(self, width: int, latency: int):
        self.depth = latency + 8
        self.issue = Signal()
        self.can_issue = Signal()
        self.w_en = Signal()
        self.w_data = Signal(width)
        self.r_valid = Signal()
        self.r_ready = Signal()
        self.r_data = Signal(width)
        self._width = width

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self._width, depth=self.depth)
        count = Signal(range(self.depth + 1))
        pop = Signal()
        m.d.comb += [
            fifo.w_en.eq(self.w_en), fifo.w_data.eq(self.w_data),
            self.r_valid.eq(fifo.r_rdy), self.r_data.eq(fifo.r_data),
            fifo.r_en.eq(self.r_ready), pop.eq(fifo.r_rdy & self.r_ready),
        ]
        # The occupancy is counted from registered copies of ``issue`` and ``pop`` (so the
        # issue logic only drives a flip-flop here) and ``can_issue`` is registered again:
        # it reflects the occupancy of two cycles ago, in which at most two more items can
        # have been issued, hence the margin of two entries.
        issue_r = Signal()
        pop_r = Signal()
        can = Signal(init=1)
        m.d.sync += [issue_r.eq(self.issue), pop_r.eq(pop),
                     count.eq(count + issue_r - pop_r), can.eq(count < self.depth - 2)]
        m.d.comb += self.can_issue.eq(can)
        return m


