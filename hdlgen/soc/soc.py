"""The accelerator SoC: host link (UART -> bridge) on a Wishbone bus with the control block
and on-chip memory.

::

    UART rx -> FIFO -> Bridge -> Decoder -+-> ControlBlock   ("ctrl",    regmap.CTRL_BASE)
    UART tx <--------- Bridge             +-> WishboneRAM    ("scratch", regmap.SCRATCH_BASE)

A build adds the compute on the same bus (``subordinates``, ``engine``): the matrix-vector
unit (:mod:`hdlgen.soc.matvec`, the default bitstream) or the transformer engine
(:mod:`hdlgen.soc.accelerator`, ``build --model``).

The bus layout comes from :func:`hdlgen.soc.regmap.soc_layout` (the one definition the
register map, the C header and the host are generated from). ``SoC(config)`` has the UART
pins ``tx``/``rx`` and ``leds``; ``SoC(config, byte_port=True)`` replaces the UART by the
bridge's byte streams ``rx_byte``/``tx_byte`` (fast simulation: one protocol byte per cycle
instead of ten bit periods)::

    soc = SoC(config)                                   # what the top level instantiates
    m.d.comb += [pins.tx.o.eq(soc.tx), soc.rx.eq(pins.rx.i)]

LEDs: 0 heartbeat (about 1.5 Hz at 125 MHz), 1 a frame was accepted, 2 a frame was
rejected (CRC error, timeout, impossible length), 3 a job is running, 4 a bus error or bus
timeout; events are stretched to about 50 ms so they are visible.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdlgen.blocks.bram import BlockRAM
from hdlgen.config import AcceleratorConfig
from hdlgen.errors import UserError
from hdlgen.soc import regmap, wishbone
from hdlgen.soc.bridge import Bridge
from hdlgen.soc.protocol import MAX_BURST
from hdlgen.soc.uart import UARTRx, UARTTx, uart_divisor

__all__ = ["SoC", "WishboneRAM", "BUS_ADDR_WIDTH", "scratch_ebr", "soc_ebr"]

#: Word-address width of the SoC bus (the whole 32-bit byte address space).
BUS_ADDR_WIDTH = 30


class SoC(wiring.Component):
    """Host link, bus, control block and scratch memory for one :class:`AcceleratorConfig`.

    Parameters
    ----------
    config : AcceleratorConfig
        ``sys_clk_mhz`` and ``uart_baud`` set the UART divisor (a baud more than 2 % off
        is an error); ``scratch_bytes`` the scratch memory.
    byte_port : bool
        Replace the UART by byte streams ``rx_byte`` (in) and ``tx_byte`` (out).
    link_timeout_cycles : int or None
        Inter-byte timeout of the bridge; default 20 ms of system clock.
    bus_timeout_cycles : int
        Cycles the bridge waits for a subordinate before replying TIMEOUT.
    rx_fifo_depth : int
        Bytes buffered between the UART receiver and the bridge (the UART has no flow
        control; the bridge does not read while it executes a request or sends a reply).
    subordinates : dict of str to Component, optional
        More bus subordinates (each with a ``bus: In(wishbone.Signature(...))`` port), by
        the name of their entry in the bus layout (which places them).
    extra_layout : sequence of regmap.Bank / regmap.Window
        Entries added to :func:`hdlgen.soc.regmap.soc_layout` for those subordinates (the
        host's register map must be made with the same ``extra``).
    engine : Component, optional
        The compute engine whose jobs the control block runs: ``start: In(1)`` is pulsed by
        ``CTRL.START`` with ``token``/``pos`` (``In(32)``) from ``CTRL.TOKEN``/``CTRL.POS``;
        its ``done``/``error`` pulses and ``error_code`` end the job; its
        ``unit_busy`` bits (if any) feed the ``BUSY_<UNIT>`` counters in order; ``abort:
        In(1)`` (if any) gets ``CTRL.ABORT`` and watchdog aborts. Give it in ``subordinates``
        too when the host reaches its memories over the bus.
    fingerprint : str
        Mixed into ``CONFIG_HASH`` (:func:`hdlgen.soc.regmap.soc_layout`); the host's register
        map must be made with the same one.

    Attributes
    ----------
    tx : Out(1), rx : In(1)
        UART pins (without ``byte_port``).
    rx_byte : In(stream.Signature(8)), tx_byte : Out(stream.Signature(8))
        Bridge byte streams (with ``byte_port``).
    leds : Out(8)
    layout : list
        The bus layout (:func:`hdlgen.soc.regmap.soc_layout`).
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, byte_port: bool = False,
                 link_timeout_cycles: int | None = None, bus_timeout_cycles: int = 1024,
                 rx_fifo_depth: int = 64, subordinates: dict | None = None, extra_layout=(),
                 engine=None, fingerprint: str = "", covered=()):
        self._MustUse__silence = True         # not "unused" if the arguments are rejected
        config = (config or AcceleratorConfig()).check()
        self._config = config
        self._byte_port = bool(byte_port)
        self._divisor = None if byte_port else uart_divisor(config.sys_clk_hz, config.uart_baud)
        self._link_timeout = link_timeout_cycles or max(64, config.sys_clk_hz // 50)
        self._bus_timeout = bus_timeout_cycles
        if not isinstance(rx_fifo_depth, int) or rx_fifo_depth < 4:
            raise UserError(f"rx_fifo_depth={rx_fifo_depth!r} must be an integer >= 4 bytes")
        self._rx_fifo_depth = rx_fifo_depth
        self._fingerprint = str(fingerprint)
        self._layout = regmap.soc_layout(config, tuple(extra_layout), self._fingerprint)
        self._subs = dict(subordinates or {})
        self._covered = tuple(covered)
        names = {entry.name for entry in self._layout}
        for name in self._covered:
            if name not in names or name in self._subs or name in ("ctrl", "scratch"):
                raise UserError(f"covered entry {name!r} must be an extra_layout entry "
                                f"without a subordinate of its own")
        for entry in self._layout:
            if entry.name not in ("ctrl", "scratch", *self._subs, *self._covered):
                raise UserError(f"bus layout entry {entry.name!r} has no subordinate: pass it "
                                f"in SoC(subordinates={{{entry.name!r}: ...}})")
        for name, sub in self._subs.items():
            if name not in names:
                raise UserError(f"subordinate {name!r} has no entry in the bus layout "
                                f"(hdlgen.soc.regmap.soc_layout): add one there")
            if not hasattr(sub, "bus"):
                raise UserError(f"subordinate {name!r} has no Wishbone 'bus' port")
        for port in ("start", "token", "pos", "done", "error", "error_code"):
            if engine is not None and not hasattr(engine, port):
                raise UserError(f"the engine has no {port!r} port (see the SoC docstring)")
        self._engine = engine
        self._MustUse__silence = False
        members = {"leds": Out(8)}
        if byte_port:
            members.update(rx_byte=In(stream.Signature(8)), tx_byte=Out(stream.Signature(8)))
        else:
            members.update(tx=Out(1, init=1), rx=In(1, init=1))
        super().__init__(members)

    config = property(lambda self: self._config)
    byte_port = property(lambda self: self._byte_port)
    layout = property(lambda self: list(self._layout))
    link_timeout_cycles = property(lambda self: self._link_timeout)

    @property
    def uart_divisor(self):
        """Clock cycles per UART bit (None with ``byte_port``)."""
        return self._divisor

    def elaborate(self, platform):
        from hdlgen.soc.control import ControlBlock

        m = Module()
        cfg = self._config
        m.submodules.bridge = bridge = Bridge(timeout_cycles=self._link_timeout,
                                              bus_timeout_cycles=self._bus_timeout,
                                              max_burst=MAX_BURST, addr_width=BUS_ADDR_WIDTH)
        if self._byte_port:
            wiring.connect(m, wiring.flipped(self.rx_byte), bridge.i)
            wiring.connect(m, bridge.o, wiring.flipped(self.tx_byte))
        else:
            m.submodules.uart_rx = urx = UARTRx(self._divisor)
            m.submodules.uart_tx = utx = UARTTx(self._divisor)
            m.submodules.rx_fifo = rxf = fifo.SyncFIFOBuffered(width=8, depth=self._rx_fifo_depth)
            m.d.comb += [
                urx.rx.eq(self.rx), self.tx.eq(utx.tx),
                rxf.w_data.eq(urx.o.payload), rxf.w_en.eq(urx.o.valid), urx.o.ready.eq(rxf.w_rdy),
                bridge.i.payload.eq(rxf.r_data), bridge.i.valid.eq(rxf.r_rdy),
                rxf.r_en.eq(bridge.i.ready),
            ]
            wiring.connect(m, bridge.o, utx.i)

        m.submodules.decoder = dec = wishbone.Decoder(addr_width=BUS_ADDR_WIDTH)
        # A register slice between the bridge and the bus: the bridge stays in its corner by
        # the UART, the bus's logic by the subordinates (two cycles more per bus access; the
        # link's bytes take far longer).
        m.submodules.bus_buffer = buf = wishbone.Buffer(addr_width=BUS_ADDR_WIDTH)
        wiring.connect(m, bridge.bus, buf.initiator)
        wiring.connect(m, buf.bus, dec.bus)
        ctrl = None
        for entry in self._layout:
            if entry.name == "ctrl":
                m.submodules.ctrl = ctrl = ControlBlock(cfg, fingerprint=self._fingerprint)
                dec.add(ctrl.bus, addr=entry.base, name="ctrl")
            elif entry.name == "scratch":
                m.submodules.scratch = ram = WishboneRAM(entry.size // 4)
                dec.add(ram.bus, addr=entry.base, name="scratch")
            elif entry.name in self._covered:
                continue                      # inside a subordinate's window (checked below)
            else:
                sub = self._subs[entry.name]
                m.submodules[entry.name] = sub
                dec.add(sub.bus, addr=entry.base, name=entry.name)
        for entry in self._layout:
            if entry.name in self._covered and not any(
                    base <= entry.base and entry.base + entry.size <= base + size
                    for _, base, size in dec.windows):
                raise UserError(f"covered entry {entry.name!r} at {entry.base:#x} lies in no "
                                f"subordinate's bus window")

        engine = self._engine
        if engine is not None:
            if engine not in self._subs.values():
                m.submodules.engine = engine
            m.d.comb += [
                engine.start.eq(ctrl.start),
                engine.token.eq(ctrl.token),
                engine.pos.eq(ctrl.pos),
                ctrl.job_done.eq(engine.done),
                ctrl.job_error.eq(engine.error),
                ctrl.job_error_code.eq(engine.error_code.as_value()[:len(ctrl.job_error_code)]
                                       if hasattr(engine.error_code, "as_value")
                                       else engine.error_code[:len(ctrl.job_error_code)]),
            ]
            if hasattr(engine, "abort"):
                m.d.comb += engine.abort.eq(ctrl.abort)
            if hasattr(engine, "unit_busy"):
                n = min(len(engine.unit_busy), len(ctrl.unit_busy))
                m.d.comb += ctrl.unit_busy[:n].eq(engine.unit_busy[:n])

        # LEDs
        heartbeat = Signal(27)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        stretch = max(1, cfg.sys_clk_hz // 20)

        def stretched(event, name):
            # Counts down from ``stretch - 1`` to -1 and stops there: the sign bit (a
            # flip-flop) is both the LED (inverted) and the counter's enable, no comparator.
            cnt = Signal(signed(stretch.bit_length() + 1), init=-1, name=f"led_{name}")
            with m.If(event):
                m.d.sync += cnt.eq(stretch - 1)
            with m.Elif(~cnt[-1]):
                m.d.sync += cnt.eq(cnt - 1)
            return ~cnt[-1]

        ev = bridge.events
        m.d.comb += [
            self.leds[0].eq(heartbeat[-1]),
            self.leds[1].eq(stretched(ev.frame_ok, "ok")),
            self.leds[2].eq(stretched(ev.crc_error | ev.dropped, "bad")),
            self.leds[3].eq(ctrl.busy if ctrl is not None else 0),
            self.leds[4].eq(stretched(ev.bus_error, "buserr")),
        ]
        return m


def scratch_ebr(config: AcceleratorConfig) -> int:
    """DP16KD blocks of the SoC's scratch RAM (``config.scratch_bytes``, a power of two of
    32-bit words, as :class:`WishboneRAM` tiles it)."""
    from hdlgen.blocks.bram import ecp5_tiling
    words = max(1, config.scratch_bytes // 4)
    t = ecp5_tiling(32, 1 << (words - 1).bit_length(), granularity=8, ports=("rw", "r"))
    return t.columns * t.rows


def soc_ebr(config: AcceleratorConfig) -> dict:
    """DP16KD blocks of the SoC around an engine or unit: ``scratch`` (:func:`scratch_ebr`) and
    ``bridge``, the host bridge's burst buffer (:class:`~hdlgen.soc.bridge.Bridge`: 32-bit words,
    :data:`~hdlgen.soc.protocol.MAX_BURST` of them, one DP16KD)."""
    from hdlgen.blocks.bram import ecp5_tiling
    return {"scratch": scratch_ebr(config),
            "bridge": ecp5_tiling(32, MAX_BURST, ports=("w", "r")).primitives}


class WishboneRAM(wiring.Component):
    """Block RAM as a Wishbone subordinate: 32-bit words, byte enables.

    The request is registered before it reaches the RAM, so the enables, address and data
    of every DP16KD tile come straight from flip-flops; and the RAM is split into banks of
    at most ``bank_words`` words, each with its own copy of those registers, so that one
    flip-flop drives a few nearby tiles rather than all of them (a 64 KiB scratch is 32
    tiles spread over the die), and each bank's RAM copies them again per four tiles
    (``latency=3``). Each bank's read word is registered beside it before the banks are
    combined. Every access is acknowledged six cycles after it starts.

    Parameters
    ----------
    depth : int
        Words; a power of two (the bus window is ``4 * depth`` bytes).
    init : list of int
        Initial contents.
    bank_words : int
        Largest bank (a power of two; default 4096 words = 16 KiB = 8 DP16KD).

    Attributes
    ----------
    bus : In(wishbone.Signature(addr_width=log2(depth)))
    """

    def __init__(self, depth: int, init=None, *, bank_words: int = 4096):
        for name, v in [("depth", depth), ("bank_words", bank_words)]:
            if not isinstance(v, int) or v < 2 or v & (v - 1):
                self._MustUse__silence = True     # rejected: not an unused elaboratable
                raise ValueError(f"{name} must be a power of two >= 2 words, not {v!r}")
        self._depth = depth
        self._init = list(init or [])
        self._bank_words = min(bank_words, depth)
        super().__init__({"bus": In(wishbone.Signature(addr_width=(depth - 1).bit_length()))})

    depth = property(lambda self: self._depth)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        bw = self._bank_words
        nbanks = self._depth // bw
        lo = (bw - 1).bit_length()            # word-address bits inside a bank
        busy = Signal()
        p1 = Signal()
        p2 = Signal()
        p3 = Signal()
        p4 = Signal()
        req = bus.cyc & bus.stb & ~busy
        bank_of = bus.adr[lo:] if nbanks > 1 else 0
        rdatas = []
        for b in range(nbanks):
            # (latency 3: the bank's request registers copied per four tiles, which the
            # placer spreads over several EBR rows; measured on the 85F: 7.3 ns of routing from
            # one bank's address register to one of its tiles)
            ram = BlockRAM(width=32, depth=bw, granularity=8, ports=("rw", "r"),
                           init=self._init[b * bw:(b + 1) * bw] or None, latency=3)
            m.submodules[f"bank{b}"] = ram
            r_en = Signal(name=f"b{b}_en")
            r_addr = Signal(lo or 1, name=f"b{b}_addr")
            r_we = Signal(4, name=f"b{b}_we")
            r_wdata = Signal(32, name=f"b{b}_wdata")
            hit = req & (bank_of == b)
            # Address and data are loaded every cycle (no clock enable fanned out to the
            # tiles' inputs); only the enables depend on the request.
            m.d.sync += [r_en.eq(hit), r_we.eq(Mux(hit, bus.sel & bus.we.replicate(4), 0)),
                         r_addr.eq(bus.adr[:lo]), r_wdata.eq(bus.dat_w)]
            m.d.comb += [ram.a.addr.eq(r_addr), ram.a.en.eq(r_en), ram.a.wdata.eq(r_wdata),
                         ram.a.we.eq(r_we)]
            # Each bank's word is registered next to its tiles, gated by the bank's own
            # request delayed to its data (no select register fanned out to banks spread
            # over the die: 7.4 ns of routing on the 85F), so the banks meet in a plain OR.
            rdata = Signal(32, name=f"b{b}_rdata")
            if nbanks > 1:
                rd = r_en
                for k in range(ram.latency):
                    nxt = Signal(name=f"b{b}_rd{k}")
                    m.d.sync += nxt.eq(rd)
                    rd = nxt
                m.d.sync += rdata.eq(ram.a.rdata & rd.replicate(32))
            else:
                m.d.sync += rdata.eq(ram.a.rdata)
            rdatas.append(rdata)
        dat_r = 0
        for rdata in rdatas:
            dat_r = dat_r | rdata
        m.d.comb += bus.dat_r.eq(dat_r)
        m.d.sync += [p1.eq(req), p2.eq(p1), p3.eq(p2), p4.eq(p3), bus.ack.eq(p4)]
        with m.If(req):
            m.d.sync += busy.eq(1)
        with m.If(bus.ack):
            m.d.sync += busy.eq(0)
        with m.If(~bus.cyc):     # abandoned cycle: forget it (a write already issued completes)
            m.d.sync += [busy.eq(0), p1.eq(0), p2.eq(0), p3.eq(0), p4.eq(0), bus.ack.eq(0)]
        return m
