"""int8 multiply-accumulate array: ``lanes`` dot products of int8 x int8 -> int32 at a time.

Datapath
--------
Every beat on ``i`` carries one *shared* slice of ``macs_per_lane`` int8 values (or wider:
``shared_width``, see Arithmetic), which all lanes see, and one *per-lane* slice of
``macs_per_lane`` int8 values for each lane. Lane ``l`` multiplies its slice element by
element with the shared slice (one product per ``MULT18X18D``, ``lanes * macs_per_lane``
DSPs), sums the products in a pipelined adder tree and accumulates the sum. ``first``
starts a new dot product (the accumulator restarts from the beat's sum), ``last`` ends it:
one beat of ``lanes`` signed ``acc_width``-bit results then appears on ``o``. A beat can be
both ``first`` and ``last`` (a dot product of one beat). Dot products of ``n`` elements take
``ceil(n / macs_per_lane)`` beats; the caller pads the last beat with zeros.

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

Arithmetic: exact products; sums wrap modulo ``2**acc_width`` (two's complement). The
per-lane operands are int8; the shared operands are int8 too by default, or signed
``shared_width`` bits (up to 18, the ``MULT18X18D``'s port: the same DSPs, wider product
registers and adder trees), so that a 16-bit activation or an unsigned 16-bit probability is
one operand instead of two int8 planes in two passes. The constructor checks that
``acc_width`` holds any dot product of up to ``max_dot_length`` int8 x int8 elements, so
within that length no wrap can occur; with a wider shared operand the caller bounds its sums
(they wrap, in the golden model too). :mod:`sim.golden.mac_array` is the bit-exact model.

Pipeline and flow control
-------------------------
Nothing in the datapath has a clock enable or a stall: data registers load every cycle and
``valid``/``first``/``last`` bits travel in a shift register beside the data (replicated
per lane near the accumulators so that no control net crosses the die). The stages, counted
in clock edges after the edge that transfers a beat on ``i``::

    0 .. F-1       fabric input register, then the fanout tree that copies the shared
                   slice to every lane, 4 loads per register (F = 1 + ceil(log4(lanes)))
    F .. F+D-1     MULT18X18D input and output registers (D = 2, or 3 with dsp_pipeline)
    F+D .. G-1     fabric registers after each DSP (R = post_dsp_registers, G = F+D+R):
                   the first sits next to the DSP, the next ones carry the product across
                   the DSP row to the lane's adder tree
    G .. G+T-1     adder tree, one register per level (T = ceil(log2(macs_per_lane)))
    G+T            accumulator
    G+T+1 ..       result registers carrying it to the lane's output FIFO
                   (X = result_registers, 0 by default)
    G+T+X+1        result written to the output FIFO, ``o.valid``

Backpressure on ``o`` never stalls the pipeline. The output FIFO (distributed RAM, one per
lane, ``fifo_depth`` results) has room for every result in flight: ``i.ready`` comes from a
flip-flop fed by registers only and is high while there are *credits*; a credit is taken
when a ``last`` beat is accepted and given back when a result leaves on ``o``. With ``fifo_depth`` at least the
credit round trip (:attr:`MACArray.credit_loop`), back-to-back dot products of any length,
including one beat each, flow at one beat per cycle while ``o`` is ready.
"""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.dsp import MAX_OPERAND_WIDTH, DSPMultiplier, keep_register
from hdlgen.blocks.ecp5 import mac_floorplan
from hdlgen.bench.registry import BlockBench

__all__ = ["MACArray", "required_acc_width", "bench_configs"]

#: Operand width (int8).
OPERAND_WIDTH = 8
#: Most loads one register of the shared-operand fanout tree drives (besides the last level).
_FANOUT = 4


def required_acc_width(max_dot_length: int, operand_width: int = OPERAND_WIDTH) -> int:
    """Bits a signed accumulator needs for any dot product of ``max_dot_length`` elements of
    signed ``operand_width``-bit operands (the extreme is ``(-2**(w-1))**2 * n``)."""
    return 2 * operand_width + (max_dot_length - 1).bit_length()


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


