"""The matrix-vector unit: the MAC array on the SoC bus, run by the host one product at a time.

A build without a transformer engine (``hdlgen build`` without ``--model``) carries this unit
in its SoC: the configuration's MAC array (``lanes x macs_per_lane`` MULT18X18D), a weight
bank the array reads a whole row-slice from every cycle, a vector buffer and a result buffer,
all reachable from the host. A job (``CTRL.START``) computes ``y = W @ x`` (int8 x int8,
int32 results, exact) for a matrix held in the weight bank and a vector held in the vector
buffer, at one weight row-slice (``lanes * macs_per_lane`` MACs) per cycle, and writes the
results to the result buffer. The control block runs the job like an engine's: ``STATUS``,
the watchdog, ``ABORT``, ``JOB_CYCLES`` and ``BUSY_MAC_ARRAY`` (the cycles the unit fed the
array)::

    design = MatVecDesign(config)
    soc = design.soc()                       # for the board top level (UART pins)
    soc = design.soc(byte_port=True)         # for simulation
    design.register_map                      # regmap.json of the build

The host side is :class:`hdlgen.host.matvec.MatVec`.

Bus window (at :data:`MATVEC_BASE`): four sub-windows of :attr:`MatVecUnit.stride` bytes,
each its own entry in the register map.

=========  ================  ===============================================================
offset     entry             contents
=========  ================  ===============================================================
0          ``mv``            registers ``MV_W_BASE``, ``MV_X_BASE``, ``MV_Y_BASE``,
                             ``MV_BLOCKS`` (job), ``MV_ROWS``, ``MV_RESULT_ROWS`` (sizes)
1 stride   ``mv_weights``    weight bank: rows of ``lanes * K`` int8 (``K = macs_per_lane``),
                             laid out by :func:`hdlgen.blocks.membank.weight_rows`
2 strides  ``mv_vector``     vector buffer: rows of ``K`` int8 (element ``j`` of a vector that
                             starts at row ``X`` is byte ``j % K`` of row ``X + j // K``)
3 strides  ``mv_result``     result buffer: rows of ``lanes`` int32 (result ``r`` of a job
                             that writes from row ``Y`` is word ``r % lanes`` of row
                             ``Y + r // lanes``)
=========  ================  ===============================================================

A job with ``MV_BLOCKS.OUT_BLOCKS = nb`` output blocks and ``MV_BLOCKS.IN_BLOCKS = ni`` input blocks reads
weight rows ``W_BASE .. W_BASE + nb * ni - 1`` in order (output block ``ob``, input block
``ib`` at ``W_BASE + ob * ni + ib``), vector rows ``X_BASE .. X_BASE + ni - 1`` once per
output block, and writes result rows ``Y_BASE .. Y_BASE + nb - 1``. Before it reads anything
it checks, and ends with ``ERROR`` and ``STATUS.CODE = 0x10 +`` a :class:`MatVecError` code
instead of wrapping an address: ``nb`` or ``ni`` zero (``SHAPE``), a weight, vector or result
row beyond its buffer (``WEIGHT_RANGE``, ``VECTOR_RANGE``, ``RESULT_RANGE``).

Timing: the unit adds no stall net to the datapath. The array's ``o`` is always ready (a
result row is written to the result buffer the cycle after it leaves the array), so its
``i.ready`` stays high and the unit issues one row read per cycle without looking at it;
``valid``, ``first`` and ``last`` travel beside the weight bank's read latency (four cycles
on the 85F, whose 32-tile bank fans its requests out as a tree; three on smaller banks). A
beat that would reach the array while it is not ready ends the job with ``OVERRUN`` (it
cannot happen while the result buffer takes every result; the check keeps it from going
unnoticed). The range check's ``nb * ni`` is a shift-and-add over 16 cycles (no DSP, no wide
carry chain in one cycle).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.bram import ecp5_tiling
from hdlgen.blocks.mac_array import MACArray
from hdlgen.blocks.membank import MemoryBank, bus_bytes
from hdlgen.config import AcceleratorConfig
from hdlgen.errors import UserError
from hdlgen.soc import regmap, wishbone
from hdlgen.soc.csr import Access, CSRBank, Field, Register

__all__ = ["MATVEC_BASE", "MatVecError", "MatVecUnit", "MatVecDesign", "matvec_registers"]

#: Byte address of the unit's window on the SoC bus.
MATVEC_BASE = 0x0200_0000
#: Default rows of the weight bank (512 rows: one DP16KD deep in its x36 mode).
WEIGHT_ROWS = 512
#: Default rows of the result buffer (1,024 rows: one DP16KD deep in its x18 mode).
RESULT_ROWS = 1024


class MatVecError(enum.Enum, shape=4):
    """Why a job failed (``STATUS.CODE = 0x10 + code``)."""
    NONE = 0
    SHAPE = 1            # MV_BLOCKS.OUT or MV_BLOCKS.IN is zero
    WEIGHT_RANGE = 2     # W_BASE + OUT * IN > weight rows
    VECTOR_RANGE = 3     # X_BASE + IN > vector rows
    RESULT_RANGE = 4     # Y_BASE + OUT > result rows
    OVERRUN = 5          # a beat reached the MAC array while it was not ready


def matvec_registers(weight_rows: int, vector_rows: int, result_rows: int) -> list[Register]:
    """The unit's registers (bank ``mv``)."""
    return [
        Register("MV_W_BASE", 0x00, [
            Field("ROW", 16, Access.RW, desc="First weight-bank row of the matrix.")],
            "Where the job's matrix starts."),
        Register("MV_X_BASE", 0x04, [
            Field("ROW", 16, Access.RW, desc="First vector-buffer row of the input vector.")],
            "Where the job's input vector starts."),
        Register("MV_Y_BASE", 0x08, [
            Field("ROW", 16, Access.RW, desc="First result-buffer row the job writes.")],
            "Where the job's results go."),
        Register("MV_BLOCKS", 0x0C, [
            Field("OUT_BLOCKS", 16, Access.RW, desc="Output blocks: ceil(rows / lanes)."),
            Field("IN_BLOCKS", 16, Access.RW,
                  desc="Input blocks: ceil(columns / macs_per_lane).")],
            "Shape of the job's matrix in blocks."),
        Register("MV_ROWS", 0x10, [
            Field("WEIGHT", 16, Access.RO, reset=weight_rows, desc="Rows of the weight bank."),
            Field("VECTOR", 16, Access.RO, reset=vector_rows, desc="Rows of the vector buffer.")],
            "Sizes of the unit's buffers."),
        Register("MV_RESULT_ROWS", 0x14, [
            Field("ROWS", 16, Access.RO, reset=result_rows, desc="Rows of the result buffer.")],
            "Size of the result buffer."),
    ]


