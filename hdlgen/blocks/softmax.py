"""Softmax over a row of integer logits, integer-only, bit-exact with
:func:`sim.golden.softmax.softmax_golden` (the integer definition is in that module).

A row is one packet on ``i`` (``last`` on its final element; the packet length is the causal
length, 1..``max_len``); the probabilities of the row leave on ``o`` in the same order, the
final one with ``last``. Packets longer than ``max_len`` are consumed completely but only
their first ``max_len`` elements are used (and output).

Each row passes four stages; the stages work on different rows at the same time, so that
back-to-back rows overlap (LOAD of row r+2, EXP of row r+1, NORM of row r+1 and OUT of row r):

``LOAD``  one logit per cycle into a half of the logit buffer, running maximum.
``EXP``   one element per cycle from that half: ``d = max - x``, ``t = d * log2(e)`` on a
          DSP, ``2**-t`` from a 256-entry table in block RAM and a shift; ``e`` goes into a
          half of the exp buffer and is summed. Fixed-latency pipeline (14 cycles), no stall;
          the row's maximum and last flag travel with the data.
``NORM``  the sum is normalised to 17 bits (one bit per cycle) and its reciprocal computed by
          non-restoring division (16 cycles), while EXP and OUT work on other rows.
``OUT``   one element per cycle from the exp half: ``p = (e * R + round) >> shift`` on a
          second DSP, saturated, into an output FIFO; reads are issued only while the FIFO has
          credit, so output back-pressure never stalls the pipeline. The row's reciprocal and
          shift travel with the data.

Both buffers are ping-pong: two halves of ``2**ceil(log2(max_len))`` words, rows alternating
between them. Per-half flags hand rows from stage to stage: a logit half is free again once
EXP has issued its last read, an exp half once OUT has started the row in it. EXP may then
write a row into the exp half OUT is still reading (the row two before) but never ahead of
OUT: it issues element ``j`` only after OUT has read element ``j`` (a registered pointer
comparison), so a slow ``o.ready`` holds EXP back instead of corrupting data.

Cycles (``o.ready`` always 1, input always valid; Amaranth simulation, see
``test_rows_overlap`` in ``tests/test_softmax.py``): a single row of ``n`` elements takes about
``3 n + 45`` cycles from its first input to its last output, plus one per NORM shift (the
design without overlap: ``3 n + 49`` and more); back-to-back rows cost ``n + K`` cycles each,
``K = 1`` (EXP and OUT each start a row one cycle after the previous one's last element), for
``n >= 32``. Shorter rows cost about ``17 + n / 2`` (an exp half is free only
once OUT has started the row two before, after that row's NORM), at least 18 (NORM + DIV).
8 rows of 65 elements (the engine's 8 heads at position 64): 704 cycles, 1869 without
overlap.

Control is a set of one-hot phase flags with registered conditions; the running maximum
is computed in two stages so no compare drives a wide enable.

Resources: 2 MULT18X18D; DP16KD: the logit and the exp buffer (each 2 x 2**ceil(log2(max_len))
words of ``in_width`` / 17 bits) and the exp table: 3 for ``max_len <= 512`` (one more than
the design without overlap), 5 for 1024, 9 for 2048. Measured out of context on the
LFE5U-85F (speed 6), max_len 512 (``python -m hdlgen bench blocks --device 85F --json --only
softmax --seed N``): 166.2 MHz (seed 1), 162.2 MHz (seed 2), 834 LUT4, 858 FF (the
design without overlap, same flow: 159.8 / 160.9 MHz, 757 LUT4, 533 FF, 2 DP16KD).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.bram import READ_LATENCY, BlockRAM
from hdlgen.blocks.fixpoint import MUL18_LATENCY, CreditFIFO, Mul18, delay
from sim.golden.softmax import (EXP2_TABLE, LOG2E_FIX, Q_ZERO, check_params, softmax_error,
                                sum_width)

__all__ = ["Softmax", "bench_configs"]


class Softmax(wiring.Component):
    """Integer softmax over packets of logits.

    Parameters
    ----------
    max_len : int
        Longest row (row buffer depth), 1..4096.
    in_width : int
        Logit width (signed), 4..17.
    in_frac : int
        Fractional bits of the logits: real logit = ``x * 2**-in_frac``.
    out_bits : int
        Probability width (unsigned), 7..16: real probability = ``p * 2**-out_bits``.
        15 (default) meets the row-sum bound for rows up to 512 long; see
        :mod:`sim.golden.softmax`.

    Attributes
    ----------
    i : In(stream.Signature(StructLayout({"data": signed(in_width), "last": 1})))
    o : Out(stream.Signature(StructLayout({"data": unsigned(out_bits), "last": 1})))
    """

    def __init__(self, *, max_len: int = 512, in_width: int = 16, in_frac: int = 8,
                 out_bits: int = 15):
        try:
            check_params(max_len, in_width, in_frac, out_bits)
        except ValueError:
            self._MustUse__silence = True       # not built: no "created but never used" warning
            raise
        self._max_len, self._in_width = max_len, in_width
        self._in_frac, self._out_bits = in_frac, out_bits
        in_layout = data.StructLayout({"data": signed(in_width), "last": 1})
        out_layout = data.StructLayout({"data": unsigned(out_bits), "last": 1})
        super().__init__({"i": In(stream.Signature(in_layout)),
                          "o": Out(stream.Signature(out_layout))})

    max_len = property(lambda self: self._max_len)
    in_width = property(lambda self: self._in_width)
    in_frac = property(lambda self: self._in_frac)
    out_bits = property(lambda self: self._out_bits)

    def elaborate(self, platform):
        m = Module()
        W, N, OB = self._in_width, self._max_len, self._out_bits
        SW = sum_width(N)
        sh_t = 15 + self._in_frac - 8
        AW = max(1, (N - 1).bit_length())           # index bits within one half of a buffer

        # Logits and exponentials, each in a two-half (ping-pong) buffer: address Cat(i, half).
        m.submodules.xram = xram = BlockRAM(width=W, depth=2 << AW, ports=("w", "r"))
        m.submodules.eram = eram = BlockRAM(width=17, depth=2 << AW, ports=("w", "r"))
        m.submodules.rom = rom = BlockRAM(width=17, depth=256, ports=("w", "r"), init=EXP2_TABLE)
        m.submodules.mul_exp = mul_exp = Mul18("mul_exp")
        m.submodules.mul_out = mul_out = Mul18("mul_out")
        out_latency = READ_LATENCY + 1 + MUL18_LATENCY + 4
        m.submodules.credit = credit = CreditFIFO(OB + 1, out_latency)

        def pair(name, shape=1, **kw):
            return [Signal(shape, name=f"{name}{h}", **kw) for h in range(2)]

        # Per-half state, each bit written by one stage only (set) and one other (clear).
        lbusy = pair("lbusy")           # logit half h holds a row E has not finished reading
        lvalid = pair("lvalid")         # ... which EXP has not started (its maximum is final
                                        # two cycles after this is set)
        d_mx = pair("d_mx", signed(W), reset_less=True)      # row maximum
        d_nm1 = pair("d_nm1", range(N), reset_less=True)     # row length - 1
        xh = pair("xh")                 # exp half h holds a row OUT has not started
        xn = pair("xn", range(N), reset_less=True)           # its length - 1

        # ---- LOAD: one logit per cycle into logit half hl, running maximum -------------------
        hl = Signal()
        he = Signal(init=1)             # EXP: half of the row issued last; the next is ~he
        cnt = Signal(range(N + 1))      # elements of the row stored
        room = Signal(init=1)           # cnt < N
        l_first = Signal(init=1)        # the next accepted element starts a row
        rdy = Signal(init=1)            # i.ready, a register
        xfer, lend = Signal(), Signal()
        m.d.comb += [self.i.ready.eq(rdy), xfer.eq(self.i.valid & rdy),
                     lend.eq(xfer & self.i.payload.last)]
        # stage 1: the accepted logit, registered
        x_r = Signal(signed(W), reset_less=True)
        wa = Signal(AW + 1, reset_less=True)
        xv, first1, end1, hl1 = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [xv.eq(xfer & room), first1.eq(l_first), end1.eq(lend), hl1.eq(hl)]
        with m.If(xfer):
            m.d.sync += [x_r.eq(self.i.payload.data), wa.eq(Cat(cnt[:AW], hl)), l_first.eq(0)]
            with m.If(room):
                m.d.sync += [cnt.eq(cnt + 1), room.eq(cnt != N - 1)]
        m.d.comb += [xram.a.addr.eq(wa), xram.a.wdata.eq(x_r.as_unsigned()),
                     xram.a.en.eq(xv), xram.a.we.eq(1)]
        # lclr: EXP issues the last read of half he now (defined with EXP below); ready
        # follows it at once.
        lclr = Signal()
        with m.If(lend):
            # The row ends: its half is busy until EXP has read it; switch halves. The length
            # is final now (elements beyond max_len were dropped).
            m.d.sync += [cnt.eq(0), room.eq(1), l_first.eq(1), hl.eq(~hl),
                         rdy.eq(~Mux(hl, lbusy[0], lbusy[1]) | (lclr & (he != hl)))]
            for h in range(2):
                with m.If(hl == h):
                    m.d.sync += [lbusy[h].eq(1), lvalid[h].eq(1),
                                 d_nm1[h].eq(Mux(room, cnt, N - 1))]
        with m.Elif(~rdy):
            m.d.sync += rdy.eq(~Mux(hl, lbusy[1], lbusy[0]) | (lclr & (he == hl)))
        # stage 2: running maximum, decided in stage 1 against the element in stage 2 when that
        # one becomes the maximum, else against the maximum, so no compare drives the enable
        # of mx; the first element of a row always updates it. (a >= b as the sign of a - b.)
        x2 = Signal(signed(W), reset_less=True)
        xv2, upd2, end2, hl2 = Signal(), Signal(), Signal(), Signal()
        mx = Signal(signed(W), reset_less=True)
        ge_x2, ge_mx = Signal(name="ge_x2"), Signal(name="ge_mx")
        m.d.comb += [ge_x2.eq(~(x_r - x2)[W]), ge_mx.eq(~(x_r - mx)[W])]
        m.d.sync += [x2.eq(x_r), xv2.eq(xv), end2.eq(end1), hl2.eq(hl1),
                     upd2.eq(first1 | Mux(xv2 & upd2, ge_x2, ge_mx))]
        take_x2 = Signal()
        m.d.comb += take_x2.eq(xv2 & upd2)
        with m.If(take_x2):
            m.d.sync += mx.eq(x2)
        for h in range(2):
            with m.If(end2 & (hl2 == h)):
                m.d.sync += d_mx[h].eq(Mux(take_x2, x2, mx))

        # ---- EXP: one element per cycle from logit half he into exp half he ------------------
        ia = Signal(range(N + 1))       # reads issued
        ia1 = Signal(range(N + 2), init=1)  # ia + 1
        ia_more = Signal()
        nm1_e = Signal(range(N), reset_less=True)
        mx_e = Signal(signed(W), reset_less=True)
        e_nx_ok = Signal()              # registered: the next row is loaded, its exp half free
        ptr_ok = Signal()               # registered: OUT has read what EXP would overwrite
        e_last = Signal()               # registered: ia == nm1_e (the next read is the last)
        e_go, exp_issue = Signal(), Signal()
        m.d.comb += [e_go.eq(~ia_more & e_nx_ok),
                     exp_issue.eq(ia_more & ptr_ok), lclr.eq(exp_issue & e_last)]
        m.d.sync += e_nx_ok.eq(Mux(he, lvalid[0], lvalid[1]) & ~Mux(he, xh[0], xh[1]))
        m.d.comb += [xram.b.addr.eq(Cat(ia[:AW], he)), xram.b.en.eq(exp_issue)]
        with m.If(exp_issue):
            m.d.sync += [ia.eq(ia + 1), ia1.eq(ia1 + 1), ia_more.eq(~e_last),
                         e_last.eq(ia1 == nm1_e)]
        with m.If(lclr):                # every logit of the half read: LOAD may reuse it
            for h in range(2):
                with m.If(he == h):
                    m.d.sync += lbusy[h].eq(0)
        with m.If(e_go):
            m.d.sync += [he.eq(~he), ia.eq(0), ia1.eq(1), ia_more.eq(1),
                         nm1_e.eq(Mux(he, d_nm1[0], d_nm1[1])),
                         e_last.eq(Mux(he, d_nm1[0], d_nm1[1]) == 0)]
            for h in range(2):
                with m.If(he != h):
                    m.d.sync += [lvalid[h].eq(0), xh[h].eq(1), xn[h].eq(d_nm1[h])]

        # The row's maximum is taken one cycle after the start (it may become final only
        # then: EXP can start two cycles after the row's last logit was accepted) and reaches
        # stage 3 with the row's first element.
        e_go1 = Signal()
        m.d.sync += e_go1.eq(e_go)
        with m.If(e_go1):
            m.d.sync += mx_e.eq(Mux(he, d_mx[1], d_mx[0]))

        # The pipeline (issue -> write-back), never stalls; the row's maximum and last flag
        # travel with the data.
        v_rd = delay(m, exp_issue, READ_LATENCY + 1, name="exp_v", reset=True)
        mx3 = delay(m, mx_e, READ_LATENCY, name="exp_mx")
        x3 = Signal(signed(W), reset_less=True)
        m.d.sync += x3.eq(xram.b.rdata.as_signed())
        d4 = Signal(unsigned(W), reset_less=True)
        m.d.sync += d4.eq(mx3 - x3)
        v4 = delay(m, v_rd, 1, name="exp_v4", reset=True)
        m.d.comb += [mul_exp.a.eq(d4), mul_exp.b.eq(LOG2E_FIX)]
        v7 = delay(m, v4, MUL18_LATENCY, name="exp_v7", reset=True)
        t8 = Signal(36 - sh_t, reset_less=True)
        m.d.sync += t8.eq((mul_exp.p.as_unsigned() + (1 << (sh_t - 1))) >> sh_t)
        v8 = delay(m, v7, 1, name="exp_v8", reset=True)
        q9 = Signal(range(Q_ZERO + 1), reset_less=True)
        m.d.sync += q9.eq(Mux(t8[8:] >= Q_ZERO, Q_ZERO, t8[8:]))
        m.d.comb += [rom.b.addr.eq(t8[:8]), rom.b.en.eq(v8)]
        q11 = delay(m, q9, READ_LATENCY - 1, name="exp_q")
        v11 = delay(m, v8, READ_LATENCY + 1, name="exp_v11", reset=True)
        # 2**-q * table in two registered steps: by 4 * q[2:] as the table word arrives, then
        # by q[:2] (the rounding bit kept below the table's LSB)
        tab12 = Signal(18, reset_less=True)
        q12 = Signal.like(q9, reset_less=True)
        m.d.sync += [tab12.eq(Cat(0, rom.b.rdata) >> Cat(Const(0, 2), q11[2:])), q12.eq(q11)]
        v12 = delay(m, v11, 1, name="exp_v12", reset=True)
        sh13 = Signal(18, reset_less=True)
        m.d.sync += sh13.eq(tab12 >> q12[:2])
        v13 = delay(m, v12, 1, name="exp_v13", reset=True)
        e14 = Signal(17, reset_less=True)
        m.d.sync += e14.eq((sh13 + 1) >> 1)
        l13 = delay(m, e_last, 13, name="exp_last")     # with v13: e14 is the row's last
        # write-back into the exp half (rows arrive in order: a counter and a half bit)
        wcnt = Signal(AW)
        wh = Signal()
        acc = Signal(SW)                # sum of the row's exponentials so far
        esum = Signal(SW)
        arr = Signal()                  # the row's sum is complete (esum)
        m.d.comb += [eram.a.addr.eq(Cat(wcnt, wh)), eram.a.wdata.eq(e14),
                     eram.a.en.eq(v13), eram.a.we.eq(1),
                     esum.eq(acc + e14), arr.eq(v13 & l13)]
        with m.If(v13):
            m.d.sync += [wcnt.eq(wcnt + 1), acc.eq(esum)]
            with m.If(l13):
                m.d.sync += [wcnt.eq(0), wh.eq(~wh), acc.eq(0)]

        # ---- NORM + DIV: one row at a time, beside EXP and OUT of other rows ----------------
        # The sum waits in s_hold until the unit is idle (at most one does: only two rows hold
        # exp halves before OUT takes them).
        n_idle = Signal(init=1)
        st_norm, st_div, n_done = Signal(name="st_norm"), Signal(name="st_div"), Signal(name="n_done")
        div_end = Signal()                  # registered: DIV's last cycle
        s_hold = Signal(SW, reset_less=True)
        sh_valid = Signal()
        s = Signal(SW, reset_less=True)      # the sum being normalised (NORM, DIV)
        norm_cnt = Signal(range(SW + 1))    # right shifts applied to the sum
        norm_more = Signal()                # s[17:] != 0
        rem = Signal(signed(20), reset_less=True)   # DIV's partial remainder P
        dp = Signal(signed(20), reset_less=True)    # D + 1
        dn = Signal(signed(20), reset_less=True)    # 1 - D
        recip = Signal(17, reset_less=True)
        div_i = Signal(range(17))
        take = Signal()
        m.d.comb += take.eq(n_idle & sh_valid)
        with m.If(take):
            m.d.sync += [s.eq(s_hold), norm_cnt.eq(0), n_idle.eq(0), st_norm.eq(1),
                         sh_valid.eq(0), norm_more.eq(s_hold[17:].any())]
        with m.If(arr):
            m.d.sync += [s_hold.eq(esum), sh_valid.eq(1)]
        # NORM: S >= 2**16 always (the row maximum contributes 2**16): shift right until it
        # has 17 bits; the shift count becomes part of the output shift.
        with m.If(st_norm):
            # DIV's set-up from the (final, at NORM's exit) 17-bit divisor D: its first quotient
            # bit is always 1 (R >= 2**16), leaving 2**17 - 1 - D (= ~D), and the two addends.
            m.d.sync += [rem.eq(Cat(~s[:17], Const(0, 3))), dp.eq(s[:17] + 1),
                         dn.eq(1 - s[:17]), recip.eq(1), div_i.eq(1)]
            with m.If(norm_more):       # (registered: s has more than 17 bits)
                m.d.sync += [s.eq(s >> 1), norm_cnt.eq(norm_cnt + 1),
                             norm_more.eq(s[18:].any())]
            with m.Else():
                m.d.sync += [st_norm.eq(0), st_div.eq(1)]
        # DIV: recip = (2**33 - 1) // D, non-restoring, one quotient bit per cycle:
        # P' = 2 P + 1 - D if P >= 0 else 2 P + 1 + D; the bit is P' >= 0 (the same bits as
        # restoring division). One adder whose operand is picked by a register's sign.
        p_next = Signal(signed(20))
        m.d.comb += p_next.eq((rem << 1) + Mux(rem[-1], dp, dn))
        with m.If(st_div):
            m.d.sync += [rem.eq(p_next), recip.eq(Cat(~p_next[-1], recip)),
                         div_i.eq(div_i + 1), div_end.eq(div_i == 15)]
        with m.If(div_end):
            m.d.sync += [st_div.eq(0), n_done.eq(1)]

        # ---- OUT: one element per cycle from exp half ho into the output FIFO ---------------
        # OUT may start in DIV's last cycle: the reciprocal is sampled one cycle after the
        # start (o_go1), and the multiplier sees it two cycles later, with the row's first
        # element.
        ho = Signal(init=1)             # half of the row issued last; the next is ~ho
        oi = Signal(range(N + 1))
        oi_more = Signal()
        nm1_o = Signal(range(N), reset_less=True)
        recip_o = Signal(17, reset_less=True)
        sh_o = Signal.like(norm_cnt, reset_less=True)
        o_go, o_go1, out_issue = Signal(), Signal(), Signal()
        m.d.comb += [o_go.eq(~oi_more & (n_done | div_end)),
                     out_issue.eq(oi_more & credit.can_issue)]
        m.d.sync += o_go1.eq(o_go)
        with m.If(o_go1):
            m.d.sync += recip_o.eq(recip)
        with m.If(out_issue):
            m.d.sync += [oi.eq(oi + 1), oi_more.eq(oi != nm1_o)]
        with m.If(o_go):
            m.d.sync += [ho.eq(~ho), oi.eq(0), oi_more.eq(1),
                         sh_o.eq(norm_cnt), nm1_o.eq(Mux(ho, xn[0], xn[1])),
                         n_done.eq(0), n_idle.eq(1)]
            for h in range(2):
                with m.If(ho != h):
                    m.d.sync += xh[h].eq(0)
        # EXP may issue element j of a row only once OUT has read element j of the row two
        # before (same half) or finished it (OUT's read of j then precedes EXP's write of j by
        # at least 14 cycles). ptr_ok is that test for EXP's next cycle from this cycle's
        # registers: OUT elsewhere, or OUT more than one element ahead (oi > ia + 1 covers an
        # issue now), or EXP starting a row while OUT has read anything.
        he_n = Signal()
        m.d.comb += he_n.eq(he ^ e_go)
        ptr_free = Signal()
        m.d.comb += ptr_free.eq(~(oi_more & (ho == he_n)) | (e_go & (oi != 0)))
        m.d.sync += ptr_ok.eq(ptr_free | (oi > ia1))

        m.d.comb += [eram.b.addr.eq(Cat(oi[:AW], ho)), eram.b.en.eq(out_issue)]
        o_v = delay(m, out_issue, READ_LATENCY + 1, name="out_v", reset=True)
        o_last = delay(m, oi == nm1_o, READ_LATENCY + 1, name="out_last")
        r3 = delay(m, recip_o, READ_LATENCY, name="out_recip")
        e3 = Signal(17, reset_less=True)
        m.d.sync += e3.eq(eram.b.rdata)
        m.d.comb += [mul_out.a.eq(e3), mul_out.b.eq(r3)]
        o_v = delay(m, o_v, MUL18_LATENCY, name="out_vm", reset=True)
        o_last = delay(m, o_last, MUL18_LATENCY, name="out_lastm")
        sh6 = delay(m, sh_o, READ_LATENCY + 1 + MUL18_LATENCY, name="out_sh")
        sh7 = delay(m, sh6[:2], 1, name="out_sh7")
        # (p + 2**(sh-1)) >> sh == ((p >> (sh-1)) + 1) >> 1, sh = 33 - OB + norm_cnt
        # (the variable shift in two registered steps: by 4 * norm_cnt[2:], then norm_cnt[:2])
        coarse = Signal(36 - (32 - OB), reset_less=True)
        m.d.sync += coarse.eq((mul_out.p.as_unsigned() >> (32 - OB))
                              >> Cat(Const(0, 2), sh6[2:]))
        shifted = Signal(len(coarse), reset_less=True)
        m.d.sync += shifted.eq(coarse >> sh7)
        rounded = Signal(len(shifted), reset_less=True)
        m.d.sync += rounded.eq((shifted + 1) >> 1)
        sat = Signal(OB, reset_less=True)
        m.d.sync += sat.eq(Mux(rounded[OB:].any(), (1 << OB) - 1, rounded[:OB]))
        o_v = delay(m, o_v, 4, name="out_vs", reset=True)
        o_last = delay(m, o_last, 4, name="out_lasts")
        m.d.comb += [credit.w_en.eq(o_v), credit.w_data.eq(Cat(sat, o_last)),
                     self.o.valid.eq(credit.r_valid), self.o.payload.eq(credit.r_data),
                     credit.r_ready.eq(self.o.ready), credit.issue.eq(out_issue)]
        return m


def bench_configs():
    """The instance ``hdlgen bench blocks`` measures: the engine's attention softmax."""
    from hdlgen.bench.registry import BlockBench
    params = {"max_len": 512, "in_width": 16, "in_frac": 8, "out_bits": 15}

    def error():
        err = softmax_error(**params)
        return {"metric": "max_abs", "value": err["max_abs"], "bound": 0.012,
                "row_sum": err["row_sum"], "row_sum_bound": 0.02}

    return [BlockBench(name="softmax", params=params, build=lambda: Softmax(**params),
                       error=error)]
