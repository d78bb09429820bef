"""Activations: SiLU, GELU (erf or tanh form) and ReLU on int8 or int16 inputs.

Numbers (golden model :mod:`sim.golden.activation`): ``x_real = x * in_scale``,
``y_real = y * out_scale``; both scales are elaboration parameters baked into a table, so the
model compiler requantizes into this block's ``in_scale`` (the requantizer reaches any scale).

* int8 input: a 256-entry table ``T[x]`` (one DP16KD).
* int16 input: 512 knots every 128 input LSBs, each ``(base, delta)`` in one 36-bit word (one
  DP16KD in 512 x 36 mode), and linear interpolation
  ``y = saturate(base + ((delta * frac + 64) >> 7))`` with one ``MULT18X18D``.

Accuracy (bound of the issue: max abs error <= 0.02 over inputs in [-8, 8]): int8 in at 1/16
and int16 out at 1/2048: 2.4e-4; int16 in and out at 1/4096: 2.7e-4 (SiLU and GELU). An int8
*output* cannot meet 0.02 over [-8, 8] (half an LSB of a scale spanning 8 is 0.031).

Latency: 4 cycles (int8) or 8 cycles (int16) from input to output FIFO; one item per cycle;
no stall net (see :mod:`hdlgen.blocks.pointwise_kit`).
"""

from amaranth.hdl import Elaboratable, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.bench.registry import BlockBench
from hdlgen.blocks.bram import READ_LATENCY, BlockRAM
from hdlgen.blocks.pointwise_kit import MULT_LATENCY, CreditPipe, delay, mult18, saturate
from sim.golden.activation import INDEX_BITS, FUNCTIONS, max_abs_error, table8, table16

__all__ = ["Activation", "ActivationCore", "core_latency", "check_args", "bench_configs"]


def check_args(function, in_bits, out_bits, in_scale, out_scale):
    """Validate activation parameters; raises ``ValueError`` naming the bad one."""
    if function not in FUNCTIONS:
        raise ValueError(f"function={function!r}: use one of {', '.join(FUNCTIONS)}")
    if in_bits not in (8, 16):
        raise ValueError(f"in_bits={in_bits!r}: the activation takes int8 or int16, use 8 or 16")
    if out_bits not in (8, 16):
        raise ValueError(f"out_bits={out_bits!r}: the activation outputs int8 or int16, use 8 or 16")
    for name, s in (("in_scale", in_scale), ("out_scale", out_scale)):
        if not (isinstance(s, (int, float)) and s > 0):
            raise ValueError(f"{name}={s!r} must be a positive number (real units per LSB)")


def core_latency(in_bits: int) -> int:
    """Cycles from :class:`ActivationCore` ``x`` to ``y``: 3 (int8) or 7 (int16)."""
    return READ_LATENCY + (0 if in_bits == 8 else MULT_LATENCY + 2) + 1


class ActivationCore(Elaboratable):
    """Never-stalling table (+ interpolation) pipeline.

    Drive ``valid``, ``x``, ``last`` from registers; ``o_valid``, ``y``, ``o_last`` follow
    :attr:`latency` cycles later. Parameters as :class:`Activation`.
    """

    def __init__(self, function, in_bits, out_bits, in_scale, out_scale):
        check_args(function, in_bits, out_bits, in_scale, out_scale)
        self.function, self.in_bits, self.out_bits = function, in_bits, out_bits
        self.in_scale, self.out_scale = float(in_scale), float(out_scale)
        self.valid = Signal()
        self.x = Signal(signed(in_bits), reset_less=True)
        self.last = Signal(reset_less=True)
        self.o_valid = Signal()
        self.y = Signal(signed(out_bits), reset_less=True)
        self.o_last = Signal()

    @property
    def latency(self) -> int:
        return core_latency(self.in_bits)

    def elaborate(self, platform):
        m = Module()
        ob = self.out_bits
        if self.in_bits == 8:
            table = table8(self.function, ob, self.in_scale, self.out_scale)
            m.submodules.rom = rom = BlockRAM(width=ob, depth=256, ports=("w", "r"),
                                              init=[int(v) & ((1 << ob) - 1) for v in table])
            m.d.comb += [rom.a.en.eq(0), rom.b.en.eq(1), rom.b.addr.eq(self.x.as_unsigned())]
            m.d.sync += self.y.eq(rom.b.rdata.as_signed())
        else:
            base, dlt = table16(self.function, ob, self.in_scale, self.out_scale)
            words = [(int(b) & 0x3FFFF) | ((int(d) & 0x3FFFF) << 18) for b, d in zip(base, dlt)]
            fb = 16 - INDEX_BITS
            m.submodules.rom = rom = BlockRAM(width=36, depth=1 << INDEX_BITS, ports=("w", "r"),
                                              init=words)
            m.d.comb += [rom.a.en.eq(0), rom.b.en.eq(1), rom.b.addr.eq(self.x[fb:])]
            frac = delay(m, self.x[:fb], READ_LATENCY, name="frac")
            m.submodules.mul = mul = mult18()
            m.d.comb += [mul.a.eq(rom.b.rdata[18:36].as_signed()), mul.b.eq(frac)]
            b2 = delay(m, rom.b.rdata[:18].as_signed(), MULT_LATENCY + 1, name="base")
            p = Signal(signed(36), reset_less=True)
            m.d.sync += p.eq(mul.p)
            s = Signal(signed(19), reset_less=True)
            m.d.sync += s.eq(b2 + ((p + (1 << (fb - 1))) >> fb))
            m.d.sync += self.y.eq(saturate(s, ob))
        m.d.comb += [
            self.o_valid.eq(delay(m, self.valid, self.latency, name="valid", reset=True)),
            self.o_last.eq(delay(m, self.last, self.latency, name="last")),
        ]
        return m


