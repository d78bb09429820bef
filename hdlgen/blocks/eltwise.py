"""Element-wise operations on two streams in lockstep: residual add and the SwiGLU product.

``op="add"``: ``y = saturate(a + b)`` in int8 or int16 (both inputs and the output share one
scale). Latency 2.

``op="swiglu"``: ``y = requant(silu(a) * b)``. ``silu(a)`` comes from the activation block's
table (int16 result at ``silu_scale``, :class:`hdlgen.blocks.activation.ActivationCore`), the
product with ``b`` is exact (one ``MULT18X18D``), and the requantization is the requantizer's
(:class:`hdlgen.blocks.requant.RequantCore`: ``mult`` 1..65535, ``shift`` 1..47, round half
up, saturating). ``mult`` and ``shift`` are per tensor: the ports of the same names, which must
hold still while items are in flight (set them before a packet starts). Golden model:
:mod:`sim.golden.eltwise`.

One item per cycle, no stall net (see :mod:`hdlgen.blocks.pointwise_kit`).
"""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.bench.registry import BlockBench
from hdlgen.blocks.activation import ActivationCore, check_args, core_latency
from hdlgen.blocks.pointwise_kit import MULT_LATENCY, CreditPipe, delay, mult18, saturate
from hdlgen.blocks.requant import RequantCore

__all__ = ["Eltwise", "bench_configs"]

OPS = ("add", "swiglu")


class Eltwise(wiring.Component):
    """Residual add or SwiGLU product of two lockstep operands.

    Parameters
    ----------
    op : str
        ``"add"`` or ``"swiglu"``.
    bits : int
        ``add``: width of ``a``, ``b`` and ``y`` (8 or 16).
    a_bits, b_bits, out_bits : int
        ``swiglu``: widths of ``a`` (gate, 8 or 16), ``b`` (up projection, 8 or 16) and ``y``
        (8 or 16).
    a_scale, silu_scale : float
        ``swiglu``: real value of one LSB of ``a`` and of the internal int16 ``silu(a)``.

    Attributes
    ----------
    i : In(stream.Signature({"a", "b", "last"}))
    o : Out(stream.Signature({"y", "last"}))
    mult : In(unsigned(16))
        ``swiglu`` only: requantization multiplier.
    shift : In(unsigned(6))
        ``swiglu`` only: requantization shift.
    """

    def __init__(self, op="add", *, bits=8, a_bits=8, b_bits=8, out_bits=8, a_scale=1 / 16,
                 silu_scale=1 / 2048):
        if op not in OPS:
            raise ValueError(f"op={op!r}: use 'add' or 'swiglu'")
        for name, v in (("bits", bits), ("a_bits", a_bits), ("b_bits", b_bits),
                        ("out_bits", out_bits)):
            if v not in (8, 16):
                raise ValueError(f"{name}={v!r}: use 8 or 16")
        self._op = op
        if op == "add":
            a_bits = b_bits = out_bits = bits
        else:
            check_args("silu", a_bits, 16, a_scale, silu_scale)
        self._bits = (a_bits, b_bits, out_bits)
        self._scales = (float(a_scale), float(silu_scale))
        self.in_layout = data.StructLayout({"a": signed(a_bits), "b": signed(b_bits),
                                            "last": unsigned(1)})
        self.out_layout = data.StructLayout({"y": signed(out_bits), "last": unsigned(1)})
        members = {"i": In(stream.Signature(self.in_layout)),
                   "o": Out(stream.Signature(self.out_layout))}
        if op == "swiglu":
            members.update({"mult": In(unsigned(16)), "shift": In(unsigned(6))})
        super().__init__(members)

    op = property(lambda self: self._op)

    @property
    def latency(self) -> int:
        if self._op == "add":
            return 2
        return 1 + core_latency(self._bits[0]) + MULT_LATENCY + 1 + RequantCore.LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.pipe = pipe = CreditPipe(self.in_layout, self.out_layout, self.latency)
        wiring.connect(m, wiring.flipped(self.i), pipe.i)
        wiring.connect(m, pipe.o, wiring.flipped(self.o))
        _, b_bits, out_bits = self._bits
        # c0: register the accepted item
        v0 = Signal()
        r0 = Signal(self.in_layout, reset_less=True)
        m.d.sync += [v0.eq(pipe.core_valid), r0.eq(pipe.core_in)]
        if self._op == "add":
            y = Signal(signed(out_bits), reset_less=True)
            m.d.sync += y.eq(saturate(r0.a + r0.b, out_bits))
            m.d.comb += [pipe.core_out_valid.eq(delay(m, v0, 1, name="v", reset=True)),
                         pipe.core_out.y.eq(y),
                         pipe.core_out.last.eq(delay(m, r0.last, 1, name="last"))]
            return m
        m.submodules.silu = silu = ActivationCore("silu", self._bits[0], 16, *self._scales)
        m.d.comb += [silu.valid.eq(v0), silu.x.eq(r0.a), silu.last.eq(r0.last)]
        b1 = delay(m, r0.b, silu.latency, name="b")
        m.submodules.mul = mul = mult18()
        m.d.comb += [mul.a.eq(silu.y), mul.b.eq(b1)]
        # per-tensor parameters, registered once
        mult_r = Signal(16, reset_less=True)
        sh_r = Signal(6, reset_less=True)
        m.d.sync += [mult_r.eq(self.mult), sh_r.eq(self.shift - 1)]
        m.submodules.rq = rq = RequantCore(32, out_bits)
        m.d.sync += [rq.valid.eq(delay(m, silu.o_valid, MULT_LATENCY, name="pv", reset=True)),
                     rq.last.eq(delay(m, silu.o_last, MULT_LATENCY, name="pl")),
                     rq.x.eq(mul.p[:32]), rq.mult.eq(mult_r), rq.sh.eq(sh_r)]
        m.d.comb += [pipe.core_out_valid.eq(rq.o_valid), pipe.core_out.y.eq(rq.y),
                     pipe.core_out.last.eq(rq.o_last)]
        return m


def bench_configs():
    """Residual add (int8, int16) and the SwiGLU product as used by stories260K; exact."""
    return [
        BlockBench("eltwise", {"op": "add", "bits": 8}, lambda: Eltwise("add", bits=8)),
        BlockBench("eltwise", {"op": "add", "bits": 16}, lambda: Eltwise("add", bits=16)),
        BlockBench("eltwise", {"op": "swiglu", "a_bits": 8, "b_bits": 8, "out_bits": 8},
                   lambda: Eltwise("swiglu", a_bits=8, b_bits=8, out_bits=8)),
    ]
