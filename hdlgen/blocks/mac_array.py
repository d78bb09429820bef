"""int8 multiply-accumulate array: ``lanes`` dot products of int8 x int8 -> int32 at a time.

Datapath
--------
Every beat on ``i`` carries one *shared* slice of ``macs_per_lane`` int8 values, which all
lanes see, and one *per-lane* slice of ``macs_per_lane`` int8 values for each lane. Lane ``l``
multiplies its slice element by element with the shared slice (one product per
``MULT18X18D``, ``lanes * macs_per_lane`` DSPs), sums the products in a pipelined adder tree
and accumulates the sum. ``first`` starts a new dot product (the accumulator restarts from
the beat's sum), ``last`` ends it: one beat of ``lanes`` signed ``acc_width``-bit results
then appears on ``o``. A beat can be both ``first`` and ``last`` (a dot product of one beat).
Dot products of ``n`` elements take ``ceil(n / macs_per_lane)`` beats; the caller pads the
last beat with zeros.

Two uses of the one datapath (multiplication commutes, so only the feeding differs):

* **Matrix-vector (decode)**: ``y = W @ x``. The activation slice ``x[j:j+K]`` is the shared
  operand; lane ``l`` gets ``W[r+l, j:j+K]`` (its own weight row). One pass of
  ``ceil(d / K)`` beats gives ``lanes`` outputs ``y[r:r+lanes]``.
* **Matrix-matrix tile (prefill)**: ``Y = X @ W.T`` for ``lanes`` tokens at once. The weight
  slice ``W[n, j:j+K]`` is the shared operand (broadcast: one weight read serves ``lanes``
  tokens) and lane ``l`` gets ``X[t+l, j:j+K]`` (its token's activations). One pass gives
  the column ``Y[t:t+lanes, n]``; the next pass, with no gap, streams weight row ``n+1``
  against the same activation tile. Weights are read once per ``lanes`` tokens, which is
  where prefill gains over decode.

Arithmetic: exact int8 x int8 products; sums wrap modulo ``2**acc_width`` (two's
complement). The constructor checks that ``acc_width`` holds any dot product of up to
``max_dot_length`` elements, so within that length no wrap can occur.
:mod:`sim.golden.mac_array` is the bit-exact model.

Pipeline and flow control
-------------------------
Nothing in the datapath has a clock enable or a stall: data registers load every cycle and
``valid``/``first``/``last`` bits travel in a shift register beside the data (replicated
per lane near the accumulators so that no control net crosses the die). The stages, counted
in cycles after the one in which a beat is transferred on ``i``::

    1 .. F         fabric input register, then the fanout tree that copies the shared
                   slice to every lane, 4 loads per register (F = 1 + ceil(log4(lanes)))
    F+1 .. F+D     MULT18X18D input and output registers (D = 2, or 3 with dsp_pipeline)
    .. G           fabric registers after each DSP (R = post_dsp_registers, G = F+D+R):
                   the first sits next to the DSP, the next ones carry the product across
                   the DSP row to the lane's adder tree
    .. G+T         adder tree, one register per level (T = ceil(log2(macs_per_lane)))
    G+T+1          accumulator, then X = result_registers registers (default 0)
    G+T+X+2        result in the lane's FIFO (``lane_latency``), pop decided
    + P            the pop reaches the lanes (P = 1 + ceil(log4(lanes)) register stages)
    + 1            the lane's FIFO head in its read register
    + Y            Y = transport_registers registers (default 2) to the output FIFO
    + 1            written into the output FIFO, ``o.valid`` (``latency``)

Backpressure on ``o`` never stalls the pipeline, and ``o.ready`` never reaches the lanes.
Two FIFOs hold the results:

* **Lane FIFOs** (distributed RAM beside each lane's adder tree, ``fifo_depth`` results)
  have room for every result in flight: ``i.ready`` comes from a flip-flop fed by registers
  only and is high while there are *credits*; a credit is taken when a ``last`` beat is
  accepted and given back when its result is popped from the lane FIFOs. With
  ``fifo_depth`` at least the credit round trip (:attr:`MACArray.credit_loop`), back-to-back
  dot products of any length, including one beat each, flow at one beat per cycle while
  ``o`` is ready.
* **The output FIFO** (distributed RAM, ``out_depth`` entries of all lanes' results, in one
  spot) is what ``o`` reads. A central controller *pops* one result from every lane when the
  lane FIFOs hold one and the output FIFO has an entry not yet promised (its own credits,
  counted from registers: an entry comes back the cycle after the read pointer moves). The
  pop travels to the lanes down a tree of register copies, each lane registers its FIFO head,
  and the results travel through the transport registers beside a delayed copy of the pop
  that writes them. ``o.ready`` is only the clock enable of the output FIFO's read-pointer
  copies (one per slice of ``_OUT_GROUP`` lanes, plus one for ``o.valid``): no logic on it,
  and no net from it longer than the compact output FIFO. ``o.valid`` compares the write and
  read pointers (registers). With ``out_depth`` above the pop round trip
  (:attr:`MACArray.out_credit_loop`) results leave at one per cycle.
"""

