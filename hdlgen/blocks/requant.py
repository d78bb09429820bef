"""Requantizer: int32 accumulator (+ optional int32 bias) -> int8 or int16 with a per-channel
fixed-point multiplier and shift.

Arithmetic (the contract with the model compiler; golden model
:func:`sim.golden.requant.requantize`)::

    x = acc + bias                                          # exact, 33 bits
    y = saturate((x * mult + (1 << (shift - 1))) >> shift)  # mult 1..65535, shift 1..47

``>>`` is arithmetic, so rounding is **round half up** (ties towards +inf). The hardware
computes it as ``((x * mult) >> (shift - 1)) + 1) >> 1``, which is the same integer. ``shift``
outside 1..47 gives an unspecified (but deterministic) result.

How the per-channel parameters arrive: **in lockstep with the data.** Every input item carries
its own ``mult``, ``shift`` (and ``bias``), so the block holds no parameter memory and works for
any number of channels and any layer. The integrator streams them from wherever it keeps them
(per-channel tables next to the weights, or constants for a per-tensor scale).

Datapath: ``x * mult`` (33 x 16 bits) uses two ``MULT18X18D`` (x split at bit 17) with their
input and output registers on, a fabric register after the DSPs, then the 49-bit sum (with
``lut_mult``, for an ``x`` of at most 27 bits, no DSP: ``x`` times each two-bit digit of
``mult``, then three levels of registered adders, the same four cycles; the engine's second
requantizer, whose ups it knows to be narrow); then three shift stages
(by 0/16/32/48, then, on ``out_bits + 17`` bits with an overflow flag, 0/4/8/12 and 0..3),
rounding, range flags, saturation, each one register.
Latency 12 cycles, one item per cycle, no stall net (see :mod:`hdlgen.blocks.pointwise_kit`).
"""

from amaranth.hdl import Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.bench.registry import BlockBench
from hdlgen.blocks.pointwise_kit import MULT_LATENCY, CreditPipe, delay, mult18

__all__ = ["Requant", "RequantCore", "bench_configs"]


