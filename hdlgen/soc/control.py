"""Control block: identification, job control/status, cycle and busy counters, watchdog.

:class:`ControlBlock` is a Wishbone subordinate (a :class:`~hdlgen.soc.csr.CSRBank` inside)
whose registers are defined by :func:`control_registers` (the register map, C header and
docs are generated from that same list, see :mod:`hdlgen.soc.regmap`). Byte offsets in the
bank:

======  ===============  ==================================================================
0x00    ``ID``           ``MAGIC`` (0x4847, "HG"), ``VERSION_MAJOR``, ``VERSION_MINOR``
0x04    ``CONFIG_HASH``  CRC-32 of the configuration and this register layout
0x08    ``SHAPE``        MAC array lanes, MACs per lane, accumulator width
0x0C    ``CONTEXT``      KV-cache capacity in positions
0x10    ``CTRL``         ``START``, ``ABORT``, ``CLEAR_COUNTERS`` (write-only commands)
0x14    ``STATUS``       ``BUSY`` (RO), ``DONE``/``ERROR`` (W1C), ``CODE`` (:class:`ErrorCode`)
0x18    ``WATCHDOG``     job cycle limit (taken when a job starts); 0 disables it
0x1C    ``SCRATCH``      free read/write word for link tests
0x20    ``CYCLES_LO``    free-running 64-bit cycle counter, low word; reading it latches
0x24    ``CYCLES_HI``    ... the high word, read it second
0x28    ``JOB_CYCLES``   cycles of the running or last job
0x2C    ``SYS_CLK``      system clock in kHz
0x30    ``TOKEN``        token id of the next job (the engine's ``token`` input)
0x34    ``POS``          position of the next job (the engine's ``pos`` input)
0x40..  ``BUSY_<UNIT>``  cycles each unit was busy since the last start or clear
======  ===============  ==================================================================

Gateware ports::

    ctrl = ControlBlock(config, units=("mac_array", "dma"))
    dec.add(ctrl.bus, addr=CTRL_BASE, name="ctrl")   # In(wishbone.Signature(addr_width=6))
    ctrl.start        # Out(1): one-cycle pulse when the host starts a job
    ctrl.abort        # Out(1): one-cycle pulse on a host abort or a watchdog timeout
    ctrl.busy         # Out(1): a job is running
    ctrl.job_done     # In(1):  pulse from the engine: the job finished
    ctrl.job_error    # In(1):  pulse from the engine: the job failed, with
    ctrl.job_error_code  # In(4): the engine's code (reported as 0x10 + code)
    ctrl.unit_busy    # In(len(units)): busy signal of each profiled unit
    ctrl.token, ctrl.pos  # Out(32): the TOKEN and POS registers (sampled by the engine at start)

Job life cycle: writing ``CTRL.START`` when idle sets ``BUSY``, clears ``JOB_CYCLES`` and the
busy counters and pulses ``start``; ``job_done`` ends the job with ``DONE``; ``job_error``,
``CTRL.ABORT`` or the watchdog (``JOB_CYCLES`` reaching a non-zero ``WATCHDOG``) end it with
``ERROR`` and ``CODE``. Starting while busy does not restart the job: it sets ``ERROR`` with
``CODE = START_WHILE_BUSY``. The host clears ``DONE``/``ERROR`` by writing 1 to them.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict

from amaranth.hdl import Module, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.config import AcceleratorConfig
from hdlgen.soc import wishbone
from hdlgen.soc.csr import Access, CSRBank, Field, Register

__all__ = ["MAGIC", "VERSION", "PROFILE_UNITS", "ErrorCode", "control_registers",
           "layout_hash", "ControlBlock"]

#: ``ID.MAGIC``: "HG".
MAGIC = 0x4847
#: ``ID.VERSION_MAJOR``, ``ID.VERSION_MINOR`` of the register layout.
VERSION = (1, 1)
#: Units profiled by default (one ``BUSY_<UNIT>`` counter each).
#: The same tuple as the engine's ``hdlgen.engine.core.UNITS`` (bit ``n`` of ``unit_busy``);
#: ``tests/test_csr.py`` checks they agree.
PROFILE_UNITS = ("mac_array", "kv_cache", "softmax", "norm", "requant", "rope", "activation",
                 "eltwise", "argmax", "loader")
#: Word-address width of the control bank's bus (64 words, 256 bytes).
ADDR_WIDTH = 6
_BUSY_BASE = 0x40


class ErrorCode(enum.Enum, shape=8):
    """``STATUS.CODE``: why the last job failed. Engine codes ``c`` appear as ``0x10 + c``."""
    NONE = 0x00
    WATCHDOG = 0x01
    ABORTED = 0x02
    START_WHILE_BUSY = 0x03
    ENGINE = 0x10


def _check_units(units) -> tuple[str, ...]:
    units = tuple(units)
    if len(units) > (4 * (1 << ADDR_WIDTH) - _BUSY_BASE) // 4:
        raise ValueError(f"{len(units)} profiled units do not fit in the control bank")
    for u in units:
        if not (isinstance(u, str) and u.isidentifier() and u.lower() == u):
            raise ValueError(f"unit name {u!r} must be a lower-case identifier (like 'mac_array')")
    if len(set(units)) != len(units):
        raise ValueError(f"unit names {units!r} repeat")
    return units


def layout_hash(config: AcceleratorConfig, registers, fingerprint: str = "") -> int:
    """CRC-32 of the configuration, the register layout (names, offsets, fields; not the
    constant values) and ``fingerprint`` (what else the build holds, e.g. the engine's model
    and bus window), which the ``CONFIG_HASH`` register reports."""
    layout = [[r.name, r.offset, [[f.name, f.offset, f.width, f.access.name] for f in r.fields]]
              for r in registers]
    body = {"config": asdict(config), "layout": layout, "version": VERSION}
    if fingerprint:
        body["fingerprint"] = fingerprint
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return zlib.crc32(text.encode())


def control_registers(config: AcceleratorConfig | None = None,
                      units=PROFILE_UNITS, fingerprint: str = "") -> list[Register]:
    """The control bank's registers for ``config`` (constant fields carry their values as
    ``reset``; ``fingerprint`` as for :func:`layout_hash`)."""
    config = (config or AcceleratorConfig()).check()
    units = _check_units(units)
    regs = [
        Register("ID", 0x00, [
            Field("VERSION_MINOR", 8, Access.RO, reset=VERSION[1], desc="Register layout minor version."),
            Field("VERSION_MAJOR", 8, Access.RO, reset=VERSION[0], desc="Register layout major version."),
            Field("MAGIC", 16, Access.RO, reset=MAGIC, desc="0x4847 (\"HG\"): an hdlgen device."),
        ], "Identification; the host checks it on connect."),
        Register("CONFIG_HASH", 0x04, [
            Field("HASH", 32, Access.RO, desc="CRC-32 of the configuration and register layout; "
                                              "must equal `config_hash` in regmap.json."),
        ], "Build fingerprint."),
        Register("SHAPE", 0x08, [
            Field("LANES", 8, Access.RO, reset=config.lanes, desc="MAC array lanes."),
            Field("MACS_PER_LANE", 8, Access.RO, reset=config.macs_per_lane,
                  desc="int8 MACs per lane."),
            Field("ACC_WIDTH", 8, Access.RO, reset=config.acc_width, desc="Accumulator bits."),
        ], "Shape of the MAC array."),
        Register("CONTEXT", 0x0C, [
            Field("LENGTH", 24, Access.RO, reset=config.context_length,
                  desc="KV-cache capacity in positions."),
        ], "KV-cache capacity."),
        Register("CTRL", 0x10, [
            Field("START", 1, Access.WO, desc="Write 1 to start a job."),
            Field("ABORT", 1, Access.WO, desc="Write 1 to abort the running job (ERROR, CODE=ABORTED)."),
            Field("CLEAR_COUNTERS", 1, Access.WO, desc="Write 1 to clear JOB_CYCLES and the busy counters."),
        ], "Job commands."),
        Register("STATUS", 0x14, [
            Field("BUSY", 1, Access.RO, desc="A job is running."),
            Field("DONE", 1, Access.W1C, desc="The last job finished; write 1 to clear."),
            Field("ERROR", 1, Access.W1C, desc="A job failed or a command was refused; write 1 to clear."),
            Field("CODE", 8, Access.RO, offset=8, desc="ErrorCode of the last error: 1 watchdog, "
                                                       "2 aborted, 3 start while busy, 0x10+c engine code c."),
        ], "Job status."),
        Register("WATCHDOG", 0x18, [
            Field("LIMIT", 32, Access.RW, desc="Abort a job after this many cycles (read when the job "
                                               "starts); 0 disables."),
        ], "Watchdog limit."),
        Register("SCRATCH", 0x1C, [
            Field("VALUE", 32, Access.RW, desc="Free for host link tests."),
        ], "Scratch word."),
        Register("CYCLES_LO", 0x20, [
            Field("VALUE", 32, Access.RO, desc="Low word; reading it latches CYCLES_HI."),
        ], "Free-running cycle counter, low word (read first).", read_strobe=True),
        Register("CYCLES_HI", 0x24, [
            Field("VALUE", 32, Access.RO, desc="High word latched by the last CYCLES_LO read."),
        ], "Free-running cycle counter, high word (read second)."),
        Register("JOB_CYCLES", 0x28, [
            Field("VALUE", 32, Access.RO, desc="Cycles since the job started (stops when it ends)."),
        ], "Job duration."),
        Register("SYS_CLK", 0x2C, [
            Field("KHZ", 32, Access.RO, reset=round(config.sys_clk_mhz * 1000), desc="System clock in kHz."),
        ], "System clock frequency."),
        Register("TOKEN", 0x30, [
            Field("ID", 32, Access.RW, desc="Token id the next job decodes."),
        ], "Input token of a decode step (the engine samples it when the job starts)."),
        Register("POS", 0x34, [
            Field("VALUE", 32, Access.RW, desc="Position of that token (0-based); a position at or "
                                               "beyond the context ends the job with an engine error."),
        ], "Position of a decode step (sampled when the job starts)."),
    ]
    for i, u in enumerate(units):
        regs.append(Register(f"BUSY_{u.upper()}", _BUSY_BASE + 4 * i, [
            Field("CYCLES", 32, Access.RO, desc=f"Cycles {u} was busy."),
        ], f"Busy-cycle counter of {u} since the last start or clear."))
    h = layout_hash(config, regs, fingerprint)
    regs[1].fields[0].reset = h
    return regs


class ControlBlock(wiring.Component):
    """Identification, job control, counters and watchdog (see the module docstring).

    Parameters
    ----------
    config : AcceleratorConfig
    units : sequence of str
        Lower-case names of the profiled units (default :data:`PROFILE_UNITS`).
    fingerprint : str
        Mixed into ``CONFIG_HASH`` (see :func:`layout_hash`).
    """

    def __init__(self, config: AcceleratorConfig | None = None, units=PROFILE_UNITS,
                 fingerprint: str = ""):
        self._config = (config or AcceleratorConfig()).check()
        self._units = _check_units(units)
        self._registers = control_registers(self._config, self._units, fingerprint)
        # The two halves of the free-running counter (attributes so tests can preload them).
        self._cycles_lo = Signal(32, name="cycles_lo")
        self._cycles_hi = Signal(32, name="cycles_hi")
        super().__init__({
            "bus": In(wishbone.Signature(addr_width=ADDR_WIDTH, data_width=32)),
            "start": Out(1),
            "abort": Out(1),
            "busy": Out(1),
            "job_done": In(1),
            "job_error": In(1),
            "job_error_code": In(4),
            "unit_busy": In(max(1, len(self._units))),
            "token": Out(32),
            "pos": Out(32),
        })

    @property
    def registers(self) -> list[Register]:
        return list(self._registers)

    @property
    def units(self) -> tuple[str, ...]:
        return self._units

    @property
    def config_hash(self) -> int:
        return self._registers[1].fields[0].reset

    def elaborate(self, platform):
        m = Module()
        bank = m.submodules.bank = CSRBank(self._registers, addr_width=ADDR_WIDTH)
        wiring.connect(m, wiring.flipped(self.bus), bank.bus)
        regs = bank.regs

        # Constant identification fields.
        for r in self._registers:
            for f in r.fields:
                if f.access == Access.RO and f.reset:
                    m.d.comb += getattr(getattr(regs, r.name.lower()), f.name.lower()).data.eq(f.reset)

        # 64-bit free-running counter: two 32-bit halves with a registered carry.
        lo, hi = self._cycles_lo, self._cycles_hi
        carry = Signal()
        hi_latch = Signal(32)
        m.d.sync += [lo.eq(lo + 1), carry.eq(lo == 0xFFFF_FFFE)]
        with m.If(carry):
            m.d.sync += hi.eq(hi + 1)
        with m.If(regs.cycles_lo.rd_stb):
            m.d.sync += hi_latch.eq(hi)
        m.d.comb += [regs.cycles_lo.value.data.eq(lo), regs.cycles_hi.value.data.eq(hi_latch)]
        m.d.comb += [self.token.eq(regs.token.id.data), self.pos.eq(regs.pos.value.data)]

        # Job state.
        busy = Signal()
        job_cycles = Signal(32)
        code = Signal(8)
        done_set = Signal()
        err_set = Signal()
        m.d.comb += [self.busy.eq(busy), regs.status.busy.data.eq(busy),
                     regs.status.code.data.eq(code), regs.job_cycles.value.data.eq(job_cycles),
                     regs.status.done.set.eq(done_set), regs.status.error.set.eq(err_set)]
        m.d.sync += [self.start.eq(0), self.abort.eq(0)]

        # Watchdog: a down-counter loaded at start (no adder or magnitude compare against
        # LIMIT on one path); fires so that the job ends with JOB_CYCLES == LIMIT.
        limit = regs.watchdog.limit.data
        wd_left = Signal(32)
        wd_armed = Signal()
        wd_hit = Signal()
        m.d.sync += [wd_left.eq(wd_left - 1),
                     wd_hit.eq(busy & wd_armed & (wd_left[2:] == 0) & (wd_left[:2] != 3) & ~wd_hit)]
        start_cmd = regs.ctrl.start.stb & regs.ctrl.start.data[0]
        abort_cmd = regs.ctrl.abort.stb & regs.ctrl.abort.data[0]
        clear_cmd = regs.ctrl.clear_counters.stb & regs.ctrl.clear_counters.data[0]

        def fail(c):
            m.d.sync += [busy.eq(0), code.eq(c)]
            m.d.comb += err_set.eq(1)       # STATUS.ERROR and CODE change at the same edge

        with m.If(busy):
            m.d.sync += job_cycles.eq(job_cycles + 1)
            with m.If(start_cmd):
                m.d.sync += code.eq(ErrorCode.START_WHILE_BUSY)
                m.d.comb += err_set.eq(1)
            with m.If(self.job_error):
                fail(ErrorCode.ENGINE.value | self.job_error_code)
            with m.Elif(self.job_done):
                m.d.sync += busy.eq(0)
                m.d.comb += done_set.eq(1)
            with m.Elif(abort_cmd):
                fail(ErrorCode.ABORTED)
                m.d.sync += self.abort.eq(1)
            with m.Elif(wd_hit):
                fail(ErrorCode.WATCHDOG)
                m.d.sync += self.abort.eq(1)
        with m.Elif(start_cmd):
            m.d.sync += [busy.eq(1), job_cycles.eq(0), self.start.eq(1),
                         wd_left.eq(limit), wd_armed.eq(limit != 0)]

        # Per-unit busy counters (inputs registered once: they come from across the die).
        n = len(self._units)
        ub = Signal(max(1, n))
        m.d.sync += ub.eq(self.unit_busy)
        clear = Signal()                  # registered: it fans out to every counter
        m.d.sync += clear.eq(clear_cmd | (start_cmd & ~busy))
        with m.If(clear_cmd & ~busy):
            m.d.sync += job_cycles.eq(0)
        for i, u in enumerate(self._units):
            cnt = Signal(32, name=f"busy_{u}")
            with m.If(clear):
                m.d.sync += cnt.eq(0)
            with m.Elif(ub[i]):
                m.d.sync += cnt.eq(cnt + 1)
            m.d.comb += getattr(regs, f"busy_{u}").cycles.data.eq(cnt)
        return m