from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.dsp import DSPMultiplier, keep_register
from hdlgen.blocks.ecp5 import mac_floorplan
from hdlgen.bench.registry import BlockBench

__all__ = ["MACArray", "required_acc_width", "bench_configs"]

#: Operand width (int8).
OPERAND_WIDTH = 8
#: Most loads one register of the shared-operand fanout tree drives (besides the last level).
_FANOUT = 4
#: Lanes per slice of the central output FIFO (each slice has its own pointer copies).
_OUT_GROUP = 4


def required_acc_width(max_dot_length: int, operand_width: int = OPERAND_WIDTH) -> int:
    """Bits a signed accumulator needs for any dot product of ``max_dot_length`` elements of
    signed ``operand_width``-bit operands (the extreme is ``(-2**(w-1))**2 * n``)."""
    return 2 * operand_width + (max_dot_length - 1).bit_length()


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


class _Lane(Elaboratable):
    """One lane: ``K`` DSP multipliers, fabric product registers, adder tree, accumulator
    and the lane's result FIFO, with its own copies of the control bits.

    The FIFO is written when the accumulator holds a finished dot product and read when this
    lane's copy of the central ``pop`` bit arrives; the head read then is registered in
    ``result`` (one cycle later, no enable). Nothing in the lane sees ``o.ready``."""

    def __init__(self, index, K, acc_width, fifo_depth, dsp_pipeline, post_dsp_registers,
                 result_registers, dsp_sites=None):
        self.index, self.K, self.acc_width = index, K, acc_width
        self.dsp_sites = dsp_sites
        self.fifo_depth, self.dsp_pipeline = fifo_depth, dsp_pipeline
        self.post_dsp_registers = post_dsp_registers
        self.result_registers = result_registers
        self.shared = Signal(data.ArrayLayout(signed(OPERAND_WIDTH), K))   # stage F-1, this lane's copy
        self.operand = Signal(data.ArrayLayout(signed(OPERAND_WIDTH), K))  # stage F-1
        self.ctrl_in = Signal(3)     # (valid, first, last) one stage before the lane copies
        self.pop = Signal()          # this lane's copy of the central pop (a register)
        self.result = Signal(signed(acc_width), reset_less=True)  # FIFO head, the cycle after ``pop``

    def elaborate(self, platform):
        m = Module()
        K, i = self.K, self.index
        # Multipliers and the fabric register after each DSP.
        level = []
        for k in range(K):
            mul = m.submodules[f"mul{k}"] = DSPMultiplier(
                OPERAND_WIDTH, OPERAND_WIDTH, pipeline=self.dsp_pipeline,
                bel=self.dsp_sites[k] if self.dsp_sites else None)
            m.d.comb += [mul.a.eq(self.shared[k]), mul.b.eq(self.operand[k])]
            prod = mul.p
            for r in range(self.post_dsp_registers):
                nxt = Signal(signed(2 * OPERAND_WIDTH), name=f"prod{k}_r{r}", reset_less=True)
                m.d.sync += nxt.eq(prod)
                prod = nxt
            level.append(prod)
        # Adder tree, a register per level.
        depth = 0
        while len(level) > 1:
            depth += 1
            nxt = []
            for j in range(0, len(level), 2):
                pair = level[j:j + 2]
                width = max(len(v) for v in pair) + (len(pair) == 2)
                s = Signal(signed(width), name=f"sum{depth}_{j // 2}", reset_less=True)
                m.d.sync += s.eq(pair[0] + pair[1] if len(pair) == 2 else pair[0])
                nxt.append(s)
            level = nxt
        tree = level[0]
        # This lane's control copy, aligned with ``tree``.
        ctrl = keep_register(m, platform, Signal(3, name=f"ctrl_l{i}"), self.ctrl_in)
        valid, first, last = ctrl[0], ctrl[1], ctrl[2]
        acc = Signal(signed(self.acc_width), name="acc", reset_less=True)
        with m.If(valid):
            m.d.sync += acc.eq(Mux(first, 0, acc) + tree)
        done = keep_register(m, platform, Signal(name=f"done_l{i}"), valid & last)
        # Result registers (no enable) between the accumulator and the FIFO.
        result = acc
        for r in range(self.result_registers):
            nxt = Signal(signed(self.acc_width), name=f"result_r{r}", reset_less=True)
            m.d.sync += nxt.eq(result)
            result = nxt
            done = keep_register(m, platform, Signal(name=f"done_r{r}_l{i}"), done)
        # Result FIFO: written the cycle after the accumulator holds the result, read on
        # ``pop``; both pointers are local registers.
        ptr_shape = unsigned((self.fifo_depth - 1).bit_length())
        mem = m.submodules.fifo = Memory(shape=signed(self.acc_width), depth=self.fifo_depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port(domain="comb")
        wr_ptr = Signal(ptr_shape, name=f"wr_ptr_l{i}")
        rd_ptr = Signal(ptr_shape, name=f"rd_ptr_l{i}")
        keep_register(m, platform, wr_ptr, wr_ptr + done)
        keep_register(m, platform, rd_ptr, rd_ptr + self.pop)
        m.d.comb += [wp.addr.eq(wr_ptr), wp.data.eq(result), wp.en.eq(done),
                     rp.addr.eq(rd_ptr)]
        m.d.sync += self.result.eq(rp.data)
        return m


class MACArray(wiring.Component):
    """``lanes`` int8 dot products at a time, ``macs_per_lane`` products per lane per cycle.

    See the module documentation for the datapath, the decode and prefill uses, the pipeline
    and the flow control.

    Parameters
    ----------
    lanes : int
        Dot products computed in parallel (``AcceleratorConfig.lanes``).
    macs_per_lane : int
        Elements per beat (``AcceleratorConfig.macs_per_lane``).
    acc_width : int
        Accumulator and result width, bits (``AcceleratorConfig.acc_width``).
    max_dot_length : int
        Longest dot product, elements, that must not overflow the accumulator
        (``AcceleratorConfig.max_dot_length``).
    post_dsp_registers : int
        Fabric registers between each DSP output and the adder tree (at least 1). The DSPs
        of a lane end up spread along the DSP rows (128 of the 85F's 156 DSPs are used), so
        a product may travel half the die to its adder tree; with several registers the
        placer splits that route (measured on the 85F, 16 x 8, seed 1: one register
        135 MHz and two 146 MHz, both limited by a DSP-to-register route; three 156 MHz).
    dsp_pipeline : bool
        Also use the MULT18X18D pipeline register (one more cycle of latency).
    dsp_sites : sequence of sequences of str, or None
        On ECP5, the ``MULT18X18D`` site of each lane's multipliers (``dsp_sites[lane][k]``,
        nextpnr BEL names; :func:`hdlgen.blocks.ecp5.mac_floorplan`): a lane's DSPs side by
        side instead of wherever the placer finds room. ``None``: the placer chooses, unless
        ``floorplan`` is set.
    floorplan : bool
        When ``dsp_sites`` is ``None``, take the sites from
        :func:`hdlgen.blocks.ecp5.mac_floorplan` for the platform the array is elaborated for
        (no constraints when it has no plan for that platform or shape). For an array built
        alone (the out-of-context bench); a design that also places weight RAMs passes
        ``dsp_sites`` from the same plan instead. Default ``False``.
    result_registers : int
        Registers (no enable) between each lane's accumulator and its result FIFO, each one
        more cycle of latency (default 0).
    transport_registers : int
        Registers (no enable) carrying each lane's popped result to the central output FIFO,
        after the lane's own read register (default 2). They let the output FIFO sit in one
        compact spot away from the lanes' DSPs, which are spread over the die.

    Attributes
    ----------
    i : In(stream.Signature(StructLayout))
        Beats: ``first``, ``last`` (1 bit each), ``shared`` (``macs_per_lane`` x int8) and
        ``per_lane`` (``lanes`` x ``macs_per_lane`` x int8), packed LSB-first in this order.
    o : Out(stream.Signature(ArrayLayout(signed(acc_width), lanes)))
        One beat per finished dot product; element ``l`` is lane ``l``'s result.

    Raises
    ------
    ValueError
        When a parameter is not a positive integer (a non-negative one for the register
        counts) or ``acc_width`` is too narrow for ``max_dot_length``.
    """

    def __init__(self, lanes: int = 16, macs_per_lane: int = 8, acc_width: int = 32,
                 max_dot_length: int = 4096, *, post_dsp_registers: int = 3,
                 dsp_pipeline: bool = False, result_registers: int = 0,
                 transport_registers: int = 2, dsp_sites=None, floorplan: bool = False):
        for name, value in (("lanes", lanes), ("macs_per_lane", macs_per_lane),
                            ("acc_width", acc_width), ("max_dot_length", max_dot_length)):
            _check_positive_int(name, value)
        need = required_acc_width(max_dot_length)
        if acc_width < need:
            raise ValueError(
                f"acc_width={acc_width} is too narrow for max_dot_length={max_dot_length}: "
                f"int8 x int8 dot products of that length need {need} bits; raise acc_width "
                f"to at least {need} or lower max_dot_length")
        self._lanes, self._macs_per_lane = lanes, macs_per_lane
        self._acc_width, self._max_dot_length = acc_width, max_dot_length
        self._dsp_pipeline = bool(dsp_pipeline)
        _check_positive_int("post_dsp_registers", post_dsp_registers)
        self._post_dsp_registers = post_dsp_registers
        for name, value in (("result_registers", result_registers),
                            ("transport_registers", transport_registers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative integer")
        self._result_registers = result_registers
        if dsp_sites is not None:
            dsp_sites = tuple(tuple(lane) for lane in dsp_sites)
            if len(dsp_sites) != lanes or any(len(lane) != macs_per_lane for lane in dsp_sites):
                self._MustUse__silence = True   # a refused array is not an unused one
                raise ValueError(f"dsp_sites must name {macs_per_lane} MULT18X18D sites for each "
                                 f"of the {lanes} lanes")
        self._dsp_sites = dsp_sites
        self._floorplan = bool(floorplan)
        self._transport_registers = transport_registers
        self._tree_levels = (macs_per_lane - 1).bit_length()
        self._fifo_depth = max(16, 1 << (self.credit_loop - 1).bit_length())
        # The output FIFO keeps one entry unused, so that equal pointers mean empty.
        self._out_depth = max(16, 1 << self.out_credit_loop.bit_length())
        operand = signed(OPERAND_WIDTH)
        self._in_layout = data.StructLayout({
            "first": unsigned(1),
            "last": unsigned(1),
            "shared": data.ArrayLayout(operand, macs_per_lane),
            "per_lane": data.ArrayLayout(data.ArrayLayout(operand, macs_per_lane), lanes),
        })
        self._out_layout = data.ArrayLayout(signed(acc_width), lanes)
        super().__init__({
            "i": In(stream.Signature(self._in_layout)),
            "o": Out(stream.Signature(self._out_layout)),
        })

    @classmethod
    def from_config(cls, config) -> "MACArray":
        """The array an :class:`hdlgen.config.AcceleratorConfig` describes."""
        return cls(config.lanes, config.macs_per_lane, config.acc_width, config.max_dot_length)

    lanes = property(lambda self: self._lanes)
    macs_per_lane = property(lambda self: self._macs_per_lane)
    acc_width = property(lambda self: self._acc_width)
    max_dot_length = property(lambda self: self._max_dot_length)
    result_registers = property(lambda self: self._result_registers)
    floorplan = property(lambda self: self._floorplan)
    transport_registers = property(lambda self: self._transport_registers)
    fifo_depth = property(lambda self: self._fifo_depth,
                          doc="Results each lane's FIFO holds (= credits of ``i``).")
    out_depth = property(lambda self: self._out_depth,
                         doc="Entries of the central output FIFO (one is kept unused).")
    in_layout = property(lambda self: self._in_layout)
    out_layout = property(lambda self: self._out_layout)

    @property
    def dsp_latency(self) -> int:
        return 3 if self._dsp_pipeline else 2

    @property
    def lane_latency(self) -> int:
        """Cycles from the one in which a ``last`` beat is transferred on ``i`` to the one in
        which its result is in the lanes' FIFOs (and counted for the pop decision)."""
        return (self.fanout_stages + self.dsp_latency + self._post_dsp_registers
                + self._tree_levels + self._result_registers + 2)

    @property
    def pop_stages(self) -> int:
        """Registers from the central pop decision to the lanes (root plus fanout levels)."""
        return 1 + _fanout_levels(self._lanes)

    @property
    def latency(self) -> int:
        """Cycles from the one in which a ``last`` beat is transferred on ``i`` to the one in
        which its result is valid on ``o`` (when the FIFOs are empty): ``lane_latency``, the
        pop stages, the lane's read register, the transport registers and the output FIFO's
        write."""
        return self.lane_latency + self.pop_stages + 1 + self._transport_registers + 1

    @property
    def fanout_stages(self) -> int:
        """Register stages from ``i`` to the DSP inputs (input register plus the levels of
        the fanout tree of the shared slice)."""
        return 1 + _fanout_levels(self._lanes)

    @property
    def credit_loop(self) -> int:
        """Cycles a credit of ``i`` is away when ``o`` is always ready, plus the reserve
        ``ready`` keeps: from the transfer of a ``last`` beat, ``lane_latency`` to the pop
        that gives the credit back, one to register it, one to count it, one for ``ready``
        to see it; plus the cycle before a taken credit is counted and the one credit
        ``ready`` keeps in reserve. Lane FIFOs at least this deep take a beat every cycle."""
        return self.lane_latency + 5

    @property
    def out_credit_loop(self) -> int:
        """Cycles an output FIFO entry is promised away when ``o`` is always ready: from the
        pop, the pop stages, the lane's read register, the transport registers, the FIFO
        write, the read on ``o``, and one cycle to count the read. The output FIFO has more
        entries than this, so pops (and results) can follow each other every cycle."""
        return self.pop_stages + 1 + self._transport_registers + 1 + 1 + 1

    def elaborate(self, platform):
        m = Module()
        L, K = self._lanes, self._macs_per_lane
        depth = self._fifo_depth
        sites = self._dsp_sites
        if sites is None and self._floorplan:
            plan = mac_floorplan(platform, L, K)
            sites = plan[0] if plan is not None else None

        # Credits of ``i``: free lane-FIFO entries not yet promised to a dot product in
        # flight. ``i.ready`` is a flip-flop computed from registers only (no path from the
        # input port to it): a credit is taken one cycle after the ``last`` beat is accepted
        # (from the stage-0 control register ``ctrl0``), and ``ready`` stays high only while
        # at least two credits are left besides that pending one, so that whatever is
        # accepted in the current cycle is covered too. A credit comes back (registered in
        # ``ret``) when the result is popped from the lanes' FIFOs. All of this only delays,
        # never over-commits.
        credits = Signal(range(depth + 1), init=depth)
        ready = Signal(init=1)
        ret = Signal()
        pop = Signal()
        accept = self.i.valid & ready
        ctrl = Signal(3, name="ctrl0")      # (valid, first, last) of stage 0
        m.d.sync += ctrl.eq(Cat(accept, self.i.payload.first, self.i.payload.last))
        pending = ctrl[0] & ctrl[2]
        m.d.sync += [
            ret.eq(pop),
            credits.eq(credits - pending + ret),
            ready.eq((credits >= 3) | ((credits >= 2) & ~pending)),
        ]
        m.d.comb += self.i.ready.eq(ready)

        # Stage 0: input register; data load every cycle, ``valid`` marks transferred beats.
        # The shared slice then fans out through a tree of register copies (each copy drives
        # at most ``_FANOUT`` others, the last level one lane); the per-lane slices are
        # delayed by as many registers.
        F = self.fanout_stages
        shared_leaves = _fanout_tree(m, platform, self.i.payload.shared.as_value(), L, "shared")
        per_lane = self.i.payload.per_lane
        for stage in range(F):
            nxt = Signal.like(per_lane, name=f"per_lane_s{stage}", reset_less=True)
            m.d.sync += nxt.eq(per_lane)
            per_lane = nxt

        # Shared control chain up to two stages before the adder tree output; then one copy
        # per group of lanes and one per lane (in the lanes).
        # stage of the adder tree output
        tree_stage = F + self.dsp_latency + self._post_dsp_registers - 1 + self._tree_levels
        for stage in range(1, tree_stage - 1):
            nxt = Signal(3, name=f"ctrl{stage}")
            m.d.sync += nxt.eq(ctrl)
            ctrl = nxt
        groups = _isqrt_ceil(L)
        per_group = -(-L // groups)
        group_ctrl = [keep_register(m, platform, Signal(3, name=f"ctrl_g{g}"), ctrl)
                      for g in range(-(-L // per_group))]

        # Shared copy of the control: ``done`` is high in the cycle the lanes write a result
        # into their FIFOs.
        done = Signal(name="done")
        chain = ctrl
        for stage in range(tree_stage - 1, tree_stage + 1 + self._result_registers):
            nxt = Signal(3, name=f"ctrl_s{stage}")
            m.d.sync += nxt.eq(chain)
            chain = nxt
        m.d.sync += done.eq(chain[0] & chain[2])

        # Pop: move one result from every lane's FIFO towards the output FIFO, when the lanes
        # hold one (``lane_avail``) and the output FIFO has an entry not yet promised
        # (``out_free``). Both counts are updated from registers only; an output entry is
        # given back one cycle after it is read (``out_ret``: the read pointer moved).
        out_depth = self._out_depth
        lane_avail = Signal(range(depth + 1), name="lane_avail")
        out_free = Signal(range(out_depth), name="out_free", init=out_depth - 1)
        out_ret = Signal(name="out_ret")
        m.d.comb += pop.eq((lane_avail != 0) & (out_free != 0))
        m.d.sync += [lane_avail.eq(lane_avail + done - pop),
                     out_free.eq(out_free - pop + out_ret)]
        pop_leaves = _fanout_tree(m, platform, pop, L, "pop", reset_less=False)

        # Transport: each lane's read register, then ``transport_registers`` more, no enable.
        results = []
        for l in range(L):
            lane = m.submodules[f"lane{l}"] = _Lane(l, K, self._acc_width, depth, self._dsp_pipeline,
                                                    self._post_dsp_registers,
                                                    self._result_registers,
                                                    sites[l] if sites else None)
            m.d.comb += [lane.shared.eq(shared_leaves[l]),
                         lane.operand.eq(per_lane[l]),
                         lane.ctrl_in.eq(group_ctrl[l // per_group]),
                         lane.pop.eq(pop_leaves[l])]
            res = lane.result
            for t in range(self._transport_registers):
                nxt = Signal(signed(self._acc_width), name=f"res_l{l}_t{t}", reset_less=True)
                m.d.sync += nxt.eq(res)
                res = nxt
            results.append(res)

        # ``arrive``: the pop delayed like the data, high in the cycle the results reach the
        # output FIFO's write port. The last stage is copied once per output group and once
        # for the control copy of the pointers.
        arrive = Signal(name="arrive_s0")
        m.d.sync += arrive.eq(pop)
        for stage in range(1, self.pop_stages + self._transport_registers):
            nxt = Signal(name=f"arrive_s{stage}")
            m.d.sync += nxt.eq(arrive)
            arrive = nxt

        # Output FIFO, in one spot: one distributed-RAM FIFO per group of ``_OUT_GROUP`` lanes,
        # each with its own copies of the write and read pointers. Each copy is a pair: a
        # counter that drives only its own next-value logic (a short loop: increment, and
        # for the read pointer the compare with the write counter) and a register loaded
        # with the same next value that drives the RAM's addresses (the wide net). ``o.ready``
        # is the clock enable of the read pointers and drives nothing else; their next value
        # ``rd + (wr != rd)`` comes from registers.
        abits = (out_depth - 1).bit_length()

        def pointers(suffix, ram=True):
            arr = keep_register(m, platform, Signal(name=f"arrive_{suffix}"), arrive)
            wr = Signal(abits, name=f"out_wr_{suffix}")
            rd = Signal(abits, name=f"out_rd_{suffix}")
            wr_next = Signal(abits, name=f"out_wr_{suffix}_next")
            rd_next = Signal(abits, name=f"out_rd_{suffix}_next")
            m.d.comb += [wr_next.eq(wr + arr), rd_next.eq(rd + (wr != rd))]
            keep_register(m, platform, wr, wr_next)
            keep_register(m, platform, rd, rd_next, en=self.o.ready)
            if not ram:
                return arr, wr, rd, None, None
            wr_addr = keep_register(m, platform, Signal(abits, name=f"out_wa_{suffix}"), wr_next)
            rd_addr = keep_register(m, platform, Signal(abits, name=f"out_ra_{suffix}"), rd_next,
                                    en=self.o.ready)
            return arr, wr, rd, wr_addr, rd_addr

        _, wr_c, rd_c, _, _ = pointers("c", ram=False)
        rd_prev = Signal(abits, name="out_rd_prev")
        m.d.sync += rd_prev.eq(rd_c)
        m.d.comb += [out_ret.eq(rd_prev != rd_c), self.o.valid.eq(wr_c != rd_c)]
        W = self._acc_width
        for g, base in enumerate(range(0, L, _OUT_GROUP)):
            n = min(_OUT_GROUP, L - base)
            arr, _, _, wr_addr, rd_addr = pointers(f"g{g}")
            mem = m.submodules[f"out_fifo{g}"] = Memory(shape=unsigned(n * W), depth=out_depth,
                                                        init=[])
            wp = mem.write_port()
            rp = mem.read_port(domain="comb")
            m.d.comb += [wp.addr.eq(wr_addr), wp.en.eq(arr),
                         wp.data.eq(Cat(*results[base:base + n])), rp.addr.eq(rd_addr)]
            for j in range(n):
                m.d.comb += self.o.payload[base + j].eq(rp.data[j * W:(j + 1) * W])
        return m


def _fanout_levels(n: int) -> int:
    """Register levels after the root for ``n`` leaves with at most ``_FANOUT`` per driver."""
    levels, width = 0, 1
    while width < n:
        width *= _FANOUT
        levels += 1
    return levels


def _fanout_tree(m, platform, value, n: int, name: str, *, reset_less: bool = True) -> list:
    """Registers ``value`` into one root and then copies it down a tree of kept registers to
    ``n`` leaves, each register driving at most ``_FANOUT`` of the next level. Every leaf is
    ``1 + _fanout_levels(n)`` cycles behind ``value``."""
    root = Signal(len(value), name=f"{name}_root", reset_less=reset_less)
    m.d.sync += root.eq(value)
    level = [root]
    depth = _fanout_levels(n)
    for d in range(1, depth + 1):
        count = -(-n // _FANOUT ** (depth - d))
        level = [keep_register(m, platform, Signal(len(value), name=f"{name}_f{d}_{c}",
                                                  reset_less=reset_less), level[c // _FANOUT])
                 for c in range(count)]
    return level if depth else [root] * n


def _isqrt_ceil(n: int) -> int:
    r = 1
    while r * r < n:
        r += 1
    return r


def bench_configs() -> list:
    """What ``hdlgen bench blocks`` measures: the default 16 x 8 = 128-MAC array, floorplanned
    (``floorplan=True``: each lane's 8 DSPs side by side in one DSP row,
    :func:`hdlgen.blocks.ecp5.mac_floorplan`).

    Measured on the LFE5U-85F, speed 6, one seed at a time
    (``PYTHONPATH=. nice -n 10 python -m hdlgen bench blocks --device 85F --json --only
    mac_array --seed N``, 2-2.5 minutes each)::

        seed  fmax MHz  LUT4  FF     DSP  EBR  limited by
        1     174.19    5488  14967  128  0    lane 10's accumulator (``first`` copy, carry
                                               chain)
        2     167.84    5488  14967  128  0    lane 6's accumulator (``first`` copy, 2.1 ns
                                               route, carry chain)
        3     169.32    5488  14967  128  0    output FIFO slice 1: read-address register,
                                               RAM, bench wrapper's output register (5.0 ns)
        4     152.84    5488  14967  128  0    output FIFO slice 2, the same path (5.7 ns on
                                               the read-address net, 32 RAM cells)
        5     169.52    5488  14967  128  0    output FIFO slice 0, the same path (5.0 ns)
        7     171.17    5488  14967  128  0    output FIFO slice 0, the same path (5.0 ns)

    5488 LUT4 is 42.9 per MAC. ``o.ready`` only reaches the central output FIFO's read
    pointers, so it is no longer on the critical path of any seed measured.

    Before (same command): the lanes' own FIFOs driving ``o`` directly, ``o.ready`` to every
    lane (4904 LUT4, 13364 FF). Without a floorplan: 152.4 / 165.7 / 170.1 / 135.8 / 149.1
    MHz on seeds 1-5 (the placer scattered each lane's DSPs along the rows; ``o.ready`` to
    the farthest lane FIFO 6.0-6.8 ns). With the floorplan: 170.44 / 174.40 / 169.03 / 170.53
    / 163.11 on seeds 1-5, 172.59 / 138.95 / 188.04 on seeds 6 / 7 / 8; seed 7 lost on
    ``o.ready`` (a LUT and two routes of 3.9 and 2.3 ns), and its delay varied with the seed
    more than with distance (40 columns 5.3 ns on one run, 43 columns and 7 rows 8.5 ns on
    another). Variants of that design, seeds 1 / 2 / 3 / 4 / 5 (/ 7), none kept: FIFO
    pointers one bit wider, ``o.valid`` from comparing them, ``o.ready`` only on read-pointer
    CEs: 140 / 149 / 123 / 157 / - (154), the pointer loop through the RAM-address net; the
    same with separate RAM-address registers: 161 on seed 1, 124 on seed 7 (``o.ready``,
    7.5 ns); lane-local copies of ``o.valid``: 167 / 170 / 166 / 156 / 146 (185); with one
    instantiated LUT4 per ``fill`` bit: 110 on seed 5 (``o.ready`` to lane 0, 8.5 ns). The
    central output FIFO with one-lane slices (``_OUT_GROUP = 1``, 5644 LUT4): 155.47 on seed 3
    (``o.ready`` to slice 9's read pointer, 5.9 ns), 176.21 on seed 4."""
    return [
        BlockBench(name="mac_array",
                   params={"lanes": 16, "macs_per_lane": 8, "acc_width": 32, "max_dot_length": 4096},
                   build=lambda: MACArray(16, 8, 32, 4096, floorplan=True)),
    ]