class RequantCore(Elaboratable):
    """Never-stalling ``saturate(((x * mult) >> sh) + 1) >> 1)`` pipeline, ``sh = shift - 1``.

    Drive ``valid``, ``x``, ``mult``, ``sh``, ``last`` from registers; the results appear on
    ``o_valid``, ``y``, ``o_last`` exactly :attr:`LATENCY` cycles later.

    Parameters
    ----------
    x_bits : int
        Width of the signed input ``x`` (at most 35).
    out_bits : int
        Width of the signed, saturated result.
    lut_mult : bool
        The product in LUTs (``x_bits`` at most 27) instead of two ``MULT18X18D``.
    """

    LATENCY = MULT_LATENCY + 8

    def __init__(self, x_bits: int, out_bits: int, *, lut_mult: bool = False):
        if lut_mult and not 2 <= x_bits <= 27:
            raise ValueError(f"x_bits={x_bits!r}: the LUT product supports 2..27 bits")
        if not lut_mult and not 18 <= x_bits <= 35:
            raise ValueError(f"x_bits={x_bits!r}: the two-DSP split supports 18..35 bits")
        self.x_bits, self.out_bits, self.lut_mult = x_bits, out_bits, lut_mult
        self.valid = Signal()
        self.x = Signal(signed(x_bits), reset_less=True)
        self.mult = Signal(unsigned(16), reset_less=True)
        self.sh = Signal(unsigned(6), reset_less=True)
        self.last = Signal(reset_less=True)
        self.o_valid = Signal()
        self.y = Signal(signed(out_bits), reset_less=True)
        self.o_last = Signal()

    def elaborate(self, platform):
        m = Module()
        wv = self.x_bits + 17                          # |x * mult| < 2**(x_bits + 15)
        v = Signal(signed(wv), reset_less=True)
        if self.lut_mult:
            # c + 1: x times each two-bit digit of mult (one adder each); c + 2, c + 3: pairs
            # summed (digits 4 and 16 apart); c + 4: the full product
            terms = []
            for k in range(8):
                d = self.mult[2 * k:2 * k + 2]
                t = Signal(signed(self.x_bits + 2), name=f"lm_t{k}", reset_less=True)
                m.d.sync += t.eq(Mux(d[0], self.x, 0) + Mux(d[1], self.x << 1, 0))
                terms.append(t)
            for lvl, step in ((1, 2), (2, 4)):
                nxt = []
                for k in range(0, len(terms), 2):
                    e = terms[k] + (terms[k + 1] << step)
                    t = Signal(e.shape(), name=f"lm_s{lvl}_{k // 2}", reset_less=True)
                    m.d.sync += t.eq(e)
                    nxt.append(t)
                terms = nxt
            m.d.sync += v.eq(terms[0] + (terms[1] << 8))
        else:
            m.submodules.mul_lo = lo = mult18()
            m.submodules.mul_hi = hi = mult18()
            m.d.comb += [
                lo.a.eq(self.x[:17]),                      # unsigned low part, top bit 0
                hi.a.eq(self.x[17:].as_signed()),          # signed high part
                lo.b.eq(self.mult),
                hi.b.eq(self.mult),
            ]
            # cycle c + 3: fabric register after the DSPs
            p_lo = Signal(signed(36), reset_less=True)
            p_hi = Signal(signed(36), reset_less=True)
            m.d.sync += [p_lo.eq(lo.p), p_hi.eq(hi.p)]
            # c + 4: the full product
            m.d.sync += v.eq((p_hi << 17) + p_lo)
        # c + 5: coarse shift by 0/16/32/48
        sh4 = delay(m, self.sh, MULT_LATENCY + 2, name="sh")
        t1 = Signal(signed(wv), reset_less=True)
        with m.Switch(sh4[4:6]):
            for k in range(4):
                with m.Case(k):
                    m.d.sync += t1.eq(v >> (16 * k))
        # From here on only n = out_bits + 17 bits are kept: if t1 does not fit in n bits,
        # |t1| >= 2**(out_bits + 16), so after at most 15 more bits of shift the result
        # saturates anyway (towards t1's sign); a flag carries that along.
        ob = self.out_bits
        n = ob + 17
        # c + 6: shift by 0/4/8/12 (4:1 mux, one LUT level); t1's range flag
        sh5 = delay(m, sh4, 1, name="sh5")
        t15 = Signal(signed(n), reset_less=True)
        with m.Switch(sh5[2:4]):
            for k in range(4):
                with m.Case(k):
                    m.d.sync += t15.eq((t1 >> (4 * k))[:n])
        ovf = Signal(reset_less=True)
        sgn = Signal(reset_less=True)
        m.d.sync += [ovf.eq(~(~t1[n - 1:].any() | t1[n - 1:].all())), sgn.eq(t1[-1])]
        # c + 7: shift by 0..3
        sh6 = delay(m, sh5, 1, name="sh6")
        t2 = Signal(signed(n), reset_less=True)
        with m.Switch(sh6[0:2]):
            for k in range(4):
                with m.Case(k):
                    m.d.sync += t2.eq(t15 >> k)
        # c + 8: round half up: r = (t2 + 1) >> 1 = u >> 1
        u = Signal(signed(n + 1), reset_less=True)
        m.d.sync += u.eq(t2 + 1)
        ovf8 = delay(m, ovf, 2, name="ovf")
        sgn8 = delay(m, sgn, 2, name="sgn")
        # c + 9: the low bits of r and whether it saturates (LUT reductions)
        r_lo = Signal(signed(ob), reset_less=True)
        sat = Signal(reset_less=True)
        neg = Signal(reset_less=True)
        top = u[ob:]
        m.d.sync += [r_lo.eq(u[1:ob + 1]), sat.eq(ovf8 | ~(~top.any() | top.all())),
                     neg.eq(Mux(ovf8, sgn8, u[-1]))]
        # c + 10: saturate
        with m.If(~sat):
            m.d.sync += self.y.eq(r_lo)
        with m.Elif(neg):
            m.d.sync += self.y.eq(-(1 << (ob - 1)))
        with m.Else():
            m.d.sync += self.y.eq((1 << (ob - 1)) - 1)
        m.d.comb += [
            self.o_valid.eq(delay(m, self.valid, self.LATENCY, name="valid", reset=True)),
            self.o_last.eq(delay(m, self.last, self.LATENCY, name="last")),
        ]
        return m