def _check_rows(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 0xFFFF:
        raise UserError(f"{name}={value!r} must be an integer in 1..65535 rows")
    return value


class MatVecUnit(wiring.Component):
    """The MAC array with its weight bank, vector buffer and result buffer (module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
        ``lanes`` and ``macs_per_lane`` (a multiple of 4: vector rows are 32-bit bus words)
        shape the array; ``max_dot_length`` sets the vector buffer (``max_dot_length / K``
        rows).
    weight_rows, result_rows : int
        Rows of the weight bank and of the result buffer.
    floorplan : bool
        On a device with a site map, the MAC array's DSPs on the compact floorplan
        (``MACArray(floorplan=True)``; the weight tiles are left to the placer: with them
        beside their lanes, :func:`hdlgen.blocks.ecp5.weight_floorplan`, the 85F build routed
        at 103.6 / 108.5 MHz on nextpnr seeds 1 / 2, against 136.1 on seed 1 without).

    Attributes
    ----------
    bus : In(wishbone.Signature)
        The whole window (four sub-windows of :attr:`stride` bytes).
    start : In(1)
        Starts a job (the control block's pulse).
    token, pos : In(32)
        Unused (the engine interface of :class:`hdlgen.soc.soc.SoC`).
    abort : In(1)
        Stops issuing; the unit takes no new job until what is in flight has drained.
    done, error : Out(1)
        One-cycle pulses ending a job; ``error_code`` (:class:`MatVecError`) with ``error``.
    unit_busy : Out(1)
        High in the cycles the unit feeds the MAC array (``BUSY_MAC_ARRAY``).
    """

    def __init__(self, config: AcceleratorConfig, *, weight_rows: int = WEIGHT_ROWS,
                 result_rows: int = RESULT_ROWS, floorplan: bool = True):
        self._MustUse__silence = True        # not "unused" if the arguments are rejected
        config = config.check()
        L, K = config.lanes, config.macs_per_lane
        if K % 4:
            raise UserError(f"macs_per_lane={K} must be a multiple of 4 for the matrix-vector "
                            f"unit (a vector row is whole 32-bit bus words); use 4, 8 or 16")
        self._config = config
        self._weight_rows = _check_rows("weight_rows", weight_rows)
        self._result_rows = _check_rows("result_rows", result_rows)
        self._vector_rows = _check_rows("vector rows (max_dot_length / macs_per_lane)",
                                        -(-config.max_dot_length // K))
        self._floorplan = bool(floorplan)
        self.registers = matvec_registers(self._weight_rows, self._vector_rows, self._result_rows)
        self._csr = CSRBank(self.registers)
        # (the banks and the array are made in elaborate(); their windows from their shapes)
        self._stride = max(self._csr.size_bytes, bus_bytes(L * K * 8, self._weight_rows),
                           bus_bytes(K * 8, self._vector_rows), bus_bytes(L * 32, self._result_rows))
        addr_width = (self._stride - 1).bit_length()    # 4 windows of stride bytes
        self._MustUse__silence = False
        super().__init__({
            "bus": In(wishbone.Signature(addr_width=addr_width, data_width=32)),
            "start": In(1), "token": In(32), "pos": In(32), "abort": In(1),
            "done": Out(1), "error": Out(1), "error_code": Out(MatVecError),
            "unit_busy": Out(1),
        })

    config = property(lambda self: self._config)
    weight_rows = property(lambda self: self._weight_rows)
    vector_rows = property(lambda self: self._vector_rows)
    result_rows = property(lambda self: self._result_rows)
    stride = property(lambda self: self._stride, doc="Bytes between the unit's sub-windows.")

    def layout(self, base: int = MATVEC_BASE) -> tuple:
        """The unit's entries of the bus layout (:func:`hdlgen.soc.regmap.soc_layout`)."""
        L, K = self._config.lanes, self._config.macs_per_lane
        s = self._stride
        return (
            regmap.Bank("mv", base, self._csr.size_bytes, tuple(self.registers),
                        "Matrix-vector unit: job registers and buffer sizes."),
            regmap.Window("mv_weights", base + s, bus_bytes(L * K * 8, self._weight_rows),
                          f"Matrix-vector unit weight bank: {self._weight_rows} rows of "
                          f"{L * K} int8 (hdlgen.blocks.membank.weight_rows layout)."),
            regmap.Window("mv_vector", base + 2 * s, bus_bytes(K * 8, self._vector_rows),
                          f"Matrix-vector unit vector buffer: {self._vector_rows} rows of {K} int8."),
            regmap.Window("mv_result", base + 3 * s, bus_bytes(L * 32, self._result_rows),
                          f"Matrix-vector unit result buffer: {self._result_rows} rows of "
                          f"{L} int32."),
        )

    def ebr_count(self) -> int:
        """DP16KD blocks of the unit's three buffers (as :class:`BlockRAM` tiles them)."""
        L, K = self._config.lanes, self._config.macs_per_lane
        n = 0
        for width, depth, ports in ((L * K * 8, self._weight_rows, ("w", "r")),
                                    (K * 8, self._vector_rows, ("w", "r")),
                                    (L * 32, self._result_rows, ("rw", "rw"))):
            t = ecp5_tiling(width, depth, granularity=8, ports=ports)
            n += t.columns * t.rows
        return n

    def fingerprint(self) -> str:
        """What the unit's gateware fixes beyond the config (mixed into ``CONFIG_HASH``)."""
        return (f"matvec:w{self._weight_rows}:x{self._vector_rows}:y{self._result_rows}"
                f":base{MATVEC_BASE:#x}")

    def elaborate(self, platform):
        m = Module()
        L, K = self._config.lanes, self._config.macs_per_lane
        csr = m.submodules.csr = self._csr
        wb = m.submodules.weights = MemoryBank(width=L * K * 8, depth=self._weight_rows,
                                               compute="r")
        xb = m.submodules.vector = MemoryBank(width=K * 8, depth=self._vector_rows, compute="r")
        # (its rows span the die too: staged, so the result's address and enables fan out
        # as a tree)
        yb = m.submodules.result = MemoryBank(width=L * 32, depth=self._result_rows,
                                              compute="rw", staged=True)
        mac = m.submodules.mac = MACArray(L, K, self._config.acc_width,
                                          self._config.max_dot_length, floorplan=self._floorplan)

        m.submodules.decoder = dec = wishbone.Decoder(addr_width=len(self.bus.adr))
        wiring.connect(m, wiring.flipped(self.bus), dec.bus)
        for n, (name, sub) in enumerate((("mv", csr), ("mv_weights", wb), ("mv_vector", xb),
                                         ("mv_result", yb))):
            dec.add(sub.bus, addr=n * self._stride, name=name)

        regs = csr.regs
        w_base = regs.mv_w_base.row.data
        x_base = regs.mv_x_base.row.data
        y_base = regs.mv_y_base.row.data
        n_out = regs.mv_blocks.out_blocks.data
        n_in = regs.mv_blocks.in_blocks.data

        m.d.sync += [self.done.eq(0), self.error.eq(0)]

        # ---- job parameters and the range check (shift-and-add of OUT * IN) ----
        j_w, j_x, j_y = Signal(16), Signal(16), Signal(16)
        j_out, j_in = Signal(16), Signal(16)
        mcand = Signal(32)        # IN << step
        mplier = Signal(16)       # OUT >> step
        prod = Signal(32)         # OUT * IN
        steps = Signal(range(17))
        w_end, x_end, y_end = Signal(33), Signal(17), Signal(17)
        bad = Signal(MatVecError)

        # ---- issue: one weight row and one vector row per cycle ----
        w_addr, x_addr = Signal(16), Signal(16)
        ib, ob = Signal(16), Signal(16)
        in_m2, out_m2 = Signal(16), Signal(16)         # IN - 2, OUT - 2
        in_one, out_one = Signal(), Signal()           # IN == 1, OUT == 1
        at_first = Signal()
        at_last = Signal()        # the next issue is the last of its output block
        ob_last = Signal()        # the current output block is the job's last
        # A row is read every cycle of ``issuing``: the array's ``i.ready`` (a flip-flop at
        # the array) is not on this path, which drives the weight bank's request tree (on the
        # 85F, seed 4, ``issuing & i.ready`` reached the bank's first-stage copies through
        # three LUTs and 7.3 ns of routing). The array cannot refuse a beat while its ``o``
        # is always ready; the OVERRUN check below would tell if it did.
        issuing = Signal()
        go = issuing
        m.d.comb += [wb.port.addr.eq(w_addr), wb.port.en.eq(go),
                     xb.port.addr.eq(x_addr), xb.port.en.eq(go)]
        # (the "last" flags are registers, computed an issue ahead: no compare on the path
        # from the counters to the addresses)
        lat = wb.latency            # 4 on a weight bank of more than 16 DP16KD, else 3
        x_data = xb.port.rdata[:K * 8]
        for n in range(lat - xb.latency):     # the vector buffer's row, aligned with it
            x_next = Signal(K * 8, name=f"x_data{n}", reset_less=True)
            m.d.sync += x_next.eq(x_data)
            x_data = x_next
        ctl = [Signal(3, name=f"ctl{n}") for n in range(lat)]   # (valid, first, last)
        m.d.sync += ctl[0].eq(Cat(go, at_first, at_last))
        m.d.sync += [ctl[n].eq(ctl[n - 1]) for n in range(1, lat)]
        m.d.comb += [mac.i.valid.eq(ctl[-1][0]), mac.i.payload.first.eq(ctl[-1][1]),
                     mac.i.payload.last.eq(ctl[-1][2]),
                     mac.i.payload.shared.eq(x_data),
                     mac.i.payload.per_lane.eq(wb.port.rdata)]
        overrun = Signal()
        with m.If(mac.i.valid & ~mac.i.ready):
            m.d.sync += overrun.eq(1)
        issued = Signal(16)      # output blocks whose last beat was issued
        with m.If(go):
            m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(at_last):
                m.d.sync += [ib.eq(0), x_addr.eq(j_x), at_first.eq(1), at_last.eq(in_one),
                             ob.eq(ob + 1), ob_last.eq(ob == out_m2), issued.eq(issued + 1)]
                with m.If(ob_last):
                    m.d.sync += issuing.eq(0)
            with m.Else():
                m.d.sync += [ib.eq(ib + 1), x_addr.eq(x_addr + 1), at_first.eq(0),
                             at_last.eq(ib == in_m2)]

        # ---- results: one row of the result buffer per output block ----
        m.d.comb += mac.o.ready.eq(1)
        r_valid = Signal()
        r_data = Signal(L * 32)
        y_addr = Signal(16)
        results = Signal(16)
        m.d.sync += [r_valid.eq(mac.o.valid), r_data.eq(mac.o.payload.as_value())]
        m.d.comb += [yb.port.addr.eq(y_addr), yb.port.en.eq(r_valid),
                     yb.port.we.eq(r_valid.replicate(L * 4)), yb.port.wdata.eq(r_data)]
        with m.If(r_valid):
            m.d.sync += y_addr.eq(y_addr + 1)
        # a result counts once its write has reached the RAM (past its input stages): the
        # job's DONE never precedes its last result
        landed = r_valid
        for n in range(yb.latency - 2):
            nxt = Signal(name=f"landed{n}")
            m.d.sync += nxt.eq(landed)
            landed = nxt
        with m.If(landed):
            m.d.sync += results.eq(results + 1)
        all_back = Signal()       # every issued output block's result is written
        m.d.sync += all_back.eq((results == issued) & ~landed & ~r_valid & ~mac.o.valid)
        line_empty = Signal()
        m.d.comb += line_empty.eq(~Cat(c[0] for c in ctl).any())

        m.d.comb += self.unit_busy.eq(issuing)
        start_pend = Signal()
        with m.If(self.start):
            m.d.sync += start_pend.eq(1)

        # One-hot control: one flip-flop per state, so every state test is a flip-flop output
        # and a clock enable is one LUT of flip-flops (on the 85F, seed 1, a decode of a
        # binary state register took two LUTs and 6.1 ns of routing to the range check's
        # product register; seed 2: to the address counters).
        st = {n: Signal(name=f"mv_{n.lower()}", init=(n == "IDLE"))
              for n in ("IDLE", "MUL", "SUM", "CMP", "DECIDE", "LOAD", "RUN", "FLUSH")}

        def goto(src, dst):
            m.d.sync += [st[src].eq(0), st[dst].eq(1)]

        with m.If(st["IDLE"] & start_pend):
            m.d.sync += [start_pend.eq(0), j_w.eq(w_base), j_x.eq(x_base),
                         j_y.eq(y_base), j_out.eq(n_out), j_in.eq(n_in),
                         mcand.eq(n_in), mplier.eq(n_out), prod.eq(0), steps.eq(16),
                         overrun.eq(0)]
            goto("IDLE", "MUL")
        with m.If(st["MUL"]):
            m.d.sync += [prod.eq(prod + Mux(mplier[0], mcand, 0)), mcand.eq(mcand << 1),
                         mplier.eq(mplier >> 1), steps.eq(steps - 1)]
            with m.If(steps == 1):
                goto("MUL", "SUM")
        with m.If(st["SUM"]):
            m.d.sync += [w_end.eq(j_w + prod), x_end.eq(j_x + j_in), y_end.eq(j_y + j_out),
                         in_m2.eq(j_in - 2), out_m2.eq(j_out - 2), in_one.eq(j_in == 1),
                         out_one.eq(j_out == 1)]
            goto("SUM", "CMP")
        with m.If(st["CMP"]):
            with m.If((j_out == 0) | (j_in == 0)):
                m.d.sync += bad.eq(MatVecError.SHAPE)
            with m.Elif(w_end > self._weight_rows):
                m.d.sync += bad.eq(MatVecError.WEIGHT_RANGE)
            with m.Elif(x_end > self._vector_rows):
                m.d.sync += bad.eq(MatVecError.VECTOR_RANGE)
            with m.Elif(y_end > self._result_rows):
                m.d.sync += bad.eq(MatVecError.RESULT_RANGE)
            with m.Else():
                m.d.sync += bad.eq(MatVecError.NONE)
            goto("CMP", "DECIDE")
        with m.If(st["DECIDE"]):
            with m.If(bad != MatVecError.NONE):
                m.d.sync += [self.error.eq(1), self.error_code.eq(bad)]
                goto("DECIDE", "IDLE")
            with m.Else():
                goto("DECIDE", "LOAD")
        with m.If(st["LOAD"]):     # the counters' loads depend on this flip-flop alone
            m.d.sync += [w_addr.eq(j_w), x_addr.eq(j_x), y_addr.eq(j_y), ib.eq(0),
                         ob.eq(0), at_first.eq(1), at_last.eq(in_one),
                         ob_last.eq(out_one), issued.eq(0), results.eq(0),
                         issuing.eq(1), self.error_code.eq(MatVecError.NONE)]
            goto("LOAD", "RUN")
        with m.If(st["RUN"]):
            with m.If(self.abort):
                m.d.sync += issuing.eq(0)
                goto("RUN", "FLUSH")
            with m.Elif(~issuing & line_empty & all_back):
                with m.If(overrun):
                    m.d.sync += [self.error.eq(1), self.error_code.eq(MatVecError.OVERRUN)]
                with m.Else():
                    m.d.sync += self.done.eq(1)
                goto("RUN", "IDLE")
        with m.If(st["FLUSH"]):
            # what is in flight drains into the result buffer before the next job
            with m.If(line_empty & all_back):
                goto("FLUSH", "IDLE")
        return m


class MatVecDesign:
    """The SoC with a :class:`MatVecUnit` (what ``hdlgen build`` makes without ``--model``).

    Parameters
    ----------
    config : AcceleratorConfig
    weight_rows, result_rows : int
        As for :class:`MatVecUnit`.
    """

    def __init__(self, config: AcceleratorConfig, **kwargs):
        self.config = config.check()
        self._kwargs = dict(kwargs)
        probe = MatVecUnit(self.config, **kwargs)
        probe._MustUse__silence = True          # built for its layout only
        probe._csr._MustUse__silence = True
        self.layout = probe.layout()
        self.fingerprint = probe.fingerprint()
        self.ebr = probe.ebr_count()
        self.register_map = regmap.soc_register_map(self.config, self.layout, self.fingerprint)

    def check_fits(self, device) -> None:
        """Refuse (before synthesis) a unit whose buffers and the SoC's scratch RAM need more
        DP16KD than ``device`` (an :class:`hdlgen.flow.ECP5Device`) has."""
        from hdlgen.soc.soc import scratch_ebr
        scratch = scratch_ebr(self.config)
        if self.ebr + scratch > device.ebr:
            raise UserError(f"the matrix-vector unit's buffers need {self.ebr} DP16KD and the "
                            f"SoC's {self.config.scratch_bytes}-byte scratch RAM {scratch} more, "
                            f"{self.ebr + scratch} in all, but the {device.name} has "
                            f"{device.ebr}: lower --scratch-bytes or --lanes")

    def soc(self, *, byte_port: bool = False, **kwargs):
        """A :class:`~hdlgen.soc.soc.SoC` with a new unit (``kwargs`` go to the SoC)."""
        from hdlgen.soc.soc import SoC
        unit = MatVecUnit(self.config, **self._kwargs)
        return SoC(self.config, byte_port=byte_port, subordinates={"mv": unit},
                   extra_layout=self.layout, engine=unit, fingerprint=self.fingerprint,
                   covered=("mv_weights", "mv_vector", "mv_result"), **kwargs)

    def soc_factory(self, config: AcceleratorConfig):
        """For :class:`hdlgen.soc.top.Top` (``soc_factory=design.soc_factory``)."""
        if config != self.config:
            raise UserError(f"the top level's config ({config}) differs from the one the "
                            f"matrix-vector unit was made for ({self.config}): make the "
                            f"MatVecDesign with the top level's config")
        return self.soc()