class Activation(wiring.Component):
    """Stream activation, one item per cycle.

    Parameters
    ----------
    function : str
        ``"silu"``, ``"gelu"`` (erf form), ``"gelu_tanh"`` (GPT-2's form) or ``"relu"``.
    in_bits, out_bits : int
        8 or 16.
    in_scale, out_scale : float
        Real value of one input / output LSB.

    Attributes
    ----------
    i : In(stream.Signature({"x": signed(in_bits), "last": 1}))
    o : Out(stream.Signature({"y": signed(out_bits), "last": 1}))
    """

    def __init__(self, function="silu", in_bits=8, out_bits=16, in_scale=1 / 16,
                 out_scale=1 / 2048):
        check_args(function, in_bits, out_bits, in_scale, out_scale)
        self._args = (function, in_bits, out_bits, float(in_scale), float(out_scale))
        self.in_layout = data.StructLayout({"x": signed(in_bits), "last": unsigned(1)})
        self.out_layout = data.StructLayout({"y": signed(out_bits), "last": unsigned(1)})
        super().__init__({"i": In(stream.Signature(self.in_layout)),
                          "o": Out(stream.Signature(self.out_layout))})

    function = property(lambda self: self._args[0])
    in_bits = property(lambda self: self._args[1])
    out_bits = property(lambda self: self._args[2])
    in_scale = property(lambda self: self._args[3])
    out_scale = property(lambda self: self._args[4])

    @property
    def latency(self) -> int:
        return 1 + core_latency(self.in_bits)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = ActivationCore(*self._args)
        m.submodules.pipe = pipe = CreditPipe(self.in_layout, self.out_layout, 1 + core.latency)
        wiring.connect(m, wiring.flipped(self.i), pipe.i)
        wiring.connect(m, pipe.o, wiring.flipped(self.o))
        m.d.sync += [core.valid.eq(pipe.core_valid), core.x.eq(pipe.core_in.x),
                     core.last.eq(pipe.core_in.last)]
        m.d.comb += [pipe.core_out_valid.eq(core.o_valid),
                     pipe.core_out.y.eq(core.y), pipe.core_out.last.eq(core.o_last)]
        return m


def _bench(function, in_bits, out_bits, in_scale, out_scale):
    params = {"function": function, "in_bits": in_bits, "out_bits": out_bits,
              "in_scale": in_scale, "out_scale": out_scale}

    def error():
        return {"metric": "max_abs", "bound": 0.02,
                "value": max_abs_error(function, in_bits, out_bits, in_scale, out_scale)}
    return BlockBench(function, params, lambda: Activation(**params), error)


def bench_configs():
    """SiLU and GELU for int8 and int16 inputs (int16 outputs), as ``hdlgen bench blocks``
    measures them; ReLU is exact and cheap and not listed."""
    return [
        _bench("silu", 8, 16, 1 / 16, 1 / 2048),
        _bench("silu", 16, 16, 1 / 4096, 1 / 4096),
        _bench("gelu", 8, 16, 1 / 16, 1 / 2048),
        _bench("gelu", 16, 16, 1 / 4096, 1 / 4096),
    ]
