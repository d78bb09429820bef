"""A registered signed multiplier in one ECP5 ``MULT18X18D``, and a non-mergeable register.

:class:`DSPMultiplier` multiplies two signed operands of up to 18 bits each. On an ECP5
platform (:func:`hdlgen.blocks.ecp5.is_ecp5`) it instantiates ``MULT18X18D`` with its input
registers (``REG_INPUTA_CLK``/``REG_INPUTB_CLK``) and output register (``REG_OUTPUT_CLK``),
and optionally the pipeline register (``REG_PIPELINE_CLK``), all on ``CLK0``. ``CE0`` is
tied high and ``RST0`` low: the DSP has no clock-enable or reset net, so no stall signal is
fanned out to it (valid bits travel beside the data in the fabric instead). Elsewhere
(Amaranth simulation, cocotb on the generated Verilog) a behavioural model with exactly the
same latency is elaborated, so the tested Verilog and the built netlist agree cycle for
cycle::

    a, b presented in cycle t  ->  p = a * b in cycle t + latency   (latency 2, or 3 with
                                                                    pipeline=True)

The product is exact (``a_width + b_width`` bits, two's complement); the operands are
sign-extended to 18 bits (``SIGNEDA = SIGNEDB = 1``).

:func:`keep_register` makes a register that synthesis will not merge with an identical one
(on ECP5 it instantiates ``TRELLIS_FF`` cells, which Yosys' ``opt_merge`` leaves alone). It
is how a control bit is replicated so that each copy drives only a local group of flip-flops
instead of one net crossing the die.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, ResetSignal, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.ecp5 import is_ecp5

__all__ = ["DSPMultiplier", "keep_register", "MAX_OPERAND_WIDTH"]

#: Widest signed operand a ``MULT18X18D`` port takes.
MAX_OPERAND_WIDTH = 18


class DSPMultiplier(wiring.Component):
    """Signed ``a * b`` with the DSP's input and output registers (and optionally its
    pipeline register) on.

    Parameters
    ----------
    a_width, b_width : int
        Signed operand widths, 2 to 18 bits (8 for int8).
    pipeline : bool
        Also use the ``MULT18X18D`` pipeline register (latency 3 instead of 2).
    bel : str or None
        On ECP5, the ``MULT18X18D`` site to place it on (nextpnr's ``BEL`` attribute, e.g.
        ``"X4/Y10/MULT18_0"``), from a floorplan such as :func:`hdlgen.blocks.ecp5.mac_floorplan`.

    Attributes
    ----------
    a : Signal(signed(a_width)), in
    b : Signal(signed(b_width)), in
    p : Signal(signed(a_width + b_width)), out
        ``a * b`` of the operands presented :attr:`latency` cycles earlier.
    """

    def __init__(self, a_width: int = 8, b_width: int = 8, *, pipeline: bool = False,
                 bel: str | None = None):
        if bel is not None and not isinstance(bel, str):
            raise TypeError(f"bel={bel!r} must be a nextpnr BEL name such as 'X4/Y10/MULT18_0'")
        self._bel = bel
        for name, w in (("a_width", a_width), ("b_width", b_width)):
            if not isinstance(w, int) or not 2 <= w <= MAX_OPERAND_WIDTH:
                raise ValueError(f"{name}={w!r} is not supported: MULT18X18D takes signed operands "
                                 f"of 2 to {MAX_OPERAND_WIDTH} bits")
        self._a_width, self._b_width, self._pipeline = a_width, b_width, bool(pipeline)
        super().__init__({
            "a": In(signed(a_width)),
            "b": In(signed(b_width)),
            "p": Out(signed(a_width + b_width)),
        })

    @property
    def latency(self) -> int:
        """Cycles from ``a``/``b`` to ``p``."""
        return 3 if self._pipeline else 2

    @property
    def pipeline(self) -> bool:
        return self._pipeline

    def elaborate(self, platform):
        m = Module()
        if is_ecp5(platform):
            a18 = Signal(signed(MAX_OPERAND_WIDTH))
            b18 = Signal(signed(MAX_OPERAND_WIDTH))
            p36 = Signal(signed(2 * MAX_OPERAND_WIDTH))
            m.d.comb += [a18.eq(self.a), b18.eq(self.b),
                         self.p.eq(p36[:len(self.p)])]
            reg = "CLK0"
            params = dict(
                p_REG_INPUTA_CLK=reg, p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
                p_REG_INPUTB_CLK=reg, p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
                p_REG_INPUTC_CLK="NONE",
                p_REG_PIPELINE_CLK=reg if self._pipeline else "NONE",
                p_REG_PIPELINE_CE="CE0", p_REG_PIPELINE_RST="RST0",
                p_REG_OUTPUT_CLK=reg, p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
                p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED",
                p_CLK3_DIV="ENABLED", p_HIGHSPEED_CLK="NONE",
                p_GSR="DISABLED", p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT",
                p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC",
                i_CLK0=ClockSignal(), i_CE0=Const(1), i_RST0=Const(0),
                i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            )
            # SRIA/SRIB (cascade shift inputs) stay unconnected: they have no route from the
            # fabric and tying them to 0 makes nextpnr fail to route the constant net.
            for i in range(MAX_OPERAND_WIDTH):
                params[f"i_A{i}"] = a18[i]
                params[f"i_B{i}"] = b18[i]
                params[f"i_C{i}"] = Const(0)
            for i in range(2 * MAX_OPERAND_WIDTH):
                params[f"o_P{i}"] = p36[i]
            if self._bel:                    # a floorplan's site (nextpnr's BEL attribute)
                params["a_BEL"] = self._bel
            m.submodules.mult = Instance("MULT18X18D", **params)
        else:
            a_r = Signal.like(self.a, name="a_r")
            b_r = Signal.like(self.b, name="b_r")
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b)]
            prod = a_r * b_r
            if self._pipeline:
                pipe = Signal.like(self.p, name="pipe")
                m.d.sync += pipe.eq(prod)
                prod = pipe
            m.d.sync += self.p.eq(prod)
        return m


def keep_register(m: Module, platform, q: Signal, d, en=None) -> Signal:
    """Add the register ``q <= d`` to ``m`` (``sync`` domain) so that synthesis keeps it even
    when an identical register exists elsewhere.

    Parameters
    ----------
    m : Module
        Module to add the register to.
    platform
        The elaboration platform; on ECP5 each bit is a ``TRELLIS_FF`` instance.
    q : Signal
        The register. Unless it is ``reset_less``, the domain reset clears it (control
        bits); data copies should be ``reset_less`` and then need no reset net.
    d : Value
        Next value.
    en : Value, optional
        Clock enable (``q`` keeps its value while it is low; on ECP5 the flip-flops' CE).

    Returns
    -------
    Signal
        ``q``.
    """
    if is_ecp5(platform):
        if q.init != 0:
            raise ValueError(f"keep_register({q.name}): init={q.init} is not supported, only 0")
        d_bits = Signal(len(q), name=f"{q.name}_d")
        m.d.comb += d_bits.eq(d)
        for i in range(len(q)):
            m.submodules[f"{q.name}_ff{i}"] = Instance(
                "TRELLIS_FF",
                p_GSR="DISABLED", p_CEMUX="1" if en is None else "CE", p_CLKMUX="CLK",
                p_LSRMUX="LSR", p_SRMODE="LSR_OVER_CE", p_REGSET="RESET",
                i_CLK=ClockSignal(), i_LSR=Const(0) if q.reset_less else ResetSignal(),
                i_CE=Const(1) if en is None else en, i_DI=d_bits[i], o_Q=q[i])
    elif en is None:
        m.d.sync += q.eq(d)
    else:
        with m.If(en):
            m.d.sync += q.eq(d)
    return q
