"""RMSNorm over a vector of ``dim`` integers, integer-only, bit-exact with
:func:`sim.golden.norm.norm_golden` (the integer definition and the scales are documented
in :mod:`sim.golden.norm`). :class:`NormEngine` here also implements LayerNorm
(:mod:`hdlgen.blocks.layernorm`).

Streams
-------
``i``  the vector, one element per transfer, ``dim`` transfers per vector (no framing).
``g``  per-channel parameters, one transfer per output element, consumed in lockstep with
       the output pass: ``gamma`` (and ``beta`` for LayerNorm) of channel ``c`` with output
       element ``c``. The engine streams them from its weight memory; ``g`` may be offered
       at any time, it is only accepted during the output pass.
``o``  the int8 result, ``last`` on the final element of each vector.

Phases of one vector:

``LOAD``   one element per cycle into the vector buffer (block RAM); ``sum(x)`` and
           ``sum(x * x)`` (a DSP squares) accumulate.
``SCALAR`` (LayerNorm only) ``dim * S2 - S1**2`` with a shift-and-add loop; then
           ``v = (. << 8) + EPS``, normalised to ``[2**32, 2**34)`` by shifts of two bits
           (an even shift, so the square root of the scale is exact), a digit-by-digit
           square root and a restoring division (17 steps each, ``steps_per_cycle`` of them
           per cycle: 17, 9, 6 or 5 cycles) give the 17-bit reciprocal square root ``R``
           and the output shift.
``OUT``    one element per cycle, never stalling: ``xt * gamma * R`` as exact products on
           DSPs (``xt = x``, or ``dim * x - S1`` for LayerNorm), shift, ``+ beta``, round,
           saturate to int8, into an output FIFO; reads are issued only while the FIFO has
           credit and ``g`` has data.

Control is a set of one-hot phase flags; every enable is a flag AND at most one registered
condition, so no control net is deep before it fans out. Wide registers whose enable would
be a deep or far-reaching net instead take a registered enable (computed a cycle ahead),
run free (the sums, ``g1``, the buffer read, ``msq``: only the items a valid pulse marks are
used) or hold their own copies of the selects (``v``).

Resources (int16 input, 16-bit gamma): RMSNorm 4 MULT18X18D (one squares in LOAD, one for
``x * gamma``, two for the product with ``R``), LayerNorm 7 (plus ``dim * x``, and the wider
centred products take one DSP more each); one DP16KD per 1024 x 18 bits of vector buffer.
Measured out of context on the LFE5U-85F (speed 6), dim 768, int16 input (nextpnr seeds
1 and 2): RMSNorm 192 / 176 MHz, 775 LUT4, 722 FF, 4 DSP, 1 EBR; LayerNorm 170 / 168 MHz,
1432 LUT4, 1662 FF, 7 DSP, 1 EBR.

Cycles per vector: ``2 dim`` plus the scalar phase, about 50 cycles (RMSNorm) or 120
(LayerNorm: the variance loop takes two cycles per bit of ``dim`` and of ``|S1|``); two steps
per cycle take 16 off. ``test_throughput_one_element_per_cycle`` in ``tests/test_norm.py``
bounds it (dim 200, back-to-back vectors): 64 and 140, 44 and 108 with two steps.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.bram import READ_LATENCY, BlockRAM
from hdlgen.blocks.dsp import keep_register
from hdlgen.blocks.fixpoint import MUL18_LATENCY, CreditFIFO, Mul18, WideMul, delay
from sim.golden.norm import EPS_BITS, NormParams, norm_error

__all__ = ["NormEngine", "RMSNorm", "bench_configs"]


class NormEngine(wiring.Component):
    """RMSNorm or LayerNorm; use :class:`RMSNorm` or :class:`hdlgen.blocks.layernorm.LayerNorm`.

    Parameters
    ----------
    kind : str
        ``"rmsnorm"`` or ``"layernorm"``.
    dim : int
        Vector length, 1..4096 (any value, powers of two are not required).
    in_width : int
        Input width (signed), 2..16 (int8 and int16 activations).
    gamma_width, gamma_frac : int
        ``gamma`` format: signed, ``gamma_frac`` fractional bits (width <= 18).
    beta_width, beta_frac : int
        ``beta`` format (LayerNorm); ``beta_frac`` defaults to ``gamma_frac``.
    out_frac : int
        Fractional bits of the int8 output: ``y_real = y * 2**-out_frac``.
    eps : float
        Epsilon in units of the input LSB squared (``eps_real / in_scale**2``).
    steps_per_cycle : int
        Steps of the scalar phase's square root and division per cycle, 1..4: each takes
        ``ceil(17 / steps_per_cycle)`` cycles. More steps chain more subtractors per cycle
        (a lower fmax out of context) for a shorter scalar phase; the results are the same.
    """

    def __init__(self, kind: str, *, dim: int, in_width: int = 16, gamma_width: int = 16,
                 gamma_frac: int = 12, beta_width: int = 16, beta_frac: int | None = None,
                 out_frac: int = 4, eps: float = 0.0, steps_per_cycle: int = 1):
        try:
            if steps_per_cycle not in (1, 2, 3, 4):
                raise ValueError(f"steps_per_cycle {steps_per_cycle!r}: the square root and "
                                 f"the division take 1 to 4 steps per cycle: use 1, 2, 3 or 4")
            self._steps = steps_per_cycle
            self._p = NormParams(kind, dim=dim, in_width=in_width, gamma_width=gamma_width,
                                 gamma_frac=gamma_frac, beta_width=beta_width,
                                 beta_frac=beta_frac, out_frac=out_frac, eps=eps)
        except ValueError:
            self._MustUse__silence = True       # not built: no "created but never used" warning
            raise
        g_fields = {"gamma": signed(gamma_width)}
        if kind == "layernorm":
            g_fields["beta"] = signed(beta_width)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"data": signed(in_width)}))),
            "g": In(stream.Signature(data.StructLayout(g_fields))),
            "o": Out(stream.Signature(data.StructLayout({"data": signed(8), "last": 1}))),
        })

    @property
    def params(self) -> NormParams:
        """The validated parameters and derived constants (shared with the golden model)."""
        return self._p

    dim = property(lambda self: self._p.dim)
    kind = property(lambda self: self._p.kind)

    def elaborate(self, platform):
        m = Module()
        p = self._p
        ln = p.kind == "layernorm"
        D, W = p.dim, p.in_width

        m.submodules.ram = ram = BlockRAM(width=W, depth=D, ports=("w", "r"))
        m.submodules.sq = sq = Mul18("sq")

        # ---- LOAD: buffer, sum, sum of squares ---------------------------------------------
        cnt = Signal(range(D + 1))
        xfer = Signal()                 # an element is accepted
        s1 = Signal(signed(p.s1_width))
        s2_start = 0 if ln else p.eps_int >> EPS_BITS
        s2 = Signal(max(p.s2_width, p.v_width - EPS_BITS) + 1, init=s2_start)
        # x_r is the accepted element, zero in a cycle without one, so both sums add every
        # cycle (no enable net); the square leaves the DSP through a fabric register first.
        # ``clr_n``, registered into one copy per sum (``clr1``, ``clr2``), restarts them once
        # the scalar phase has copied S1.
        x_r = Signal(signed(W))
        m.d.comb += [sq.a.eq(x_r), sq.b.eq(x_r)]
        sq_r = Signal(2 * W, reset_less=True)
        m.d.sync += sq_r.eq(sq.p.as_unsigned()[:2 * W])
        clr_n = Signal()
        clr1 = keep_register(m, platform, Signal(name="clr1"), clr_n)
        clr2 = keep_register(m, platform, Signal(name="clr2"), clr_n)
        # a square enters s2 only in the cycle its element's valid pulse reaches sq_r, so a
        # reset (ResetInserter: the engine's early load) never leaves the squares still in the
        # DSP to be summed into the next vector
        sq_v = delay(m, xfer, MUL18_LATENCY + 2, name="sq_v", reset=True)
        m.d.sync += s1.eq(Mux(clr1, 0, s1 + x_r)), s2.eq(Mux(clr2, s2_start,
                                                            s2 + Mux(sq_v, sq_r, 0)))

        # ---- SCALAR registers -------------------------------------------------------------
        VW = p.v_width
        acc = Signal(signed(VW + 2))
        ma = Signal(VW + 2)
        mb = Signal(max(p.s1_width, D.bit_length()))
        phase = Signal()
        v = Signal(max(VW, 35))
        shr = Signal(range(p.shr_max + 1))
        rem = Signal(21)
        drem = Signal(18)
        root = Signal(17)
        S = self._steps
        NC = -(-17 // S)                    # cycles of SQRT and of DIV
        NS = NC * S                         # steps, the first NS - 17 of them on zeros (SQRT)
        msq = Signal(2 * NS)
        it = Signal(range(18))
        it_last = Signal()                  # registered: the last cycle of SQRT or DIV
        recip = Signal(17)
        numr = Signal(NS)
        # Per-vector constants of the output pass, copied when it starts: the next vector's
        # scalar phase may begin while the last items are still in the output pipeline.
        s1_out = Signal.like(s1)
        shr_o = Signal.like(shr)

        # ---- OUT pipeline ----------------------------------------------------------------
        gl = self.g.payload
        oi = Signal(range(D + 1))
        issue = Signal()
        last0 = Signal()
        # g1 and the vector buffer's read port run every cycle (no enable): only the items
        # marked by the ``issue`` pulse travelling beside them are used, so ``issue`` (the
        # deepest control net) drives neither the 32-bit g1 enable nor the EBR's CEB pin.
        g1 = Signal.like(gl, reset_less=True)
        m.d.sync += g1.eq(gl)
        v_t = delay(m, issue, READ_LATENCY + 1, name="o_v", reset=True)     # cycle 3
        last_t = delay(m, last0, READ_LATENCY + 1, name="o_last")
        gamma_t = delay(m, g1.gamma, READ_LATENCY, name="o_gamma")          # cycle 3
        beta_t = delay(m, g1.beta, READ_LATENCY, name="o_beta") if ln else None
        x3 = Signal(signed(W), reset_less=True)
        m.d.sync += x3.eq(ram.b.rdata.as_signed())
        if ln:
            m.submodules.mdim = mdim = Mul18("mdim")
            m.d.comb += [mdim.a.eq(x3), mdim.b.eq(D)]
            u = Signal(signed(p.xt_width), reset_less=True)
            m.d.sync += u.eq(mdim.p - s1_out)
            xt, pre = u, MUL18_LATENCY + 1
        else:
            xt, pre = x3, 0
        v_t = delay(m, v_t, pre, name="o_vx", reset=True)
        last_t = delay(m, last_t, pre, name="o_lastx")
        gamma_t = delay(m, gamma_t, pre, name="o_gammax")
        wm1 = WideMul(p.xt_width, p.gamma_width, name="xg")
        wm2 = WideMul(p.p_width, 18, name="xgr")
        m.submodules.wm1, m.submodules.wm2 = wm1, wm2
        m.d.comb += [wm1.a.eq(xt), wm1.b.eq(gamma_t), wm2.a.eq(wm1.p), wm2.b.eq(recip)]
        lat = wm1.latency + wm2.latency
        v_t = delay(m, v_t, lat, name="o_vq", reset=True)
        last_t = delay(m, last_t, lat, name="o_lastq")
        q = wm2.p
        za = Signal(signed(p.q_width), reset_less=True)
        zb = Signal(signed(p.q_width), reset_less=True)
        m.d.sync += [za.eq(q >> Cat(Const(0, 3), shr_o[3:])), zb.eq(za >> shr_o[:3])]
        half = 1 << (p.guard - 1)
        if ln:
            beta_t = delay(m, beta_t, pre + lat + 1, name="o_betaq")
            bs = p.beta_shift
            bb = Signal(signed(max(p.beta_width + max(bs, 0), p.guard) + 2), reset_less=True)
            m.d.sync += bb.eq((beta_t << bs if bs >= 0 else beta_t >> -bs) + half)
            addend = bb
        else:
            addend = Const(half, signed(p.guard + 1))
        total = Signal(signed(max(p.q_width, len(addend)) + 1), reset_less=True)
        m.d.sync += total.eq(zb + addend)
        # Saturation in two stages: the value fits int8 when the bits from the output's bit 7
        # up are all equal (a wide AND/OR, registered), then a small mux.
        top = total[p.guard + 7:]
        all1, all0, neg = Signal(name="y_all1"), Signal(name="y_all0"), Signal(name="y_neg")
        low = Signal(8, reset_less=True)
        m.d.sync += [all1.eq(top.all()), all0.eq(~top.any()), neg.eq(total[-1]),
                     low.eq(total[p.guard:p.guard + 8])]
        y = Signal(signed(8), reset_less=True)
        m.d.sync += y.eq(Mux(all1 | all0, low, Mux(neg, -128, 127)))
        v_t = delay(m, v_t, 5, name="o_vy", reset=True)
        last_t = delay(m, last_t, 5, name="o_lasty")
        latency = READ_LATENCY + 1 + pre + lat + 5
        m.submodules.credit = credit = CreditFIFO(9, latency)
        m.d.comb += [credit.w_en.eq(v_t), credit.w_data.eq(Cat(y, last_t)),
                     credit.issue.eq(issue), credit.r_ready.eq(self.o.ready),
                     self.o.valid.eq(credit.r_valid), self.o.payload.eq(credit.r_data)]

        # ---- control: one-hot phase flags, registered conditions ---------------------------
        # Every enable is a phase flag AND at most one registered condition (or a small
        # counter compare), so no control net is deep before it fans out to a wide register.
        st_load = Signal(init=1)
        st_drain, st_mul, st_pre, st_norm, st_sqrt, st_div, st_out = (
            Signal(name=f"st_{n}") for n in ("drain", "mul", "pre", "norm", "sqrt", "div", "out"))
        m.d.sync += it_last.eq((it == NC - 2) & (st_sqrt | st_div))
        m.d.comb += clr_n.eq(st_div & it_last)
        at_last = Signal(init=int(D == 1))  # LOAD: the next element is the last
        oi_more = Signal()
        hi = Signal()                       # NORM: v >= 2**34 (of the current v)
        lo = Signal()                       # NORM: v < 2**32
        fit = Signal()                      # NORM: neither
        n_it = max(D.bit_length(), p.s1_width - 1)
        mit = Signal(range(n_it + 1))

        m.d.comb += [self.i.ready.eq(st_load), xfer.eq(self.i.valid & st_load)]
        m.d.comb += [ram.a.addr.eq(cnt), ram.a.en.eq(xfer), ram.a.we.eq(1),
                     ram.a.wdata.eq(self.i.payload.data)]
        m.d.sync += x_r.eq(Mux(xfer, self.i.payload.data, 0))
        # LOAD
        with m.If(xfer):
            m.d.sync += [cnt.eq(cnt + 1), at_last.eq(cnt == D - 2)]
            with m.If(at_last):
                m.d.sync += [cnt.eq(0), at_last.eq(int(D == 1)), st_load.eq(0),
                             st_drain.eq(1)]
        # DRAIN: the squares still in the DSP reach s2 (a delayed pulse, no counter compare).
        # (x_r, the DSP, sq_r, s2; drain_pre is drain_done one cycle early)
        drain_pre = delay(m, xfer & at_last, MUL18_LATENCY + 2, name="drain", reset=True)
        drain_done = delay(m, drain_pre, 1, name="drain_done", reset=True)
        with m.If(drain_done):
            m.d.sync += st_drain.eq(0)
            if ln:
                m.d.sync += [acc.eq(p.eps_int >> EPS_BITS), mit.eq(0), st_mul.eq(1)]
            else:
                m.d.sync += st_pre.eq(1)
        if ln:
            # MUL: acc = dim * S2 - |S1| * |S1| (+ EPS >> 8, its start value), one partial
            # product per two cycles: the wide addition is split in two halves with a
            # registered carry. One shifting operand pair (ma, mb): S2 << i and dim >> i,
            # then -|S1| << i (two's complement, so both phases only add) and |S1| >> i; its
            # load selects are flip-flops (``switch`` is decided a cycle early).
            # ``last_it`` marks a phase's last step.
            l0, l1 = D.bit_length(), p.s1_width - 1
            AW = len(acc)
            H = AW // 2
            a1 = Signal(p.s1_width)
            neg_a1 = Signal(AW)
            last_it = Signal()
            hstep = Signal()
            step = Signal()                      # second half: shift, count (registered)
            switch = Signal()                    # this step ends phase 0
            carry = Signal()
            lo_sum = Signal(H + 1)
            m.d.comb += lo_sum.eq(acc[:H] + ma[:H])
            # step (= st_mul & hstep) and switch are decided in the first half, registered.
            ab_ce = Signal()                     # = drain_done | step, registered
            m.d.sync += [neg_a1.eq(-a1), step.eq(st_mul & ~hstep),
                         switch.eq(st_mul & ~hstep & last_it & ~phase),
                         ab_ce.eq(drain_pre | (st_mul & ~hstep))]
            with m.If(drain_done):
                m.d.sync += [a1.eq(Mux(s1 < 0, -s1, s1)), last_it.eq(l0 == 1), hstep.eq(0)]
            with m.If(ab_ce):
                with m.If(drain_done):
                    m.d.sync += [ma.eq(s2), mb.eq(D)]
                with m.Elif(switch):
                    m.d.sync += [ma.eq(neg_a1), mb.eq(a1)]
                with m.Else():
                    m.d.sync += [ma.eq(ma << 1), mb.eq(mb >> 1)]
            with m.If(st_mul & ~hstep):
                with m.If(mb[0]):
                    m.d.sync += [acc[:H].eq(lo_sum[:H]), carry.eq(lo_sum[H])]
                with m.Else():
                    m.d.sync += carry.eq(0)
                m.d.sync += hstep.eq(1)
            with m.If(step):
                with m.If(mb[0]):
                    m.d.sync += acc[H:].eq(acc[H:] + ma[H:] + carry)
                m.d.sync += [mit.eq(mit + 1), hstep.eq(0),
                             last_it.eq(Mux(phase, mit == l1 - 2, mit == l0 - 2))]
                with m.If(last_it & ~phase):
                    m.d.sync += [mit.eq(0), last_it.eq(l1 == 1)]
                with m.If(last_it & phase):
                    m.d.sync += [st_mul.eq(0), st_pre.eq(1)]
            vload = Signal()                     # = st_pre & phase, registered
            vload_n = step & last_it & phase
            m.d.sync += vload.eq(vload_n)
            # phase: set by the last step of phase 0, cleared when v is loaded (a register
            # as the clear); it is 0 again before the next vector's MUL
            m.d.sync += phase.eq(Mux(vload, 0, phase | (step & last_it)))
            v_in = Cat(Const(p.eps_int & 0xFF, EPS_BITS), acc)
        else:
            # s2 starts at EPS >> 8, so v = (S2 << 8) + EPS is wiring only.
            vload, vload_n = drain_done, drain_pre
            v_in = Cat(Const(p.eps_int & 0xFF, EPS_BITS), s2)
        # PRE: flags of v (one cycle; for LayerNorm v is loaded in the first cycle of PRE).
        pre_go = (st_pre & ~phase) if ln else st_pre
        with m.If(pre_go):
            m.d.sync += [fit.eq(~v[34:].any() & v[32:34].any()), shr.eq(p.sh0),
                         st_pre.eq(0), st_norm.eq(1)]
        # NORM: even shift into [2**32, 2**34): k -= 2 per right shift (shr += 1). The flags
        # of the shifted value are computed from the current one, so each is a register;
        # they are only ever set during NORM (``fit`` clears them all). v's enable ``v_ce``
        # is itself a register (load, or either flag, one cycle ahead).
        hi_n, lo_n = Signal(), Signal()
        # (v >= 2**34, so v >> 2 >= 2**32: never too small after a right shift)
        # (one wide OR each, then a single small LUT with the phase flags)
        # (pre_go, hi and lo are never set together)
        any36, any32 = Signal(), Signal()
        m.d.comb += [any36.eq(v[36:].any()), any32.eq(v[32:].any())]
        m.d.comb += [hi_n.eq(((pre_go | hi) & any36) | (pre_go & v[34:36].any())),
                     lo_n.eq((pre_go & ~any32) | (lo & ~v[30:32].any()))]
        m.d.sync += [hi.eq(hi_n), lo.eq(lo_n)]
        # v in two halves, each with its own copies of the enable and the selects
        v_new = Signal.like(v)
        m.d.comb += v_new.eq(v_in)
        half_v = len(v) // 2
        for j, (b0, b1) in enumerate(((0, half_v), (half_v, len(v)))):
            v_ce = keep_register(m, platform, Signal(name=f"v_ce{j}"), vload_n | hi_n | lo_n)
            v_ld = keep_register(m, platform, Signal(name=f"v_ld{j}"), vload_n)
            v_hi = keep_register(m, platform, Signal(name=f"v_hi{j}"), hi_n)
            with m.If(v_ce):
                with m.If(v_ld):
                    m.d.sync += v[b0:b1].eq(v_new[b0:b1])
                with m.Elif(v_hi):
                    m.d.sync += v[b0:b1].eq((v >> 2)[b0:b1])
                with m.Else():
                    m.d.sync += v[b0:b1].eq((v << 2)[b0:b1])
        with m.If(hi):
            m.d.sync += [shr.eq(shr + 1), fit.eq(~v[36:].any())]
        with m.If(lo):
            m.d.sync += [shr.eq(shr - 1), fit.eq(v[30:32].any())]
        with m.If(fit):
            m.d.sync += [rem.eq(0), root.eq(0), it.eq(0), fit.eq(0),
                         st_norm.eq(0), st_sqrt.eq(1)]
        # SQRT: digit by digit, two bits of m per step, ``steps_per_cycle`` steps per cycle
        # (msq shifts every cycle, no enable: only its value from ``fit`` on matters). With
        # several steps per cycle the 17 steps are padded to a multiple of them by leading
        # zero digits, which leave the remainder and the root at zero.
        m.d.sync += msq.eq(Mux(fit, v[:34], msq << (2 * S)))
        rem_s, root_s = rem, root
        for j in range(S):
            r4 = Signal(21, name=f"r4_{j}")
            sdiff = Signal(22, name=f"sdiff{j}")    # r4 - trial; bit 21 set when negative
            top = 2 * NS - 2 - 2 * j
            m.d.comb += [r4.eq(Cat(msq[top:top + 2], rem_s)),
                         sdiff.eq(r4 - Cat(Const(1, 2), root_s))]
            rem_s = Mux(sdiff[21], r4, sdiff[:21])
            root_s = Cat(~sdiff[21], root_s)[:17]
        with m.If(st_sqrt):
            m.d.sync += [rem.eq(rem_s), root.eq(root_s)]
            m.d.sync += it.eq(it + 1)
            with m.If(it_last):
                # (recip needs no clearing: the division shifts in all its 17 bits)
                m.d.sync += [drem.eq(p.num >> NS), numr.eq(p.num & ((1 << NS) - 1)), it.eq(0),
                             st_sqrt.eq(0), st_div.eq(1)]
        # DIV: recip = NUM // root; drem starts at NUM >> NS (< NUM >> 17 < root), one bit
        # per step (the first NS - 17 quotient bits are zero: NUM // root < 2**17).
        drem_s, recip_s = drem, recip
        for j in range(S):
            dtrial = Signal(19, name=f"dtrial{j}")
            ddiff = Signal(20, name=f"ddiff{j}")    # dtrial - root; bit 19 set when negative
            m.d.comb += [dtrial.eq(Cat(numr[NS - 1 - j], drem_s)), ddiff.eq(dtrial - root)]
            drem_s = Mux(ddiff[19], dtrial, ddiff[:18])
            recip_s = Cat(~ddiff[19], recip_s)[:17]
        with m.If(st_div):
            m.d.sync += [drem.eq(drem_s), recip.eq(recip_s)]
            m.d.sync += [numr.eq(numr << S), it.eq(it + 1)]
            with m.If(it_last):
                m.d.sync += [oi.eq(0), oi_more.eq(1),
                             s1_out.eq(s1), shr_o.eq(shr),
                             st_div.eq(0), st_out.eq(1)]
        # OUT
        can = Signal()
        m.d.comb += [can.eq(st_out & oi_more & credit.can_issue),
                     self.g.ready.eq(can), issue.eq(can & self.g.valid),
                     ram.b.addr.eq(oi), ram.b.en.eq(1), last0.eq(oi == D - 1)]
        with m.If(issue):
            m.d.sync += [oi.eq(oi + 1), oi_more.eq(oi != D - 1)]
        with m.If(st_out & ~oi_more):
            m.d.sync += [st_out.eq(0), st_load.eq(1)]
        return m


class RMSNorm(NormEngine):
    """``y = x / sqrt(mean(x**2) + eps) * gamma`` over vectors of ``dim`` integers.

    Parameters as :class:`NormEngine` (without ``kind`` and the ``beta`` ones); the ``g``
    stream carries ``gamma`` only.
    """

    def __init__(self, *, dim: int, in_width: int = 16, gamma_width: int = 16,
                 gamma_frac: int = 12, out_frac: int = 4, eps: float = 0.0,
                 steps_per_cycle: int = 1):
        super().__init__("rmsnorm", dim=dim, in_width=in_width, gamma_width=gamma_width,
                         gamma_frac=gamma_frac, out_frac=out_frac, eps=eps,
                         steps_per_cycle=steps_per_cycle)


def _bench(name, cls, params):
    from hdlgen.bench.registry import BlockBench

    def error():
        p = NormParams(name, **params)
        return {"metric": "max_rel", "value": norm_error(p, count=300)["max_rel"],
                "bound": 0.005}

    return BlockBench(name=name, params=params, build=lambda: cls(**params), error=error)


def bench_configs():
    """GPT-2-size RMSNorm (dim 768, int16 in); stories260K uses the same block at dim 64."""
    return [_bench("rmsnorm", RMSNorm, {"dim": 768, "in_width": 16, "gamma_frac": 12,
                                        "out_frac": 4, "eps": 1.0})]