class _Lane(Elaboratable):
    """One lane: ``K`` DSP multipliers, fabric product registers, adder tree, accumulator
    and the lane's slice of the output FIFO, with its own copies of the control bits."""

    def __init__(self, index, K, acc_width, fifo_depth, dsp_pipeline, post_dsp_registers,
                 result_registers, dsp_sites=None, shared_width=OPERAND_WIDTH):
        self.index, self.K, self.acc_width = index, K, acc_width
        self.shared_width = shared_width
        self.dsp_sites = dsp_sites
        self.fifo_depth, self.dsp_pipeline = fifo_depth, dsp_pipeline
        self.post_dsp_registers = post_dsp_registers
        self.result_registers = result_registers
        self.shared = Signal(data.ArrayLayout(signed(shared_width), K))    # stage F-1, this lane's copy
        self.operand = Signal(data.ArrayLayout(signed(OPERAND_WIDTH), K))  # stage F-1
        self.ctrl_in = Signal(3)     # (valid, first, last) one stage before the lane copies
        self.o_ready = Signal()      # ``o.ready``, straight from the port
        self.result = Signal(signed(acc_width))   # FIFO head of this lane

    def elaborate(self, platform):
        m = Module()
        K, i = self.K, self.index
        # Multipliers and the fabric register after each DSP.
        level = []
        for k in range(K):
            mul = m.submodules[f"mul{k}"] = DSPMultiplier(
                self.shared_width, OPERAND_WIDTH, pipeline=self.dsp_pipeline,
                bel=self.dsp_sites[k] if self.dsp_sites else None)
            m.d.comb += [mul.a.eq(self.shared[k]), mul.b.eq(self.operand[k])]
            prod = mul.p
            for r in range(self.post_dsp_registers):
                nxt = Signal(signed(self.shared_width + OPERAND_WIDTH), name=f"prod{k}_r{r}",
                             reset_less=True)
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
        # Result registers (no enable) between the accumulator and the FIFO: they let the
        # FIFO sit nearer the output than the lane's DSPs.
        result = acc
        for r in range(self.result_registers):
            nxt = Signal(signed(self.acc_width), name=f"result_r{r}", reset_less=True)
            m.d.sync += nxt.eq(result)
            result = nxt
            done = keep_register(m, platform, Signal(name=f"done_r{r}_l{i}"), done)
        # Output FIFO slice: written the cycle after the accumulator holds the result.
        ptr_shape = unsigned((self.fifo_depth - 1).bit_length())
        mem = m.submodules.fifo = Memory(shape=signed(self.acc_width), depth=self.fifo_depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port(domain="comb")
        wr_ptr = Signal(ptr_shape, name=f"wr_ptr_l{i}")
        rd_ptr = Signal(ptr_shape, name=f"rd_ptr_l{i}")
        keep_register(m, platform, wr_ptr, wr_ptr + done)
        # This lane's own copy of the FIFO occupancy (the same thermometer code as the
        # array's ``fill``, see :meth:`MACArray.elaborate`), updated from this lane's write
        # and ``o.ready``: its ``o.valid`` is a flip-flop here, not a net from the array's
        # control across the die (measured on the 85F, seed 2: 8.5 ns of routing to lane 12).
        fill = Signal(self.fifo_depth, name=f"fill_l{i}")
        keep_register(m, platform, fill, _fill_next(fill, done, self.o_ready & fill[0]))
        o_valid = fill[0]
        # The read pointer loads under a clock enable that is ``o.ready`` itself (no gate
        # between the port and the flip-flops' CE) the value ``rd_ptr + o.valid``, computed
        # from registers only: this lane's copy of ``o.valid`` and the pointer.
        keep_register(m, platform, rd_ptr, rd_ptr + o_valid, en=self.o_ready)
        m.d.comb += [wp.addr.eq(wr_ptr), wp.data.eq(result), wp.en.eq(done),
                     rp.addr.eq(rd_ptr), self.result.eq(rp.data)]
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
        :func:`hdlgen.blocks.ecp5.mac_floorplan` (its compact layout, ``centre_free=False``)
        for the platform the array is elaborated for
        (no constraints when it has no plan for that platform or shape). For an array built
        alone (the out-of-context bench); a design that also places weight RAMs passes
        ``dsp_sites`` from the same plan instead. Default ``False``.
    result_registers : int
        Registers (no enable) between each lane's accumulator and its output FIFO, each one
        more cycle of latency (default 0). They let the placer move the FIFOs away from the
        lanes' DSPs; measured on the 85F, 16 x 8, two of them gave 162.4 MHz on seed 1 (152.4
        without) but 135.3 on seed 2 (165.7 without, limited by a read-pointer-to-LUT-RAM
        route), so the default stays 0.
    shared_width : int
        Width of each shared operand, signed, 8 (int8, the default) to 18 (a ``MULT18X18D``
        port). The accumulator check stays the int8 one: see the module documentation.

    Attributes
    ----------
    i : In(stream.Signature(StructLayout))
        Beats: ``first``, ``last`` (1 bit each), ``shared`` (``macs_per_lane`` x signed
        ``shared_width`` bits) and
        ``per_lane`` (``lanes`` x ``macs_per_lane`` x int8), packed LSB-first in this order.
    o : Out(stream.Signature(ArrayLayout(signed(acc_width), lanes)))
        One beat per finished dot product; element ``l`` is lane ``l``'s result.

    Raises
    ------
    ValueError
        When a parameter is not a positive integer or ``acc_width`` is too narrow for
        ``max_dot_length``.
    """

    def __init__(self, lanes: int = 16, macs_per_lane: int = 8, acc_width: int = 32,
                 max_dot_length: int = 4096, *, post_dsp_registers: int = 3,
                 dsp_pipeline: bool = False, result_registers: int = 0, dsp_sites=None,
                 floorplan: bool = False, shared_width: int = OPERAND_WIDTH):
        for name, value in (("lanes", lanes), ("macs_per_lane", macs_per_lane),
                            ("acc_width", acc_width), ("max_dot_length", max_dot_length)):
            _check_positive_int(name, value)
        need = required_acc_width(max_dot_length)
        if acc_width < need:
            raise ValueError(
                f"acc_width={acc_width} is too narrow for max_dot_length={max_dot_length}: "
                f"int8 x int8 dot products of that length need {need} bits; raise acc_width "
                f"to at least {need} or lower max_dot_length")
        if not isinstance(shared_width, int) or not OPERAND_WIDTH <= shared_width <= MAX_OPERAND_WIDTH:
            raise ValueError(f"shared_width={shared_width!r} must be an integer from {OPERAND_WIDTH} "
                             f"to {MAX_OPERAND_WIDTH} (the MULT18X18D's signed port)")
        self._shared_width = shared_width
        self._lanes, self._macs_per_lane = lanes, macs_per_lane
        self._acc_width, self._max_dot_length = acc_width, max_dot_length
        self._dsp_pipeline = bool(dsp_pipeline)
        _check_positive_int("post_dsp_registers", post_dsp_registers)
        self._post_dsp_registers = post_dsp_registers
        if not isinstance(result_registers, int) or isinstance(result_registers, bool) \
                or result_registers < 0:
            raise ValueError(f"result_registers={result_registers!r} must be a non-negative "
                             f"integer")
        self._result_registers = result_registers
        if dsp_sites is not None:
            dsp_sites = tuple(tuple(lane) for lane in dsp_sites)
            if len(dsp_sites) != lanes or any(len(lane) != macs_per_lane for lane in dsp_sites):
                self._MustUse__silence = True   # a refused array is not an unused one
                raise ValueError(f"dsp_sites must name {macs_per_lane} MULT18X18D sites for each "
                                 f"of the {lanes} lanes")
        self._dsp_sites = dsp_sites
        self._floorplan = bool(floorplan)
        self._tree_levels = (macs_per_lane - 1).bit_length()
        self._fifo_depth = max(16, 1 << (self.credit_loop - 1).bit_length())
        operand = signed(OPERAND_WIDTH)
        self._in_layout = data.StructLayout({
            "first": unsigned(1),
            "last": unsigned(1),
            "shared": data.ArrayLayout(signed(shared_width), macs_per_lane),
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
    shared_width = property(lambda self: self._shared_width)
    max_dot_length = property(lambda self: self._max_dot_length)
    result_registers = property(lambda self: self._result_registers)
    floorplan = property(lambda self: self._floorplan)
    fifo_depth = property(lambda self: self._fifo_depth,
                          doc="Results the output FIFO holds (= credits).")
    in_layout = property(lambda self: self._in_layout)
    out_layout = property(lambda self: self._out_layout)

    @property
    def dsp_latency(self) -> int:
        return 3 if self._dsp_pipeline else 2

    @property
    def latency(self) -> int:
        """Clock edges from the transfer of a ``last`` beat on ``i`` to its result on ``o``
        (when the FIFO is empty): after that many edges ``o.valid`` is high."""
        return (self.fanout_stages + self.dsp_latency + self._post_dsp_registers
                + self._tree_levels + self._result_registers + 1)

    @property
    def fanout_stages(self) -> int:
        """Register stages from ``i`` to the DSP inputs (input register plus the levels of
        the fanout tree of the shared slice)."""
        return 1 + _fanout_levels(self._lanes)

    @property
    def credit_loop(self) -> int:
        """Edges from taking a credit to being able to use it again when ``o`` is always
        ready: ``latency``, one to transfer the result, one to register its return, one
        to count it, one for ``ready`` to see it, one to accept the next beat; plus the
        cycle before a taken credit is counted and the one credit ``ready`` keeps in
        reserve."""
        return self.latency + 6

    def elaborate(self, platform):
        m = Module()
        L, K = self._lanes, self._macs_per_lane
        depth = self._fifo_depth
        sites = self._dsp_sites
        if sites is None and self._floorplan:
            plan = mac_floorplan(platform, L, K, centre_free=False)
            sites = plan[0] if plan is not None else None

        # Credits: free FIFO entries not yet promised to a dot product in flight.
        # Credits. ``i.ready`` is a flip-flop computed from registers only (no path from the
        # input port to it): a credit is taken one cycle after the ``last`` beat is accepted
        # (from the stage-0 control register ``ctrl0``), and ``ready`` stays high only while
        # at least two credits are left besides that pending one, so that whatever is
        # accepted in the current cycle is covered too. A credit given back is registered
        # (``ret``) before it is counted. All of this only delays, never over-commits.
        credits = Signal(range(depth + 1), init=depth)
        ready = Signal(init=1)
        ret = Signal()
        accept = self.i.valid & ready
        rd_fire = self.o.valid & self.o.ready
        ctrl = Signal(3, name="ctrl0")      # (valid, first, last) of stage 0
        m.d.sync += ctrl.eq(Cat(accept, self.i.payload.first, self.i.payload.last))
        pending = ctrl[0] & ctrl[2]
        m.d.sync += [
            ret.eq(rd_fire),
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

        # Shared copy of the control for the FIFO occupancy and ``o.valid``.
        done = Signal(name="done")
        chain = ctrl
        for stage in range(tree_stage - 1, tree_stage + 1 + self._result_registers):
            nxt = Signal(3, name=f"ctrl_s{stage}")
            m.d.sync += nxt.eq(chain)
            chain = nxt
        m.d.sync += done.eq(chain[0] & chain[2])
        # Results in the FIFO, as a thermometer code: ``fill[j]`` is high while more than
        # ``j`` results wait, so ``o.valid`` is ``fill[0]``. A result written shifts a 1 in
        # at the bottom, one read shifts the code down. Both next codes come from registers
        # (``fill``, ``done``); ``o.ready`` only selects between them, one LUT per bit, with
        # no carry chain or compare behind it.
        # Every lane keeps its own copy of this code (from its own write).
        fill = Signal(depth, name="fill")
        m.d.sync += fill.eq(_fill_next(fill, done, rd_fire))
        m.d.comb += self.o.valid.eq(fill[0])

        for l in range(L):
            lane = m.submodules[f"lane{l}"] = _Lane(l, K, self._acc_width, depth, self._dsp_pipeline,
                                                    self._post_dsp_registers,
                                                    self._result_registers,
                                                    sites[l] if sites else None,
                                                    self._shared_width)
            m.d.comb += [lane.shared.eq(shared_leaves[l]),
                         lane.operand.eq(per_lane[l]),
                         lane.ctrl_in.eq(group_ctrl[l // per_group]),
                         lane.o_ready.eq(self.o.ready),
                         self.o.payload[l].eq(lane.result)]
        return m


def _fill_next(fill, written, read):
    """Next thermometer code of a FIFO's occupancy: a write shifts a 1 in at the bottom, a
    read shifts the code down, both together leave it."""
    up = Cat(Const(1, 1), fill[:-1])
    down = Cat(fill[1:], Const(0, 1))
    return Mux(read, Mux(written, fill, down), Mux(written, up, fill))


def _fanout_levels(n: int) -> int:
    """Register levels after the root for ``n`` leaves with at most ``_FANOUT`` per driver."""
    levels, width = 0, 1
    while width < n:
        width *= _FANOUT
        levels += 1
    return levels


def _fanout_tree(m, platform, value, n: int, name: str) -> list:
    """Registers ``value`` into one root and then copies it down a tree of kept registers to
    ``n`` leaves, each register driving at most ``_FANOUT`` of the next level. Every leaf is
    ``1 + _fanout_levels(n)`` cycles behind ``value``."""
    root = Signal(len(value), name=f"{name}_root", reset_less=True)
    m.d.sync += root.eq(value)
    level = [root]
    depth = _fanout_levels(n)
    for d in range(1, depth + 1):
        count = -(-n // _FANOUT ** (depth - d))
        level = [keep_register(m, platform, Signal(len(value), name=f"{name}_f{d}_{c}",
                                                  reset_less=True), level[c // _FANOUT])
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
    mac_array --seed N``, about 2 minutes each)::

        seed  fmax MHz  LUT4  FF     DSP  EBR  limited by
        1     170.44    4904  13364  128  0    lane 0's accumulator: ``first`` copy (2.6 ns
                                               route to its 32 LUTs), then the carry chain
        2     174.40    4904  13364  128  0    lane 6's FIFO read pointer, LUT RAM, to the
                                               bench wrapper's output register (3.1 ns route)
        3     169.03    4904  13364  128  0    lane 10's accumulator (``first``, carry chain)
        4     170.53    4904  13364  128  0    lane 0's accumulator (``first``, carry chain)
        5     163.11    4904  13364  128  0    lane 0's accumulator (``first``, 2.3 ns route,
                                               then the carry chain)
        6     172.59    4904  13364  128  0    ``o.ready`` to lane 5's read-pointer CE
                                               (5.3 ns route, no logic)
        7     138.95    4904  13364  128  0    ``o.ready``, LUT (``fill`` clock enable, fire
                                               xor done), ``fill`` CE: 3.9 + 2.3 ns routes
        8     188.04    4904  13364  128  0    lane 8's accumulator carry chain

    4904 LUT4 is 38.3 per MAC. The same netlist without the floorplan gave 152.4 / 165.7 /
    170.1 / 135.8 / 149.1 MHz on seeds 1-5: the placer scattered each lane's DSPs along the
    rows, so the lanes' output FIFOs, which ``o.ready`` must reach in one cycle, were spread
    over the die (6.0-6.8 ns of routing on seeds 1 and 4). With each lane's DSPs together,
    its adder tree, accumulator and FIFO sit in a compact patch.

    What is left is the ``o.ready`` net itself (seed 7): it still reaches all 16 lanes in one
    cycle, and its delay varies with the seed more than with distance (40 columns took 5.3 ns
    on one run, 43 columns plus 7 rows 8.5 ns on another).

    Variants measured on this floorplan, seeds 1 / 2 / 3 / 4 / 5 (/ 6 / 7 / 8), none kept:

    * central output FIFO (branch ``mac-out``: lanes popped by a registered pop tree, results
      carried to one distributed-RAM FIFO whose read pointers alone see ``o.ready``; 5488
      LUT4): 174.19 / 167.84 / 169.32 / 152.84 / 169.52 (/ 145.50 / 171.17 / 135.48). No
      ``o.ready`` path any more, but its read-address registers drive 32 RAM cells per
      4-lane slice and then ``o.payload`` (5.0-6.5 ns routes); with 1-lane slices (5644
      LUT4) 155.47 on seed 3 (``o.ready`` to slice 9, 5.9 ns) and 176.21 on seed 4.
    * FIFO pointers one bit wider, ``o.valid`` from comparing them, ``o.ready`` only on
      read-pointer CEs: 140 / 149 / 123 / 157 / - (- / 154 / -), the pointer loop through
      the RAM-address net; with separate RAM-address registers: 161 on seed 1, 124 on seed 7
      (``o.ready``, 7.5 ns).
    * lane-local copies of ``o.valid`` (one LUT on ``o.ready`` in each lane), ``fill``
      without a CE: 167 / 170 / 166 / 156 / 146 (- / 185 / -); with one instantiated LUT4 per
      ``fill`` bit: 110 on seed 5 (``o.ready`` to lane 0, 8.5 ns).
    """
    return [
        BlockBench(name="mac_array",
                   params={"lanes": 16, "macs_per_lane": 8, "acc_width": 32, "max_dot_length": 4096},
                   build=lambda: MACArray(16, 8, 32, 4096, floorplan=True)),
    ]