class Requant(wiring.Component):
    """Stream requantizer, one item per cycle.

    Parameters
    ----------
    out_bits : int
        8 or 16: width of the saturated output.
    has_bias : bool
        Whether items carry an int32 ``bias`` added to ``acc`` before scaling.
    acc_bits : int
        Width of ``acc`` (and ``bias``): 32, or less with ``lut_mult``.
    lut_mult : bool
        The product in LUTs, no DSP (``acc_bits + has_bias`` at most 27; see
        :class:`RequantCore`).

    Attributes
    ----------
    i : In(stream.Signature(in_layout))
        ``acc`` (signed 32), ``bias`` (signed 32, only with ``has_bias``), ``mult``
        (unsigned 16, 1..65535), ``shift`` (unsigned 6, 1..47), ``last`` (passed through).
    o : Out(stream.Signature(out_layout))
        ``y`` (signed ``out_bits``), ``last``.
    """

    ACC_BITS = 32
    LATENCY = 2 + RequantCore.LATENCY

    def __init__(self, out_bits: int = 8, has_bias: bool = True, *, acc_bits: int = ACC_BITS,
                 lut_mult: bool = False):
        if out_bits not in (8, 16):
            raise ValueError(f"out_bits={out_bits!r}: the requantizer outputs int8 or int16, use 8 or 16")
        if lut_mult and not 1 <= acc_bits + bool(has_bias) <= 27:
            raise ValueError(f"acc_bits={acc_bits!r}: the LUT product takes at most 27 bits "
                             f"(acc plus bias); use the DSP product (lut_mult=False)")
        if not lut_mult and acc_bits != self.ACC_BITS:
            raise ValueError(f"acc_bits={acc_bits!r}: the DSP product takes 32-bit "
                             f"accumulators; narrower ones need lut_mult=True")
        self._out_bits, self._has_bias = out_bits, bool(has_bias)
        self._acc_bits, self._lut = acc_bits, lut_mult
        fields = {"acc": signed(acc_bits)}
        if has_bias:
            fields["bias"] = signed(acc_bits)
        fields.update({"mult": unsigned(16), "shift": unsigned(6), "last": unsigned(1)})
        self.in_layout = data.StructLayout(fields)
        self.out_layout = data.StructLayout({"y": signed(out_bits), "last": unsigned(1)})
        super().__init__({"i": In(stream.Signature(self.in_layout)),
                          "o": Out(stream.Signature(self.out_layout))})

    @property
    def out_bits(self) -> int:
        return self._out_bits

    @property
    def has_bias(self) -> bool:
        return self._has_bias

    def elaborate(self, platform):
        m = Module()
        m.submodules.pipe = pipe = CreditPipe(self.in_layout, self.out_layout, self.LATENCY)
        wiring.connect(m, wiring.flipped(self.i), pipe.i)
        wiring.connect(m, pipe.o, wiring.flipped(self.o))
        if self._lut:
            core = RequantCore(max(2, self._acc_bits + self._has_bias), self._out_bits,
                               lut_mult=True)
        else:
            core = RequantCore(self.ACC_BITS + 1, self._out_bits)
        m.submodules.core = core
        # c0: register the accepted item
        v0 = Signal()
        r0 = Signal(self.in_layout, reset_less=True)
        m.d.sync += [v0.eq(pipe.core_valid), r0.eq(pipe.core_in)]
        # c1: exact sum and shift - 1
        x = r0.acc + r0.bias if self._has_bias else r0.acc
        m.d.sync += [core.valid.eq(v0), core.x.eq(x), core.mult.eq(r0.mult),
                     core.sh.eq(r0.shift - 1), core.last.eq(r0.last)]
        m.d.comb += [pipe.core_out_valid.eq(core.o_valid),
                     pipe.core_out.y.eq(core.y), pipe.core_out.last.eq(core.o_last)]
        return m


def bench_configs():
    """Instances measured by ``hdlgen bench blocks`` (exact block: no error metric)."""
    return [
        BlockBench("requant", {"out_bits": 8, "has_bias": True},
                   lambda: Requant(out_bits=8, has_bias=True)),
    ]
