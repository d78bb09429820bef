"""Softmax over a row of integer logits, integer-only, bit-exact with
:func:`sim.golden.softmax.softmax_golden` (the integer definition is in that module).

A row is one packet on ``i`` (``last`` on its final element; the packet length is the causal
length, 1..``max_len``); the probabilities of the row leave on ``o`` in the same order, the
final one with ``last``. Rows are processed one after another in four phases:

``LOAD``  one logit per cycle into the row buffer, running maximum.
``EXP``   one element per cycle: ``d = max - x``, ``t = d * log2(e)`` on a DSP, ``2**-t`` from
          a 256-entry table in block RAM and a shift; ``e`` overwrites ``x`` in the buffer and
          is summed. Fixed-latency pipeline, no stall.
``NORM``  the sum is normalised to 17 bits (one bit per cycle) and its reciprocal is computed
          by restoring division (17 cycles).
``OUT``   one element per cycle: ``p = (e * R + round) >> shift`` on a second DSP, saturated,
          into an output FIFO; reads are issued only while the FIFO has credit, so output
          back-pressure never stalls the pipeline.

A row of ``n`` elements takes about ``3 n + 50`` cycles. Packets longer than ``max_len`` are
consumed completely but only their first ``max_len`` elements are used (and output).

Control is a set of one-hot phase flags with registered conditions; the running maximum
is computed in two stages so no compare drives a wide enable.

Resources: 2 MULT18X18D, 2 DP16KD (row buffer up to 1024 x 18 bits, exp table). Measured
out of context on the LFE5U-85F (speed 6), max_len 512: 168 MHz (nextpnr seed 1; 181 MHz
with seed 2), 758 LUT4, 533 FF.
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

        m.submodules.ram = ram = BlockRAM(width=max(W, 17), depth=N, ports=("w", "r"))
        m.submodules.rom = rom = BlockRAM(width=17, depth=256, ports=("w", "r"), init=EXP2_TABLE)
        m.submodules.mul_exp = mul_exp = Mul18("mul_exp")
        m.submodules.mul_out = mul_out = Mul18("mul_out")
        out_latency = READ_LATENCY + 1 + MUL18_LATENCY + 4
        m.submodules.credit = credit = CreditFIFO(OB + 1, out_latency)

        cnt = Signal(range(N + 1))          # LOAD: elements stored
        n = Signal(range(N + 1))            # row length
        n_m1 = Signal(range(N))             # row length - 1
        mx = Signal(signed(W), init=-(1 << (W - 1)))
        ia = Signal(range(N + 1))           # EXP: reads issued
        wcnt = Signal(range(N + 1))         # EXP: results written
        acc = Signal(SW)                    # sum of exponentials (accumulator)
        s = Signal(SW)                      # the sum being normalised (NORM, DIV)
        norm_cnt = Signal(range(SW + 1))    # right shifts applied to the sum
        exp_done = Signal()                 # registered: every e of the row written
        rem = Signal(18)
        recip = Signal(17)
        div_i = Signal(range(18))

        # ---- EXP pipeline (issue -> write-back), never stalls --------------------------------
        exp_issue = Signal()
        v_rd = delay(m, exp_issue, READ_LATENCY + 1, name="exp_v", reset=True)
        x3 = Signal(signed(W), reset_less=True)
        m.d.sync += x3.eq(ram.b.rdata[:W].as_signed())
        d4 = Signal(unsigned(W), reset_less=True)
        m.d.sync += d4.eq(mx - x3)
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
        tab12 = Signal(17, reset_less=True)
        q12 = Signal.like(q9, reset_less=True)
        m.d.sync += [tab12.eq(rom.b.rdata), q12.eq(q11)]
        v12 = delay(m, v11, 1, name="exp_v12", reset=True)
        sh13 = Signal(18, reset_less=True)
        m.d.sync += sh13.eq(Cat(0, tab12) >> q12)
        v13 = delay(m, v12, 1, name="exp_v13", reset=True)
        e14 = Signal(17, reset_less=True)
        m.d.sync += e14.eq((sh13 + 1) >> 1)

        # ---- OUT pipeline (issue -> FIFO) ---------------------------------------------------
        out_issue = Signal()
        out_last0 = Signal()
        o_v = delay(m, out_issue, READ_LATENCY + 1, name="out_v", reset=True)
        o_last = delay(m, out_last0, READ_LATENCY + 1, name="out_last")
        e3 = Signal(17, reset_less=True)
        m.d.sync += e3.eq(ram.b.rdata[:17])
        m.d.comb += [mul_out.a.eq(e3), mul_out.b.eq(recip)]
        o_v = delay(m, o_v, MUL18_LATENCY, name="out_vm", reset=True)
        o_last = delay(m, o_last, MUL18_LATENCY, name="out_lastm")
        # (p + 2**(sh-1)) >> sh == ((p >> (sh-1)) + 1) >> 1, sh = 33 - OB + norm_cnt
        # (the variable shift in two registered steps: by 4 * norm_cnt[2:], then norm_cnt[:2])
        coarse = Signal(36 - (32 - OB), reset_less=True)
        m.d.sync += coarse.eq((mul_out.p.as_unsigned() >> (32 - OB))
                              >> Cat(Const(0, 2), norm_cnt[2:]))
        shifted = Signal(len(coarse), reset_less=True)
        m.d.sync += shifted.eq(coarse >> norm_cnt[:2])
        rounded = Signal(len(shifted), reset_less=True)
        m.d.sync += rounded.eq((shifted + 1) >> 1)
        sat = Signal(OB, reset_less=True)
        m.d.sync += sat.eq(Mux(rounded[OB:].any(), (1 << OB) - 1, rounded[:OB]))
        o_v = delay(m, o_v, 4, name="out_vs", reset=True)
        o_last = delay(m, o_last, 4, name="out_lasts")
        m.d.comb += [credit.w_en.eq(o_v), credit.w_data.eq(Cat(sat, o_last)),
                     self.o.valid.eq(credit.r_valid), self.o.payload.eq(credit.r_data),
                     credit.r_ready.eq(self.o.ready), credit.issue.eq(out_issue)]

        # ---- control: one-hot phase flags, registered conditions ---------------------------
        # Every enable below is a phase flag AND at most one registered condition, so no
        # control net goes through more than two LUT levels before fanning out.
        st_load = Signal(init=1)
        st_exp, st_norm, st_div, st_out = (
            Signal(name=f"st_{n}") for n in ("exp", "norm", "div", "out"))
        room = Signal(init=1)               # cnt < N
        ia_more = Signal()                  # EXP: ia < n
        oi_more = Signal()                  # OUT: oi < n
        oi = Signal(range(N + 1))
        x_r = Signal(signed(W), reset_less=True)
        wa = Signal(range(N), reset_less=True)
        xv = Signal()                       # x_r is to be stored
        exp_go = Signal()                   # EXP, not its first cycle

        x = self.i.payload.data
        xfer = Signal()
        # got_last: the row's last logit was accepted in the previous cycle. The phase change
        # happens then, from this flip-flop (not from the input's valid/last, which would
        # fan out to every register the change initialises); ready drops at once.
        got_last = Signal()
        ready = Signal()
        m.d.comb += [ready.eq(st_load & ~got_last), self.i.ready.eq(ready),
                     xfer.eq(self.i.valid & ready)]
        m.d.sync += got_last.eq(xfer & self.i.payload.last)
        # Port a writes logits in LOAD and exponentials in EXP; port b reads in EXP and OUT.
        m.d.comb += [
            ram.a.addr.eq(Mux(xv, wa, wcnt)),
            ram.a.wdata.eq(Mux(xv, x_r.as_unsigned(), e14)),
            ram.a.en.eq(xv | v13), ram.a.we.eq(1),
            exp_issue.eq(st_exp & exp_go & ia_more),
            out_issue.eq(st_out & oi_more & credit.can_issue),
            ram.b.addr.eq(Mux(st_exp, ia, oi)), ram.b.en.eq(exp_issue | out_issue),
            out_last0.eq(oi == n_m1),
        ]

        # LOAD: the accepted logit is registered (x_r) before it is stored and compared.
        m.d.sync += [xv.eq(xfer & room), exp_go.eq(st_exp)]
        with m.If(xfer):
            m.d.sync += [x_r.eq(x), wa.eq(cnt)]
        # Running maximum in two stages so that no compare drives the enable of mx: stage 1
        # decides (against the element still in stage 2 if that one is a new maximum),
        # stage 2 updates.
        x2 = Signal(signed(W), reset_less=True)
        xv2 = Signal()
        upd2 = Signal()
        # mx starts each row at the most negative value (set when the previous row ends), so
        # the first element always updates it.
        # (a >= b as the sign of a - b: one clean carry chain each)
        ge_x2, ge_mx = Signal(name="ge_x2"), Signal(name="ge_mx")
        m.d.comb += [ge_x2.eq(~(x_r - x2)[W]), ge_mx.eq(~(x_r - mx)[W])]
        m.d.sync += [x2.eq(x_r), xv2.eq(xv), upd2.eq(Mux(xv2 & upd2, ge_x2, ge_mx))]
        with m.If(xv2 & upd2):
            m.d.sync += mx.eq(x2)
        with m.If(xfer & room):
            m.d.sync += [cnt.eq(cnt + 1), room.eq(cnt != N - 1)]
        with m.If(got_last):
            m.d.sync += [n.eq(cnt), n_m1.eq(cnt - 1), cnt.eq(0), room.eq(1),
                         ia.eq(0), ia_more.eq(1), wcnt.eq(0), acc.eq(0), exp_done.eq(0),
                         st_load.eq(0), st_exp.eq(1)]
        # EXP
        with m.If(exp_issue):
            m.d.sync += [ia.eq(ia + 1), ia_more.eq(ia != n_m1)]
        with m.If(v13):
            m.d.sync += [wcnt.eq(wcnt + 1), acc.eq(acc + e14)]
        with m.If(st_exp):
            m.d.sync += exp_done.eq((wcnt == n) & ~v13)
        with m.If(exp_done):                # (only ever set during EXP)
            m.d.sync += [st_exp.eq(0), st_norm.eq(1), norm_cnt.eq(0), exp_done.eq(0), s.eq(acc)]
        # NORM: S >= 2**16 always (the row maximum contributes 2**16): shift right until
        # it has 17 bits; the shift count becomes part of the output shift.
        with m.If(st_norm):
            # (recip needs no clearing: the division shifts in all its 17 bits)
            m.d.sync += [rem.eq((1 << 16) - 1), div_i.eq(0)]
            with m.If(s[17:].any()):
                m.d.sync += [s.eq(s >> 1), norm_cnt.eq(norm_cnt + 1)]
            with m.Else():
                m.d.sync += [st_norm.eq(0), st_div.eq(1)]
        # DIV: recip = (2**33 - 1) // S, restoring, one quotient bit per cycle.
        trial = Signal(19)
        m.d.comb += trial.eq(Cat(1, rem))
        with m.If(st_div):
            with m.If(trial >= s[:17]):
                m.d.sync += [rem.eq(trial - s[:17]), recip.eq(Cat(1, recip))]
            with m.Else():
                m.d.sync += [rem.eq(trial), recip.eq(Cat(0, recip))]
            m.d.sync += div_i.eq(div_i + 1)
            with m.If(div_i == 16):
                m.d.sync += [st_div.eq(0), st_out.eq(1), oi.eq(0), oi_more.eq(1)]
        # OUT
        with m.If(out_issue):
            m.d.sync += [oi.eq(oi + 1), oi_more.eq(oi != n_m1)]
        with m.If(st_out & ~oi_more):
            m.d.sync += [st_out.eq(0), st_load.eq(1), mx.eq(-(1 << (W - 1)))]
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
